//! What production does to us: redelivery, a crash between commit and ack.

use integration_tests::{close_broker_connections, eventually, http_get, seed_mandate, Command, TestEnv};
use ps_contract::routing::header;
use ps_runtime::topology;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;

fn one_time() -> Value {
    serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-one_time.json")).unwrap()
}

fn duplicates_seen() -> u64 {
    ps_runtime::metrics::MESSAGES.with_label_values(&[topology::INTAKE.name, "duplicate"]).get()
}

#[tokio::test]
async fn a_republished_message_is_applied_once_and_answered_again() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let (cus, pm, _) = seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let body = json!({"type": "next_in_series", "amount": 700, "currency": "ZAR", "customer_id": cus, "payment_method_id": pm});
    let cmd = || Command::create("gym", &body).message_id("msg-1").header(header::IDEMPOTENCY_KEY, "k-1");
    let before = duplicates_seen();
    let first = env.call(cmd()).await;
    let second = env.call(cmd()).await;
    assert_eq!(first.body["id"], second.body["id"]);
    assert!(second.replayed);
    // Counted once acked, which follows the reply's publish.
    eventually("the second delivery to be recognised by its message id", || duplicates_seen() - before == 1).await;
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 1, "one charge requested, not two");
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'gateway.authorize'").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn killed_between_commit_and_ack_the_redelivery_creates_nothing_new() {
    let mut env = TestEnv::new().await;
    let child = env.spawn_binary("session-intake", &[("PS_FAULT_ABORT_AFTER_COMMIT", "true")]);
    let pid = child.id();
    let corr = env.send(Command::create("shop_1", &one_time()).message_id("crash-1")).await;

    // The process commits, then dies before it can ack.
    let status = env.wait_child(pid).await;
    assert_eq!(status.signal(), Some(6), "intake aborted (SIGABRT) after its commit: {status:?}");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "the commit happened");
    assert_eq!(env.count("SELECT count(*) FROM processed_messages").await, 1);
    // What it sends was kept with its record, not sent and not handed to the outbox.
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment_session.created'").await, 1);

    // The broker still holds the unacked message and hands it to the next instance.
    let before = duplicates_seen();
    env.start_intake().await;
    let reply = env.reply(&corr).await;
    assert_eq!(reply.body["status"], "active", "the reply written before the crash is delivered: {}", reply.body);
    eventually("the redelivery to be recognised", || duplicates_seen() > before).await;
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "the redelivery created nothing");
    assert_eq!(env.count("SELECT count(*) FROM customers").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment_session.created'").await, 1);
    let event = env.next_event().await;
    assert_eq!(event["data"]["id"], reply.body["id"]);
    env.finish().await;
}

#[tokio::test]
async fn the_broker_cutting_the_connection_costs_nothing() {
    let mut env = TestEnv::new().await;
    let health = env.start_intake().await;
    let first = env.call(Command::create("shop_1", &one_time())).await;
    assert_eq!(first.body["status"], "active");
    assert_eq!(http_get(health, "/readyz").await.0, 200);

    let reconnects = ps_runtime::metrics::BROKER_RECONNECTS.get();
    assert_eq!(close_broker_connections(&format!("session-intake {}", env.prefix)), 1);
    eventually("intake to reconnect", || ps_runtime::metrics::BROKER_RECONNECTS.get() > reconnects).await;

    // Commands published while it was away, and after, are all answered once.
    let second = env.call(Command::create("shop_1", &one_time())).await;
    assert_eq!(second.body["status"], "active");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 2);
    env.finish().await;
}

