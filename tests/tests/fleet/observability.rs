//! What an SRE sees: spans exported over OTLP when asked, and a clean exit on SIGTERM.

use axum::body::Bytes;
use integration_tests::{Command, TestEnv};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// A stand-in OTLP/HTTP collector that keeps what is POSTed to /v1/traces: its URL, and what it got.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
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
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_and_sigterm_stops_cleanly() {
    let (collector, received) = collector().await;

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

/// Spans as a collector receives them: (service, span).
fn decode(batches: &[Bytes]) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let mut out = vec![];
    for b in batches {
        let req = ExportTraceServiceRequest::decode(b.as_ref()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    out
}

fn attr(s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref()).map(|v| match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test]
async fn one_trace_follows_a_session_from_the_upstream_through_checkout_gateway_lifecycle_and_webhooks() {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let (collector, received) = collector().await;

    // The fleet as production runs it: six processes exporting spans.
    let settings = [("*", "OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()), ("*", "OTEL_BSP_SCHEDULE_DELAY", "100")];
    let fleet = integration_tests::faults::Fleet::start_with(10, &settings, false, integration_tests::faults::Processor::Sandbox).await;
    // The upstream's own trace, carried in the command's headers.
    let trace_hex = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let traceparent = format!("00-{trace_hex}-{:016x}-01", (uuid::Uuid::new_v4().as_u128() as u64) | 1);
    let body = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://x.example/r"});
    let created = fleet.env.call(Command::create("shop", &body).header("traceparent", &traceparent)).await.body;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = integration_tests::CheckoutClient::new().pay(created["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    assert_eq!(page.status, 200, "paid at the checkout: {}", page.body);
    fleet.env.event_about("payment_session.completed", &id).await;

    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let wanted = ["session-intake", "checkout", "payment-gateway", "session-lifecycle", "webhook-dispatch"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let spans = loop {
        let spans: Vec<_> = decode(&received.lock().unwrap().clone()).into_iter().filter(|(_, s)| s.trace_id == trace_id).collect();
        let processes = |queue: &str| spans.iter().any(|(_, s)| s.name == format!("process {}{queue}", fleet.env.prefix));
        let complete = wanted.iter().all(|w| spans.iter().any(|(svc, _)| svc.contains(w)))
            && ["payment_sessions.intake", "payment_sessions.gateway", "payment_sessions.lifecycle", "payment_sessions.webhooks.events"]
                .iter()
                .all(|q| processes(q));
        if complete {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trace is incomplete: {:?}",
            spans.iter().map(|(svc, s)| format!("{svc}: {}", s.name)).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for (svc, s) in &spans {
        let kind = SpanKind::try_from(s.kind).unwrap();
        if s.name.starts_with("process ") {
            assert_eq!(kind, SpanKind::Consumer, "{svc} {}", s.name);
            assert_eq!(attr(s, "messaging.system").as_deref(), Some("rabbitmq"));
            assert_eq!(attr(s, "messaging.operation.type").as_deref(), Some("process"));
            assert!(attr(s, "messaging.rabbitmq.destination.routing_key").is_some_and(|k| !k.is_empty()), "{}", s.name);
        }
        if s.name.starts_with("send ") {
            assert_eq!(kind, SpanKind::Producer, "{svc} {}", s.name);
            assert_eq!(attr(s, "messaging.operation.type").as_deref(), Some("send"));
            assert_eq!(attr(s, "messaging.destination.name").as_deref(), s.name.strip_prefix("send "));
        }
    }
    let named = |svc: &str, name: &str| spans.iter().any(|(s, sp)| s.contains(svc) && sp.name == name);
    let internal = format!("send {}payment_sessions.internal", fleet.env.prefix);
    let events = format!("send {}payment_sessions.events", fleet.env.prefix);
    assert!(named("checkout", "POST /pay/{id}"), "the checkout's request joins the session's trace");
    assert!(
        named("checkout", &internal),
        "the checkout publishes gateway.authorize in it: {:?}",
        spans.iter().map(|(svc, s)| format!("{svc}: {}", s.name)).collect::<Vec<_>>()
    );
    assert!(named("payment-gateway", &internal), "the gateway publishes its result in it");
    assert!(named("session-lifecycle", &events), "lifecycle publishes the events in it");
    // Each process span's parent is a publish span of the same trace: the hops are linked, not just grouped.
    let ids: std::collections::HashSet<&[u8]> =
        spans.iter().filter(|(_, s)| s.name.starts_with("send ")).map(|(_, s)| s.span_id.as_slice()).collect();
    let linked = spans.iter().filter(|(_, s)| s.name.starts_with("process ") && ids.contains(s.parent_span_id.as_slice())).count();
    assert!(linked >= 3, "process spans are children of the publish spans that sent them ({linked})");
    fleet.finish();
}

/// A metric's value in this process's registry (the services run in it), by name and labels.
fn metric(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus::proto::MetricType;
    let family = prometheus::gather().into_iter().find(|f| f.name() == name)?;
    let m =
        family.get_metric().iter().find(|m| labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)))?;
    Some(match family.get_field_type() {
        MetricType::GAUGE => m.get_gauge().get_value(),
        MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
        _ => m.get_counter().get_value(),
    })
}

async fn until_metric(name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric(name, labels) != Some(want) {
        assert!(std::time::Instant::now() < deadline, "{name}{labels:?} is {:?}, not {want}", metric(name, labels));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn gauges_show_the_webhook_backlog_and_the_outbox() {
    use integration_tests::receiver::{Answer, Receiver};
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_webhooks(&[]).await;
    let failing = Receiver::start(&[], Answer::Status(500)).await;
    let working = Receiver::start(&[], Answer::Status(200)).await;
    let mut endpoints = vec![];
    for rx in [&failing, &working] {
        let r = env
            .call(Command::new("webhook_endpoint.create", &json!({"url": rx.url, "enabled_events": ["*"]})).header("merchant-id", "shop"))
            .await;
        endpoints.push(r.body["id"].as_str().unwrap().to_owned());
    }
    env.call(Command::create("shop", &json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://x.example/r"})))
        .await;
    working.wait_for(1).await;
    failing.wait_for(1).await;
    until_metric("ps_webhook_deliveries", &[("state", "waiting")], 1.0).await;
    until_metric("ps_webhook_delivery_seconds", &[], 1.0).await;
    until_metric("ps_webhook_endpoints_disabled", &[], 0.0).await;
    // Disabled by command: its pending delivery is given up.
    env.call(Command::new("webhook_endpoint.disable", &json!({"webhook_endpoint_id": endpoints[0]})).header("merchant-id", "shop")).await;
    until_metric("ps_webhook_endpoints_disabled", &[], 1.0).await;
    until_metric("ps_webhook_deliveries", &[("state", "dead")], 1.0).await;
    until_metric("ps_webhook_deliveries", &[("state", "waiting")], 0.0).await;
    // Every relay reports its backlog: nothing is waiting here.
    until_metric("ps_outbox_backlog", &[("producer", "session-intake")], 0.0).await;
    until_metric("ps_outbox_oldest_seconds", &[("producer", "webhook-dispatch")], 0.0).await;
    env.finish().await;
}
