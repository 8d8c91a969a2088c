use deadpool_postgres::Pool;
use prometheus::{register_gauge, register_histogram, register_int_counter_vec, register_int_gauge, register_int_gauge_vec};
use prometheus::{Gauge, Histogram, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_webhook_events_total", "Events stored for delivery, by type.", &["type"]).expect("metric registers once")
});

pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("ps_webhook_attempts_total", "Delivery attempts, by outcome (delivered, retry, dead, gone).", &["outcome"])
        .expect("metric registers once")
});

pub static DELIVERIES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "ps_webhook_deliveries",
        "Deliveries by state: due (to send now), waiting (to retry later), dead (given up in the last 24 hours).",
        &["state"]
    )
    .expect("metric registers once")
});

pub static OLDEST_DUE: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!("ps_webhook_oldest_due_seconds", "How long the oldest due delivery has waited (0: none).")
        .expect("metric registers once")
});

pub static ENDPOINTS_DISABLED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("ps_webhook_endpoints_disabled", "Webhook endpoints disabled (by failures or by command).")
        .expect("metric registers once")
});

pub static DELIVERY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "ps_webhook_delivery_seconds",
        "From an event's arrival to its delivery's 2xx, retries included.",
        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0, 172800.0]
    )
    .expect("metric registers once")
});

/// Refreshes the backlog gauges every `every` until `stop`. Every replica
/// reports the same fleet-wide figures: take the max, not the sum.
pub async fn watch_backlog(pool: Pool, every: Duration, stop: CancellationToken) {
    loop {
        if let Err(e) = measure(&pool).await {
            tracing::debug!(error = %e, "webhook backlog not measured");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn measure(pool: &Pool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let c = pool.get().await?;
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE next_attempt_at <= now()), count(*) FILTER (WHERE next_attempt_at > now()),
                    coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8,
                    (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed' AND finished_at > now() - interval '24 hours'),
                    (SELECT count(*) FROM webhook_endpoints WHERE status = 'disabled')
             FROM webhook_deliveries WHERE status = 'pending'",
            &[],
        )
        .await?;
    DELIVERIES.with_label_values(&["due"]).set(r.get(0));
    DELIVERIES.with_label_values(&["waiting"]).set(r.get(1));
    OLDEST_DUE.set(r.get(2));
    DELIVERIES.with_label_values(&["dead"]).set(r.get(3));
    ENDPOINTS_DISABLED.set(r.get(4));
    Ok(())
}
