use prometheus::{register_int_counter_vec, IntCounterVec};
use std::sync::LazyLock;

pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_webhook_events_total", "Events stored for delivery, by type.", &["type"]).expect("metric registers once")
});

pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_webhook_attempts_total", "Delivery attempts, by outcome (delivered, retry, dead, gone).", &["outcome"])
        .expect("metric registers once")
});
