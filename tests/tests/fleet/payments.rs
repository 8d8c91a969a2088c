//! Every session type paying end to end: checkout → gateway (sandbox) → lifecycle.

use integration_tests::{assert_schema, eventually, seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use ps_contract::routing::exchange;
use serde_json::{json, Value};

const PAYS: &str = "4242424242424242";
const DECLINES: &str = "4000000000000002";
const NO_FUNDS: &str = "4000000000009995";
const EXPIRED: &str = "4000000000000069";
const LATER_FAILS: &str = "4000000000000341";

fn one_time(save: &str) -> Value {
    json!({"type": "one_time", "amount": 12550, "currency": "ZAR", "customer": {"name": "Ada", "email": "ada@example.com"},
           "return_url": "https://shop.example/return", "save_payment_method": save})
}

fn first_in_series(amount: i64) -> Value {
    let mut v: Value = serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-first_in_series.json")).unwrap();
    v["amount"] = json!(amount);
    // Valid from today, so a next_in_series may follow at once.
    v["mandate_options"] = json!({"type": "on_demand", "amount": {"min": 100, "max": 50000}, "max_occurrences": 12});
    v
}

fn next_by_mandate(mandate: &str, amount: i64) -> Value {
    json!({"type": "next_in_series", "amount": amount, "currency": "ZAR", "mandate_id": mandate})
}

async fn create(env: &TestEnv, merchant: &str, body: &Value) -> Value {
    let r = env.call(Command::create(merchant, body)).await;
    assert!(r.body["id"].is_string(), "create failed: {}", r.body);
    r.body
}

async fn count(env: &TestEnv, sql: &str, id: &str) -> i64 {
    env.pool.get().await.unwrap().query_one(sql, &[&id]).await.unwrap().get(0)
}

#[tokio::test]
async fn one_time_paid() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "shop", &one_time("never")).await;
    let id = s["id"].as_str().unwrap();
    let page = CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    assert!(page.text_of("state").is_some(), "after paying the customer sees a state page: {}", page.body);

    let done = env.event_about("payment_session.completed", id).await;
    assert_schema("event", &done);
    assert_schema("payment_session", &done["data"]);
    assert_eq!(done["data"]["status"], "completed");
    assert_eq!(done["data"]["payment_outcome"], "paid");
    assert_eq!(done["data"]["session_url"], Value::Null);
    assert_eq!(done["data"]["payment_method_id"], Value::Null, "save_payment_method never");
    assert_eq!(env.event_types_about(id), ["payment_session.created", "payment.succeeded", "payment_session.completed"]);

    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("state").as_deref(), Some("Payment successful"));
    assert!(page.body.contains(&format!("href=\"https://shop.example/return?session_id={id}\"")), "{}", page.body);
    assert!(!page.has("card_number"), "a completed session never shows the form");
    assert_eq!(count(&env, "SELECT count(*) FROM sandbox_ledger l JOIN payment_attempts a ON l.idempotency_key = a.processor_idempotency_key WHERE a.session_id = $1", id).await, 1);
    env.finish().await;
}

#[tokio::test]
async fn one_time_declined_then_retried_and_paid() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "shop", &one_time("never")).await;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let customer = CheckoutClient::new();
    customer.pay(url, DECLINES, false).await;
    let failed = env.event_about("payment.attempt_failed", id).await;
    assert_eq!(failed["data"]["status"], "failed", "payment.* carries the payment");
    let session = env.session(id).await;
    assert_eq!(session["status"], "active", "a customer-present session stays active after a decline");
    assert_eq!(session["payment_outcome"], "unpaid");
    assert_eq!(failed["data"]["last_payment_error"]["decline_code"], "generic_decline");
    assert_eq!(failed["data"]["last_payment_error"]["error_code"], "card_declined");

    let (page, _) = customer.get(url).await;
    assert_eq!(page.text_of("error").as_deref(), Some("Your card was declined. Please try again or use another card."));
    assert!(page.has("card_number"), "the form is offered again");

    customer.pay(url, PAYS, false).await;
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    assert_eq!(done["data"]["last_payment_error"], Value::Null);
    assert_eq!(
        env.event_types_about(id),
        ["payment_session.created", "payment.attempt_failed", "payment_session.updated", "payment.succeeded", "payment_session.completed"]
    );
    assert_eq!(count(&env, "SELECT count(*) FROM payment_attempts WHERE session_id = $1", id).await, 2);
    env.finish().await;
}

