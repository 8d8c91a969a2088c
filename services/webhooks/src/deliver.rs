//! The delivery loop: claim due deliveries with a lease, POST them signed,
//! record every attempt, schedule the next or finish. Survives restarts: the
//! schedule lives in PostgreSQL, and a crashed worker's leases run out.

use crate::guard::{Guard, GuardedResolver};
use crate::schedule;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ps_contract::events::EventType;
use ps_contract::ids::{MerchantId, WebhookEndpointId};
use ps_contract::webhooks::{signature_header, EndpointStatus, WebhookEndpoint};
use ps_runtime::outbox::Outbox;
use ps_runtime::sealing::{At, Keyring};
use ps_runtime::HandlerError;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub schedule: Vec<f64>,
    /// Requests in flight to one endpoint at most: a slow endpoint waits on itself only.
    pub per_endpoint: i64,
    /// Requests in flight to one merchant's endpoints together at most: a
    /// merchant with many slow endpoints waits on itself only.
    pub per_merchant: i64,
    pub concurrency: usize,
    pub poll: Duration,
    /// An endpoint failing without a break for this long is disabled.
    pub disable_after: Duration,
}

pub struct Dispatcher {
    pub pool: Pool,
    pub config: DeliveryConfig,
    pub wake: Arc<Notify>,
    pub outbox: Outbox,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    /// Opens the endpoints' signing secrets.
    keys: Keyring,
    /// Successful attempts, recorded together by `record_delivered`.
    delivered: tokio::sync::mpsc::UnboundedSender<Delivered>,
    delivered_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Delivered>>>,
}

/// A 2xx, waiting to be recorded with the others that came meanwhile.
struct Delivered {
    id: i64,
    endpoint_id: String,
    status: i32,
    latency_ms: i32,
    response: String,
}

/// Successful attempts recorded in one transaction at most.
const RECORD_BATCH: usize = 500;

/// A delivery this worker holds the lease on.
struct Claimed {
    id: i64,
    event_id: String,
    attempts: i32,
    payload: Vec<u8>,
    endpoint_id: String,
    merchant_id: String,
    url: String,
    secrets: Vec<String>,
    enabled: bool,
}

enum Verdict {
    Delivered,
    Retry(Duration),
    Dead,
    /// 410 Gone: the receiver says the endpoint is no more.
    Gone,
}

