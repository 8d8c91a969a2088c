//! 3-D Secure with the sandbox processor (DESIGN §11): an authorization that
//! needs the customer waits in `requires_action`, the checkout shows the
//! challenge, and its end continues the same attempt.

use integration_tests::{seed_mandate_with_card, CheckoutClient, Command, TestEnv};
use serde_json::{json, Value};

const ALWAYS_ASKS: &str = "4000002760003184";
const ASKS_WHEN_SAVING: &str = "4000002500003155";
const ASKS_THEN_DECLINES: &str = "4000008260003178";

fn one_time() -> Value {
    json!({"type": "one_time", "amount": 2500, "currency": "EUR", "return_url": "https://shop.example/r"})
}

async fn attempt_statuses(env: &TestEnv) -> Vec<String> {
    let c = env.pool.get().await.unwrap();
    c.query("SELECT status FROM payment_attempts ORDER BY created_at", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_challenged_card_pays_once_the_customer_authenticates() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let client = CheckoutClient::new();
    let page = client.pay(url, ALWAYS_ASKS, false).await;
    // The answer may take a moment: the page waits (and refreshes) until the challenge is there.
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'requires_action'", 1).await;
    let (page_now, _) = client.get(url).await;
    assert!(page_now.has("authenticate"), "the challenge is shown: {} / {}", page.body, page_now.body);
    assert_eq!(env.session(id).await["payment_outcome"], "pending", "the session waits with its attempt");
    let cancel = env.call(Command::new("payment_session.cancel", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(cancel.error_code(), Some("payment_processing"), "a payment waiting for its customer is processing");

    client.answer_challenge(url, "authenticate").await;
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    assert_eq!(attempt_statuses(&env).await, ["succeeded"], "one attempt, continued");
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE outcome = 'succeeded'").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn a_failed_challenge_is_an_attempt_failure_the_customer_may_retry() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let client = CheckoutClient::new();
    client.pay(url, ALWAYS_ASKS, false).await;
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'requires_action'", 1).await;
    client.answer_challenge(url, "fail_authentication").await;
    let failed = env.event_about("payment.attempt_failed", id).await;
    assert_eq!(failed["data"]["last_payment_error"]["decline_code"], "authentication_failed");
    assert_eq!(failed["data"]["status"], "failed", "payment.* carries the payment");
    assert_eq!(env.session(id).await["status"], "active", "the customer may try again");

    // A card that asks and then declines: authenticated, and still declined.
    client.pay(url, ASKS_THEN_DECLINES, false).await;
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'requires_action'", 1).await;
    client.answer_challenge(url, "authenticate").await;
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'failed'", 2).await;
    assert_eq!(env.session(id).await["last_payment_error"]["decline_code"], "insufficient_funds");

    let paid = client.pay(url, "4242424242424242", false).await;
    assert_eq!(paid.status, 200);
    assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid");
    assert_eq!(attempt_statuses(&env).await, ["failed", "failed", "succeeded"]);
    env.finish().await;
}

#[tokio::test]
async fn a_card_set_up_with_a_challenge_is_charged_later_without_one_and_a_card_that_always_asks_is_not() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let first = json!({"type": "first_in_series", "amount": 1000, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                       "return_url": "https://gym.example/r"});
    let s = env.call(Command::create("gym", &first)).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let client = CheckoutClient::new();
    client.pay(url, ASKS_WHEN_SAVING, false).await;
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'requires_action'", 1).await;
    client.answer_challenge(url, "authenticate").await;
    let done = env.event_about("payment_session.completed", id).await;
    let mandate = done["data"]["mandate_id"].as_str().expect("a mandate").to_owned();
    let next = json!({"type": "next_in_series", "amount": 1000, "currency": "ZAR", "mandate_id": mandate});
    let charge = env.call(Command::create("gym", &next)).await.body;
    assert_eq!(env.event_about("payment_session.completed", charge["id"].as_str().unwrap()).await["data"]["payment_outcome"], "paid");

    // A saved card whose issuer asks every time cannot be charged without the customer: a decline the merchant can act on.
    let (_, _, asks) =
        seed_mandate_with_card(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), ALWAYS_ASKS, (12, 2099), true).await;
    let next = json!({"type": "next_in_series", "amount": 1000, "currency": "ZAR", "mandate_id": asks});
    let charge = env.call(Command::create("gym", &next)).await.body;
    let done = env.event_about("payment_session.completed", charge["id"].as_str().unwrap()).await;
    assert_eq!(done["data"]["payment_outcome"], "unpaid");
    assert_eq!(done["data"]["last_payment_error"]["error_code"], "authentication_required");
    env.finish().await;
}

#[tokio::test]
async fn a_challenge_left_open_ends_with_its_session() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_lifecycle(&[("SETTLEMENT_RETRY_AFTER_SECS", "1")]).await;
    let checkout = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    CheckoutClient::new().pay(url, ALWAYS_ASKS, false).await;
    env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'requires_action'", 1).await;
    // The customer walks away; the session's time runs out.
    env.pool.get().await.unwrap().execute("UPDATE payment_sessions SET expires_at = now() WHERE id = $1", &[&id]).await.unwrap();
    // The challenge is given up (an attempt failure), then the session expires.
    assert_eq!(env.event_about("payment.attempt_failed", id).await["data"]["last_payment_error"]["decline_code"], "authentication_failed");
    loop {
        let updated = env.event_about("payment_session.updated", id).await;
        if updated["data"]["status"] == "expired" {
            break;
        }
    }
    assert_eq!(attempt_statuses(&env).await, ["failed"]);
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE outcome = 'succeeded'").await, 0, "nothing was charged");
    assert_eq!(env.count("SELECT count(*) FROM vault_cards WHERE pan_sealed IS NOT NULL").await, 0, "its card number is gone");
    env.finish().await;
}
