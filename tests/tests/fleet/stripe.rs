//! The Stripe connector (DESIGN §11) against a stateful stand-in Stripe
//! (localstripe), through the real services: what reaches Stripe, what Stripe
//! then holds, and what the merchant is told.

use integration_tests::stripe::{Fault, LocalStripe, StripeFleet, StripeProxy, SECRET_KEY, WEBHOOK_SECRET};
use integration_tests::{CheckoutClient, Command, TestEnv};
use ps_contract::secret::Secret;
use serde_json::{json, Value};
use std::time::Duration;

fn one_time(amount: i64) -> Value {
    json!({"type": "one_time", "amount": amount, "currency": "EUR", "return_url": "https://shop.example/r"})
}

#[tokio::test]
async fn a_payment_at_the_checkout_is_a_succeeded_payment_intent_of_the_same_amount() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let s = env.call(Command::create("shop", &one_time(2550))).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    CheckoutClient::new().pay(url, "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    // Moment's card details, from the vault's record of the card Stripe charged.
    let card = &done["data"]["payment"]["payment_method_details"]["card"];
    assert_eq!(
        (card["type"].as_str(), card["scheme"].as_str(), card["bin"].as_str(), card["last4"].as_str()),
        (Some("credit"), Some("VISA"), Some("424242"), Some("4242")),
        "the funding as Stripe's PaymentMethod reports it: {done}"
    );
    let intents = f.intents().await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    let pi = &intents[0];
    assert_eq!((pi["status"].as_str(), pi["amount"].as_i64(), pi["currency"].as_str()), (Some("succeeded"), Some(2550), Some("eur")));
    // Every call that changes anything carries a key of ours and the pinned version.
    let calls = f.proxy.recorded();
    for c in calls.iter().filter(|c| c.method == "POST") {
        assert!(c.idempotency_key.is_some(), "{} {} without an Idempotency-Key", c.method, c.path);
    }
    assert!(calls.iter().all(|c| c.stripe_version.as_deref() == Some(payment_gateway::stripe::STRIPE_VERSION)));
    let create = calls.iter().find(|c| c.path == "/v1/payment_intents").unwrap();
    let attempt_key: String =
        env.pool.get().await.unwrap().query_one("SELECT processor_idempotency_key FROM payment_attempts", &[]).await.unwrap().get(0);
    assert_eq!(create.idempotency_key.as_deref(), Some(attempt_key.as_str()), "the intent is keyed by the attempt");
    assert!(!calls.iter().any(|c| c.path.contains("4242")), "no card number in a path");
    env.finish().await;
}

async fn pay_reserved(env: &mut TestEnv, amount: i64) -> String {
    let body = json!({"type": "one_time", "amount": amount, "currency": "EUR", "return_url": "https://shop.example/r", "capture_method": "manual"});
    let s = env.call(Command::create("shop", &body)).await.body;
    let id = s["id"].as_str().unwrap().to_owned();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", &id).await["data"]["payment_outcome"], "reserved");
    id
}

