//! Webhook dispatch: signed as Standard Webhooks says, retried, never lost.

use integration_tests::receiver::{Answer, Receiver};
use integration_tests::{Command, TestEnv};
use serde_json::{json, Value};

fn one_time() -> Value {
    json!({"type": "one_time", "amount": 100, "currency": "EUR", "return_url": "https://shop.example/r"})
}

async fn endpoint(env: &TestEnv, merchant: &str, url: &str, events: Value) -> Value {
    let r = env
        .call(Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": events})).header("merchant-id", merchant))
        .await;
    assert_eq!(r.body["object"], "webhook_endpoint", "{}", r.body);
    integration_tests::assert_schema("webhook_endpoint", &r.body);
    r.body
}

/// Checks a request the way a merchant's receiver would, with an independent implementation.
fn verify(secret: &str, req: &integration_tests::receiver::Received) {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, http::HeaderValue::from_bytes(req.headers[name].as_bytes()).unwrap());
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&req.body, &headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?}"));
}

#[tokio::test]
async fn deliveries_are_signed_and_byte_identical() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    let ep = endpoint(&env, "shop", &rx.url, json!(["payment_session.created"])).await;
    let secret = ep["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(ep["status"], "enabled");
    // Another merchant's endpoint hears nothing of shop's events.
    let elsewhere = Receiver::start(&[], Answer::Status(200)).await;
    endpoint(&env, "rival", &elsewhere.url, json!(["*"])).await;

    let s = env.call(Command::create("shop", &one_time())).await.body;
    let event = env.event_about("payment_session.created", s["id"].as_str().unwrap()).await;
    let got = rx.wait_for(1).await;
    let req = &got[0];
    verify(secret, req);
    assert_eq!(req.headers["webhook-id"], event["id"].as_str().unwrap());
    assert_eq!(req.headers["content-type"], "application/json");
    let stored: Vec<u8> = env
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT payload FROM webhook_events WHERE id = $1", &[&event["id"].as_str().unwrap()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(req.body.as_ref(), stored.as_slice(), "the body is exactly the event as published");
    assert_eq!(serde_json::from_slice::<Value>(&req.body).unwrap(), event);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints p ON p.id = d.endpoint_id WHERE p.merchant_id = 'rival'"
        )
        .await,
        0
    );
    assert!(elsewhere.received().is_empty());
    env.finish().await;
}

#[tokio::test]
async fn failing_twice_then_succeeding_is_three_recorded_attempts_of_one_event() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[("WEBHOOK_RETRY_SCHEDULE_SECS", "0.05,0.05,0.05")]).await;
    let rx = Receiver::start(&[Answer::Status(500), Answer::Status(500)], Answer::Status(200)).await;
    endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let event = env.event_about("payment_session.created", s["id"].as_str().unwrap()).await;
    let got = rx.wait_for(3).await;
    assert!(got.iter().all(|r| r.headers["webhook-id"] == event["id"].as_str().unwrap()), "one event, three tries");
    env.wait_for_count(
        &format!("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND event_id = '{}'", event["id"].as_str().unwrap()),
        1,
    )
    .await;
    let statuses: Vec<Option<i32>> = env
        .pool
        .get()
        .await
        .unwrap()
        .query("SELECT status_code FROM webhook_attempts ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    assert_eq!(env.count("SELECT count(*) FROM webhook_attempts WHERE latency_ms >= 0 AND response_body IS NOT NULL").await, 3);
    env.finish().await;
}

