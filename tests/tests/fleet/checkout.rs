//! The checkout's edges: who may see a session, forged and doubled submits,
//! and where a card number may be.

use integration_tests::{CheckoutClient, Command, TestEnv};
use serde_json::json;

fn one_time() -> serde_json::Value {
    json!({"type": "one_time", "amount": 4200, "currency": "USD", "return_url": "https://shop.example/r"})
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_a_plain_404() {
    let mut env = TestEnv::new().await;
    let base = env.start_fleet().await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let url = s["session_url"].as_str().unwrap();
    let id = s["id"].as_str().unwrap();
    let client = CheckoutClient::new();
    let (good, _) = client.get(url).await;
    assert_eq!(good.status, 200);
    let (missing, _) = client.get(&format!("{base}/pay/{id}")).await;
    let (wrong, _) = client.get(&format!("{base}/pay/{id}?t=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    let (unknown, _) = client.get(&format!("{base}/pay/ps_01JDV3V9QK2H7M4N6P8R0S1T2U?t=x")).await;
    for page in [&missing, &wrong, &unknown] {
        assert_eq!(page.status, 404);
        assert_eq!(page.body, unknown.body, "a wrong token reveals nothing an unknown session would not");
        assert!(!page.body.contains("42.00") && !page.body.contains("shop"));
    }
    env.finish().await;
}

#[tokio::test]
async fn a_forged_form_starts_nothing_and_a_double_submit_starts_one_attempt() {
    let mut env = TestEnv::new().await;
    // A slow processor keeps the first attempt in flight while the second arrives.
    env.start_gateway(&[("SANDBOX_LATENCY_MS", "1000")]).await;
    env.start_lifecycle(&[]).await;
    let base = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &base)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let url = s["session_url"].as_str().unwrap();
    let id = s["id"].as_str().unwrap();
    let client = CheckoutClient::new();
    let (csrf, cookie) = client.form_tokens(url).await;

    assert_eq!(client.submit(url, &csrf, None, "4242424242424242").await, 403, "no CSRF cookie");
    assert_eq!(client.submit(url, "forged", Some(&cookie), "4242424242424242").await, 403, "field and cookie differ");
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 0, "a refused form never reaches the vault");

    let (a, b) = tokio::join!(
        client.submit(url, &csrf, Some(&cookie), "4242424242424242"),
        client.submit(url, &csrf, Some(&cookie), "4242424242424242")
    );
    assert_eq!((a, b), (303, 303));
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 1, "one attempt however often the button is pressed");

    // While it is in flight, the merchant cannot cancel it.
    let cancel = env.call(Command::new("payment_session.cancel", &json!({"payment_session_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(cancel.error_code(), Some("payment_processing"));
    let done = env.event_about("payment_session.completed", id).await;
    assert_eq!(done["data"]["payment_outcome"], "paid");
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn the_card_number_never_leaves_the_vault() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let mut body = one_time();
    body["customer"] = json!({"name": "Ada", "email": "ada@example.com"});
    body["save_payment_method"] = json!("always");
    let s = env.call(Command::create("shop", &body)).await.body;
    let page = CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242 4242 4242 4242", false).await;
    assert!(!page.body.contains("4242424242424242") && !page.body.contains("4242 4242"));
    let done = env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert!(!done.to_string().contains("4242424242424242"));

    let pan = "4242424242424242";
    // Even the vault keeps it sealed (DESIGN §10), under the key PS_SECRET_KEYS names.
    let sealed: String = env.pool.get().await.unwrap().query_one("SELECT pan_sealed FROM vault_cards", &[]).await.unwrap().get(0);
    assert!(sealed.starts_with("ps1:test1:"), "{sealed}");
    assert_eq!(integration_tests::test_keys().open_str(ps_runtime::sealing::context::CARD_NUMBER, &sealed).unwrap(), pan);
    for (table, text) in [
        ("vault_cards", "t::text"),
        ("outbox", "convert_from(body, 'UTF8') || headers::text"),
        ("payment_attempts", "t::text"),
        ("payment_methods", "t::text"),
        ("payment_sessions", "t::text"),
        ("sandbox_ledger", "t::text"),
        ("processor_calls", "t::text"),
        ("processed_messages", "t::text"),
    ] {
        let n = env.count(&format!("SELECT count(*) FROM {table} t WHERE {text} LIKE '%{pan}%'")).await;
        assert_eq!(n, 0, "the card number is in {table}");
    }
    let pm: String = env.pool.get().await.unwrap().query_one("SELECT card_last4 FROM payment_methods", &[]).await.unwrap().get(0);
    assert_eq!(pm, "4242");
    env.finish().await;
}

#[tokio::test]
async fn a_card_that_is_not_saved_loses_its_number_when_its_attempt_ends() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let url = s["session_url"].as_str().unwrap();
    // Declined, then paid: neither card is saved (save_payment_method: never).
    CheckoutClient::new().pay(url, "4000000000000002", false).await;
    env.event_about("payment.attempt_failed", s["id"].as_str().unwrap()).await;
    CheckoutClient::new().pay(url, "4242424242424242", false).await;
    env.event_about("payment_session.completed", s["id"].as_str().unwrap()).await;
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 2);
    assert_eq!(
        env.count("SELECT count(*) FROM vault_cards WHERE pan_sealed IS NULL AND forgotten_at IS NOT NULL").await,
        2,
        "both numbers deleted; brand, last4 and expiry stay for display"
    );
    assert_eq!(env.count("SELECT count(*) FROM vault_cards WHERE last4 = '4242'").await, 1);
    env.finish().await;
}
