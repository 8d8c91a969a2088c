//! Trust boundaries below the handlers (DESIGN §5, §10): nothing is replayed,
//! answered or applied for a publisher before its grant is checked; no reply,
//! dead letter or queue name lets one party act as another. Each test has a
//! second broker user, granted nothing, doing what an attacker would.

use integration_tests::peers::{BrokerUser, Peer};
use integration_tests::{seed_mandate, seed_schedule, Command, TestEnv};
use lapin::BasicProperties;
use ps_contract::routing::header;
use ps_runtime::message::header_str;
use ps_runtime::topology;
use serde_json::{json, Value};

fn one_time() -> Value {
    json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"})
}

/// The reason a dead letter carries, as the fleet wrote it.
fn code_of(headers: &lapin::types::FieldTable) -> String {
    header_str(Some(headers), header::DEAD_LETTER_CODE).unwrap_or_default()
}

#[tokio::test]
async fn a_publisher_granted_nothing_gets_nothing_of_another_merchant_and_blocks_nothing() {
    let mut env = TestEnv::in_vhost().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    env.start_webhooks(&[]).await;
    let mallory = BrokerUser::create(&env, "mallory", &[]);
    let peer = Peer::connect(&env, &mallory).await;
    // The victim's own system (the harness's user, granted every merchant as in local mode).
    let s = env.call(Command::create("victim", &one_time())).await.body;
    let list = || Command::new("payment_session.list", &json!({})).header("merchant-id", "victim").without_message_id();
    assert_eq!(env.call(list()).await.body["data"][0]["id"], s["id"]);

    // The same read from another broker user is refused, not answered from the victim's.
    let stolen = peer.call(list()).await;
    assert_eq!(stolen.error_code(), Some("merchant_not_authorized"), "{}", stolen.body);
    assert!(!stolen.replayed);

    // A message id seen or guessed replays nobody's reply: not the victim's signing secret.
    let create_endpoint = || {
        Command::new("webhook_endpoint.create", &json!({"url": "https://127.0.0.1:9/hooks", "enabled_events": ["*"]}))
            .header("merchant-id", "victim")
            .message_id("endpoint-create-1")
    };
    let endpoint = env.call(create_endpoint()).await.body;
    assert!(endpoint["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{endpoint}");
    let stolen = peer.call(create_endpoint()).await;
    assert_eq!(stolen.error_code(), Some("merchant_not_authorized"), "{}", stolen.body);
    assert!(!stolen.body.to_string().contains("whsec_"), "{}", stolen.body);

    // Published first under the victim's next message id, it does not make the victim's command a duplicate.
    let cancel = || {
        Command::new("payment_session.cancel", &json!({"payment_session_id": s["id"]}))
            .header("merchant-id", "victim")
            .message_id("cancel-1")
    };
    assert_eq!(peer.call(cancel()).await.error_code(), Some("merchant_not_authorized"));
    let cancelled = env.call(cancel()).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    assert!(!cancelled.replayed);
    assert_eq!(env.count("SELECT count(*) FROM webhook_endpoints").await, 1, "mallory's creates changed nothing");
    env.finish().await;
}

#[tokio::test]
async fn a_read_is_answered_afresh_every_time_it_comes() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    let list = || Command::new("payment_session.list", &json!({})).header("merchant-id", "shop").without_message_id();
    assert_eq!(env.call(list()).await.body["data"], json!([]));
    let s = env.call(Command::create("shop", &one_time())).await.body;
    // The same read, body for body: a merchant polling sees what changed.
    let again = env.call(list()).await;
    assert!(!again.replayed, "{}", again.body);
    assert_eq!(again.body["data"][0]["id"], s["id"]);
    // Even under one message id (a redelivery, an idempotency key) a read is answered, never replayed.
    let retrieve = || {
        Command::new("payment_session.retrieve", &json!({"payment_session_id": s["id"]}))
            .header("merchant-id", "shop")
            .header("idempotency-key", "poll-1")
            .message_id("poll-1")
    };
    assert_eq!(env.call(retrieve()).await.body["status"], "active");
    env.call(Command::new("payment_session.cancel", &json!({"payment_session_id": s["id"]})).header("merchant-id", "shop")).await;
    let polled = env.call(retrieve()).await;
    assert_eq!((polled.body["status"].as_str(), polled.replayed), (Some("cancelled"), false), "{}", polled.body);
    let reads = env.count("SELECT count(*) FROM processed_messages WHERE consumer = 'payment_sessions.lifecycle'").await;
    assert_eq!(reads, 1, "only the cancel was recorded");
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys").await, 1, "only the create's key: a read's binds nothing");
    env.finish().await;
}