#[tokio::test]
async fn a_retry_pending_across_a_restart_is_still_delivered() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[("WEBHOOK_RETRY_SCHEDULE_SECS", "1")]).await;
    let rx = Receiver::start(&[Answer::Status(503)], Answer::Status(200)).await;
    endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    rx.wait_for(1).await;
    // The dispatcher stops with the retry scheduled in the database, and a new one takes over.
    env.stop_services().await;
    assert_eq!(env.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND attempts = 1").await, 1);
    env.start_webhooks(&[("WEBHOOK_RETRY_SCHEDULE_SECS", "1")]).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].headers["webhook-id"], got[0].headers["webhook-id"]);
    assert!(s["id"].is_string());
    env.finish().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_says_so() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(410)).await;
    let ep = endpoint(&env, "shop", &rx.url, json!(["payment_session.created"])).await;
    env.call(Command::create("shop", &one_time())).await;
    let disabled = env.event_about("webhook_endpoint.disabled", ep["id"].as_str().unwrap()).await;
    assert_eq!(disabled["data"]["status"], "disabled");
    assert!(disabled["data"].get("secret").is_none(), "the event never carries the secret");
    assert_eq!(rx.received().len(), 1, "no retries to a gone endpoint");
    // Nothing more is sent to it.
    env.call(Command::create("shop", &one_time())).await;
    assert_eq!(env.count("SELECT count(*) FROM webhook_deliveries").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(500)).await;
    let ep = endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    let id = ep["id"].as_str().unwrap();
    // It has been failing since six days ago.
    env.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1", &[&id])
        .await
        .unwrap();
    env.call(Command::create("shop", &one_time())).await;
    let disabled = env.event_about("webhook_endpoint.disabled", id).await;
    assert_eq!(disabled["data"]["status"], "disabled");
    env.finish().await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    let ep = endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    let old = ep["secret"].as_str().unwrap().to_owned();
    let rotated = env
        .call(Command::new("webhook_endpoint.rotate_secret", &json!({"webhook_endpoint_id": ep["id"]})).header("merchant-id", "shop"))
        .await
        .body;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    env.call(Command::create("shop", &one_time())).await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].headers["webhook-signature"].to_str().unwrap().split(' ').count(), 2);
    verify(&old, &got[0]);
    verify(&new, &got[0]);
    // After the 24 hours, only the new one signs.
    env.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE webhook_endpoints SET previous_secret_expires_at = now() - interval '1 second'", &[])
        .await
        .unwrap();
    env.call(Command::create("shop", &one_time())).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].headers["webhook-signature"].to_str().unwrap().split(' ').count(), 1);
    verify(&new, &got[1]);
    env.finish().await;
}

