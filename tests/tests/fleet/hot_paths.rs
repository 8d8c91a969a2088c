//! Issue 10's defects under load, each reproduced: replies over direct
//! reply-to, the relay's read with a large outbox, a mandate's usage.

use futures::StreamExt;
use integration_tests::{seed_mandate_with_card, Command, TestEnv};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use ps_contract::routing::{exchange, header};
use ps_runtime::topology;
use serde_json::{json, Value};

/// An upstream using RabbitMQ's direct reply-to (as its RPC tutorial does)
/// gets exactly one reply: before, the broker's basic.return for a mandatory
/// publish there (rabbitmq-server#6124) made the relay send it again and again.
#[tokio::test]
async fn a_command_over_direct_reply_to_is_answered_once() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let conn = ps_runtime::broker::connect(&env.amqp_url, "direct-reply-to", &Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut replies = ch.basic_consume("amq.rabbitmq.reply-to".into(), "".into(), no_ack, FieldTable::default()).await.unwrap();

    let mut headers = FieldTable::default();
    headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString(LongString::from("shop")));
    headers.insert(header::IDEMPOTENCY_KEY.into(), AMQPValue::LongString(LongString::from("order-1")));
    let cmd = Command::create("shop", &json!({}));
    let props = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_message_id("direct-1".into())
        .with_correlation_id("corr-1".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_user_id(ShortString::from(cmd.user_id.clone().unwrap().as_str()));
    let body = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"});
    ch.basic_publish(
        env.names.exchange(exchange::COMMANDS).as_str().into(),
        "payment_session.create".into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        &serde_json::to_vec(&body).unwrap(),
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let reply = tokio::time::timeout(integration_tests::WAIT, replies.next()).await.expect("a reply").unwrap().unwrap();
    let answer: Value = serde_json::from_slice(&reply.data).unwrap();
    assert!(answer["id"].is_string(), "{answer}");
    // Published once, straight after the commit: never through the outbox, never again.
    let applied = || ps_runtime::metrics::MESSAGES.with_label_values(&[topology::INTAKE.name, "applied"]).get();
    integration_tests::eventually("the command to be acked", || applied() == 1).await;
    let direct = ps_runtime::metrics::DIRECT_PUBLISHED.with_label_values(&["reply", "confirmed"]).get();
    assert_eq!(direct, 1, "one reply, confirmed");
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 0, "nothing went through the outbox");
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), replies.next()).await.is_err(), "no second reply");
    let _ = conn.close(200, "done".into()).await;
    env.finish().await;
}

/// The relay reads only pending rows, whatever else the outbox holds: with
/// 100,000 published and 100,000 given-up rows, after ANALYZE, its read
/// touches the pending rows and nothing else (before: a primary-key scan of
/// some 200,000 rows on every drain).
#[tokio::test]
async fn the_relays_read_ignores_published_and_failed_rows() {
    let env = TestEnv::new().await;
    let mut c = env.pool.get().await.unwrap();
    c.batch_execute(
        "INSERT INTO outbox (exchange, routing_key, body, kind, producer, published_at)
             SELECT 'payment_sessions.events', 'payment_session.updated', '{}', 'durable', 'session-lifecycle', now()
             FROM generate_series(1, 100000);
         INSERT INTO outbox (exchange, routing_key, body, kind, producer, failed_at, attempts)
             SELECT '', 'amq.rabbitmq.reply-to.gone', '{}', 'reply', 'session-intake', now(), 8
             FROM generate_series(1, 100000);
         INSERT INTO outbox (exchange, routing_key, body, kind, producer)
             SELECT 'payment_sessions.events', 'payment_session.created', '{}', 'durable', 'session-intake'
             FROM generate_series(1, 5);
         ANALYZE outbox;",
    )
    .await
    .unwrap();
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", ps_runtime::outbox::DRAIN_SQL);
    let tx = c.transaction().await.unwrap();
    let plan: Value = tx.query_one(explain.as_str(), &[&500i64, &"session-intake"]).await.unwrap().get(0);
    let mut read = 0;
    let mut indexes = vec![];
    visit(&plan[0]["Plan"], &mut |node| {
        if node["Node Type"].as_str().is_some_and(|t| t.contains("Scan")) {
            read += node["Actual Rows"].as_i64().unwrap_or(0) + node["Rows Removed by Filter"].as_i64().unwrap_or(0);
            indexes.extend(node["Index Name"].as_str().map(str::to_owned));
        }
    });
    assert_eq!(indexes, ["outbox_pending"], "{plan}");
    assert_eq!(read, 5, "only the five pending rows are read: {plan}");
    drop(tx);
    env.finish().await;
}