#[tokio::test]
async fn a_smaller_capture_a_void_and_refunds_are_what_stripe_holds() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;

    // Authorised 5000, captured 3000: Stripe received 3000.
    let captured = pay_reserved(&mut env, 5000).await;
    let r = env
        .call(Command::new("payment.capture", &json!({"payment_session_id": captured, "amount": 3000})).header("merchant-id", "shop"))
        .await;
    assert!(r.error_code().is_none(), "{}", r.body);
    // localstripe's charges have no multicapture: the capture is sent final,
    // Stripe releases the rest, and the payment says so (Moment's figures).
    let payment = env.event_about("payment.captured", &captured).await["data"].clone();
    assert_eq!((payment["paid_amount"].as_i64(), payment["voided_amount"].as_i64()), (Some(3000), Some(2000)), "{payment}");
    let again = env
        .call(Command::new("payment.capture", &json!({"payment_session_id": captured, "amount": 1000})).header("merchant-id", "shop"))
        .await;
    assert_eq!(again.error_code(), Some("illegal_transition"), "nothing is open after Stripe released it: {}", again.body);
    let calls = f.proxy.recorded();
    let create = calls.iter().find(|c| c.path == "/v1/payment_intents").unwrap();
    assert_eq!(create.param("payment_method_options[card][request_multicapture]"), Some("if_available"), "asked for at creation");
    let capture = calls.iter().find(|c| c.path.ends_with("/capture")).unwrap();
    assert_eq!(capture.param("final_capture"), None, "never sent to a charge without multicapture");
    let pi = f.intents().await.into_iter().next().unwrap();
    // localstripe keeps a smaller capture as the whole charge less a refund of the rest (Stripe: amount_received).
    let charge = &pi["latest_charge"];
    let received =
        pi["amount_received"].as_i64().unwrap_or(charge["amount"].as_i64().unwrap() - charge["amount_refunded"].as_i64().unwrap());
    assert_eq!((pi["status"].as_str(), received), (Some("succeeded"), 3000), "{pi}");

    // Two partial refunds of what was captured.
    for (key, amount) in [("refund-a", 1000), ("refund-b", 500)] {
        let body = json!({"payment_session_id": captured, "amount": amount});
        let refund = env.call(Command::new("refund.create", &body).header("merchant-id", "shop").header("idempotency-key", key)).await.body;
        assert_eq!(env.event_about("refund.succeeded", refund["id"].as_str().unwrap()).await["data"]["amount"], amount);
    }
    let refunds = f.stripe.get(&format!("/v1/refunds?payment_intent={}", pi["id"].as_str().unwrap())).await;
    // Ours carry our key (localstripe keeps the smaller capture's release as a refund too).
    let ours = refunds["data"].as_array().unwrap().iter().filter(|r| r["metadata"]["ps_key"].is_string());
    let mut amounts: Vec<i64> = ours.map(|r| r["amount"].as_i64().unwrap()).collect();
    amounts.sort();
    assert_eq!(amounts, [500, 1000], "{refunds}");

    // A void cancels its intent.
    let voided = pay_reserved(&mut env, 4000).await;
    env.call(Command::new("payment.void", &json!({"payment_session_id": voided})).header("merchant-id", "shop")).await;
    env.event_about("payment.voided", &voided).await;
    let pi = f.intents().await.into_iter().nth(1).unwrap();
    assert_eq!(pi["status"], "canceled", "{pi}");
    assert!(f.proxy.recorded().iter().any(|c| c.path.ends_with("/capture") && c.param("amount_to_capture") == Some("3000")));
    env.finish().await;
}

#[tokio::test]
async fn a_mandate_set_up_at_the_checkout_charges_the_saved_card_off_session() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let first = json!({"type": "first_in_series", "amount": 1500, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
                       "return_url": "https://gym.example/r"});
    let s = env.call(Command::create("gym", &first)).await.body;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    let mandate = done["data"]["mandate_id"].as_str().expect("a mandate").to_owned();
    for _ in 0..3 {
        let next = json!({"type": "next_in_series", "amount": 1500, "currency": "ZAR", "mandate_id": mandate});
        let charge = env.call(Command::create("gym", &next)).await.body;
        assert_eq!(env.event_about("payment_session.completed", charge["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    }
    let intents = f.intents().await;
    assert_eq!(intents.len(), 4);
    let customer = intents[0]["customer"].as_str().expect("the card was saved under a Stripe customer").to_owned();
    for pi in &intents {
        assert_eq!((pi["status"].as_str(), pi["customer"].as_str()), (Some("succeeded"), Some(customer.as_str())), "{pi}");
        assert_eq!(pi["payment_method"], intents[0]["payment_method"], "the same saved card");
    }
    // What Stripe requires for charges without the customer, as the connector sent it.
    let calls = f.proxy.recorded();
    let creates: Vec<_> = calls.iter().filter(|c| c.path == "/v1/payment_intents").collect();
    assert_eq!(creates[0].param("setup_future_usage"), Some("off_session"));
    assert!(creates[1..].iter().all(|c| c.param("setup_future_usage").is_none()));
    let confirms: Vec<_> = calls.iter().filter(|c| c.path.ends_with("/confirm")).collect();
    assert_eq!(confirms.iter().filter(|c| c.param("off_session") == Some("true")).count(), 3, "the three merchant-initiated charges");
    env.finish().await;
}

/// A processor call holds neither a transaction nor a pooled connection
/// (DESIGN §5): with a pool of two, six charges wait at Stripe side by side,
/// and each ends paid, once.
#[tokio::test]
async fn charges_wait_at_stripe_side_by_side_without_holding_the_pool() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[("DATABASE_POOL_SIZE", "2")]).await;
    let first = json!({"type": "first_in_series", "amount": 900, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
                       "return_url": "https://gym.example/r"});
    let s = env.call(Command::create("gym", &first)).await.body;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    let mandate = done["data"]["mandate_id"].as_str().expect("a mandate").to_owned();
    f.proxy.inject_n(axum::http::Method::POST, "/v1/payment_intents/*/confirm", Fault::Delay(Duration::from_secs(4)), 6);
    let mut charges = vec![];
    for _ in 0..6 {
        let next = json!({"type": "next_in_series", "amount": 900, "currency": "ZAR", "mandate_id": mandate});
        charges.push(env.call(Command::create("gym", &next)).await.body["id"].as_str().unwrap().to_owned());
    }
    integration_tests::eventually("six confirmations waiting at Stripe at once", || f.proxy.in_flight() == 6).await;
    for id in &charges {
        assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid");
    }
    let intents = f.intents().await;
    assert_eq!(intents.len(), 7, "one intent a charge: {intents:?}");
    assert!(intents.iter().all(|pi| pi["status"] == "succeeded"), "{intents:?}");
    env.finish().await;
}

#[tokio::test]
async fn a_decline_is_reported_with_its_code() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let s = env.call(Command::create("shop", &one_time(700))).await.body;
    let id = s["id"].as_str().unwrap();
    // localstripe declines this card's charges (its other decline cards only on saving: see docs/processors.md).
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4000000000000341", false).await;
    let failed = env.event_about("payment.attempt_failed", id).await;
    assert_eq!(failed["data"]["last_payment_error"]["error_code"], "card_declined");
    assert_eq!(env.session(id).await["status"], "active", "the customer may try another card");
    assert_eq!(f.intents().await[0]["status"], "requires_payment_method");
    env.finish().await;
}

