//! The deploy manifests' database roles are enough to run the services.

use integration_tests::{admin_database_url, seed_mandate, Command, TestEnv};
use serde_json::json;

#[tokio::test]
async fn intake_runs_with_only_the_grants_of_its_role() {
    let mut env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    c.batch_execute(include_str!("../../../deploy/postgres/roles.sql")).await.expect("roles.sql applies");
    drop(c);
    let as_intake = env.database_url.replacen("postgres@", "ps_intake@", 1);
    assert_ne!(as_intake, env.database_url);
    env.start_intake_with(&[("DATABASE_URL", &as_intake), ("DATABASE_MIGRATE", "false")]).await;

    let one_time: serde_json::Value =
        serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-one_time.json")).unwrap();
    let cmd = || Command::create("shop_1", &one_time).header("idempotency-key", "roles-1");
    assert_eq!(env.call(cmd()).await.body["status"], "active");
    assert!(env.call(cmd()).await.replayed);
    let (cus, pm, _) = seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let next = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "customer_id": cus, "payment_method_id": pm});
    assert_eq!(env.call(Command::create("gym", &next)).await.body["payment_outcome"], "pending");
    let mut bad = one_time.clone();
    bad["amount"] = json!(-1);
    assert_eq!(env.call(Command::create("shop_1", &bad)).await.error_code(), Some("amount_too_small"));

    env.stop_services().await;
    // The role is cluster-wide: remove it unless another database still grants it something.
    let c = env.pool.get().await.unwrap();
    c.batch_execute("DROP OWNED BY ps_intake").await.unwrap();
    drop(c);
    let (admin, conn) = tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    env.finish().await;
    let _ = admin.batch_execute("DROP ROLE IF EXISTS ps_intake").await;
}
