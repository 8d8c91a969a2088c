//! The payment object and refunds (DESIGN §9), end to end through the
//! checkout, gateway (sandbox) and lifecycle.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{assert_schema, seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use ps_contract::routing::exchange;
use serde_json::{json, Value};

const PAYS: &str = "4242424242424242";
const REFUNDS_FAIL: &str = "4000000000005126";

fn one_time(amount: i64, capture: &str) -> Value {
    json!({"type": "one_time", "amount": amount, "currency": "ZAR", "capture_method": capture, "return_url": "https://shop.example/r"})
}

/// A `one_time` paid at the checkout with `card`: the completed event's session.
async fn paid(env: &TestEnv, amount: i64, capture: &str, card: &str) -> Value {
    let s = env.call(Command::create("shop", &one_time(amount, capture))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), card, false).await;
    env.event_about("payment_session.completed", id).await["data"].clone()
}

fn refund(session: &str, amount: Option<i64>, key: &str) -> Command {
    let mut body = json!({"payment_session_id": session, "reason": "requested_by_customer"});
    if let Some(a) = amount {
        body["amount"] = json!(a);
    }
    Command::new("refund.create", &body).header("merchant-id", "shop").header("idempotency-key", key)
}

async fn ledger_refunds(env: &TestEnv, session: &str) -> Vec<(i64, String)> {
    let c = env.pool.get().await.unwrap();
    c.query(
        "SELECT l.amount, l.outcome FROM sandbox_ledger l JOIN refunds r ON r.processor_idempotency_key = l.idempotency_key
         WHERE r.session_id = $1 ORDER BY l.created_at",
        &[&session],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn amounts(session: &Value) -> (i64, i64, i64, i64, &str) {
    let p = &session["payment"];
    let n = |k: &str| p[k].as_i64().unwrap_or_else(|| panic!("payment.{k} in {session}"));
    (n("authorised_amount"), n("paid_amount"), n("voided_amount"), n("refunded_amount"), p["status"].as_str().unwrap())
}

#[tokio::test]
async fn a_partly_captured_payment_is_refunded_in_full_and_the_payment_shows_every_amount() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let created = env.call(Command::create("shop", &one_time(1000, "manual"))).await.body;
    assert_eq!((&created["payment_id"], &created["payment"]), (&Value::Null, &Value::Null), "no payment before paying starts");
    let id = created["id"].as_str().unwrap().to_owned();
    CheckoutClient::new().pay(created["session_url"].as_str().unwrap(), PAYS, false).await;
    let reserved = env.event_about("payment_session.completed", &id).await["data"].clone();
    assert_schema("payment_session", &reserved);
    assert_eq!(reserved["payment_id"].as_str().unwrap(), format!("pay_{}", &id[3..]));
    assert_eq!(reserved["payment"]["payment_session_id"], id.as_str());
    // As Moment shows it: the authorisation succeeded; the funds are held, not yet paid.
    assert_eq!(amounts(&reserved), (1000, 0, 0, 0, "succeeded"), "reserved: authorised, not yet paid");

    let early = env.call(refund(&id, None, "early")).await;
    assert_eq!(early.error_code(), Some("payment_not_refundable"), "{}", early.body);

    let captured =
        env.call(Command::new("payment.capture", &json!({"payment_session_id": id, "amount": 600})).header("merchant-id", "shop")).await;
    assert!(captured.body["id"].is_string(), "{}", captured.body);
    // payment.* carries the payment itself.
    let after = json!({"payment": env.event_about("payment.captured", &id).await["data"].clone()});
    assert_eq!(amounts(&after), (1000, 600, 0, 0, "succeeded"), "a smaller capture leaves the rest open (Moment's)");

    // No amount: everything that is left, i.e. the captured part.
    let r = env.call(refund(&id, None, "full")).await.body;
    assert_schema("refund", &r);
    assert_eq!((r["amount"].as_i64(), r["status"].as_str(), r["currency"].as_str()), (Some(600), Some("pending"), Some("ZAR")), "{r}");
    assert_eq!(r["payment_id"], reserved["payment_id"]);
    let refund_id = r["id"].as_str().unwrap().to_owned();
    let created_event = env.event_about("refund.created", &refund_id).await;
    assert_schema("event", &created_event);
    let done = env.event_about("refund.succeeded", &refund_id).await;
    assert_eq!((done["data"]["status"].as_str(), done["data"]["reason"].as_str()), (Some("succeeded"), Some("requested_by_customer")));
    let on_capture = env.event_about("payment_session.updated", &id).await["data"].clone();
    assert_eq!(amounts(&on_capture), (1000, 600, 0, 0, "succeeded"));
    let on_refund = env.event_about("payment_session.updated", &id).await["data"].clone();
    assert_eq!(amounts(&on_refund), (1000, 600, 0, 600, "succeeded"));
    // The rest of the authorisation released: what was captured (and refunded) stays so.
    env.call(Command::new("payment.void", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    let voided = json!({"payment": env.event_about("payment.voided", &id).await["data"].clone()});
    assert_eq!(amounts(&voided), (1000, 600, 400, 600, "succeeded"));

    let again = env.call(refund(&id, Some(1), "more")).await;
    assert_eq!(again.error_code(), Some("charge_already_refunded"), "{}", again.body);
    let read = env.call(Command::new("refund.retrieve", &json!({"refund_id": refund_id})).header("merchant-id", "shop")).await.body;
    assert_eq!(read["status"], "succeeded", "{read}");
    let theirs = env.call(Command::new("refund.retrieve", &json!({"refund_id": refund_id})).header("merchant-id", "rival")).await;
    assert_eq!(theirs.error_code(), Some("refund_not_found"), "another merchant's refund is answered as a missing one");
    let session =
        env.call(Command::new("payment_session.retrieve", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(amounts(&session.body), (1000, 600, 400, 600, "succeeded"), "the session's reply carries the payment");
    assert_eq!(ledger_refunds(&env, &id).await, [(600, "succeeded".to_owned())], "the processor refunded once");
    // The customer who holds the link sees what was taken and given back.
    let (page, _) = CheckoutClient::new().get(created["session_url"].as_str().unwrap()).await;
    assert_eq!(page.text_of("state").as_deref(), Some("Payment successful"));
    assert_eq!(page.text_of("charged").as_deref(), Some("Charged ZAR 6.00"), "{}", page.body);
    assert_eq!(page.text_of("refunded").as_deref(), Some("Refunded ZAR 6.00 (in full)"));
    env.finish().await;
}

#[tokio::test]
async fn a_voided_reservation_is_a_cancelled_payment_and_a_session_never_paid_has_none() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let reserved = paid(&env, 500, "manual", PAYS).await;
    let id = reserved["id"].as_str().unwrap();
    env.call(Command::new("payment.void", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    let voided = json!({"payment": env.event_about("payment.voided", id).await["data"].clone()});
    assert_eq!(amounts(&voided), (500, 0, 500, 0, "cancelled"));
    let refused = env.call(refund(id, None, "void")).await;
    assert_eq!(refused.error_code(), Some("payment_not_refundable"));

    let open = env.call(Command::create("shop", &one_time(500, "automatic"))).await.body;
    let cancelled = env
        .call(Command::new("payment_session.cancel", &json!({"payment_session_id": open["id"]})).header("merchant-id", "shop"))
        .await
        .body;
    assert_eq!((&cancelled["status"], &cancelled["payment"]), (&json!("cancelled"), &Value::Null), "{cancelled}");
    env.finish().await;
}

#[tokio::test]
async fn two_refunds_sent_at_once_never_pass_what_was_paid() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = paid(&env, 1000, "automatic", PAYS).await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(amounts(&s), (1000, 1000, 0, 0, "succeeded"));
    // Both in the queue before lifecycle takes either: 600 + 600 > 1000.
    let corrs = env.send_many(vec![refund(id, Some(600), "a"), refund(id, Some(600), "b")]).await;
    let mut replies = vec![];
    for c in &corrs {
        replies.push(env.reply(c).await.body);
    }
    let made: Vec<&Value> = replies.iter().filter(|r| r["object"] == "refund").collect();
    let refused: Vec<&Value> = replies.iter().filter(|r| r["error"].is_object()).collect();
    assert_eq!((made.len(), refused.len()), (1, 1), "{replies:?}");
    assert_eq!(refused[0]["error"]["code"], "amount_too_large", "{replies:?}");
    assert_eq!(refused[0]["error"]["param"], "amount");
    env.event_about("refund.succeeded", made[0]["id"].as_str().unwrap()).await;
    // What is left may still be refunded.
    let rest = env.call(refund(id, None, "rest")).await.body;
    assert_eq!(rest["amount"], 400, "{rest}");
    env.event_about("refund.succeeded", rest["id"].as_str().unwrap()).await;
    let updated = env.event_about("payment_session.updated", id).await;
    let last = env.event_about("payment_session.updated", id).await;
    assert_eq!(updated["data"]["payment"]["refunded_amount"], 600);
    assert_eq!(amounts(&last["data"]), (1000, 1000, 0, 1000, "succeeded"));
    assert_eq!(ledger_refunds(&env, id).await.iter().map(|(a, _)| a).sum::<i64>(), 1000);
    env.finish().await;
}

#[tokio::test]
async fn a_refund_redelivered_resent_or_asked_twice_is_made_once() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = paid(&env, 800, "automatic", PAYS).await;
    let id = s["id"].as_str().unwrap();
    // The broker redelivers the same message; the upstream resends under the same key.
    let first = env.call(refund(id, Some(300), "once").message_id("refund-msg-1")).await.body;
    env.send(refund(id, Some(300), "once").message_id("refund-msg-1").no_reply()).await;
    let resent = env.call(refund(id, Some(300), "once")).await;
    assert!(resent.replayed, "the stored reply, marked replayed");
    assert_eq!(resent.body["id"], first["id"]);
    let refund_id = first["id"].as_str().unwrap();
    env.event_about("refund.succeeded", refund_id).await;

    // The gateway.refund published again (an ack that never happened): answered from the processor's record.
    let of_refund = |b: &Vec<u8>| serde_json::from_slice::<Value>(b).map(|v| v["refund_id"] == refund_id).unwrap_or(false);
    let body = env.sent_bodies("gateway.refund").await.into_iter().find(of_refund).expect("the gateway.refund sent");
    let answers = || async { env.sent_bodies("gateway.result").await.iter().filter(|b| of_refund(b)).count() };
    let before = answers().await;
    env.publish(exchange::INTERNAL, "gateway.refund", &body, "refund-again", "shop").await;
    let deadline = std::time::Instant::now() + integration_tests::WAIT;
    while answers().await <= before {
        assert!(std::time::Instant::now() < deadline, "the second gateway.refund was answered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(env.count(&format!("SELECT count(*) FROM refunds WHERE session_id = '{id}'")).await, 1);
    assert_eq!(ledger_refunds(&env, id).await, [(300, "succeeded".to_owned())]);
    let now = env.call(Command::new("payment_session.retrieve", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(now.body["payment"]["refunded_amount"], 300, "applied once");

    let keyless = env.call(refund(id, Some(1), "x").without_header("idempotency-key")).await;
    assert_eq!(keyless.error_code(), Some("idempotency_key_missing"));
    env.finish().await;
}

#[tokio::test]
async fn a_refund_whose_processor_call_times_out_is_resolved_by_lookup_and_made_once() {
    let mut env = TestEnv::new().await;
    // Every call answers after the gateway has stopped waiting for it.
    env.start_gateway(&[("SANDBOX_LATENCY_MS", "400"), ("PROCESSOR_TIMEOUT_MS", "100")]).await;
    env.start_lifecycle(&[]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let s = paid(&env, 900, "automatic", PAYS).await;
    let id = s["id"].as_str().unwrap();
    let r = env.call(refund(id, Some(250), "slow")).await.body;
    let done = env.event_about("refund.succeeded", r["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["amount"], 250);
    assert_eq!(ledger_refunds(&env, id).await, [(250, "succeeded".to_owned())]);
    // The call log is written beside the work, a moment later.
    let timed_out = env
        .wait_for_count(
            "SELECT count(*) FROM processor_calls WHERE operation = 'refund' AND result IN ('timeout', 'resolved_by_lookup')",
            2,
        )
        .await;
    assert_eq!(timed_out, 2, "the refund timed out and was resolved by asking the processor under its key");
    env.finish().await;
}

#[tokio::test]
async fn a_lost_refund_request_is_asked_again_under_the_same_key() {
    let mut env = TestEnv::new().await;
    env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "1"), ("EXPIRY_SWEEP_INTERVAL_MS", "200")]).await;
    let (_, _, md) =
        seed_mandate_with_card(&env.pool, "shop", json!({"type": "on_demand", "currency": "ZAR"}), PAYS, (12, 2099), true).await;
    env.start_intake().await;
    env.start_gateway(&[]).await;
    let next =
        env.call(Command::create("shop", &json!({"type": "next_in_series", "amount": 700, "currency": "ZAR", "mandate_id": md}))).await;
    let id = next.body["id"].as_str().unwrap().to_owned();
    assert_eq!(next.body["payment"]["status"], "pending", "a next_in_series pays from its creation: {}", next.body);
    let s = env.event_about("payment_session.completed", &id).await["data"].clone();
    assert_eq!(amounts(&s), (700, 700, 0, 0, "succeeded"));
    let used = "SELECT used_occurrences::bigint * 1000000 + used_amount FROM mandate_usage";
    let before = env.count(used).await;
    // The gateway is away and its queue loses the request.
    env.stop_services().await;
    env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "1"), ("EXPIRY_SWEEP_INTERVAL_MS", "200")]).await;
    let r = env.call(refund(&id, None, "lost")).await.body;
    assert_eq!(r["amount"], 700, "{r}");
    env.next_message(&env.names.queue(&ps_runtime::topology::GATEWAY)).await;
    env.start_gateway(&[]).await;
    env.event_about("refund.succeeded", r["id"].as_str().unwrap()).await;
    assert_eq!(ledger_refunds(&env, &id).await, [(700, "succeeded".to_owned())]);
    // A refund gives back money, not the mandate's occurrence or amount (docs/contract-decisions.md).
    assert_eq!(env.count(used).await, before);
    env.finish().await;
}

#[tokio::test]
async fn a_refund_the_processor_refuses_fails_with_its_reason_and_takes_nothing() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    let ep = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["refund.created", "refund.failed"]}))
                .header("merchant-id", "shop"),
        )
        .await
        .body;
    let s = paid(&env, 1200, "automatic", REFUNDS_FAIL).await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(amounts(&s), (1200, 1200, 0, 0, "succeeded"), "the card pays");
    let r = env.call(refund(id, Some(200), "refused")).await.body;
    let failed = env.event_about("refund.failed", r["id"].as_str().unwrap()).await;
    assert_schema("event", &failed);
    assert_eq!(
        (failed["data"]["status"].as_str(), failed["data"]["failure_reason"].as_str()),
        (Some("failed"), Some("expired_or_canceled_card"))
    );
    // A failed refund holds nothing back: the whole payment may still be asked for.
    let again = env.call(refund(id, None, "refused-again")).await.body;
    assert_eq!(again["amount"], 1200, "{again}");
    env.event_about("refund.failed", again["id"].as_str().unwrap()).await;
    let now = env.call(Command::new("payment_session.retrieve", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(amounts(&now.body), (1200, 1200, 0, 0, "succeeded"));
    // The merchant hears of both refunds, each asked and failed, as signed webhooks.
    let got = rx.wait_for(4).await;
    let wh = standardwebhooks::Webhook::new(ep["secret"].as_str().unwrap()).unwrap();
    let mut types = vec![];
    for d in &got {
        wh.verify(&d.body, &d.headers).expect("signed with the endpoint's secret");
        let e: Value = serde_json::from_slice(&d.body).unwrap();
        types.push(format!("{} {}", e["type"].as_str().unwrap(), e["data"]["id"].as_str().unwrap()));
    }
    types.sort();
    let mut want: Vec<String> = [&r, &again]
        .iter()
        .flat_map(|x| ["refund.created", "refund.failed"].map(|t| format!("{t} {}", x["id"].as_str().unwrap())))
        .collect();
    want.sort();
    assert_eq!(types, want);
    env.finish().await;
}