#[tokio::test]
async fn a_database_outage_delays_but_loses_nothing() {
    let mut env = TestEnv::new().await;
    let health = env.start_intake().await;
    let (status, body) = http_get(health, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(env.call(Command::create("shop_1", &one_time())).await.body["status"], "active");

    // The database goes away: no new connections, existing ones cut.
    let admin = admin().await;
    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", env.db_name)).await.unwrap();
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&env.db_name]).await.unwrap();
    let (status, _) = http_get(health, "/readyz").await;
    assert_eq!(status, 503, "not ready without a database");

    let retries = || ps_runtime::metrics::RETRIES.with_label_values(&[topology::INTAKE.name]).get();
    let before = retries();
    let corr = env.send(Command::create("shop_1", &one_time())).await;
    eventually("intake to retry against the missing database", || retries() > before).await;

    // It comes back; the command goes through exactly once.
    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", env.db_name)).await.unwrap();
    let reply = env.reply(&corr).await;
    assert_eq!(reply.body["status"], "active", "{}", reply.body);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 2);
    assert_eq!(http_get(health, "/readyz").await.0, 200);
    let metrics = http_get(health, "/metrics").await.1;
    assert!(metrics.contains("ps_message_retries_total"), "retries are visible to operators");
    env.finish().await;
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&integration_tests::admin_database_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Each relay publishes only what its own service wrote: with least-privilege
/// broker users, another service's rows may be ones it is not allowed to send.
#[tokio::test]
async fn a_relay_publishes_only_its_own_services_rows() {
    let mut env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    let event = |id: &str| {
        serde_json::to_vec(&json!({"id": id, "type": "payment_session.updated", "created_at": "2026-11-24T09:00:00Z", "data": {"id": id}}))
            .unwrap()
    };
    for (id, producer) in [("evt_lifecycle", "session-lifecycle"), ("evt_intake", "session-intake")] {
        c.execute(
            "INSERT INTO outbox (exchange, routing_key, message_id, body, kind, producer) VALUES ('payment_sessions.events', 'payment_session.updated', $1, $2, 'durable', $3)",
            &[&id, &event(id), &producer],
        )
        .await
        .unwrap();
    }
    drop(c);
    env.start_intake().await;
    // Rows go out in id order, so once intake's has gone, lifecycle's would have gone before it.
    assert_eq!(env.event_about("payment_session.updated", "evt_intake").await["id"], "evt_intake");
    assert_eq!(env.count("SELECT count(*) FROM outbox WHERE message_id = 'evt_lifecycle' AND published_at IS NULL").await, 1);
    env.start_lifecycle(&[]).await;
    assert_eq!(env.event_about("payment_session.updated", "evt_lifecycle").await["id"], "evt_lifecycle");
    env.finish().await;
}

/// A reply to a queue that no longer exists (its client went away) is retried,
/// then recorded as failed instead of retried for ever; the session stays
/// retrievable by replaying the idempotency key.
#[tokio::test]
async fn an_undeliverable_reply_is_given_up_after_its_tries_and_recorded() {
    let env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, kind, producer) VALUES ('', 'amq.gen-nobody-listens', 'r-1', '{}', 'reply', 'test')",
        &[],
    )
    .await
    .unwrap();
    let conn = ps_runtime::broker::connect(&env.amqp_url, "test-relay", &Default::default()).await.unwrap();
    let publisher = ps_runtime::broker::Publisher::new(&conn, env.names.clone(), std::time::Duration::from_secs(5), None).await.unwrap();
    let relay = ps_runtime::outbox::Relay::new(env.pool.clone(), ps_runtime::outbox::Outbox::new("test", None));
    for _ in 0..20 {
        relay.drain(&publisher).await.unwrap();
        // Time passes: the next try is due now.
        c.execute("UPDATE outbox SET next_attempt_at = now()", &[]).await.unwrap();
    }
    let row = c
        .query_one("SELECT attempts, failed_at IS NOT NULL, published_at IS NULL, last_error FROM outbox WHERE message_id = 'r-1'", &[])
        .await
        .unwrap();
    let (attempts, failed, unpublished, error): (i32, bool, bool, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((attempts, failed, unpublished), (8, true, true), "{error}");
    assert!(error.contains("no queue is bound"), "{error}");
    let _ = conn.close(200, "bye".into()).await;
    env.finish().await;
}

