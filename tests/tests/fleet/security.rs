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
            "INSERT INTO vault_cards (token, pan_sealed, brand, last4, exp_month, exp_year) VALUES ($1, $2, 'visa', '4242', 12, 2034)",
            &[&token, &integration_tests::test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), pan)],
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

    // The right amount, but another card than the attempt's, or a card kept that the attempt let go.
    let other = vaulted_card(&env, "4242424242424242").await;
    env.publish(exchange::INTERNAL, "gateway.authorize", &authorize(&attempt, session, 500, &other), "forged-3", "shop").await;
    let (_, headers) = env.next_dead_letter(&topology::GATEWAY).await;
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("card is not the one"));
    let mut keep: serde_json::Value = serde_json::from_slice(&authorize(&attempt, session, 500, &token)).unwrap();
    keep["keep_card"] = json!(true);
    env.publish(exchange::INTERNAL, "gateway.authorize", keep.to_string().as_bytes(), "forged-4", "shop").await;
    let (_, headers) = env.next_dead_letter(&topology::GATEWAY).await;
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("kept"));
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger").await, 0);

    // The request the fleet recorded goes through, for the recorded amount.
    env.publish(exchange::INTERNAL, "gateway.authorize", &authorize(&attempt, session, 500, &token), "genuine", "shop").await;
    env.wait_for_count("SELECT count(*) FROM sandbox_ledger", 1).await;
    assert_eq!(env.count("SELECT sum(amount)::bigint FROM sandbox_ledger").await, 500);
    env.finish().await;
}

/// Lifecycle holds a processor's answer to its attempt too: an amount or key
/// that is not the attempt's is dead-lettered, never applied.
#[tokio::test]
async fn a_result_that_does_not_match_its_attempt_is_not_applied() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    // No gateway: the charge stays pending, its authorize unanswered.
    let (_, _, md) =
        integration_tests::seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let s =
        env.call(Command::create("gym", &json!({"type": "next_in_series", "amount": 700, "currency": "ZAR", "mandate_id": md}))).await.body;
    let id = s["id"].as_str().unwrap();
    let row = env.pool.get().await.unwrap().query_one("SELECT id, processor_idempotency_key FROM payment_attempts", &[]).await.unwrap();
    let (attempt, key): (String, String) = (row.get(0), row.get(1));
    let result = |amount: i64, key: &str| {
        json!({"operation": "authorize", "attempt_id": attempt, "session_id": id, "merchant_id": "gym", "outcome": "succeeded",
               "amount": amount, "currency": "ZAR", "error_code": null, "decline_code": null, "message": null, "card": null,
               "card_token": null, "processor_reference": "ref-1", "processor_idempotency_key": key, "refund_id": null})
        .to_string()
    };
    env.publish(exchange::INTERNAL, "gateway.result", result(1, &key).as_bytes(), "forged-result-1", "gym").await;
    let (_, headers) = env.next_dead_letter(&topology::LIFECYCLE).await;
    assert_eq!(header_str(Some(&headers), header::DEAD_LETTER_CODE).as_deref(), Some("result_not_vouched"));
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("amount 1 differs"));
    env.publish(exchange::INTERNAL, "gateway.result", result(700, "authorize:att_other").as_bytes(), "forged-result-2", "gym").await;
    let (_, headers) = env.next_dead_letter(&topology::LIFECYCLE).await;
    assert!(header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap().contains("processor key"));
    assert_eq!(env.session(id).await["payment_outcome"], "pending", "nothing was applied");
    // The attempt's own answer is.
    env.publish(exchange::INTERNAL, "gateway.result", result(700, &key).as_bytes(), "genuine-result", "gym").await;
    assert_eq!(env.event_about("payment_session.completed", id).await["data"]["payment_outcome"], "paid");
    env.finish().await;
}