/// Stripe's own event can answer a payment whose answer was lost: the session
/// completes from the event, and the answer, when it comes after all, changes
/// nothing (the same result, recognised).
#[tokio::test]
async fn stripes_event_answers_a_payment_whose_answer_is_lost_and_the_answer_changes_nothing() {
    let mut env = TestEnv::new().await;
    // The gateway would wait a minute for the lost answer: longer than this test waits for the event.
    let f = StripeFleet::start(&mut env, &[("PROCESSOR_TIMEOUT_MS", "60000")]).await;
    f.proxy.inject(axum::http::Method::POST, "/v1/payment_intents/*/confirm", Fault::LoseResponse);
    let s = env.call(Command::create("shop", &one_time(900))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid", "completed by Stripe's event");
    assert_eq!(env.count("SELECT count(*) FROM processor_events WHERE type = 'payment_intent.succeeded'").await, 1);
    // The held answer goes: the gateway reads the intent, answers the same, and lifecycle recognises it.
    let duplicates = || ps_runtime::metrics::MESSAGES.with_label_values(&[ps_runtime::topology::LIFECYCLE.name, "duplicate"]).get();
    let before = duplicates();
    f.proxy.release();
    integration_tests::eventually("lifecycle recognised the answer as the event's", || duplicates() > before).await;
    assert_eq!(env.event_types_about(id).iter().filter(|t| *t == "payment.succeeded").count(), 1);
    assert_eq!(f.intents().await.len(), 1, "one intent, charged once");
    env.finish().await;
}

#[tokio::test]
async fn a_zero_amount_first_in_series_verifies_the_card_with_a_setup_intent() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let first = json!({"type": "first_in_series", "amount": 0, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
                       "return_url": "https://gym.example/r"});
    let s = env.call(Command::create("gym", &first)).await.body;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["payment_outcome"], "payment_method_verified");
    let mandate = done["data"]["mandate_id"].as_str().unwrap().to_owned();
    assert!(f.intents().await.is_empty(), "no payment for a verification");
    let setup = f.proxy.recorded().into_iter().find(|c| c.path == "/v1/setup_intents").expect("a SetupIntent");
    assert_eq!(setup.param("usage"), Some("off_session"));
    let next = json!({"type": "next_in_series", "amount": 2000, "currency": "ZAR", "mandate_id": mandate});
    let charge = env.call(Command::create("gym", &next)).await.body;
    assert_eq!(env.event_about("payment_session.completed", charge["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");
    assert_eq!(f.intents().await[0]["amount"], 2000);

    // Moment's verification on a one_time: a SetupIntent too, the card kept for the customer's own use.
    let one = json!({"amount": 0, "currency": "ZAR",
                     "options": {"customer": {"name": "Lee", "email": "lee@example.com"}, "checkout_options": {"save_payment_method": "always"}}});
    let s = env.call(Command::create("shop", &one)).await.body;
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["payment_outcome"], "payment_method_verified", "{done}");
    let setups: Vec<_> = f.proxy.recorded().into_iter().filter(|c| c.path == "/v1/setup_intents").collect();
    assert_eq!(setups.len(), 2);
    assert_eq!(setups[1].param("usage"), Some("on_session"));
    assert_eq!(f.intents().await.len(), 1, "still only the mandate's charge");
    env.finish().await;
}