fn visit(node: &Value, f: &mut impl FnMut(&Value)) {
    f(node);
    for child in node["Plans"].as_array().into_iter().flatten() {
        visit(child, f);
    }
}

/// A mandate's usage is kept as counters, through every way a charge counts
/// or stops counting, and they always equal a count of the charges themselves.
#[tokio::test]
async fn a_mandates_usage_counters_follow_every_charge() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let terms = json!({"type": "on_demand", "currency": "ZAR", "max_occurrences": 4});
    let (_, _, md) = seed_mandate_with_card(&env.pool, "gym", terms, "4242424242424242", (12, 2099), true).await;
    let charge = |amount: i64, manual: bool| {
        let mut body = json!({"type": "next_in_series", "amount": amount, "currency": "ZAR", "mandate_id": md});
        if manual {
            body["capture_method"] = json!("manual");
        }
        Command::create("gym", &body)
    };
    let usage = || async {
        let c = env.pool.get().await.unwrap();
        let kept = c
            .query_one(
                "SELECT coalesce(max(used_occurrences), 0), coalesce(max(used_amount), 0)::bigint FROM mandate_usage WHERE mandate_id = $1",
                &[&md],
            )
            .await
            .unwrap();
        let counted = c
            .query_one(
                "SELECT count(*)::int, coalesce(sum(amount), 0)::bigint FROM payment_sessions
                 WHERE mandate_id = $1 AND type = 'next_in_series'
                   AND (payment_outcome IN ('pending', 'paid')
                        OR (payment_outcome = 'reserved' AND NOT (paid_amount = 0 AND voided_amount > 0)))",
                &[&md],
            )
            .await
            .unwrap();
        let kept: (i32, i64) = (kept.get(0), kept.get(1));
        assert_eq!(kept, (counted.get(0), counted.get(1)), "the counters equal the count");
        kept
    };

    let paid = env.call(charge(700, false)).await.body["id"].as_str().unwrap().to_owned();
    assert_eq!(env.event_about("payment_session.completed", &paid).await["data"]["payment_outcome"], "paid");
    assert_eq!(usage().await, (1, 700));
    let reserved = env.call(charge(300, true)).await.body["id"].as_str().unwrap().to_owned();
    assert_eq!(env.event_about("payment_session.completed", &reserved).await["data"]["payment_outcome"], "reserved");
    assert_eq!(usage().await, (2, 1000));
    // A void gives the occurrence back.
    env.call(Command::new("payment.void", &json!({"payment_session_id": reserved})).header("merchant-id", "gym")).await;
    env.event_about("payment.voided", &reserved).await;
    assert_eq!(usage().await, (1, 700));
    // So does a declined charge: the card now declines.
    let c = env.pool.get().await.unwrap();
    let token: String = c
        .query_one("SELECT vault_token FROM payment_methods pm JOIN mandates m ON m.payment_method_id = pm.id WHERE m.id = $1", &[&md])
        .await
        .unwrap()
        .get(0);
    let sealed = integration_tests::test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), "4000000000000002");
    c.execute("UPDATE vault_cards SET pan_sealed = $2 WHERE token = $1", &[&token, &sealed]).await.unwrap();
    let declined = env.call(charge(200, false)).await.body["id"].as_str().unwrap().to_owned();
    assert_eq!(env.event_about("payment_session.completed", &declined).await["data"]["payment_outcome"], "unpaid");
    assert_eq!(usage().await, (1, 700));
    // The cap counts what the counters say: three more fit, the fourth does not.
    c.execute(
        "UPDATE vault_cards SET pan_sealed = $2 WHERE token = $1",
        &[&token, &integration_tests::test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), "4242424242424242")],
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let id = env.call(charge(100, false)).await.body["id"].as_str().unwrap().to_owned();
        env.event_about("payment_session.completed", &id).await;
    }
    assert_eq!(usage().await, (4, 1000));
    let refused = env.call(charge(100, false)).await;
    assert_eq!(refused.error_code(), Some("mandate_max_occurrences_reached"), "{}", refused.body);
    env.finish().await;
}