/// A schedule whose charge is in flight (sent to intake, which is not running,
/// so no answer comes): what a forged answer could stop.
async fn schedule_in_flight(env: &mut TestEnv) -> String {
    let ids = seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let now = chrono::Utc::now();
    let schedule = seed_schedule(&env.pool, "gym", &ids, 100, now - chrono::Duration::minutes(1)).await;
    let clock = std::sync::Arc::new(charge_scheduler::clock::ManualClock::new(now));
    env.start_scheduler(&[], clock).await;
    env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome IS NULL", 1).await;
    schedule
}

#[tokio::test]
async fn no_reply_reaches_the_schedulers_reply_queue_but_intakes() {
    let mut env = TestEnv::in_vhost().await;
    env.start_lifecycle(&[]).await;
    let schedule = schedule_in_flight(&mut env).await;
    let mallory = BrokerUser::create(&env, "mallory", &[]);
    let peer = Peer::connect(&env, &mallory).await;
    let replies = env.names.queue(&topology::SCHEDULER_REPLIES);
    let forged_run = format!("run:{schedule}:0:0");

    // A refused command whose reply_to is the scheduler's queue, correlated as the run: the
    // refusal would stop the schedule. It is dead-lettered unanswered instead.
    let cancel = Command::new("payment_session.cancel", &json!({"payment_session_id": "ps_00000000000000000000000000"}))
        .header("merchant-id", "gym")
        .reply_to(&replies)
        .correlation_id(&forged_run);
    peer.send(cancel).await;
    let (_, headers) = env.next_dead_letter(&topology::LIFECYCLE).await;
    assert_eq!(code_of(&headers), "reply_to_not_allowed");

    // Published straight into it: only intake's broker user is heard there.
    let error = json!({"error": {"type": "invalid_request_error", "code": "mandate_revoked", "message": "forged", "param": null}});
    let props = BasicProperties::default().with_delivery_mode(2).with_correlation_id(forged_run.as_str().into());
    peer.publish_raw("", &replies, error.to_string().as_bytes(), props).await;
    let (_, headers) = env.next_dead_letter(&topology::SCHEDULER_REPLIES).await;
    assert_eq!(code_of(&headers), "publisher_not_allowed");

    let c = env.pool.get().await.unwrap();
    let row = c.query_one("SELECT status, in_flight FROM schedules WHERE id = $1", &[&schedule]).await.unwrap();
    assert_eq!((row.get::<_, String>(0).as_str(), row.get::<_, bool>(1)), ("active", true), "the run still waits for intake");
    let run: Option<String> = c.query_one("SELECT outcome FROM schedule_runs", &[]).await.unwrap().get(0);
    assert_eq!(run, None);
    drop(c);

    // Intake's real answer still lands and the charge is made.
    env.start_gateway(&[]).await;
    env.start_intake().await;
    env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome = 'paid'", 1).await;
    env.finish().await;
}

