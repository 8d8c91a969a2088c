use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};
use std::sync::LazyLock;

pub static CLAIMED: LazyLock<IntCounter> =
    LazyLock::new(|| register_int_counter!("ps_scheduler_claims_total", "Due schedules claimed").expect("metric registers"));
pub static RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_scheduler_runs_total", "Scheduled charges by what became of them", &["outcome"])
        .expect("metric registers")
});
pub static TRIGGER_ITEMS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_scheduler_trigger_items_total", "schedule.trigger charges by what became of them", &["outcome"])
        .expect("metric registers")
});