#[tokio::test]
async fn one_time_saving_always_prompt_accepted_and_prompt_refused() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let customer = CheckoutClient::new();
    let mut saved = vec![];
    for (save, tick) in [("always", false), ("prompt", true), ("prompt", false)] {
        let s = create(&env, "shop", &one_time(save)).await;
        let id = s["id"].as_str().unwrap();
        let (page, _) = customer.get(s["session_url"].as_str().unwrap()).await;
        assert_eq!(page.has("save_card"), save == "prompt", "the save choice is offered only for prompt");
        customer.pay(s["session_url"].as_str().unwrap(), PAYS, tick).await;
        let done = env.event_about("payment_session.completed", id).await;
        saved.push(done["data"]["payment_method_id"].as_str().map(str::to_owned));
    }
    assert!(saved[0].is_some() && saved[1].is_some(), "always, and prompt when accepted, save the card");
    assert!(saved[2].is_none(), "prompt refused saves nothing");
    for pm in saved.iter().flatten() {
        let usage: String =
            env.pool.get().await.unwrap().query_one("SELECT usage FROM payment_methods WHERE id = $1", &[pm]).await.unwrap().get(0);
        assert_eq!(usage, "on_session", "a card saved by one_time is for customer-present use only");
    }

    // Such a card can never be charged with the customer absent.
    let c = env.pool.get().await.unwrap();
    let cus: String =
        c.query_one("SELECT customer_id FROM payment_methods WHERE id = $1", &[saved[0].as_ref().unwrap()]).await.unwrap().get(0);
    let next = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "customer_id": cus, "payment_method_id": saved[0]});
    assert_eq!(env.call(Command::create("shop", &next)).await.error_code(), Some("payment_method_has_no_mandate"));
    env.finish().await;
}

#[tokio::test]
async fn first_in_series_paid_leaves_a_mandate_that_next_in_series_charges() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "gym", &first_in_series(19900)).await;
    let id = s["id"].as_str().unwrap();
    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    let terms = page.text_of("terms").unwrap();
    assert!(terms.contains("You authorise gym to charge this card between ZAR 1.00 and ZAR 500.00"), "{terms}");
    assert!(terms.contains("At most 12 charges"), "{terms}");
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;

    let mandate = env.event_about("mandate.created", &mandate_of(&env, id).await).await;
    assert_eq!(mandate["data"]["status"], "active");
    assert_eq!(mandate["data"]["terms"]["max_occurrences"], 12);
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    let md = done["data"]["mandate_id"].as_str().unwrap().to_owned();
    assert_eq!(mandate["data"]["id"], md);
    assert!(done["data"]["customer_id"].is_string() && done["data"]["payment_method_id"].is_string());
    assert_eq!(env.event_types_about(id), ["payment_session.created", "payment.succeeded", "payment_session.completed"]);

    let next = create(&env, "gym", &next_by_mandate(&md, 19900)).await;
    let paid = env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await;
    assert_eq!(paid["data"]["payment_outcome"], "paid");
    assert_eq!(paid["data"]["mandate_id"], md);
    env.finish().await;
}

/// The mandate id is known only once lifecycle has created it.
async fn mandate_of(env: &TestEnv, session: &str) -> String {
    let pool = env.pool.clone();
    let mut found = None;
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT;
    while found.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no mandate for {session}");
        found = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT mandate_id FROM payment_sessions WHERE id = $1", &[&session])
            .await
            .unwrap()
            .get::<_, Option<String>>(0);
        if found.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    found.unwrap()
}

#[tokio::test]
async fn first_in_series_with_amount_zero_verifies_the_card() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "gym", &first_in_series(0)).await;
    let id = s["id"].as_str().unwrap();
    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("pay").as_deref(), Some("Verify card and authorise"));
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "payment_method_verified");
    assert!(done["data"]["mandate_id"].is_string());
    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("state").as_deref(), Some("Card verified"));
    env.finish().await;
}

#[tokio::test]
async fn next_in_series_paid_and_declined() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let terms = json!({"type": "on_demand", "currency": "ZAR"});
    for (pan, outcome, decline) in
        [(PAYS, "paid", None), (NO_FUNDS, "unpaid", Some("insufficient_funds")), (EXPIRED, "unpaid", Some("expired_card"))]
    {
        let (_, _, md) = seed_mandate_with_card(&env.pool, "gym", terms.clone(), pan, (12, 2099), true).await;
        let s = create(&env, "gym", &next_by_mandate(&md, 5000)).await;
        let id = s["id"].as_str().unwrap();
        let done = env.event_about("payment_session.completed", id).await;
        assert_eq!(done["data"]["status"], "completed", "{pan}");
        assert_eq!(done["data"]["payment_outcome"], outcome, "{pan}");
        assert_eq!(done["data"]["last_payment_error"]["decline_code"].as_str(), decline, "{pan}");
        let expected = if outcome == "paid" { "payment.succeeded" } else { "payment.failed" };
        assert_eq!(env.event_types_about(id), ["payment_session.created", expected, "payment_session.completed"], "{pan}");
    }
    env.finish().await;
}

