use prometheus::{register_int_counter_vec, IntCounterVec};
use std::sync::LazyLock;

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_processor_calls_total", "Processor calls, by operation and result.", &["operation", "result"])
        .expect("metric registers once")
});