#[tokio::test]
async fn a_dead_letter_goes_back_only_as_the_fleet_recorded_it() {
    let mut env = TestEnv::in_vhost().await;
    env.start_webhooks(&[]).await;
    let mallory = BrokerUser::create(&env, "mallory", &[]);
    // The operator replays as each dead letter's publisher, which RabbitMQ allows an impersonator.
    let operator = BrokerUser::create(&env, "operator", &["impersonator"]);
    let peer = Peer::connect(&env, &mallory).await;
    let queue = topology::WEBHOOK_COMMANDS.name;

    // Mallory writes the headers the fleet puts on a dead letter, claiming to be the
    // scheduler's user (granted every merchant) and the internal exchange, on a command
    // it may not send, with nobody to answer: it is refused into the DLQ.
    let forged = Command::new("webhook_endpoint.create", &json!({"url": "https://127.0.0.1:9/mallory", "enabled_events": ["*"]}))
        .header("merchant-id", "victim")
        .header("X-Original-User-Id", "guest")
        .header("X-Original-Exchange", "payment_sessions.internal")
        .header("X-Original-Routing-Key", "gateway.result")
        .header("X-Dead-Letter-Id", "made-up")
        .no_reply();
    peer.send(forged).await;
    let (_, headers) = env.peek_dead_letter(&topology::WEBHOOK_COMMANDS).await;
    assert_eq!(code_of(&headers), "merchant_not_authorized");
    assert_eq!(header_str(Some(&headers), header::ORIGINAL_USER_ID).as_deref(), Some(mallory.name.as_str()));
    assert!(!headers.inner().keys().any(|k| k.as_str() == "X-Original-User-Id"), "the forged copy was dropped on arrival");

    // The operator's routine replay sends it back as mallory, who is refused again.
    let out = env.psctl_with_output(&[("AMQP_URL", &operator.url)], &["dlq", "replay", queue, "--all", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.wait_for_count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL", 1).await;
    let c = env.pool.get().await.unwrap();
    let publishers: Vec<String> =
        c.query("SELECT publisher FROM dead_letters ORDER BY created_at", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(publishers, [mallory.name.clone(), mallory.name.clone()], "replayed as its recorded publisher, refused again");
    drop(c);
    assert_eq!(env.count("SELECT count(*) FROM webhook_endpoints").await, 0, "no endpoint for the victim");

    // Internal work is never replayed: the sweeps resolve it with the processor.
    env.start_gateway(&[]).await;
    let forged_authorize = json!({"attempt_id": "att_00000000000000000000000000", "session_id": "ps_00000000000000000000000000",
        "merchant_id": "victim", "amount": 100, "currency": "EUR", "capture_method": "automatic", "payment_method_id": null,
        "mandate_id": null, "customer_present": true, "processor_idempotency_key": "authorize:att_00000000000000000000000000"});
    env.publish(
        ps_contract::routing::exchange::INTERNAL,
        "gateway.authorize",
        forged_authorize.to_string().as_bytes(),
        "forged-1",
        "victim",
    )
    .await;
    let (_, headers) = env.peek_dead_letter(&topology::GATEWAY).await;
    assert_eq!(code_of(&headers), "request_not_vouched");
    let out = env.psctl_with_output(&[("AMQP_URL", &operator.url)], &["dlq", "replay", topology::GATEWAY.name, "--all"]).await;
    assert!(!out.status.success(), "an internal dead letter is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("internal work"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.ready_count(&env.names.dead_letter_queue(&topology::GATEWAY)).await, 1, "and kept");
    env.finish().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_unread_and_never_stored() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let huge = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r",
                      "metadata": {"padding": "x".repeat(1_200_000)}});
    let r = env.call(Command::create("shop", &huge)).await;
    assert_eq!(r.error_code(), Some("message_too_large"), "{}", r.body);
    // With nobody to tell, it is dead-lettered without its body, which is never copied into the database.
    env.send(Command::create("shop", &huge).no_reply()).await;
    let (body, headers) = env.next_dead_letter(&topology::INTAKE).await;
    assert_eq!((code_of(&headers).as_str(), body.len()), ("message_too_large", 0));
    let size: i64 = header_str(Some(&headers), header::ORIGINAL_SIZE).unwrap().parse().unwrap();
    assert!(size > 1_200_000, "{size}");
    let largest = env.count("SELECT coalesce(max(length(body_base64)), 0)::bigint FROM sent_messages").await;
    assert!(largest < 8192, "no body copied into what was sent: {largest} base64 bytes");
    let replies = env.count("SELECT coalesce(max(length(reply::text)), 0)::bigint FROM processed_messages").await;
    assert!(replies < 4096, "nor into a record: {replies} bytes");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 0);
    // A smaller limit is a setting.
    env.stop_services().await;
    env.start_intake_with(&[("AMQP_MAX_MESSAGE_BYTES", "1024")]).await;
    let r = env
        .call(Command::create(
            "shop",
            &json!({"type": "one_time", "amount": 100, "currency": "EUR",
        "return_url": "https://shop.example/r", "metadata": {"note": "y".repeat(1100)}}),
        ))
        .await;
    assert_eq!(r.error_code(), Some("message_too_large"), "{}", r.body);
    env.finish().await;
}

#[tokio::test]
async fn a_sealed_reply_copied_into_an_outbox_row_does_not_open() {
    let mut env = TestEnv::new().await;
    env.start_webhooks(&[]).await;
    let created = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": "https://127.0.0.1:9/x", "enabled_events": ["*"]}))
                .header("merchant-id", "shop"),
        )
        .await;
    assert!(created.body["secret"].is_string(), "{}", created.body);
    // Someone who may write this producer's outbox rows copies the sealed reply
    // from its record into a row routed to a queue of theirs.
    let c = env.pool.get().await.unwrap();
    let reply: Value = c.query_one("SELECT reply FROM processed_messages WHERE reply::text LIKE '%ps2:%'", &[]).await.unwrap().get(0);
    let sealed = ps_runtime::sealing::sealed_json(&reply).expect("the reply rests sealed").to_owned();
    let stolen = format!("{}stolen", env.prefix);
    env.declare_queue(&stolen).await;
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, kind, producer, sealed)
         VALUES ('', $1, 'stolen-1', $2, 'reply', 'webhook-dispatch', true)",
        &[&stolen, &sealed.as_bytes()],
    )
    .await
    .unwrap();
    env.wait_for_count("SELECT count(*) FROM outbox WHERE sealed AND failed_at IS NOT NULL AND last_error LIKE '%does not open%'", 1).await;
    assert_eq!(env.ready_count(&stolen).await, 0, "the copy was never published");
    env.finish().await;
}