#[tokio::test]
async fn a_card_that_verifies_but_later_fails() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "gym", &first_in_series(500)).await;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), LATER_FAILS, false).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["payment_outcome"], "paid", "with the customer present it works");
    let next = create(&env, "gym", &next_by_mandate(done["data"]["mandate_id"].as_str().unwrap(), 500)).await;
    let later = env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await;
    assert_eq!(later["data"]["payment_outcome"], "unpaid", "without the customer it is declined");
    env.finish().await;
}

#[tokio::test]
async fn expiry() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "shop", &one_time("never")).await;
    let id = s["id"].as_str().unwrap();
    // Time passes: the session is now past its expires_at.
    env.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE payment_sessions SET expires_at = now() - interval '1 second' WHERE id = $1", &[&id])
        .await
        .unwrap();
    let expired = env.event_about("payment_session.updated", id).await;
    assert_eq!(expired["data"]["status"], "expired");
    assert_eq!(expired["data"]["payment_outcome"], "not_started");
    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("state").as_deref(), Some("This payment link has expired"));
    assert!(!page.has("card_number"));
    env.finish().await;
}

#[tokio::test]
async fn cancel_and_cancel_by_another_merchant() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = create(&env, "shop", &one_time("never")).await;
    let id = s["id"].as_str().unwrap();
    let body = json!({"payment_session_id": id});
    let foreign = env.call(Command::new("payment_session.cancel", &body).header("merchant-id", "rival")).await;
    assert_eq!(foreign.error_code(), Some("session_not_found"), "another merchant's session is as if absent");
    assert!(!foreign.body.to_string().contains("shop"));

    let cancelled = env.call(Command::new("payment_session.cancel", &body).header("merchant-id", "shop")).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    assert_eq!(env.event_about("payment_session.updated", id).await["data"]["status"], "cancelled");
    let again = env.call(Command::new("payment_session.cancel", &body).header("merchant-id", "shop")).await;
    assert_eq!(again.error_code(), Some("session_not_active"));
    let (page, _) = CheckoutClient::new().get(s["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("state").as_deref(), Some("This payment was cancelled"));
    env.finish().await;
}

#[tokio::test]
async fn manual_capture_reserves_then_captures_or_voids() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let mut body = one_time("never");
    body["capture_method"] = json!("manual");
    let mut ids = vec![];
    for _ in 0..2 {
        let s = create(&env, "shop", &body).await;
        let id = s["id"].as_str().unwrap().to_owned();
        CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
        let done = env.event_about("payment_session.completed", &id).await;
        assert_eq!(done["data"]["payment_outcome"], "reserved");
        ids.push(id);
    }
    let capture = env
        .call(Command::new("payment.capture", &json!({"payment_session_id": ids[0], "amount": 10000})).header("merchant-id", "shop"))
        .await;
    assert_eq!(capture.body["payment_outcome"], "reserved", "answered at once; the capture follows: {}", capture.body);
    let captured = env.event_about("payment.captured", &ids[0]).await;
    assert_eq!(captured["data"]["paid_amount"], 10000);
    assert_eq!(env.session(&ids[0]).await["payment_outcome"], "reserved", "the session stays reserved; the payment is captured");
    assert_eq!(
        count(&env, "SELECT captured_amount FROM payment_attempts WHERE session_id = $1 AND status = 'succeeded'", &ids[0]).await,
        10000
    );

    let void = env.call(Command::new("payment.void", &json!({"payment_session_id": ids[1]})).header("merchant-id", "shop")).await;
    assert!(void.body["id"].is_string(), "{}", void.body);
    let voided = env.event_about("payment.voided", &ids[1]).await;
    assert_eq!(voided["data"]["status"], "cancelled");
    let session = env.session(&ids[1]).await;
    assert_eq!((session["status"].as_str(), session["payment_outcome"].as_str()), (Some("completed"), Some("reserved")));

    // Settled is settled: a capture of the voided session is refused.
    let late = env.call(Command::new("payment.capture", &json!({"payment_session_id": ids[1]})).header("merchant-id", "shop")).await;
    assert_eq!(late.error_code(), Some("illegal_transition"));
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE operation IN ('capture', 'void')").await, 2);
    env.finish().await;
}

