use prometheus::{register_int_counter_vec, IntCounterVec};
use std::sync::LazyLock;

pub static CREATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_sessions_created_total", "Payment sessions created, by type.", &["type"]).expect("metric registers once")
});

pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_session_create_rejected_total", "payment_session.create commands refused, by error code.", &["code"])
        .expect("metric registers once")
});
