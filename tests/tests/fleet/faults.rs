//! Issue 9's defects, each reproduced by doing to the fleet what production
//! does: a message lost, a processor that never answers, a settlement nobody
//! heard back about, one merchant's endpoint hanging under a backlog, a bug
//! that panics. The long whole-fleet scenarios are in `tests/faults` (`make faults`).

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{eventually, http_get, seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use ps_contract::routing::exchange;
use ps_runtime::topology;
use serde_json::{json, Value};

const PAYS: &str = "4242424242424242";

fn on_demand() -> Value {
    json!({"type": "on_demand", "currency": "ZAR"})
}

fn next_by_mandate(mandate: &str, amount: i64) -> Value {
    json!({"type": "next_in_series", "amount": amount, "currency": "ZAR", "mandate_id": mandate})
}

async fn ledger(env: &TestEnv) -> Vec<(String, String)> {
    let c = env.pool.get().await.unwrap();
    let rows = c.query("SELECT operation, outcome FROM sandbox_ledger ORDER BY created_at", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn gateway_handled() -> u64 {
    ["applied", "duplicate", "dead_lettered"]
        .iter()
        .map(|o| ps_runtime::metrics::MESSAGES.with_label_values(&[topology::GATEWAY.name, o]).get())
        .sum()
}

/// The authorize of a `next_in_series` is lost before the processor saw it.
/// Lifecycle stops waiting, asks the processor (which has no record), and the
/// session ends unpaid, freeing the mandate's occurrence; the lost authorize,
/// turning up afterwards, is not executed.
#[tokio::test]
async fn a_lost_authorize_is_resolved_by_asking_the_processor_and_never_runs_late() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[("ATTEMPT_ABANDON_AFTER_SECS", "1")]).await;
    let (_, _, md) = seed_mandate_with_card(&env.pool, "gym", on_demand(), PAYS, (12, 2099), true).await;
    let s = env.call(Command::create("gym", &next_by_mandate(&md, 700))).await.body;
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["payment_outcome"], "pending", "{s}");

    // Lost: taken off the gateway's queue before any gateway saw it.
    let (lost, _) = env.next_message(&env.names.queue(&topology::GATEWAY)).await;
    env.start_gateway(&[]).await;
    let failed = env.event_about("payment.failed", id).await;
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["last_payment_error"]["decline_code"], "processor_no_record");
    let s = env.session(id).await;
    assert_eq!((s["status"].as_str(), s["payment_outcome"].as_str()), (Some("completed"), Some("unpaid")));

    let before = gateway_handled();
    env.publish(exchange::INTERNAL, "gateway.authorize", &lost, "lost-authorize-again", "gym").await;
    eventually("the gateway handled the late authorize", || gateway_handled() > before).await;
    assert!(ledger(&env).await.is_empty(), "the processor was never asked to charge");
    assert_eq!(env.ready_count(&env.names.dead_letter_queue(&topology::GATEWAY)).await, 0, "not poison: an attempt that ended");
    let calls = env.wait_for_count("SELECT count(*) FROM processor_calls WHERE result = 'resolved_no_record'", 1).await;
    assert_eq!(calls, 1);
    env.finish().await;
}

/// The processor charged, and its answer was lost on the way back. Before, the
/// attempt was abandoned as unpaid while the money stayed taken; now the
/// processor's record decides: the session is paid, charged once, not voided.
#[tokio::test]
async fn a_lost_result_is_resolved_from_the_processors_record() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let body = json!({"type": "one_time", "amount": 12550, "currency": "ZAR", "return_url": "https://shop.example/return"});
    let s = env.call(Command::create("shop", &body)).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    env.wait_for_count("SELECT count(*) FROM sandbox_ledger WHERE outcome = 'succeeded'", 1).await;
    let lifecycle = env.names.queue(&topology::LIFECYCLE);
    eventually_ready(&env, &lifecycle).await;
    assert_eq!(env.purge(&lifecycle).await, 1, "the gateway's result, lost");
    env.pool.get().await.unwrap().execute("UPDATE payment_sessions SET expires_at = now() WHERE id = $1", &[&id]).await.unwrap();

    env.start_lifecycle(&[("ATTEMPT_ABANDON_AFTER_SECS", "1")]).await;
    let paid = env.event_about("payment.succeeded", id).await;
    assert_eq!((paid["data"]["status"].as_str(), paid["data"]["paid_amount"].as_i64()), (Some("succeeded"), Some(12550)));
    assert_eq!(ledger(&env).await, [("authorize".to_owned(), "succeeded".to_owned())], "charged once, and kept");
    assert_eq!(env.session(id).await["status"], "completed", "past its expiry, but paid: never marked expired");
    env.finish().await;
}