#[tokio::test]
async fn revoked_mandate_refuses_every_later_charge() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), PAYS, (12, 2099), true).await;
    let foreign = env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "rival")).await;
    assert_eq!(foreign.error_code(), Some("mandate_not_found"));
    let revoked = env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "gym")).await;
    assert_eq!(revoked.body["status"], "revoked", "{}", revoked.body);
    assert_eq!(env.event_about("mandate.revoked", &md).await["data"]["status"], "revoked");
    let refused = env.call(Command::create("gym", &next_by_mandate(&md, 100))).await;
    assert_eq!(refused.error_code(), Some("mandate_revoked"));
    env.finish().await;
}

#[tokio::test]
async fn redelivering_an_authorize_charges_once() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), PAYS, (12, 2099), true).await;
    let s = create(&env, "gym", &next_by_mandate(&md, 700)).await;
    let id = s["id"].as_str().unwrap();
    env.event_about("payment_session.completed", id).await;

    // The same authorize again, as a broker redelivery after a lost ack would bring it
    // (a new message id, so only the processor's idempotency key stands in the way).
    let body = env.sent_bodies("gateway.authorize").await.remove(0);
    let lifecycle_duplicates =
        || ps_runtime::metrics::MESSAGES.with_label_values(&[ps_runtime::topology::LIFECYCLE.name, "duplicate"]).get();
    let before = lifecycle_duplicates();
    env.publish(exchange::INTERNAL, "gateway.authorize", &body, "redelivered-1", "gym").await;
    env.wait_for_count("SELECT count(*) FROM processor_calls WHERE operation = 'authorize'", 2).await;
    assert_eq!(
        env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'authorize'").await,
        1,
        "one charge in the sandbox's own ledger"
    );
    eventually("lifecycle to see the duplicate result", || lifecycle_duplicates() > before).await;
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment.succeeded'").await, 1);
    assert_eq!(env.session(id).await["payment_outcome"], "paid");
    env.finish().await;
}

