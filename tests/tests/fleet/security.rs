//! Trust (DESIGN §10): internal messages are checked against what the fleet
//! recorded, live mode cannot fake payments.

use integration_tests::{binary_path, Command, TestEnv};
use ps_contract::routing::{exchange, header};
use ps_runtime::message::header_str;
use ps_runtime::topology;
use serde_json::json;

async fn vaulted_card(env: &TestEnv, pan: &str) -> String {
    let token = format!("tok_test_{}", uuid::Uuid::new_v4().simple());
    env.pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO vault_cards (token, pan, brand, last4, exp_month, exp_year) VALUES ($1, $2, 'visa', '4242', 12, 2034)",
            &[&token, &pan],
        )
        .await
        .unwrap();
    token
}

fn authorize(attempt: &str, session: &str, amount: i64, token: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "attempt_id": attempt, "session_id": session, "merchant_id": "shop", "amount": amount, "currency": "EUR",
        "capture_method": "automatic", "payment_method_id": null, "card_token": token, "mandate_id": null,
        "customer_present": true, "processor_idempotency_key": format!("authorize:{attempt}"),
    }))
    .unwrap()
}

#[tokio::test]
async fn a_forged_authorize_charges_nothing_and_a_recorded_one_charges_its_amount() {
    let mut env = TestEnv::new().await;
    env.start_gateway(&[]).await;
    env.start_intake().await;
    let s = env
        .call(Command::create(
            "shop",
            &json!({"type": "one_time", "amount": 500, "currency": "EUR", "return_url": "https://shop.example/r"}),
        ))
        .await
        .body;
    let session = s["id"].as_str().unwrap();
    let token = vaulted_card(&env, "4242424242424242").await;

    // An attempt nobody recorded: refused, dead-lettered with its reason, nothing sent to the processor.
    let made_up = ps_contract::ids::AttemptId::generate().to_string();
    env.publish(exchange::INTERNAL, "gateway.authorize", &authorize(&made_up, session, 500, &token), "forged-1", "shop").await;
    let (_, headers) = env.next_dead_letter(&topology::GATEWAY).await;
    assert_eq!(header_str(Some(&headers), header::DEAD_LETTER_CODE).as_deref(), Some("request_not_vouched"));
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("no attempt"));

    // A recorded, pending attempt — but the message asks for more than it.
    let attempt = ps_contract::ids::AttemptId::generate().to_string();
    env.pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO payment_attempts (id, session_id, merchant_id, amount, currency, status, processor_idempotency_key, source, card_token)
             VALUES ($1, $2, 'shop', 500, 'EUR', 'pending', $3, 'checkout', $4)",
            &[&attempt, &session, &format!("authorize:{attempt}"), &token],
        )
        .await
        .unwrap();
    env.publish(exchange::INTERNAL, "gateway.authorize", &authorize(&attempt, session, 50_000, &token), "forged-2", "shop").await;
    let (_, headers) = env.next_dead_letter(&topology::GATEWAY).await;
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("amount 50000 differs"));
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger").await, 0, "no forged request reached the processor");

    // The request the fleet recorded goes through, for the recorded amount.
    env.publish(exchange::INTERNAL, "gateway.authorize", &authorize(&attempt, session, 500, &token), "genuine", "shop").await;
    env.wait_for_count("SELECT count(*) FROM sandbox_ledger", 1).await;
    assert_eq!(env.count("SELECT sum(amount)::bigint FROM sandbox_ledger").await, 500);
    env.finish().await;
}

#[tokio::test]
async fn live_mode_refuses_to_start_the_gateway_on_the_sandbox() {
    let out = std::process::Command::new(binary_path("payment-gateway"))
        .env_clear()
        .env("PS_MODE", "live")
        .env("VAULT_TOKEN", integration_tests::VAULT_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exits at once with a configuration error");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("PROCESSOR") && stderr.contains("sandbox"), "{stderr}");
}

#[tokio::test]
async fn a_command_without_a_broker_user_or_for_an_ungranted_merchant_changes_nothing() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    let body = json!({"type": "one_time", "amount": 500, "currency": "EUR", "return_url": "https://shop.example/r"});
    // The harness's guest is granted '*' (local mode); take that away and grant one merchant.
    env.psctl(&["merchants", "revoke", "guest", "*"]);
    env.psctl(&["merchants", "grant", "guest", "shop"]);
    let ok = env.call(Command::create("shop", &body)).await.body;
    assert_eq!(ok["status"], "active", "{ok}");
    let other = env.call(Command::create("rival", &body)).await;
    assert_eq!(other.error_code(), Some("merchant_not_authorized"), "{}", other.body);
    let anonymous = env.call(Command::create("shop", &body).user_id(None)).await;
    assert_eq!(anonymous.error_code(), Some("merchant_not_authorized"), "{}", anonymous.body);
    // Lifecycle's commands are held to the same rule: rival cannot cancel shop's session, even naming itself.
    let cancel =
        env.call(Command::new("payment_session.cancel", &json!({"payment_session_id": ok["id"]})).header("merchant-id", "rival")).await;
    assert_eq!(cancel.error_code(), Some("merchant_not_authorized"), "{}", cancel.body);
    assert_eq!(env.session(ok["id"].as_str().unwrap()).await["status"], "active");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    let listed = env.psctl(&["merchants", "list"]);
    assert!(listed.contains("guest\tshop") && !listed.contains("guest\t*"), "{listed}");
    env.finish().await;
}