async fn eventually_ready(env: &TestEnv, queue: &str) {
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT;
    while env.ready_count(queue).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing reached {queue}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Exactly what a void leaves when its `gateway.void` never arrives: asked for
/// as the first settlement, an hour ago, with no answer.
async fn void_requested_and_lost(c: &tokio_postgres::Client, session: &str) {
    c.execute(
        "UPDATE payment_attempts SET settlement = 'void_requested', settlement_requests = 1, settlement_amount = amount,
             updated_at = now() - interval '1 hour' WHERE session_id = $1 AND status = 'succeeded'",
        &[&session],
    )
    .await
    .unwrap();
}

/// A void whose request was lost (dead-lettered, or published by a replica
/// that died) is asked for again under the same key until the processor answers.
#[tokio::test]
async fn an_unanswered_void_is_asked_again_until_the_processor_answers() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "1")]).await;
    env.start_intake().await;
    let (_, _, md) = seed_mandate_with_card(&env.pool, "gym", on_demand(), PAYS, (12, 2099), true).await;
    let mut body = next_by_mandate(&md, 900);
    body["capture_method"] = json!("manual");
    let id = env.call(Command::create("gym", &body)).await.body["id"].as_str().unwrap().to_owned();
    let reserved = env.event_about("payment_session.completed", &id).await;
    assert_eq!(reserved["data"]["payment_outcome"], "reserved");

    let c = env.pool.get().await.unwrap();
    void_requested_and_lost(&c, &id).await;
    let voided = env.event_about("payment.voided", &id).await;
    assert_eq!(voided["data"]["status"], "cancelled");
    assert_eq!(env.session(&id).await["payment_outcome"], "reserved", "the session stays reserved; its payment is cancelled");
    let settled = env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'void' AND outcome = 'succeeded'").await;
    assert_eq!(settled, 1);
    let key: String = c.query_one("SELECT idempotency_key FROM sandbox_ledger WHERE operation = 'void'", &[]).await.unwrap().get(0);
    assert!(key.ends_with(":1"), "the lost request's own key: {key}");
    env.finish().await;
}

/// One merchant's endpoint hangs with a backlog older than anything else due;
/// another merchant's deliveries keep flowing. Before, each batch took the
/// 5,000 oldest due deliveries across all endpoints: all the stuck endpoint's.
#[tokio::test]
async fn a_hanging_endpoints_backlog_does_not_starve_other_merchants() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let stuck = Receiver::start(&[], Answer::Hang).await;
    let fine = Receiver::start(&[], Answer::Status(200)).await;
    let ep = |merchant: &'static str, url: String| {
        Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": ["*"]})).header("merchant-id", merchant)
    };
    env.start_webhooks(&[("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2"), ("WEBHOOK_TIMEOUT_MS", "60000")]).await;
    let slow = env.call(ep("slowpoke", stuck.url.clone())).await.body;
    env.call(ep("shop", fine.url.clone())).await;
    integration_tests::seed_webhook_backlog(&env.pool, "slowpoke", slow["id"].as_str().unwrap(), 6_000).await;
    for _ in 0..10 {
        env.send(
            Command::create(
                "shop",
                &json!({"type": "one_time", "amount": 100, "currency": "EUR",
            "return_url": "https://shop.example/r"}),
            )
            .no_reply(),
        )
        .await;
    }
    fine.wait_for(10).await;
    assert_eq!(stuck.received().len(), 2, "the stuck endpoint holds only its own two slots");
    stuck.release();
    env.finish().await;
}

/// A handler that panics (a bug) dead-letters its message with the reason and
/// answers the sender; the consumer lives on, and the replica stays ready.
#[tokio::test]
async fn a_panicking_handler_dead_letters_its_message_and_the_consumer_lives_on() {
    let mut env = TestEnv::new().await;
    let health = env.start_intake_with(&[("PS_FAULT_PANIC_ON", "payment_session.create")]).await;
    let body = json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"});
    for _ in 0..2 {
        let r = env.call(Command::create("shop", &body)).await;
        assert_eq!(r.error_code(), Some("internal_error"), "{}", r.body);
    }
    let (_, headers) = env.next_dead_letter(&topology::INTAKE).await;
    let reason = ps_runtime::message::header_str(Some(&headers), "x-dead-letter-reason").unwrap_or_default();
    assert!(reason.contains("the handler panicked: fault injection"), "{reason}");
    let (status, why) = http_get(health, "/readyz").await;
    assert_eq!((status, why.as_str()), (200, "ready\n"));
    env.finish().await;
}

/// Giving back a charge taken for a session that ended is ours to finish: a
/// void the processor refuses with a retryable error is asked again, under a
/// new key, until it goes through.
#[tokio::test]
async fn a_late_charges_failed_void_is_retried_until_it_goes_through() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "1")]).await;
    env.start_intake().await;
    // The sandbox's first settlement of this card's payment fails with processing_error.
    let (_, _, md) = seed_mandate_with_card(&env.pool, "gym", on_demand(), "4000000000000309", (12, 2099), true).await;
    let mut body = next_by_mandate(&md, 900);
    body["capture_method"] = json!("manual");
    let id = env.call(Command::create("gym", &body)).await.body["id"].as_str().unwrap().to_owned();
    env.event_about("payment_session.completed", &id).await;

    // What a late success leaves: the session ended unpaid, the charge to give back.
    let c = env.pool.get().await.unwrap();
    c.execute("UPDATE payment_sessions SET status = 'expired', payment_outcome = 'unpaid' WHERE id = $1", &[&id]).await.unwrap();
    void_requested_and_lost(&c, &id).await;
    env.event_about("payment.voided", &id).await;
    assert_eq!(env.session(&id).await["status"], "expired", "the session stays as it ended");
    let voids: Vec<(String, String)> = c
        .query("SELECT idempotency_key, outcome FROM sandbox_ledger WHERE operation = 'void' ORDER BY created_at", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0).rsplit(':').next().unwrap().to_owned(), r.get(1)))
        .collect();
    assert_eq!(voids, [("1".to_owned(), "failed".to_owned()), ("2".to_owned(), "succeeded".to_owned())]);
    env.finish().await;
}
