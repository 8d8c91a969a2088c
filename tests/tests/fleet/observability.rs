//! What an SRE sees: spans exported over OTLP when asked, and a clean exit on SIGTERM.

use axum::body::Bytes;
use integration_tests::{Command, TestEnv};
use serde_json::json;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn spans_reach_an_otlp_collector_and_sigterm_stops_cleanly() {
    // A stand-in collector that keeps what is POSTed to /v1/traces.
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut env = TestEnv::new().await;
    let pid =
        env.spawn_binary("session-intake", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector), ("OTEL_SERVICE_NAME", "session-intake")]).id();
    let reply = env
        .call(Command::create("shop", &json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://x.example/r"})))
        .await;
    assert_eq!(reply.body["status"], "active");

    // SIGTERM: stop consuming, finish, flush the outbox and the spans, exit 0.
    let status = env.terminate_child(pid).await;
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    let batches = received.lock().unwrap().clone();
    assert!(!batches.is_empty(), "no spans were exported");
    let all: Vec<u8> = batches.iter().flat_map(|b| b.to_vec()).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"consume"), "the consume span is exported");
    assert!(contains(b"session-intake"), "spans name their service");
    env.finish().await;
}

#[tokio::test]
async fn an_operator_can_look_up_a_session_and_its_deliveries_with_psctl() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let rx = integration_tests::receiver::Receiver::start(&[], integration_tests::receiver::Answer::Status(200)).await;
    env.call(Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["*"]})).header("merchant-id", "shop")).await;
    let s = env
        .call(Command::create("shop", &json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://x.example/r"})))
        .await
        .body;
    let event = env.event_about("payment_session.created", s["id"].as_str().unwrap()).await;
    rx.wait_for(1).await;
    env.wait_for_count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'", 1).await;

    let shown: serde_json::Value = serde_json::from_str(&env.psctl(&["sessions", "show", s["id"].as_str().unwrap(), "--json"])).unwrap();
    assert_eq!(shown["id"], s["id"]);
    assert_eq!(shown["merchant_id"], "shop");
    assert_eq!(shown["attempts"], json!([]));
    let deliveries: serde_json::Value = serde_json::from_str(&env.psctl(&["deliveries", event["id"].as_str().unwrap(), "--json"])).unwrap();
    assert_eq!(deliveries[0]["status"], "delivered", "{deliveries}");
    assert_eq!(deliveries[0]["tries"][0]["status"], 200, "{deliveries}");
    env.finish().await;
}
