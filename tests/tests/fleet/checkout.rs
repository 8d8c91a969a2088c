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

    let presses = futures::future::join_all((0..8).map(|_| client.submit(url, &csrf, Some(&cookie), "4242424242424242"))).await;
    assert!(presses.iter().all(|s| *s == 303), "{presses:?}");
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 1, "one attempt however often the button is pressed");
    // A press that lost the race had its card vaulted already: its number is gone by the time it is answered.
    let orphaned = env
        .count(
            "SELECT count(*) FROM vault_cards v WHERE pan_sealed IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM payment_attempts a WHERE a.card_token = v.token)",
        )
        .await;
    assert_eq!(orphaned, 0, "no card number kept that no attempt took");

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
    let row = env.pool.get().await.unwrap().query_one("SELECT token, pan_sealed FROM vault_cards", &[]).await.unwrap();
    let (token, sealed): (String, String) = (row.get(0), row.get(1));
    assert!(sealed.starts_with("ps2:test1:"), "{sealed}");
    assert_eq!(integration_tests::test_keys().open_str(&ps_runtime::sealing::At::card_number(&token), &sealed).unwrap(), pan);
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

#[tokio::test]
async fn card_testing_meets_a_generic_decline_an_attempt_limit_and_a_rate_limit() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_lifecycle(&[("CHECKOUT_MAX_FAILED_ATTEMPTS", "2")]).await;
    let checkout = env.start_checkout_with(&[("CHECKOUT_SUBMITS_PER_MINUTE", "4")]).await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let client = CheckoutClient::new();

    // A wrong security code reads as a plain decline; the merchant still learns why.
    client.pay(url, "4000000000000127", false).await;
    env.event_about("payment.attempt_failed", id).await;
    let (page, _) = client.get(url).await;
    assert_eq!(page.text_of("error").as_deref(), Some("Your card was declined. Please try again or use another card."));
    assert_eq!(env.session(id).await["last_payment_error"]["decline_code"], "incorrect_cvc");

    // The second failure is the last allowed: the session ends unpaid, as the reference API ends exhausted sessions.
    client.pay(url, "4000000000000002", false).await;
    let failed = env.event_about("payment.failed", id).await;
    assert_eq!(failed["data"]["status"], "failed", "payment.* carries the payment");
    let s = env.session(id).await;
    assert_eq!((s["status"].as_str(), s["payment_outcome"].as_str()), (Some("completed"), Some("unpaid")));
    env.event_about("payment_session.completed", id).await;
    let (page, _) = client.get(url).await;
    assert!(!page.has("card_number"), "no card form on an exhausted session: {}", page.body);
    // Posting the form anyway (with a self-made CSRF pair) starts nothing.
    assert_eq!(client.submit(url, "self-made", Some("ps_csrf=self-made"), "4242424242424242").await, 303);
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 2, "no third attempt");
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE outcome = 'succeeded'").await, 0);

    // Three submissions have been made from this client; the fifth within the minute is refused before the vault.
    let other = env.call(Command::create("shop", &one_time())).await.body;
    let other_url = other["session_url"].as_str().unwrap();
    let (csrf, cookie) = client.form_tokens(other_url).await;
    assert_eq!(client.submit(other_url, &csrf, Some(&cookie), "4242424242424242").await, 303, "the fourth goes through");
    env.event_about("payment_session.completed", other["id"].as_str().unwrap()).await;
    let vaulted = env.count("SELECT count(*) FROM vault_cards").await;
    let third = env.call(Command::create("shop", &one_time())).await.body;
    let third_url = third["session_url"].as_str().unwrap();
    let (csrf, cookie) = client.form_tokens(third_url).await;
    assert_eq!(client.submit(third_url, &csrf, Some(&cookie), "4242424242424242").await, 429);
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, vaulted, "a refused submission never reaches the vault");
    env.finish().await;
}