#[tokio::test]
async fn private_and_loopback_targets_are_refused_without_the_allow_list() {
    let mut env = TestEnv::new().await;
    env.start_webhooks(&[("WEBHOOK_LOCAL_MODE", "false")]).await;
    for url in [
        "https://127.0.0.1/hooks",
        "https://10.0.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://localhost/hooks",
        "https://[::127.0.0.1]/hooks",
        "https://[2002:a9fe:a9fe::1]/hooks",
        "https://[fec0::1]/hooks",
    ] {
        let r = env
            .call(Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": ["*"]})).header("merchant-id", "shop"))
            .await;
        assert_eq!(r.error_code(), Some("webhook_url_not_allowed"), "{url}: {}", r.body);
    }
    let r = env
        .call(
            Command::new("webhook_endpoint.create", &json!({"url": "http://shop.example/hooks", "enabled_events": ["*"]}))
                .header("merchant-id", "shop"),
        )
        .await;
    assert_eq!(r.error_code(), Some("url_invalid"), "https is required outside local mode");
    assert_eq!(env.count("SELECT count(*) FROM webhook_endpoints").await, 0);
    env.finish().await;
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_another() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2"), ("WEBHOOK_TIMEOUT_MS", "60000")]).await;
    let stuck = Receiver::start(&[], Answer::Hang).await;
    let fine = Receiver::start(&[], Answer::Status(200)).await;
    endpoint(&env, "slowpoke", &stuck.url, json!(["*"])).await;
    endpoint(&env, "shop", &fine.url, json!(["*"])).await;
    for _ in 0..20 {
        env.send(Command::create("slowpoke", &one_time()).no_reply()).await;
        env.send(Command::create("shop", &one_time()).no_reply()).await;
    }
    // Every one of shop's deliveries arrives while slowpoke's receiver still holds its requests.
    stuck.wait_for(2).await;
    fine.wait_for(20).await;
    assert_eq!(stuck.received().len(), 2, "the stuck endpoint has only its own two slots");
    stuck.release();
    stuck.wait_for(20).await;
    env.finish().await;
}

/// Many endpoints give a merchant no more delivery slots than one: its share is
/// per merchant, so another merchant's deliveries keep flowing.
#[tokio::test]
async fn a_merchant_with_many_hanging_endpoints_holds_up_nobody_else() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[
        ("WEBHOOK_CONCURRENCY", "8"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "2"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_MERCHANT", "4"),
        ("WEBHOOK_TIMEOUT_MS", "60000"),
    ])
    .await;
    let stuck = Receiver::start(&[], Answer::Hang).await;
    let fine = Receiver::start(&[], Answer::Status(200)).await;
    for i in 0..6 {
        endpoint(&env, "slowpoke", &format!("{}?endpoint={i}", stuck.url), json!(["*"])).await;
    }
    endpoint(&env, "shop", &fine.url, json!(["*"])).await;
    for _ in 0..5 {
        env.send(Command::create("slowpoke", &one_time()).no_reply()).await;
    }
    stuck.wait_for(4).await;
    for _ in 0..10 {
        env.send(Command::create("shop", &one_time()).no_reply()).await;
    }
    fine.wait_for(10).await;
    assert_eq!(stuck.received().len(), 4, "six endpoints, and still only the merchant's four slots");
    stuck.release();
    stuck.wait_for(30).await;
    env.finish().await;
}

#[tokio::test]
async fn a_merchant_has_a_bounded_number_of_endpoints() {
    let mut env = TestEnv::new().await;
    env.start_webhooks(&[("WEBHOOK_MAX_ENDPOINTS_PER_MERCHANT", "2")]).await;
    let create = |merchant: &str, n: usize| {
        Command::new("webhook_endpoint.create", &json!({"url": format!("https://127.0.0.1:9/hooks?n={n}"), "enabled_events": ["*"]}))
            .header("merchant-id", merchant)
    };
    for n in 0..2 {
        assert_eq!(env.call(create("shop", n)).await.body["status"], "enabled");
    }
    let third = env.call(create("shop", 2)).await;
    assert_eq!(third.error_code(), Some("webhook_endpoint_limit_reached"), "{}", third.body);
    assert_eq!(env.call(create("other", 0)).await.body["status"], "enabled", "the cap is per merchant");
    // A deleted endpoint frees its place.
    let id: String = env
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT id FROM webhook_endpoints WHERE merchant_id = 'shop' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    env.call(Command::new("webhook_endpoint.delete", &json!({"webhook_endpoint_id": id})).header("merchant-id", "shop")).await;
    assert_eq!(env.call(create("shop", 3)).await.body["status"], "enabled");
    env.finish().await;
}

/// Creating an endpoint asks no resolver (the command's transaction must not
/// wait on DNS, and its answer must not say what a name resolves to); the
/// delivery resolves through the guard, which refuses a private address
/// without contacting it and without naming it.
#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused_where_it_is_used() {
    let host = String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_owned();
    let resolved: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), 443)).await.unwrap().map(|a| a.ip()).collect();
    assert!(
        !resolved.is_empty() && resolved.iter().all(|ip| webhook_dispatch::guard::is_special(*ip)),
        "this test needs the machine's own name to resolve to private addresses only: {host} -> {resolved:?}"
    );
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[("WEBHOOK_LOCAL_MODE", "false"), ("WEBHOOK_RETRY_SCHEDULE_SECS", "3600")]).await;
    let url = format!("https://{host}:{}/hooks", integration_tests::free_port());
    let ep = env
        .call(Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": ["*"]})).header("merchant-id", "shop"))
        .await;
    assert_eq!(ep.body["status"], "enabled", "{}", ep.body);
    env.call(Command::create("shop", &one_time())).await;
    env.wait_for_count("SELECT count(*) FROM webhook_attempts WHERE error LIKE '%private or reserved%'", 1).await;
    let error: String = env.pool.get().await.unwrap().query_one("SELECT error FROM webhook_attempts", &[]).await.unwrap().get(0);
    for ip in &resolved {
        assert!(!error.contains(&ip.to_string()), "the refusal names no address: {error}");
    }
    env.finish().await;
}

