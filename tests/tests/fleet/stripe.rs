//! The Stripe connector (DESIGN §11) against a stateful stand-in Stripe
//! (localstripe), through the real services: what reaches Stripe, what Stripe
//! then holds, and what the merchant is told.

use integration_tests::stripe::StripeFleet;
use integration_tests::{CheckoutClient, Command, TestEnv};
use serde_json::{json, Value};

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
    assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid");
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
