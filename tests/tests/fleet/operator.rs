//! psctl as an operator uses it: reads straight from the database, changes
//! through the owning service, dead letters looked at without being lost.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{seed_mandate, CheckoutClient, Command, TestEnv};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use ps_runtime::topology;
use serde_json::{json, Value};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn sessions_and_mandates_are_listed_and_a_mandate_revoked_through_lifecycle() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    for (merchant, reference) in [("shop", "order-1"), ("shop", "order-2"), ("rival", "order-3")] {
        let body = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r", "external_reference": reference});
        let r = env.call(Command::create(merchant, &body)).await;
        assert_eq!(r.body["object"], "payment_session", "{}", r.body);
    }
    let listed = parse(&env.psctl_async(&["sessions", "list", "--merchant", "shop", "--json"]).await);
    let refs: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["external_reference"].as_str().unwrap()).collect();
    assert_eq!(refs, ["order-2", "order-1"], "newest first, one merchant's");
    let one = parse(&env.psctl_async(&["sessions", "list", "--reference", "order-3", "--json"]).await);
    assert_eq!(one.as_array().unwrap().len(), 1);
    let table = env.psctl_async(&["sessions", "list"]).await;
    assert!(table.contains("order-1") && table.contains("order-3") && table.contains("external_reference"), "{table}");

    let (_, _, mandate) = seed_mandate(&env.pool, "shop", json!({"type": "on_demand", "currency": "EUR"}), (12, 2040), true).await;
    let mandates = parse(&env.psctl_async(&["mandates", "list", "--merchant", "shop", "--json"]).await);
    assert_eq!(mandates[0]["id"], mandate.as_str());
    assert_eq!(mandates[0]["status"], "active");
    let revoked = parse(&env.psctl_async(&["mandates", "revoke", &mandate, "--json"]).await);
    assert_eq!(revoked["status"], "revoked", "the reply of mandate.revoke, applied by lifecycle");
    env.event_about("mandate.revoked", &mandate).await;
    let again = env.psctl_output(&["mandates", "revoke", "md_00000000000000000000000000"]).await;
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("no such Mandate"), "{again:?}");
    env.finish().await;
}

#[tokio::test]
async fn an_operator_refunds_through_lifecycle_and_sees_the_refund_on_its_session() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let body = json!({"type": "one_time", "amount": 900, "currency": "EUR", "return_url": "https://shop.example/r"});
    let s = env.call(Command::create("shop", &body)).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    env.event_about("payment_session.completed", id).await;

    let args = ["refunds", "create", id, "--amount", "300", "--reason", "duplicate", "--idempotency-key", "op-1", "--json"];
    let made = parse(&env.psctl_async(&args).await);
    assert_eq!((made["amount"].as_i64(), made["reason"].as_str()), (Some(300), Some("duplicate")), "{made}");
    let again = parse(&env.psctl_async(&args).await);
    assert_eq!(again["id"], made["id"], "the same key makes no second refund");
    let refund_id = made["id"].as_str().unwrap();
    env.event_about("refund.succeeded", refund_id).await;
    let shown = parse(&env.psctl_async(&["refunds", "show", refund_id, "--json"]).await);
    assert_eq!((shown["status"].as_str(), shown["merchant_id"].as_str()), (Some("succeeded"), Some("shop")), "{shown}");
    let session = parse(&env.psctl_async(&["sessions", "show", id, "--json"]).await);
    assert_eq!(session["refunds"].as_array().unwrap().len(), 1, "{session}");
    assert_eq!(session["payment"]["refunded_amount"], 300);
    let too_much = env.psctl_output(&["refunds", "create", id, "--amount", "601"]).await;
    let err = String::from_utf8_lossy(&too_much.stderr);
    assert!(!too_much.status.success() && err.contains("amount_too_large"), "{err}");
    env.finish().await;
}

#[tokio::test]
async fn endpoints_are_created_disabled_enabled_and_rotated_through_the_dispatcher() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    // The merchant's receiver fails at first, then recovers.
    let rx = Receiver::start(&[Answer::Status(500)], Answer::Status(200)).await;
    let created = parse(&env.psctl_async(&["endpoints", "create", "--merchant", "shop", "--url", &rx.url, "--json"]).await);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let since = chrono::Utc::now().to_rfc3339();
    let body = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"});
    let session = env.call(Command::create("shop", &body)).await.body;
    rx.wait_for(1).await; // answered 500: the delivery waits for its retry

    // Disabled by command: the waiting delivery is given up, and the merchant told.
    let disabled = parse(&env.psctl_async(&["endpoints", "disable", &id, "--json"]).await);
    assert_eq!(disabled["status"], "disabled");
    env.event_about("webhook_endpoint.disabled", &id).await;
    let listed = parse(&env.psctl_async(&["endpoints", "list", "--merchant", "shop", "--json"]).await);
    assert_eq!((listed[0]["status"].as_str(), listed[0]["disabled_reason"].as_str()), (Some("disabled"), Some("disabled by command")));
    assert!(listed[0].get("secret").is_none(), "never the secret");
    let dead = parse(&env.psctl_async(&["webhook-dead-letters", "--merchant", "shop", "--json"]).await);
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");

    let enabled = parse(&env.psctl_async(&["endpoints", "enable", &id, "--json"]).await);
    assert_eq!(enabled["status"], "enabled");
    let rotated = parse(&env.psctl_async(&["endpoints", "rotate", &id, "--json"]).await);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_") && rotated["secret"] != created["secret"]);

    // Everything that failed since the incident goes again, through the dispatcher.
    let redelivered = parse(&env.psctl_async(&["redeliver", "--failed-since", &since, "--merchant", "shop", "--json"]).await);
    assert_eq!(redelivered.as_array().unwrap().len(), 1, "{redelivered}");
    assert_eq!(redelivered[0]["result"], "queued");
    let got = rx.wait_for(2).await;
    let event: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!((event["type"].as_str(), event["data"]["id"].as_str()), (Some("payment_session.created"), session["id"].as_str()));
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"], "the same event, for the receiver to dedupe");
    let bad = env.psctl_output(&["redeliver", "--failed-since", "yesterday"]).await;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an RFC 3339 time"), "{bad:?}");
    env.finish().await;
}