/// A proxy named in the environment would resolve and connect for the
/// dispatcher, past its guard: the dispatcher never uses one.
#[tokio::test]
async fn deliveries_never_go_through_a_proxy_from_the_environment() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let knocks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = knocks.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = proxy.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let rx = Receiver::start(&[], Answer::Status(200)).await;
    let vars = [
        ("WEBHOOK_LOCAL_MODE", "true"),
        ("WEBHOOK_POLL_MS", "50"),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("https_proxy", proxy_url.as_str()),
    ];
    env.spawn_binary("webhook-dispatch", &vars);
    let ep = env
        .call(Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["*"]})).header("merchant-id", "shop"))
        .await;
    assert_eq!(ep.body["status"], "enabled", "{}", ep.body);
    env.call(Command::create("shop", &one_time())).await;
    rx.wait_for(1).await;
    assert_eq!(knocks.load(std::sync::atomic::Ordering::SeqCst), 0, "the proxy was never contacted");
    env.finish().await;
}

#[tokio::test]
async fn exhausted_deliveries_show_as_dead_letters_and_can_be_redelivered() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[("WEBHOOK_RETRY_SCHEDULE_SECS", "0.05")]).await;
    let rx = Receiver::start(&[], Answer::RetryAfter(503, 0)).await;
    let ep = endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    let s = env.call(Command::create("shop", &one_time())).await.body;
    let event = env.event_about("payment_session.created", s["id"].as_str().unwrap()).await;
    let event_id = event["id"].as_str().unwrap();
    rx.wait_for(2).await;
    env.wait_for_count("SELECT count(*) FROM webhook_dead_letters", 1).await;
    let dead: (String, i32, Option<i32>) = {
        let r =
            env.pool.get().await.unwrap().query_one("SELECT event_id, attempts, last_status FROM webhook_dead_letters", &[]).await.unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(dead, (event_id.to_owned(), 2, Some(503)));

    rx.set_default(Answer::Status(200));
    let foreign = env.call(Command::new("webhook_event.redeliver", &json!({"event_id": event_id})).header("merchant-id", "rival")).await;
    assert_eq!(foreign.error_code(), Some("event_not_found"));
    let r = env
        .call(
            Command::new("webhook_event.redeliver", &json!({"event_id": event_id, "webhook_endpoint_id": ep["id"]}))
                .header("merchant-id", "shop"),
        )
        .await;
    assert_eq!(r.body["webhook_endpoint_ids"], json!([ep["id"]]), "{}", r.body);
    let got = rx.wait_for(3).await;
    assert_eq!(got[2].headers["webhook-id"], event_id);
    env.finish().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = Receiver::start(&[Answer::RetryAfter(429, 1)], Answer::Status(200)).await;
    endpoint(&env, "shop", &rx.url, json!(["*"])).await;
    env.call(Command::create("shop", &one_time())).await;
    // The default schedule would wait 5 s ±20 %; the receiver asked for 1 s.
    rx.wait_for(2).await;
    env.wait_for_count("SELECT count(*) FROM webhook_attempts", 2).await;
    let gap: f64 = env
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT extract(epoch FROM max(attempted_at) - min(attempted_at))::float8 FROM webhook_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!((0.9..4.0).contains(&gap), "second attempt after {gap} s");
    env.finish().await;
}