/// Signs `body` as Stripe signs its events.
fn stripe_signature(body: &str, t: i64) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(integration_tests::stripe::WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// localstripe has no disputes: Stripe's `charge.dispute.created` is sent as
/// Stripe signs it. Forged or replayed events change nothing.
#[tokio::test]
async fn a_dispute_reaches_the_merchant_and_an_unsigned_event_reaches_nobody() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let s = env.call(Command::create("shop", &one_time(4200))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    env.event_about("payment_session.completed", id).await;
    let pi = f.intents().await[0]["id"].as_str().unwrap().to_owned();
    let url = format!("http://{}/v1/processors/stripe/events", env.processor_events.unwrap());
    let event = json!({"id": "evt_dispute_1", "object": "event", "type": "charge.dispute.created",
        "data": {"object": {"id": "dp_1", "object": "dispute", "amount": 4200, "currency": "eur", "reason": "fraudulent",
                            "status": "needs_response", "payment_intent": pi, "charge": "ch_1"}}})
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let http = reqwest::Client::new();
    let send = |sig: String| http.post(&url).header("stripe-signature", sig).body(event.clone()).send();
    assert_eq!(send(format!("t={now},v1=00")).await.unwrap().status(), 400, "a wrong signature");
    assert_eq!(send(stripe_signature(&event, now - 3600)).await.unwrap().status(), 400, "a replay an hour old");
    assert_eq!(env.count("SELECT count(*) FROM processor_events").await, 0);
    for _ in 0..3 {
        assert_eq!(send(stripe_signature(&event, now)).await.unwrap().status(), 200);
    }
    let disputed = env.event_about("payment.disputed", "dp_1").await;
    assert_eq!((disputed["data"]["amount"].as_i64(), disputed["data"]["reason"].as_str()), (Some(4200), Some("fraudulent")));
    assert_eq!(disputed["data"]["payment_session_id"], id);
    integration_tests::assert_schema("dispute", &disputed["data"]);
    assert_eq!(env.count("SELECT count(*) FROM processor_events WHERE event_id = 'evt_dispute_1'").await, 1, "applied once");
    env.finish().await;
}

/// In Chromium: a card paid at the checkout, and a card whose issuer asks
/// for 3-D Secure, completed through (localstripe's) Stripe.js challenge.
#[tokio::test]
async fn in_chromium_a_payment_and_a_3d_secure_challenge_complete_through_stripe_js() {
    use integration_tests::browser::Browser;
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let browser = Browser::launch().await;

    let s = env.call(Command::create("shop", &one_time(1250))).await.body;
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;

    let s = env.call(Command::create("shop", &one_time(3300))).await.body;
    let id = s["id"].as_str().unwrap();
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    browser.pay("4000002760003184").await;
    // The page runs Stripe.js with the intent's client secret; its challenge opens in the page.
    browser.click_button("Complete authentication").await;
    browser.wait_for_text("state", "Payment successful").await;
    assert_eq!(env.session(id).await["payment_outcome"], "paid");
    let intents = f.intents().await;
    assert_eq!(
        intents.iter().map(|pi| (pi["amount"].as_i64().unwrap(), pi["status"].as_str().unwrap())).collect::<Vec<_>>(),
        [(1250, "succeeded"), (3300, "succeeded")]
    );
    browser.close().await;
    env.finish().await;
}

#[tokio::test]
async fn in_chromium_a_failed_challenge_leaves_the_session_to_try_again() {
    use integration_tests::browser::Browser;
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    let browser = Browser::launch().await;
    let s = env.call(Command::create("shop", &one_time(5100))).await.body;
    let id = s["id"].as_str().unwrap();
    browser.c().goto(s["session_url"].as_str().unwrap()).await.unwrap();
    browser.pay("4000002760003184").await;
    browser.click_button("Fail authentication").await;
    browser.wait_for_text("error", "Your card was declined.").await;
    let session = env.session(id).await;
    assert_eq!(
        (session["status"].as_str(), session["last_payment_error"]["decline_code"].as_str()),
        (Some("active"), Some("authentication_failed"))
    );
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Payment successful").await;
    let statuses: Vec<String> = f.intents().await.iter().map(|pi| pi["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(statuses.last().map(String::as_str), Some("succeeded"));
    assert!(statuses[0] != "succeeded", "the failed challenge's intent took nothing: {statuses:?}");
    browser.close().await;
    env.finish().await;
}

/// Stripe's 429 is waited out for as long as its Retry-After asks, then the
/// same call made again: one intent, paid.
#[tokio::test]
async fn a_429_is_asked_again_no_sooner_than_stripe_says() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[]).await;
    f.proxy.inject(axum::http::Method::POST, "/v1/payment_intents", Fault::TooMany(2));
    let s = env.call(Command::create("shop", &one_time(1200))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid");
    let creates: Vec<_> = f.proxy.recorded().into_iter().filter(|c| c.method == "POST" && c.path == "/v1/payment_intents").collect();
    assert_eq!(creates.len(), 2, "refused once, then made");
    assert_eq!(creates[0].idempotency_key, creates[1].idempotency_key, "the same call, under the same key");
    let waited = creates[1].at - creates[0].at;
    assert!(waited >= Duration::from_secs(2), "asked again after {waited:?}, sooner than Retry-After: 2");
    assert_eq!(f.intents().await.len(), 1);
    env.finish().await;
}

/// Lifecycle gives up on an attempt whose confirmation is still on its way to
/// Stripe: the intent is cancelled before the attempt is called failed, so
/// the confirmation, when it lands, is refused and nobody is charged unawares.
#[tokio::test]
async fn an_attempt_given_up_while_its_confirmation_is_in_flight_is_never_charged() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start_with(&mut env, &[("PROCESSOR_TIMEOUT_MS", "300")], &[("ATTEMPT_ABANDON_AFTER_SECS", "2")]).await;
    // Every confirmation reaches Stripe long after the gateway stopped waiting.
    f.proxy.inject_n(axum::http::Method::POST, "/v1/payment_intents/*/confirm", Fault::Delay(Duration::from_secs(5)), 50);
    let s = env.call(Command::create("shop", &one_time(1300))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(env.event_about("payment.attempt_failed", id).await["data"]["status"], "failed");
    assert_eq!(env.session(id).await["status"], "active", "the customer may pay again");
    // Every confirmation has now landed at Stripe.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.proxy.in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "confirmations still in flight");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let confirms = f.proxy.recorded().iter().filter(|c| c.path.ends_with("/confirm")).count();
    assert!(confirms >= 1);
    let intents = f.intents().await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["status"], "canceled", "cancelled before the attempt was failed: {}", intents[0]);
    assert!(!env.event_types_about(id).iter().any(|t| t == "payment.succeeded"));
    env.finish().await;
}

/// Giving back a charge Stripe already captured (one that came too late for
/// its session) is a refund of all of it; a refund whose answer was lost is
/// found on the intent by our key, never made twice.
#[tokio::test]
async fn a_void_after_stripe_captured_is_one_full_refund_even_when_its_answer_is_lost() {
    use payment_gateway::processor::{Processor, ProcessorError, ProcessorRequest};
    use payment_gateway::stripe::{StripeConfig, StripeProcessor};
    use ps_contract::internal::{Operation, Outcome};
    let env = TestEnv::new().await;
    let stripe = LocalStripe::start().await;
    let proxy = StripeProxy::start(&stripe).await;
    let (pm, cus) = stripe.save_card("4242424242424242").await;
    let pi = stripe
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "eur"),
                ("payment_method", &pm),
                ("customer", &cus),
                ("confirm", "true"),
                ("metadata[ps_key]", "authorize:att_late"),
            ],
        )
        .await;
    assert_eq!(pi["status"], "succeeded");
    env.pool
        .get()
        .await
        .unwrap()
        .execute("INSERT INTO processor_objects (idempotency_key, object_id) VALUES ('authorize:att_late', $1)", &[&pi["id"].as_str()])
        .await
        .unwrap();
    let config =
        StripeConfig { secret_key: Secret::new(SECRET_KEY), api_base: proxy.url.clone(), webhook_secret: Secret::new(WEBHOOK_SECRET) };
    let processor = StripeProcessor::new(config, env.pool.clone(), ps_runtime::tls::Trust::default().client_config().unwrap()).unwrap();
    let void = || ProcessorRequest {
        key: "void:att_late:1",
        operation: Operation::Void,
        card_token: None,
        authorization_key: Some("authorize:att_late"),
        amount: 1500,
        currency: ps_contract::money::Currency::parse("EUR").unwrap(),
        customer_present: false,
        capture: true,
        save: None,
        final_capture: true,
    };
    proxy.inject(axum::http::Method::POST, "/v1/refunds", Fault::ServerErrorAfter);
    assert!(matches!(processor.execute(void()).await, Err(ProcessorError::Unavailable(_))), "the refund's answer is lost");
    let answer = processor.execute(void()).await.unwrap();
    assert_eq!(answer.outcome, Outcome::Succeeded, "{answer:?}");
    let again = processor.execute(void()).await.unwrap();
    assert_eq!(again, answer, "asked a third time: the same refund");
    let refunds = stripe.list_all("/v1/refunds").await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!((refunds[0]["amount"].as_i64(), refunds[0]["metadata"]["ps_key"].as_str()), (Some(1500), Some("void:att_late:1")));
    let posted = proxy.recorded().iter().filter(|c| c.method == "POST" && c.path == "/v1/refunds").count();
    assert_eq!(posted, 1, "the second and third found the first on the intent");
    env.finish().await;
}