#[tokio::test]
async fn status_shows_queue_depths_consumers_and_the_backlog() {
    let env = TestEnv::new().await;
    // Nobody consumes intake's queue yet: three commands wait there.
    for i in 0..3 {
        let body = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"});
        env.send(Command::create("shop", &body).header("idempotency-key", &format!("k{i}"))).await;
    }
    let status = parse(&env.psctl_async(&["status", "--json"]).await);
    let intake = status["queues"].as_array().unwrap().iter().find(|q| q["queue"] == env.names.queue(&topology::INTAKE)).unwrap();
    assert_eq!((intake["messages"].as_u64(), intake["consumers"].as_u64()), (Some(3), Some(0)), "{status}");
    let outbox = status["backlog"].as_array().unwrap().iter().find(|b| b["what"] == "outbox: waiting to be published").unwrap();
    assert_eq!(outbox["count"], 0);
    let table = env.psctl_async(&["status"]).await;
    assert!(table.contains("webhook deliveries due") && table.contains(&env.names.queue(&topology::INTAKE)), "{table}");
    env.finish().await;
}

/// Puts `n` dead letters in intake's DLQ the way they get there: a bug (a
/// trigger that fails every insert) makes intake dead-letter each create, ids `dl-0`….
/// Intake is stopped and the bug fixed afterwards.
async fn dead_letters(env: &mut TestEnv, n: usize) {
    let bug = "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'a bug, since fixed'; END $$;
               CREATE TRIGGER broken BEFORE INSERT ON payment_sessions FOR EACH ROW EXECUTE FUNCTION broken();";
    env.pool.get().await.unwrap().batch_execute(bug).await.unwrap();
    env.start_intake().await;
    for i in 0..n {
        let body = json!({"type": "one_time", "amount": 100 + i, "currency": "EUR", "return_url": "https://shop.example/r"});
        let cmd = Command::create("shop", &body).header("idempotency-key", &format!("dead-{i}")).message_id(&format!("dl-{i}"));
        assert_eq!(env.call(cmd).await.error_code(), Some("internal_error"));
    }
    env.stop_services().await;
    env.pool.get().await.unwrap().batch_execute("DROP TRIGGER broken ON payment_sessions").await.unwrap();
}

#[tokio::test]
async fn looking_at_a_dead_letter_queue_never_wears_its_messages_down() {
    let mut env = TestEnv::new().await;
    dead_letters(&mut env, 3).await;
    let queue = topology::INTAKE.name;
    // More looks than RabbitMQ 4's default quorum delivery limit (20): returning
    // messages to look at them would have dropped them by now.
    for _ in 0..25 {
        let listed = parse(&env.psctl_async(&["dlq", "list", queue, "--json"]).await);
        let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["dl-0", "dl-1", "dl-2"], "every one, in order");
    }
    let dlq = env.names.dead_letter_queue(&topology::INTAKE);
    {
        // What is left has never been returned: no delivery count has grown on it.
        let conn = ps_runtime::broker::connect(&env.amqp_url, "dlq-peek", &Default::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let m = ch.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap().unwrap();
        let count = match m.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned()) {
            None => 0,
            Some(AMQPValue::LongLongInt(n)) => n,
            Some(other) => panic!("x-delivery-count {other:?}"),
        };
        assert_eq!(count, 0, "each look is a fresh copy, never a return");
        conn.close(0, "done".into()).await.unwrap(); // returned once, by this test
    }
    let shown = parse(&env.psctl_async(&["dlq", "show", queue, "dl-1", "--json"]).await);
    assert_eq!(shown["body"]["amount"].as_i64(), Some(101));
    assert!(shown["reason"].as_str().unwrap().contains("a bug, since fixed"), "{shown}");

    let discarded = parse(&env.psctl_async(&["dlq", "discard", queue, "--id", "dl-0", "--json"]).await);
    assert_eq!((discarded["discarded"].as_u64(), discarded["kept"].as_u64()), (Some(1), Some(2)));
    let refused = env.psctl_output(&["dlq", "discard", queue, "--all"]).await;
    assert!(!refused.status.success(), "--all without --yes");

    env.start_intake().await;
    let replayed = parse(&env.psctl_async(&["dlq", "replay", queue, "--id", "dl-2", "--json"]).await);
    assert_eq!((replayed["replayed"].as_u64(), replayed["kept"].as_u64()), (Some(1), Some(1)));
    assert_eq!(env.wait_for_count("SELECT count(*) FROM payment_sessions WHERE amount = 102", 1).await, 1);
    assert_eq!(env.ready_count(&dlq).await, 1, "dl-1 is still there");
    env.finish().await;
}
