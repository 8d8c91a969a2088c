//! Structured logs, traces, and trace context carried in message headers.

use lapin::types::FieldTable;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes spans on drop; keep it alive for the life of `main`.
pub struct TelemetryGuard(SdkTracerProvider);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// JSON logs to stdout, filtered by `RUST_LOG` (default `info`). Spans go to an
/// OTLP collector when the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables
/// name one; without one, trace ids are still made and propagated, so an
/// upstream's trace continues through the fleet.
pub fn init(service: &'static str) -> TelemetryGuard {
    crate::tls::install_default_provider();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let wants_otlp =
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].iter().any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut otlp_error = None;
    if wants_otlp {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => otlp_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service);

    let filter = log_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn")));
    let fmt = tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false);
    // RUST_LOG filters logs only: quieter logs must not switch off the spans
    // whose context travels in message headers.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(LevelFilter::INFO))
        .try_init();
    if let Some(e) = otlp_error {
        tracing::error!(error = %e, "OTLP exporter not started; spans are not exported");
    }
    TelemetryGuard(provider)
}

/// Libraries that log what they carry: lapin whole messages (a returned message
/// at WARN, frames at TRACE), tokio-postgres every query's parameters at DEBUG
/// (checkout tokens, sealed secrets), the HTTP stack headers and bodies at
/// DEBUG/TRACE. They are held at these levels whatever `RUST_LOG` asks; their
/// failures reach us as errors, which we log without the payload.
const QUIET: &[&str] = &["lapin=error", "tokio_postgres=warn", "hyper=warn", "hyper_util=warn", "h2=warn", "reqwest=warn", "rustls=warn"];

fn log_filter(mut filter: EnvFilter) -> EnvFilter {
    for d in QUIET {
        filter = filter.add_directive(d.parse().expect("a valid directive"));
    }
    filter
}

/// For tests: the same trace layer and propagation as `init`, logs to the
/// test's captured output, no exporter.
pub fn init_for_tests() {
    crate::tls::install_default_provider();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = SdkTracerProvider::builder().build().tracer("tests");
    let filter = log_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer().with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(LevelFilter::INFO))
        .try_init();
}

struct HeaderInjector<'a>(&'a mut Map<String, Value>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().iter().find(|(k, _)| k.as_str() == key)?.1 {
            lapin::types::AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            lapin::types::AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// Headers as the outbox keeps them (JSON), read for trace context.
struct JsonHeaders<'a>(&'a Map<String, Value>);

impl Extractor for JsonHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The producer span of one message the relay publishes (OpenTelemetry
/// messaging conventions): a child of the span that enqueued it, whose context
/// it carries in its headers, and the parent of the span that processes it,
/// since its own context replaces theirs in the headers sent.
pub fn publish_span(m: &mut crate::message::Outbound, names: &crate::topology::Names) -> tracing::Span {
    let exchange = names.exchange(&m.exchange);
    let destination = if m.exchange.is_empty() { "amq.default" } else { exchange.as_str() };
    let name = format!("send {destination}");
    let span = tracing::info_span!(
        "publish",
        otel.name = name.as_str(),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = destination,
        messaging.rabbitmq.destination.routing_key = m.routing_key.as_str(),
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.message.id = m.message_id.as_deref().unwrap_or(""),
        messaging.message.conversation_id = m.correlation_id.as_deref().unwrap_or(""),
        messaging.message.body.size = m.body.len(),
        outcome = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&JsonHeaders(&m.headers)));
    let _ = span.set_parent(parent);
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut m.headers)));
    span
}

/// The current span's context as a `traceparent` value, to keep beside a row
/// whose later work (a checkout page, hours on) belongs to the same trace.
pub fn current_traceparent() -> Option<String> {
    let mut h = Map::new();
    inject_current(&mut h);
    h.get("traceparent").and_then(Value::as_str).map(str::to_owned)
}

/// Makes `span` a child of a kept `traceparent`.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    let h = Map::from_iter([("traceparent".to_owned(), Value::String(traceparent.to_owned()))]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&JsonHeaders(&h)));
    let _ = span.set_parent(cx);
}

/// Writes the current span's context (`traceparent`) into outgoing headers.
pub fn inject_current(headers: &mut Map<String, Value>) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// Makes `span` a child of the trace an incoming message carries, if any.
pub fn continue_trace(span: &tracing::Span, headers: &FieldTable) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}