/// A refund whose answer is lost is answered by Stripe's event about it
/// (localstripe sends none for refunds: the event is sent as Stripe signs it),
/// and the answer, when it comes after all, changes nothing.
#[tokio::test]
async fn a_refund_whose_answer_is_lost_is_answered_by_stripes_event() {
    let mut env = TestEnv::new().await;
    let f = StripeFleet::start(&mut env, &[("PROCESSOR_TIMEOUT_MS", "60000")]).await;
    let s = env.call(Command::create("shop", &one_time(2600))).await.body;
    let id = s["id"].as_str().unwrap();
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    env.event_about("payment_session.completed", id).await;
    f.proxy.inject(axum::http::Method::POST, "/v1/refunds", Fault::LoseResponse);
    let body = json!({"payment_session_id": id, "amount": 600});
    let refund =
        env.call(Command::new("refund.create", &body).header("merchant-id", "shop").header("idempotency-key", "r-lost")).await.body;
    let refund_id = refund["id"].as_str().unwrap().to_owned();
    let pi = f.intents().await[0]["id"].as_str().unwrap().to_owned();
    let made = loop {
        let list = f.stripe.get(&format!("/v1/refunds?payment_intent={pi}")).await;
        if let Some(r) = list["data"].as_array().unwrap().iter().find(|r| r["metadata"]["ps_key"].is_string()) {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(env.count("SELECT count(*) FROM processor_objects WHERE object_id LIKE 're_%'").await, 0, "its answer is held");
    let event = json!({"id": "evt_refund_1", "object": "event", "type": "charge.refund.updated", "data": {"object": made}}).to_string();
    let url = format!("http://{}/v1/processors/stripe/events", env.processor_events.unwrap());
    let sent = reqwest::Client::new()
        .post(&url)
        .header("stripe-signature", stripe_signature(&event, chrono::Utc::now().timestamp()))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(env.event_about("refund.succeeded", &refund_id).await["data"]["amount"], 600, "answered by the event");
    let duplicates = || ps_runtime::metrics::MESSAGES.with_label_values(&[ps_runtime::topology::LIFECYCLE.name, "duplicate"]).get();
    let before = duplicates();
    f.proxy.release();
    integration_tests::eventually("lifecycle recognised the late answer as the event's", || duplicates() > before).await;
    assert_eq!(env.event_types_about(&refund_id).iter().filter(|t| *t == "refund.succeeded").count(), 1);
    let ours = f.stripe.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    assert_eq!(ours["data"].as_array().unwrap().iter().filter(|r| r["metadata"]["ps_key"].is_string()).count(), 1, "one refund");
    env.finish().await;
}