/// Retention: published outbox rows after a day, dedupe records after a week,
/// idempotency keys after 24 hours; nothing younger, nothing unpublished.
#[tokio::test]
async fn the_retention_sweep_deletes_only_what_has_expired() {
    let env = TestEnv::new().await;
    let c = env.pool.get().await.unwrap();
    c.batch_execute(
        "INSERT INTO outbox (exchange, routing_key, body, kind, producer, published_at) VALUES
             ('e', 'old-published', '{}', 'durable', 't', now() - interval '2 days'),
             ('e', 'new-published', '{}', 'durable', 't', now() - interval '1 hour'),
             ('e', 'old-unpublished', '{}', 'durable', 't', NULL);
         UPDATE outbox SET created_at = now() - interval '3 days' WHERE routing_key = 'old-unpublished';
         INSERT INTO processed_messages (consumer, message_key, processed_at) VALUES
             ('q', 'old', now() - interval '8 days'), ('q', 'new', now() - interval '6 days');
         INSERT INTO idempotency_keys (merchant_id, key, command, request_hash, created_at) VALUES
             ('m', 'old', 'c', 'h', now() - interval '25 hours'), ('m', 'new', 'c', 'h', now() - interval '23 hours');",
    )
    .await
    .unwrap();
    assert_eq!(ps_runtime::outbox::sweep(&env.pool, true).await.unwrap(), 3);
    let left = |sql: &str| {
        let c = &c;
        let sql = sql.to_owned();
        async move { c.query(sql.as_str(), &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>() }
    };
    assert_eq!(left("SELECT routing_key FROM outbox ORDER BY id").await, ["new-published", "old-unpublished"]);
    assert_eq!(left("SELECT message_key FROM processed_messages").await, ["new"]);
    assert_eq!(left("SELECT key FROM idempotency_keys").await, ["new"]);
    drop(c);
    env.finish().await;
}

/// A command dead-lettered by a bug is replayed once the bug is fixed, and applied once.
#[tokio::test]
async fn a_dead_letter_replayed_after_the_fix_is_applied_once() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    // A bug: inserting a session fails (not a transient error, so no retry helps).
    env.pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'a bug'; END $$;
             CREATE TRIGGER broken BEFORE INSERT ON payment_sessions FOR EACH ROW EXECUTE FUNCTION broken();",
        )
        .await
        .unwrap();
    let first = env.call(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, "order-9")).await;
    assert_eq!(first.error_code(), Some("internal_error"));
    env.wait_for_ready(&env.names.dead_letter_queue(&topology::INTAKE), 1).await;

    // The fix is deployed; the operator replays the dead letter.
    env.pool.get().await.unwrap().batch_execute("DROP TRIGGER broken ON payment_sessions").await.unwrap();
    env.psctl(&["dlq", "replay", topology::INTAKE.name, "--all"]);
    let created = env.wait_for_count("SELECT count(*) FROM payment_sessions", 1).await;
    assert_eq!(created, 1);
    assert_eq!(env.ready_count(&env.names.dead_letter_queue(&topology::INTAKE)).await, 0);

    // The merchant's retry with the same key gets that session, not a second one.
    let again = env.call(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, "order-9")).await;
    assert!(again.replayed, "{}", again.body);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    env.finish().await;
}

/// While the database is unreachable a consumer holds its messages instead of
/// returning them to the queue, where each return would count against the
/// delivery limit: with a limit of 1, the old behaviour dead-lettered the
/// command after its second round of retries. Readiness says why meanwhile.
#[tokio::test]
async fn a_database_outage_holds_messages_instead_of_dead_lettering_them() {
    let mut env = TestEnv::with_delivery_limit(1).await;
    // One message per transaction: all five in flight at once, each held on its own.
    let health = env.start_intake_with(&[("CONSUMER_BATCH", "1")]).await;
    let admin = admin().await;
    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", env.db_name)).await.unwrap();
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&env.db_name]).await.unwrap();

    let ids: Vec<String> = futures::future::join_all(
        (0..5).map(|i| env.send(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, &format!("order-{i}")))),
    )
    .await;
    let retries = || ps_runtime::metrics::RETRIES.with_label_values(&[topology::INTAKE.name]).get();
    let held = || ps_runtime::metrics::HELD.with_label_values(&[topology::INTAKE.name]).get();
    // Before, a message went back to the queue after six retries, and a limit of 1
    // allowed two deliveries: twelve retries, then the DLQ. Each is now past that.
    // (Batches during an outage are the fault suite's: `make test` runs its database cut.)
    eventually("every command held past its old delivery limit", || held() == 5 && retries() >= 5 * 14).await;
    let (status, why) = integration_tests::http_get(health, "/readyz").await;
    assert_eq!((status, why.as_str()), (503, "database not answering"));
    let dlq = env.names.dead_letter_queue(&topology::INTAKE);
    assert_eq!(env.ready_count(&dlq).await, 0, "nothing dead-lettered while the database was away");

    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", env.db_name)).await.unwrap();
    for id in &ids {
        let r = env.reply(id).await;
        assert!(r.body["id"].is_string(), "answered once the database is back: {}", r.body);
    }
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 5);
    assert_eq!(held(), 0);
    assert_eq!(env.ready_count(&dlq).await, 0);
    let (status, why) = integration_tests::http_get(health, "/readyz").await;
    assert_eq!((status, why.as_str()), (200, "ready\n"));
    env.finish().await;
}