#[tokio::test]
async fn live_mode_refuses_to_start_the_gateway_on_the_sandbox() {
    let out = std::process::Command::new(binary_path("payment-gateway"))
        .env_clear()
        .env("PS_MODE", "live")
        .env("AMQP_URL", "amqps://ps-gateway:pw@rabbit.internal:5671/%2f")
        .env("DATABASE_URL", "postgres://ps_gateway:pw@db.internal/ps?sslmode=verify-full")
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
    let listed: serde_json::Value = serde_json::from_str(&env.psctl(&["merchants", "list", "--json"])).unwrap();
    let grants: Vec<(&str, &str)> =
        listed.as_array().unwrap().iter().map(|g| (g["broker_user"].as_str().unwrap(), g["merchant_id"].as_str().unwrap())).collect();
    assert_eq!(grants, [("guest", "shop")], "{listed}");
    env.finish().await;
}

/// Where a secret could rest, as text, for searching.
const AT_REST: [(&str, &str); 4] = [
    ("webhook_endpoints", "t::text"),
    ("idempotency_keys", "t::text"),
    ("processed_messages", "t::text"),
    ("outbox", "convert_from(body, 'UTF8') || headers::text"),
];

async fn assert_nowhere_in_clear(env: &TestEnv, secret: &str) {
    for (table, text) in AT_REST {
        let n = env.count(&format!("SELECT count(*) FROM {table} t WHERE {text} LIKE '%{secret}%'")).await;
        assert_eq!(n, 0, "a signing secret rests in clear in {table}");
    }
}

#[tokio::test]
async fn webhook_secrets_rest_sealed_everywhere_and_survive_a_key_rotation() {
    use integration_tests::receiver::{Answer, Receiver};
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    let create = || {
        Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["payment_session.created"]}))
            .header("merchant-id", "shop")
            .header("idempotency-key", "endpoint-1")
    };
    let first = env.call(create()).await.body;
    let secret = first["secret"].as_str().unwrap().to_owned();
    // Replayed from the sealed idempotency record, and (same message id) from the sealed dedupe record.
    let again = env.call(create()).await;
    assert!(again.replayed && again.body["secret"] == secret.as_str(), "{}", again.body);
    let same_message = env.call(create().message_id("endpoint-msg-1")).await;
    let redelivered = env.call(create().message_id("endpoint-msg-1")).await;
    assert_eq!((same_message.body["secret"].as_str(), redelivered.body["secret"].as_str()), (Some(secret.as_str()), Some(secret.as_str())));
    assert_nowhere_in_clear(&env, &secret).await;
    let sealed = env.count("SELECT count(*) FROM processed_messages WHERE reply::text LIKE '%ps2:%'").await;
    assert!(sealed >= 2, "replies carrying the secret were sealed in their records: {sealed}");

    // Rotation: the new key first, the old one still listed; rewrap; then the old key goes.
    let k2 = "k2:c2Vjb25kLWtleS0zMi1ieXRlcy1sb25nLTAxMjM0NTY=";
    let both = format!("{k2},{}", integration_tests::SECRET_KEYS);
    env.stop_services().await;
    let report: serde_json::Value =
        serde_json::from_str(&env.psctl_with(&[("PS_SECRET_KEYS", &both)], &["secrets", "rewrap", "--json"])).unwrap();
    assert!(report.as_array().unwrap().iter().any(|r| r["secrets"] == "webhook_endpoints.secret" && r["resealed"] == 1), "{report}");
    for (table, text) in AT_REST {
        let old = env.count(&format!("SELECT count(*) FROM {table} t WHERE {text} LIKE '%ps2:test1:%'")).await;
        assert_eq!(old, 0, "{table} still holds values sealed under the retired key");
    }
    env.start_intake().await;
    env.start_webhooks(&[("PS_SECRET_KEYS", k2)]).await;
    let s = env
        .call(Command::create(
            "shop",
            &json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"}),
        ))
        .await
        .body;
    let got = rx.wait_for(1).await;
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got[0].headers[name].clone());
    }
    standardwebhooks::Webhook::new(&secret).unwrap().verify(&got[0].body, &headers).expect("still signed with the merchant's secret");
    assert!(String::from_utf8_lossy(&got[0].body).contains(s["id"].as_str().unwrap()));
    let replay = env.call(create()).await;
    assert_eq!(replay.body["secret"].as_str(), Some(secret.as_str()), "the replay opens under the new key");
    assert_nowhere_in_clear(&env, &secret).await;
    env.finish().await;
}

