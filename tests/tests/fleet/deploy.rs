//! The deploy manifests' database roles are enough to run the fleet, and no more.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{admin_database_url, seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use serde_json::json;

const ROLES: [&str; 5] = ["ps_intake", "ps_checkout", "ps_gateway", "ps_lifecycle", "ps_webhooks"];

#[tokio::test]
async fn the_fleet_runs_with_only_the_grants_of_its_roles() {
    let mut env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    c.batch_execute(include_str!("../../../deploy/postgres/roles.sql")).await.expect("roles.sql applies");
    drop(c);
    let url_as = |role: &str| env.database_url.replacen("postgres@", &format!("{role}@"), 1);
    let (intake, checkout_db, gateway, lifecycle, webhooks) =
        (url_as("ps_intake"), url_as("ps_checkout"), url_as("ps_gateway"), url_as("ps_lifecycle"), url_as("ps_webhooks"));
    let no_migrate = ("DATABASE_MIGRATE", "false");
    env.start_gateway(&[("DATABASE_URL", &gateway), no_migrate]).await;
    env.start_lifecycle(&[("DATABASE_URL", &lifecycle), no_migrate]).await;
    let checkout = env.start_checkout_with(&[("DATABASE_URL", &checkout_db), no_migrate]).await;
    env.start_intake_with(&[("DATABASE_URL", &intake), no_migrate, ("CHECKOUT_BASE_URL", &checkout)]).await;
    env.start_webhooks(&[("DATABASE_URL", &webhooks), no_migrate, ("WEBHOOK_RETRY_SCHEDULE_SECS", "0.05")]).await;
    let rx = Receiver::start(&[Answer::Status(500)], Answer::Status(200)).await;
    let ep = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["mandate.revoked"]}))
                .header("merchant-id", "gym"),
        )
        .await;
    assert_eq!(ep.body["status"], "enabled", "{}", ep.body);

    // A one_time saved always, and a first_in_series: every table each service writes.
    let body = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                      "return_url": "https://x.example/r", "save_payment_method": "always"});
    let cmd = || Command::create("shop_1", &body).header("idempotency-key", "roles-1");
    let s = env.call(cmd()).await.body;
    assert!(env.call(cmd()).await.replayed);
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");

    let fis = json!({"type": "first_in_series", "amount": 100, "currency": "ZAR", "customer": {"name": "B", "email": "b@example.com"}, "return_url": "https://x.example/r"});
    let f = env.call(Command::create("gym", &fis)).await.body;
    CheckoutClient::new().pay(f["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", f["id"].as_str().unwrap()).await;
    let md = done["data"]["mandate_id"].as_str().unwrap();
    let next =
        env.call(Command::create("gym", &json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": md}))).await.body;
    assert_eq!(env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    let revoked = env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "gym")).await;
    assert_eq!(revoked.body["status"], "revoked", "{}", revoked.body);
    rx.wait_for(2).await;
    let rotated = env
        .call(Command::new("webhook_endpoint.rotate_secret", &json!({"webhook_endpoint_id": ep.body["id"]})).header("merchant-id", "gym"))
        .await;
    assert!(rotated.body["secret"].is_string(), "{}", rotated.body);
    let (_, _, seeded) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), "4000000000009995", (12, 2099), true)
            .await;
    let declined = env
        .call(Command::create("gym", &json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": seeded})))
        .await
        .body;
    assert_eq!(env.event_about("payment_session.completed", declined["id"].as_str().unwrap()).await["data"]["payment_outcome"], "unpaid");

    // And no more: only the gateway may read the vault.
    let (client, conn) = tokio_postgres::connect(&checkout_db, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let denied = client.query("SELECT pan FROM vault_cards", &[]).await.unwrap_err();
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    drop(client);

    env.stop_services().await;
    // Roles are cluster-wide: remove them unless another database still grants them something.
    let c = env.pool.get().await.unwrap();
    for r in ROLES {
        c.batch_execute(&format!("DROP OWNED BY {r}")).await.unwrap();
    }
    drop(c);
    let (admin, conn) = tokio_postgres::connect(&admin_database_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    env.finish().await;
    for r in ROLES {
        let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
    }
}
