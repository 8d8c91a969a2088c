//! Prometheus metrics every service shares. Registered once per process in the
//! default registry, so several services in one test process share them.

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

pub static MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "ps_messages_total",
        "Messages consumed, by queue and outcome (applied, duplicate, dead_lettered, requeued).",
        &["queue", "outcome"]
    )
    .expect("metric registers once")
});

pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_message_retries_total", "Transient failures retried while handling a message, by queue.", &["queue"])
        .expect("metric registers once")
});

pub static HELD: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "ps_messages_held",
        "Messages held unacknowledged because a dependency (the database, the processor) is unavailable, by queue.",
        &["queue"]
    )
    .expect("metric registers once")
});

pub static BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "ps_message_batch_size",
        "Messages applied together in one transaction (batches of two or more), by queue.",
        &["queue"],
        vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    )
    .expect("metric registers once")
});

pub static HANDLE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "ps_message_handle_seconds",
        "Time from delivery to ack, by queue.",
        &["queue"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .expect("metric registers once")
});

pub static OUTBOX_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_outbox_published_total", "Outbox rows the relay published, by kind.", &["kind"])
        .expect("metric registers once")
});

pub static DIRECT_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "ps_direct_published_total",
        "Messages a consumer published straight after its commit, by kind and outcome (confirmed, or handed to the outbox).",
        &["kind", "outcome"]
    )
    .expect("metric registers once")
});

pub static BATCH_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "ps_batch_retries_total",
        "Batches rolled back because one message failed, and applied again without it.",
        &["consumer"]
    )
    .expect("metric registers once")
});

pub static OUTBOX_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "ps_outbox_publish_failures_total",
        "Outbox publishes that failed and will be retried (or, for replies, given up), by reason.",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static OUTBOX_LAG: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "ps_outbox_lag_seconds",
        "Time from commit to confirmed publish.",
        &["kind"],
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0]
    )
    .expect("metric registers once")
});

pub static OUTBOX_BACKLOG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("ps_outbox_backlog", "Outbox rows waiting to be published, by producing service.", &["producer"])
        .expect("metric registers once")
});

pub static OUTBOX_OLDEST: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "ps_outbox_oldest_seconds",
        "Age of the oldest outbox row waiting to be published, by producing service (0: none waiting).",
        &["producer"]
    )
    .expect("metric registers once")
});

pub static BROKER_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("ps_broker_connected", "1 while the service holds a broker connection.").expect("metric registers once")
});

pub static BROKER_RECONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("ps_broker_reconnects_total", "Broker connections lost and re-established.").expect("metric registers once")
});

/// Text exposition of everything registered.
pub fn render() -> String {
    let families = prometheus::gather();
    let mut buf = String::new();
    prometheus::TextEncoder::new().encode_utf8(&families, &mut buf).unwrap_or_default();
    buf
}