#[tokio::test]
async fn the_fleets_logs_carry_no_card_number_session_token_or_message_body() {
    use integration_tests::{free_port, CheckoutClient};
    let mut env = TestEnv::new().await;
    struct LogDir(std::path::PathBuf);
    impl Drop for LogDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let logs = LogDir(std::env::temp_dir().join(format!("ps-logs-{}", uuid::Uuid::new_v4().simple())));
    let dir = logs.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let (vault, web) = (free_port(), free_port());
    let checkout_url = format!("http://127.0.0.1:{web}");
    let vault_url = format!("http://127.0.0.1:{vault}");
    let services: [(&str, Vec<(&str, String)>); 5] = [
        ("payment-gateway", vec![("VAULT_ADDR", format!("127.0.0.1:{vault}"))]),
        ("session-lifecycle", vec![]),
        ("checkout", vec![("CHECKOUT_ADDR", format!("127.0.0.1:{web}")), ("VAULT_URL", vault_url)]),
        ("session-intake", vec![("CHECKOUT_BASE_URL", checkout_url.clone())]),
        ("webhook-dispatch", vec![("WEBHOOK_LOCAL_MODE", "true".into())]),
    ];
    for (name, extra) in &services {
        // As verbose as an operator would ever run them.
        let mut vars: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.push(("RUST_LOG", "debug"));
        env.spawn_binary_logging(name, &vars, Some(&dir.join(format!("{name}.log"))));
    }
    let body = json!({"type": "one_time", "amount": 500, "currency": "EUR", "return_url": "https://shop.example/r",
                      "metadata": {"order": "body-marker-7f3a"}});
    let s = env.call(Command::create("shop", &body)).await.body;
    let id = s["id"].as_str().unwrap();
    // A reply nobody can receive: RabbitMQ returns it, which lapin logs with the whole message by default.
    env.send(Command::create("shop", &body).reply_to(&format!("{}gone-client", env.prefix))).await;
    let pan = "4000000000000002";
    let url = s["session_url"].as_str().unwrap().to_owned();
    let page = loop {
        // The checkout and the gateway's vault are child processes: wait until both listen.
        let listening = |port| async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() };
        if listening(web).await && listening(vault).await {
            break CheckoutClient::new().pay(&url, pan, false).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(page.status, 200);
    env.event_about("payment.attempt_failed", id).await;
    CheckoutClient::new().pay(&url, "4242424242424242", false).await;
    env.event_about("payment_session.completed", id).await;
    let token: String =
        env.pool.get().await.unwrap().query_one("SELECT checkout_token FROM payment_sessions WHERE id = $1", &[&id]).await.unwrap().get(0);
    env.stop_services().await;
    for (name, _) in &services {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
        assert!(log.lines().count() > 3, "{name} logged ({} lines)", log.lines().count());
        // As text, and as the byte lists a library's Debug output prints a body as.
        let bytes = |s: &str| s.bytes().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
        let (token_bytes, marker_bytes) = (bytes(&token), bytes("body-marker-7f3a"));
        for (what, needle) in [
            ("a card number", pan),
            ("a card number", "4242424242424242"),
            ("a session token", token.as_str()),
            ("a session token", token_bytes.as_str()),
            ("a message body", "body-marker-7f3a"),
            ("a message body", marker_bytes.as_str()),
        ] {
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                panic!("{name}'s log holds {what}: {line}");
            }
        }
    }
    drop(logs);
    env.finish().await;
}