const RESPONSE_KEEP: usize = 1024;
const LEASE_MARGIN: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub fn new(
        pool: Pool,
        config: DeliveryConfig,
        guard: Arc<Guard>,
        wake: Arc<Notify>,
        outbox: Outbox,
        tls: rustls::ClientConfig,
        keys: Keyring,
    ) -> Result<Dispatcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("payment-sessions-webhooks/1")
            .pool_max_idle_per_host(config.per_endpoint as usize)
            .dns_resolver(Arc::new(GuardedResolver(guard)))
            // A proxy would resolve and connect for us, past the guard.
            .no_proxy()
            .build()?;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let (delivered, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Dispatcher { pool, config, wake, outbox, client, slots, keys, delivered, delivered_rx: std::sync::Mutex::new(Some(rx)) })
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let recording = self.delivered_rx.lock().unwrap().take().map(|rx| tokio::spawn(self.clone().record_delivered(rx)));
        loop {
            let free = self.slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free.min(500) as i64).await {
                    Ok(batch) => {
                        claimed = batch.len();
                        for d in batch {
                            let permit = self.slots.clone().try_acquire_owned().expect("claimed no more than the free slots");
                            let me = self.clone();
                            tokio::spawn(async move {
                                me.deliver(d).await;
                                drop(permit);
                                me.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim deliveries; will retry"),
                }
            }
            if claimed > 0 && claimed == free.min(500) {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        // Let requests in flight finish (their leases would cover a crash anyway).
        let _ = tokio::time::timeout(self.config.timeout + Duration::from_secs(1), self.slots.acquire_many(self.config.concurrency as u32))
            .await;
        // What they delivered is recorded before the worker goes.
        if let Some(recording) = recording {
            let _ =
                self.delivered.send(Delivered { id: -1, endpoint_id: String::new(), status: 0, latency_ms: 0, response: String::new() });
            let _ = recording.await;
        }
    }

    /// Records successful attempts a batch per transaction: what came while
    /// the last batch was being written goes in the next, so under load each
    /// commit carries many and alone each goes at once. A batch not recorded
    /// (the database away) leaves its deliveries leased: they go again when
    /// the lease runs out, and receivers dedupe on `webhook-id`. A delivery
    /// with id -1 asks it to finish.
    async fn record_delivered(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Delivered>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while let Some(first) = rx.recv().await {
            let mut last = first.id == -1;
            batch.push(first);
            while batch.len() < RECORD_BATCH {
                match rx.try_recv() {
                    Ok(d) => {
                        last |= d.id == -1;
                        batch.push(d);
                    }
                    Err(_) => break,
                }
            }
            batch.retain(|d| d.id != -1);
            if !batch.is_empty() {
                if let Err(e) = self.record_batch(&batch).await {
                    tracing::warn!(deliveries = batch.len(), error = %e, "could not record delivered attempts; their leases will run out and they will go again");
                }
                batch.clear();
            }
            if last {
                break;
            }
        }
    }

    async fn record_batch(&self, batch: &[Delivered]) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // As `finish`: a record lost in a crash means the event goes again.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let ids: Vec<i64> = batch.iter().map(|d| d.id).collect();
        let statuses: Vec<i32> = batch.iter().map(|d| d.status).collect();
        let latencies: Vec<i32> = batch.iter().map(|d| d.latency_ms).collect();
        let responses: Vec<&str> = batch.iter().map(|d| d.response.as_str()).collect();
        let mut endpoints: Vec<&str> = batch.iter().map(|d| d.endpoint_id.as_str()).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_body)
                 SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[])",
            )
            .await?,
            &[&ids, &statuses, &latencies, &responses],
        )
        .await?;
        let waited = tx
            .query(
                &tx.prepare_cached(
                    "UPDATE webhook_deliveries d SET status = 'delivered', attempts = attempts + 1, lease_until = NULL,
                         next_attempt_at = now(), last_status = u.status, last_error = NULL, finished_at = now()
                     FROM unnest($1::bigint[], $2::int[]) AS u (id, status)
                     WHERE d.id = u.id RETURNING extract(epoch FROM now() - d.created_at)::float8",
                )
                .await?,
                &[&ids, &statuses],
            )
            .await?;
        tx.execute(
            &tx.prepare_cached("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL")
                .await?,
            &[&endpoints],
        )
        .await?;
        tx.commit().await?;
        for r in waited {
            crate::metrics::DELIVERY_SECONDS.observe(r.get(0));
        }
        Ok(())
    }

    /// Leases up to `n` due deliveries, never more than `per_endpoint` in
    /// flight per endpoint, oldest first among what each endpoint may take.
    async fn claim(&self, n: i64) -> Result<Vec<Claimed>, HandlerError> {
        let client = self.pool.get().await?;
        // Long enough for the request and its record; a crashed worker's
        // deliveries are retried by another this soon after (at least once).
        let lease = (self.config.timeout + LEASE_MARGIN).as_secs_f64();
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "WITH busy AS (
                     SELECT endpoint_id, count(*) AS n FROM webhook_deliveries
                     WHERE status = 'pending' AND lease_until >= now() GROUP BY endpoint_id
                 ), busy_merchant AS (
                     SELECT p.merchant_id, sum(b.n)::bigint AS n FROM busy b JOIN webhook_endpoints p ON p.id = b.endpoint_id GROUP BY p.merchant_id
                 ), due AS (
                     -- Each endpoint's own oldest few: a backlog at one endpoint
                     -- fills its own in-flight slots, never the others' turns.
                     SELECT c.id, c.endpoint_id, p.merchant_id, c.next_attempt_at, c.rn
                     FROM webhook_endpoints p CROSS JOIN LATERAL (
                         SELECT id, endpoint_id, next_attempt_at,
                                row_number() OVER (ORDER BY next_attempt_at, id) AS rn
                         FROM webhook_deliveries
                         WHERE endpoint_id = p.id AND status = 'pending' AND next_attempt_at <= now()
                           AND (lease_until IS NULL OR lease_until < now())
                         ORDER BY next_attempt_at, id LIMIT $1) c
                 ), fair AS (
                     -- Then each merchant's oldest few across its endpoints, taken in
                     -- turns: many endpoints give a merchant no more than its share.
                     SELECT due.id, due.merchant_id, due.next_attempt_at,
                            row_number() OVER (PARTITION BY due.merchant_id ORDER BY due.next_attempt_at, due.id) AS mrn
                     FROM due LEFT JOIN busy USING (endpoint_id)
                     WHERE due.rn + coalesce(busy.n, 0) <= $1
                 ), picked AS (
                     SELECT fair.id FROM fair LEFT JOIN busy_merchant USING (merchant_id)
                     WHERE fair.mrn + coalesce(busy_merchant.n, 0) <= $4
                     ORDER BY fair.mrn, fair.next_attempt_at LIMIT $2
                 )
                 UPDATE webhook_deliveries d SET lease_until = now() + make_interval(secs => $3)
                 FROM webhook_events e, webhook_endpoints p
                 WHERE d.id IN (SELECT id FROM picked) AND e.id = d.event_id AND p.id = d.endpoint_id
                   AND d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until < now())
                 RETURNING d.id, d.event_id, d.attempts, e.payload, p.id, p.merchant_id, p.url, p.secret,
                           CASE WHEN p.previous_secret_expires_at > now() THEN p.previous_secret END, p.status",
                    )
                    .await?,
                &[&self.config.per_endpoint, &n, &lease, &self.config.per_merchant],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let sealed = std::iter::once(r.get::<_, String>(7)).chain(r.get::<_, Option<String>>(8));
                let at = At::webhook_secret(r.get::<_, &str>(4));
                let secrets = match sealed.map(|s| self.keys.open_str(&at, &s)).collect::<Result<Vec<_>, _>>() {
                    Ok(s) => s,
                    Err(e) => {
                        // Left leased: it is retried when the lease runs out, once PS_SECRET_KEYS holds the key.
                        tracing::error!(endpoint = r.get::<_, &str>(4), error = %e, "cannot open the endpoint's signing secret; check PS_SECRET_KEYS");
                        return None;
                    }
                };
                Some(Claimed {
                    id: r.get(0),
                    event_id: r.get(1),
                    attempts: r.get(2),
                    payload: r.get(3),
                    endpoint_id: r.get(4),
                    merchant_id: r.get(5),
                    url: r.get(6),
                    secrets,
                    enabled: r.get::<_, &str>(9) == EndpointStatus::Enabled.as_str(),
                })
            })
            .collect())
    }

    async fn deliver(&self, d: Claimed) {
        if !d.enabled {
            self.finish(&d, None, 0, None, Some("endpoint disabled".into()), Verdict::Dead).await;
            return;
        }
        let timestamp = Utc::now().timestamp();
        let secrets: Vec<&str> = d.secrets.iter().map(String::as_str).collect();
        let signature = signature_header(&secrets, &d.event_id, timestamp, &d.payload);
        let started = Instant::now();
        let sent = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone())
            .send()
            .await;
        let attempts = d.attempts as u32 + 1;
        let jitter = rand::rng().random_range(-1.0..=1.0);
        match sent {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(schedule::parse_retry_after);
                let mut body = Vec::new();
                while body.len() < RESPONSE_KEEP {
                    match resp.chunk().await {
                        Ok(Some(c)) => body.extend_from_slice(&c),
                        _ => break,
                    }
                }
                body.truncate(RESPONSE_KEEP);
                let latency = started.elapsed();
                let verdict = match status {
                    200..=299 => Verdict::Delivered,
                    410 => Verdict::Gone,
                    _ => match schedule::next_delay(&self.config.schedule, attempts, jitter, retry_after) {
                        Some(delay) => Verdict::Retry(delay),
                        None => Verdict::Dead,
                    },
                };
                let text = String::from_utf8_lossy(&body).into_owned();
                if matches!(verdict, Verdict::Delivered) {
                    crate::metrics::ATTEMPTS.with_label_values(&["delivered"]).inc();
                    tracing::info!(delivery = d.id, event = %d.event_id, endpoint = %d.endpoint_id, status, outcome = "delivered", "webhook attempt");
                    let delivered = Delivered {
                        id: d.id,
                        endpoint_id: d.endpoint_id.clone(),
                        status: i32::from(status),
                        latency_ms: latency.as_millis() as i32,
                        response: text,
                    };
                    if self.delivered.send(delivered).is_err() {
                        tracing::warn!(
                            delivery = d.id,
                            "delivered, but the recorder has stopped; the lease will run out and it will go again"
                        );
                    }
                    return;
                }
                self.finish(&d, Some(status), latency.as_millis() as i32, Some(text), None, verdict).await;
            }
            Err(e) => {
                let verdict = match schedule::next_delay(&self.config.schedule, attempts, jitter, None) {
                    Some(delay) => Verdict::Retry(delay),
                    None => Verdict::Dead,
                };
                let why = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    // The whole chain: "client error (Connect)" alone does not say a certificate was refused.
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why.push_str(": ");
                        why.push_str(&c.to_string());
                        cause = c.source();
                    }
                    why
                };
                self.finish(&d, None, started.elapsed().as_millis() as i32, None, Some(why), verdict).await;
            }
        }
    }

    /// Records the attempt and what comes next, in one transaction. Committed
    /// without waiting for the disk: a result lost in a crash means the lease
    /// runs out and the event goes again, which receivers dedupe on `webhook-id`.
    async fn finish(
        &self,
        d: &Claimed,
        status: Option<u16>,
        latency_ms: i32,
        response: Option<String>,
        error: Option<String>,
        verdict: Verdict,
    ) {
        let outcome = match &verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry(_) => "retry",
            Verdict::Dead => "dead",
            Verdict::Gone => "gone",
        };
        crate::metrics::ATTEMPTS.with_label_values(&[outcome]).inc();
        let recorded = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
            let status_i = status.map(i32::from);
            tx.execute(
                &tx.prepare_cached(
                    "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_body, error) VALUES ($1, $2, $3, $4, $5)",
                )
                .await?,
                &[&d.id, &status_i, &latency_ms, &response, &error],
            )
            .await?;
            let (state, delay): (&str, f64) = match &verdict {
                Verdict::Delivered => ("delivered", 0.0),
                Verdict::Retry(delay) => ("pending", delay.as_secs_f64()),
                Verdict::Dead | Verdict::Gone => ("failed", 0.0),
            };
            let waited: f64 = tx
                .query_one(
                    &tx.prepare_cached(
                        "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, lease_until = NULL,
                         next_attempt_at = now() + make_interval(secs => $3), last_status = $4, last_error = $5,
                         finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
                     WHERE id = $1 RETURNING extract(epoch FROM now() - created_at)::float8",
                    )
                    .await?,
                    &[&d.id, &state, &delay, &status_i, &error],
                )
                .await?
                .get(0);
            if matches!(verdict, Verdict::Delivered) {
                crate::metrics::DELIVERY_SECONDS.observe(waited);
            }
            let now = Utc::now();
            let disable = match &verdict {
                Verdict::Delivered => {
                    tx.execute(
                        &tx.prepare_cached("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                            .await?,
                        &[&d.endpoint_id],
                    )
                    .await?;
                    None
                }
                Verdict::Gone => Some("the endpoint answered 410 Gone".to_owned()),
                _ => {
                    let row = tx
                        .query_one(
                            &tx.prepare_cached("UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()) WHERE id = $1 RETURNING failing_since").await?,
                            &[&d.endpoint_id],
                        )
                        .await?;
                    let since: DateTime<Utc> = row.get(0);
                    let limit = chrono::Duration::from_std(self.config.disable_after).unwrap_or_default();
                    (now - since >= limit).then(|| format!("failing without a break since {since}"))
                }
            };
            if let Some(reason) = disable {
                self.disable(&tx, d, &reason, now).await?;
            }
            tx.commit().await?;
            Ok::<_, HandlerError>(())
        };
        if let Err(e) = recorded.await {
            tracing::warn!(delivery = d.id, error = %e, "could not record a delivery attempt; its lease will run out and it will be retried");
        }
        tracing::info!(delivery = d.id, event = %d.event_id, endpoint = %d.endpoint_id, status = ?status, outcome, "webhook attempt");
    }

    /// Disables the endpoint, fails what it still has pending, and says so with an event.
    async fn disable(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        d: &Claimed,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now()
                 WHERE id = $1 AND status = 'enabled' RETURNING url, enabled_events, created_at",
                )
                .await?,
                &[&d.endpoint_id, &reason],
            )
            .await?;
        let Some(r) = row else { return Ok(()) };
        tx.execute(
            &tx.prepare_cached(
                "UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled', finished_at = now(), lease_until = NULL
             WHERE endpoint_id = $1 AND status = 'pending' AND id <> $2",
            )
            .await?,
            &[&d.endpoint_id, &d.id],
        )
        .await?;
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::parse(&d.endpoint_id).map_err(|e| HandlerError::Permanent(e.to_string()))?,
            object: "webhook_endpoint".into(),
            url: r.get(0),
            enabled_events: r.get(1),
            secret: None,
            status: EndpointStatus::Disabled,
            created_at: r.get(2),
        };
        let merchant = MerchantId::parse(&d.merchant_id).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.outbox.enqueue(tx, &[ps_store::events::event(EventType::WebhookEndpointDisabled, &merchant, now, &endpoint)?]).await?;
        self.outbox.wake();
        tracing::warn!(endpoint = %d.endpoint_id, reason, "webhook endpoint disabled");
        Ok(())
    }
}