#[tokio::test]
async fn a_processor_timeout_is_resolved_by_lookup_not_by_charging_again() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[("SANDBOX_LATENCY_MS", "1500"), ("PROCESSOR_TIMEOUT_MS", "200")]).await;
    env.start_lifecycle(&[]).await;
    env.start_intake().await;
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), PAYS, (12, 2099), true).await;
    let s = create(&env, "gym", &next_by_mandate(&md, 900)).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    env.wait_for_count("SELECT count(*) FROM processor_calls", 2).await;
    let results: Vec<String> = env
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT result FROM processor_calls ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(results, ["timeout", "resolved_by_lookup"]);
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn two_lifecycle_replicas_never_lose_an_update() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_lifecycle(&[]).await;
    env.start_lifecycle(&[]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;

    // Many payments at once, their results spread over both replicas.
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), PAYS, (12, 2099), true).await;
    let mut sent = vec![];
    for _ in 0..20 {
        sent.push(env.send(Command::create("gym", &next_by_mandate(&md, 100))).await);
    }
    for corr in &sent {
        let s = env.reply(corr).await.body;
        env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    }
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions WHERE payment_outcome = 'paid'").await, 20);
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment_session.completed'").await, 20);

    // Captures and voids of one reservation, all at once, to both replicas: one wins.
    let mut body = one_time("never");
    body["capture_method"] = json!("manual");
    let s = create(&env, "shop", &body).await;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    env.event_about("payment_session.completed", id).await;
    let mut racing = vec![];
    for i in 0..10 {
        let key = if i % 2 == 0 { "payment.capture" } else { "payment.void" };
        racing.push(env.send(Command::new(key, &json!({"payment_session_id": id})).header("merchant-id", "shop")).await);
    }
    let mut accepted = 0;
    for corr in &racing {
        // The winning settlement (and repeats of it) get the session; the other one is refused while the
        // winner is in flight (payment_processing) or once it has landed (illegal_transition). None is dropped.
        let r = env.reply(corr).await;
        accepted += (r.body["id"] == id) as usize;
        assert!(r.body["id"] == id || matches!(r.error_code(), Some("payment_processing" | "illegal_transition")), "{}", r.body);
    }
    assert!(accepted >= 1, "one settlement was accepted");
    // The session stays reserved (Moment's); its payment says which settlement won.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let payment = loop {
        let p = env.session(id).await["payment"].clone();
        if p["paid_amount"].as_i64() > Some(0) || p["voided_amount"].as_i64() > Some(0) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "the settlement never landed: {p}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(matches!(payment["status"].as_str(), Some("succeeded" | "cancelled")), "{payment}");
    assert_eq!(env.session(id).await["payment_outcome"], "reserved");
    assert_eq!(
        env.count("SELECT count(*) FROM sandbox_ledger WHERE operation IN ('capture', 'void')").await,
        1,
        "one settlement reached the processor"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_refused_capture_is_told_to_the_merchant_and_the_reservation_stands() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let mut body = one_time("never");
    body["capture_method"] = json!("manual");
    let s = create(&env, "shop", &body).await;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    env.event_about("payment_session.completed", id).await;
    let attempt: String =
        env.pool.get().await.unwrap().query_one("SELECT id FROM payment_attempts WHERE session_id = $1", &[&id]).await.unwrap().get(0);
    // A capture went out as the attempt's first settlement request, and the processor refused it.
    env.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE payment_attempts SET settlement_requests = 1, settlement = 'capture_requested' WHERE id = $1", &[&attempt])
        .await
        .unwrap();
    let refused = json!({"operation": "capture", "attempt_id": attempt, "session_id": id, "merchant_id": "shop", "outcome": "failed",
        "amount": 12550, "currency": "ZAR", "error_code": "processing_error", "decline_code": null, "message": null, "card": null,
        "card_token": null, "processor_reference": null, "processor_idempotency_key": format!("capture:{attempt}:1")});
    env.publish(exchange::INTERNAL, "gateway.result", refused.to_string().as_bytes(), &format!("result:capture:{attempt}:1"), "shop").await;
    let updated = env.event_about("payment_session.updated", id).await;
    assert_eq!(updated["data"]["payment_outcome"], "reserved");
    assert_eq!(updated["data"]["last_payment_error"]["error_code"], "processing_error");
    // And it can be captured again.
    env.call(Command::new("payment.capture", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(env.event_about("payment.captured", id).await["data"]["paid_amount"], 12550);
    env.finish().await;
}

/// One settlement at a time: what is open after a capture is not known until
/// it is answered, so a second capture or a void asked meanwhile is refused
/// (409), never dropped nor sent; once answered, the next capture goes through.
#[tokio::test]
async fn a_capture_or_void_while_a_capture_is_in_flight_is_refused_not_dropped() {
    let mut env = TestEnv::new().await;
    // A slow processor keeps the capture in flight while the void arrives.
    env.start_gateway(&[("SANDBOX_LATENCY_MS", "1500")]).await;
    env.start_lifecycle(&[]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let mut body = one_time("never");
    body["capture_method"] = json!("manual");
    let s = create(&env, "shop", &body).await;
    let id = s["id"].as_str().unwrap().to_owned();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), PAYS, false).await;
    assert_eq!(env.event_about("payment_session.completed", &id).await["data"]["payment_outcome"], "reserved");
    let cmd = |name: &str| Command::new(name, &json!({"payment_session_id": id})).header("merchant-id", "shop");
    let capture =
        |amount: i64| Command::new("payment.capture", &json!({"payment_session_id": id, "amount": amount})).header("merchant-id", "shop");
    assert_eq!(env.call(capture(5000)).await.body["payment_outcome"], "reserved");
    let void = env.call(cmd("payment.void")).await;
    assert_eq!(void.error_code(), Some("payment_processing"), "{}", void.body);
    let second = env.call(capture(2000)).await;
    assert_eq!(second.error_code(), Some("payment_processing"), "{}", second.body);
    let first = env.event_about("payment.captured", &id).await["data"].clone();
    assert_eq!(
        (first["status"].as_str(), first["paid_amount"].as_i64(), first["voided_amount"].as_i64()),
        (Some("succeeded"), Some(5000), Some(0))
    );
    assert_eq!(env.session(&id).await["payment_outcome"], "reserved");
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'void'").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'capture' AND outcome = 'succeeded'").await, 1);
    // Answered: the next capture takes what it asks of the 7550 still open.
    assert!(env.call(capture(2000)).await.error_code().is_none());
    assert_eq!(env.event_about("payment.captured", &id).await["data"]["paid_amount"], 7000);
    assert_eq!(env.count("SELECT captured_amount FROM payment_attempts WHERE status = 'succeeded'").await, 7000);
    env.finish().await;
}