/// A card vaulted by a checkout that died before starting its attempt keeps
/// its number only until the vault's sweep finds nothing refers to it.
#[tokio::test]
async fn a_vaulted_card_no_attempt_took_loses_its_number() {
    let mut env = TestEnv::new().await;
    let token = format!("tok_orphan_{}", uuid::Uuid::new_v4().simple());
    let sealed = integration_tests::test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), "4242424242424242");
    env.pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO vault_cards (token, pan_sealed, brand, last4, exp_month, exp_year, created_at)
             VALUES ($1, $2, 'visa', '4242', 12, 2034, now() - interval '1 hour')",
            &[&token, &sealed],
        )
        .await
        .unwrap();
    // A saved method's card, as old, stays.
    let (_, pm, _) =
        integration_tests::seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    env.start_gateway(&[("VAULT_ORPHAN_AFTER_SECS", "1")]).await;
    env.wait_for_count("SELECT count(*) FROM vault_cards WHERE pan_sealed IS NULL AND forgotten_at IS NOT NULL", 1).await;
    let c = env.pool.get().await.unwrap();
    let kept: bool = c
        .query_one(
            "SELECT pan_sealed IS NOT NULL FROM vault_cards WHERE token = (SELECT vault_token FROM payment_methods WHERE id = $1)",
            &[&pm],
        )
        .await
        .unwrap()
        .get(0);
    assert!(kept, "a saved method's card keeps its number");
    let forgotten: Option<String> = c.query_one("SELECT pan_sealed FROM vault_cards WHERE token = $1", &[&token]).await.unwrap().get(0);
    assert_eq!(forgotten, None);
    drop(c);
    env.finish().await;
}

/// The page checks `expires_at` itself: a session past it takes no card,
/// whether or not lifecycle's sweep has ended it yet.
#[tokio::test]
async fn a_session_past_its_expiry_takes_no_card() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    let base = env.start_checkout().await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &base)]).await;
    // No lifecycle: nothing sweeps the session to `expired`.
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap(), s["session_url"].as_str().unwrap());
    let client = CheckoutClient::new();
    let (csrf, cookie) = client.form_tokens(url).await;
    env.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE payment_sessions SET expires_at = now() - interval '1 second' WHERE id = $1", &[&id])
        .await
        .unwrap();
    let (page, _) = client.get(url).await;
    assert!(!page.has("card_number"), "no card form past expires_at: {}", page.body);
    assert_eq!(client.submit(url, &csrf, Some(&cookie), "4242424242424242").await, 303);
    assert_eq!(env.count("SELECT count(*) FROM payment_attempts").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM vault_cards").await, 0, "the card never reached the vault");
    env.finish().await;
}

/// A page load is limited per client like a submission, and a token that
/// cannot be one is refused before the database is asked for anything.
#[tokio::test]
async fn page_loads_are_limited_and_a_malformed_token_asks_the_database_nothing() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    let base = env.start_checkout_with(&[("CHECKOUT_VIEWS_PER_MINUTE", "3")]).await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &base)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let (id, url) = (s["id"].as_str().unwrap().to_owned(), s["session_url"].as_str().unwrap().to_owned());
    let client = CheckoutClient::new();

    // The database refuses every connection from here on.
    let admin = integration_tests::admin_database_url();
    let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", env.db_name)).await.unwrap();
    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&env.db_name]).await.unwrap();
    let (malformed, _) = client.get(&format!("{base}/pay/{id}?t=guess")).await;
    assert_eq!(malformed.status, 404, "answered without the database");
    let (shaped, _) = client.get(&format!("{base}/pay/{id}?t={}", "A".repeat(32))).await;
    assert_eq!(shaped.status, 503, "a token that could be one needs the database");
    c.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", env.db_name)).await.unwrap();

    client.get(&url).await;
    let (fourth, _) = client.get(&url).await;
    assert_eq!(fourth.status, 429, "the fourth load within the minute, whatever the session");
    env.finish().await;
}

/// Served behind TLS (its public URL https), the CSRF cookie is a `__Host-` one:
/// Secure, for the whole host, settable by no subdomain and no plain-http page.
#[tokio::test]
async fn behind_https_the_csrf_cookie_is_secure_and_host_only() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    let base = env.start_checkout_with(&[("CHECKOUT_BASE_URL", "https://pay.example.com")]).await;
    env.start_intake_with(&[("CHECKOUT_BASE_URL", &base)]).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let r = reqwest::get(s["session_url"].as_str().unwrap()).await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-ps_csrf=") && cookie.contains("; Secure") && cookie.contains("Path=/;"), "{cookie}");
    env.finish().await;
}
