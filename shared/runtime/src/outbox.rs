//! The transactional outbox (DESIGN §5), for work no consumed message
//! carries (an HTTP request, a sweep, a clock) and for a consumer's publish
//! that failed after its commit: messages are written in the same transaction
//! as the change they announce, and a relay publishes them with confirms. A
//! crash at any point loses nothing; at worst a message goes twice, with the
//! same `message_id` for consumers to dedupe on. A consumer's own messages are
//! kept with its record instead and published straight after its commit
//! (consumer.rs).

use crate::broker::{PublishError, Publisher};
use crate::message::{Outbound, OutboundKind};
use crate::metrics;
use crate::sealing::{At, Keyring, SealError, SecretsError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 200;
/// A reply nobody is listening for is given up after this many tries.
const REPLY_MAX_ATTEMPTS: i32 = 8;
/// How often the relay looks for rows left by a crashed replica, or due for retry.
const POLL: Duration = Duration::from_secs(1);
/// How often the relay measures its backlog for the gauges.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// A service's outbox: where it writes messages inside its transactions, and
/// how it wakes its relay right after a commit so a reply does not wait for the poll.
#[derive(Clone)]
pub struct Outbox {
    /// The service that wrote a row; only that service's relay publishes it,
    /// since only its broker user may be allowed to.
    producer: &'static str,
    notify: Arc<Notify>,
    /// Seals bodies that hold a secret; a service without keys cannot write one.
    keys: Option<Keyring>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl Outbox {
    pub fn new(producer: &'static str, keys: Option<Keyring>) -> Outbox {
        Outbox { producer, notify: Arc::new(Notify::new()), keys }
    }

    /// Writes every message in one statement, in order (a batch of a thousand
    /// costs one round trip, not a thousand).
    pub async fn enqueue(&self, tx: &Transaction<'_>, messages: &[Outbound]) -> Result<(), EnqueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let n = messages.len();
        let (mut exchanges, mut keys, mut ids, mut corrs, mut headers, mut bodies, mut kinds, mut sealed, mut reply_to) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        // Only bodies that hold a secret are rewritten; the rest are borrowed as they are.
        let sealed_bodies = messages
            .iter()
            .filter(|m| m.sealed)
            .map(|m| {
                let at = At::outbox_body(self.producer, &m.exchange, &m.routing_key, m.message_id.as_deref());
                Ok(self.keys.as_ref().ok_or(SecretsError::NoKeys)?.seal(&at, &m.body).into_bytes())
            })
            .collect::<Result<Vec<_>, EnqueueError>>()?;
        let mut sealed_iter = sealed_bodies.iter();
        for m in messages {
            let body: &[u8] = if m.sealed { sealed_iter.next().expect("one sealed body per sealed message") } else { &m.body };
            let mut h = m.headers.clone();
            crate::telemetry::inject_current(&mut h);
            exchanges.push(m.exchange.as_str());
            keys.push(m.routing_key.as_str());
            ids.push(m.message_id.as_deref());
            corrs.push(m.correlation_id.as_deref());
            headers.push(Value::Object(h));
            bodies.push(body);
            kinds.push(m.kind.as_str());
            sealed.push(m.sealed);
            reply_to.push(m.reply_to.as_deref());
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO outbox (exchange, routing_key, message_id, correlation_id, headers, body, kind, producer, sealed, reply_to)
                 SELECT e, k, i, c, h, b, t, $8, s, r
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[], $7::text[], $9::bool[], $10::text[])
                      WITH ORDINALITY AS m (e, k, i, c, h, b, t, s, r, ord)
                 ORDER BY ord",
            )
            .await?;
        tx.execute(&stmt, &[&exchanges, &keys, &ids, &corrs, &headers, &bodies, &kinds, &self.producer, &sealed, &reply_to]).await?;
        Ok(())
    }

    /// The keys this service seals with, if it has any.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_ref()
    }

    /// Messages as kept in a consumed message's record, to be published again
    /// if its ack never happened (DESIGN §5): a JSON array, each body base64 or,
    /// where it holds a secret, sealed and bound to the message it belongs to.
    pub fn store(&self, consumer: &str, message_key: &str, messages: &[&Outbound]) -> Result<Value, EnqueueError> {
        use base64::Engine;
        let mut kept = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let body = if m.sealed {
                let at = At::dedupe_outgoing(consumer, message_key, i, &m.exchange, &m.routing_key);
                self.keys.as_ref().ok_or(SecretsError::NoKeys)?.seal(&at, &m.body)
            } else {
                base64::engine::general_purpose::STANDARD.encode(&m.body)
            };
            kept.push(serde_json::json!({
                "exchange": m.exchange, "routing_key": m.routing_key, "message_id": m.message_id,
                "correlation_id": m.correlation_id, "reply_to": m.reply_to, "headers": m.headers,
                "kind": m.kind.as_str(), "sealed": m.sealed, "body": body,
            }));
        }
        Ok(Value::Array(kept))
    }

    /// What `store` kept, as messages again.
    pub fn open_stored(&self, consumer: &str, message_key: &str, stored: &Value) -> Result<Vec<Outbound>, StoredError> {
        use base64::Engine;
        let text = |v: &Value, f: &'static str| v[f].as_str().map(str::to_owned).ok_or(StoredError::Malformed(f));
        let optional = |v: &Value, f: &str| v[f].as_str().map(str::to_owned);
        let mut out = vec![];
        for (i, v) in stored.as_array().into_iter().flatten().enumerate() {
            let (exchange, routing_key, message_id) = (text(v, "exchange")?, text(v, "routing_key")?, optional(v, "message_id"));
            let sealed = v["sealed"].as_bool().unwrap_or(false);
            let body = text(v, "body")?;
            let body = if sealed {
                let keys = self.keys.as_ref().ok_or(StoredError::Secrets(SecretsError::NoKeys))?;
                keys.open(&At::dedupe_outgoing(consumer, message_key, i, &exchange, &routing_key), &body).map_err(|source| {
                    StoredError::Secrets(SecretsError::Open { context: crate::sealing::context::DEDUPE_OUTGOING, source })
                })?
            } else {
                base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| StoredError::Malformed("body"))?
            };
            out.push(Outbound {
                exchange,
                routing_key,
                message_id,
                correlation_id: optional(v, "correlation_id"),
                reply_to: optional(v, "reply_to"),
                headers: v["headers"].as_object().cloned().unwrap_or_default(),
                body,
                kind: if v["kind"] == "reply" { OutboundKind::Reply } else { OutboundKind::Durable },
                sealed,
            });
        }
        Ok(out)
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A consumed message's kept outgoing messages that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("a kept outgoing message has no valid {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Secrets(SecretsError),
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("the broker connection failed: {0}")]
    Broker(PublishError),
    #[error("a sealed outbox row does not open")]
    Sealed(#[source] SealError),
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(e: tokio_postgres::Error) -> Self {
        RelayError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RelayError::Db(e.into())
    }
}

pub struct Relay {
    pool: Pool,
    outbox: Outbox,
}

impl Relay {
    /// A sealed body, opened to publish. A key missing from PS_SECRET_KEYS stops
    /// the relay (and says so) rather than dropping the message.
    fn open(&self, at: &At, stored: &[u8]) -> Result<Vec<u8>, RelayError> {
        let keys = self.outbox.keys.as_ref().ok_or(RelayError::Sealed(SealError::UnknownKey("(no PS_SECRET_KEYS)".into())))?;
        let text = std::str::from_utf8(stored).map_err(|_| RelayError::Sealed(SealError::NotSealed))?;
        keys.open(at, text).map_err(RelayError::Sealed)
    }

    pub fn new(pool: Pool, outbox: Outbox) -> Relay {
        Relay { pool, outbox }
    }

    /// Publishes until `stop` fires, then drains once more so a graceful stop
    /// leaves nothing behind that it could have sent. Returns on a broker failure
    /// so the caller can reconnect; database trouble is waited out.
    pub async fn run(&self, publisher: &Publisher, stop: &CancellationToken) -> Result<(), RelayError> {
        let mut measured: Option<std::time::Instant> = None;
        loop {
            if measured.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                measured = Some(std::time::Instant::now());
                if let Err(e) = self.measure_backlog().await {
                    tracing::debug!(error = %e, "outbox backlog not measured");
                }
            }
            match self.drain(publisher).await {
                Ok(()) => {}
                Err(RelayError::Db(e)) => tracing::warn!(error = %e, "outbox relay: database unavailable; will retry"),
                // An operator must restore the key; the row waits, and so does everything behind it in its batch.
                Err(RelayError::Sealed(e)) => {
                    tracing::error!(error = %e, "outbox relay: a sealed message cannot be opened; check PS_SECRET_KEYS")
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.outbox.notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        self.drain(publisher).await
    }

    /// Sets the backlog gauges for this service's rows (by the pending rows' own index).
    async fn measure_backlog(&self) -> Result<(), RelayError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
                 FROM outbox WHERE published_at IS NULL AND failed_at IS NULL AND producer = $1",
                &[&self.outbox.producer],
            )
            .await?;
        metrics::OUTBOX_BACKLOG.with_label_values(&[self.outbox.producer]).set(row.get(0));
        metrics::OUTBOX_OLDEST.with_label_values(&[self.outbox.producer]).set(row.get(1));
        Ok(())
    }

    /// Publishes every due row, a batch per transaction. Rows are locked with
    /// SKIP LOCKED, so replicas share the work without publishing a row twice.
    pub async fn drain(&self, publisher: &Publisher) -> Result<(), RelayError> {
        loop {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // Marking rows sent is not worth a WAL flush: if a crash loses the
            // mark, the rows go again and their consumers recognise them.
            tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
            let drain = tx.prepare_cached(DRAIN_SQL).await?;
            let rows = tx.query(&drain, &[&BATCH, &self.outbox.producer]).await?;
            if rows.is_empty() {
                return Ok(());
            }
            // A sealed row that does not open for its own row (copied in from
            // another, or corrupt) is set aside as failed, not published and not
            // left to block the rows behind it; a missing key stops the relay
            // until an operator restores it.
            let mut unopenable: Vec<(i64, String)> = vec![];
            let mut kept = Vec::with_capacity(rows.len());
            let mut messages: Vec<Outbound> = Vec::with_capacity(rows.len());
            for r in rows {
                let sealed: bool = r.get(10);
                let (exchange, routing_key, message_id): (String, String, Option<String>) = (r.get(1), r.get(2), r.get(3));
                let body = match sealed {
                    false => r.get(6),
                    true => {
                        match self.open(&At::outbox_body(self.outbox.producer, &exchange, &routing_key, message_id.as_deref()), r.get(6)) {
                            Ok(body) => body,
                            Err(RelayError::Sealed(SealError::UnknownKey(k))) => return Err(RelayError::Sealed(SealError::UnknownKey(k))),
                            Err(e) => {
                                tracing::error!(outbox_id = r.get::<_, i64>(0), error = %crate::db::causes(&e), "a sealed outbox row does not open for its row; set aside as failed");
                                unopenable.push((r.get(0), crate::db::causes(&e)));
                                continue;
                            }
                        }
                    }
                };
                messages.push(Outbound {
                    exchange,
                    routing_key,
                    message_id,
                    correlation_id: r.get(4),
                    reply_to: r.get(11),
                    headers: match r.get::<_, Value>(5) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    body,
                    kind: if r.get::<_, &str>(7) == "reply" { OutboundKind::Reply } else { OutboundKind::Durable },
                    sealed,
                });
                kept.push(r);
            }
            let batch_len = kept.len() + unopenable.len();
            let rows = kept;
            for (id, why) in &unopenable {
                tx.execute("UPDATE outbox SET failed_at = now(), last_error = $2 WHERE id = $1", &[id, why]).await?;
            }
            let spans: Vec<tracing::Span> = messages.iter_mut().map(|m| crate::telemetry::publish_span(m, publisher.names())).collect();
            let results = publisher.publish_batch(&messages).await;

            let mut broken = None;
            let mut published: Vec<i64> = Vec::with_capacity(rows.len());
            for (((row, msg), result), span) in rows.iter().zip(&messages).zip(results).zip(&spans) {
                let id: i64 = row.get(0);
                span.record("outcome", if result.is_ok() { "confirmed" } else { "failed" });
                match result {
                    Ok(()) => {
                        published.push(id);
                        metrics::OUTBOX_PUBLISHED.with_label_values(&[msg.kind.as_str()]).inc();
                        let created: DateTime<Utc> = row.get(9);
                        let lag = (Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0;
                        metrics::OUTBOX_LAG.with_label_values(&[msg.kind.as_str()]).observe(lag);
                    }
                    Err(e) => {
                        let attempts: i32 = row.get::<_, i32>(8) + 1;
                        let give_up = msg.kind == OutboundKind::Reply && attempts >= REPLY_MAX_ATTEMPTS;
                        let delay = retry_delay(attempts);
                        tx.execute(
                            "UPDATE outbox SET attempts = $2, last_error = $3,
                                 next_attempt_at = now() + make_interval(secs => $4),
                                 failed_at = CASE WHEN $5 THEN now() END
                             WHERE id = $1",
                            &[&id, &attempts, &e.to_string(), &delay.as_secs_f64(), &give_up],
                        )
                        .await?;
                        let reason = match &e {
                            PublishError::Unroutable { .. } => "unroutable",
                            PublishError::Nacked => "nacked",
                            PublishError::Timeout(_) => "timeout",
                            PublishError::Broker(_) => "broker",
                        };
                        metrics::OUTBOX_FAILURES.with_label_values(&[reason]).inc();
                        if give_up {
                            tracing::warn!(outbox_id = id, routing_key = %msg.routing_key, error = %e, "reply undeliverable; recorded as failed");
                        } else {
                            tracing::warn!(outbox_id = id, routing_key = %msg.routing_key, error = %e, attempts, "publish failed; will retry");
                        }
                        if e.is_connection_failure() && broken.is_none() {
                            broken = Some(e);
                        }
                    }
                }
            }
            // Marked in one statement: the batch was confirmed, so it is sent.
            let mark = tx.prepare_cached("UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1)").await?;
            tx.execute(&mark, &[&published]).await?;
            tx.commit().await?;
            if let Some(e) = broken {
                return Err(RelayError::Broker(e));
            }
            if (batch_len as i64) < BATCH {
                return Ok(());
            }
        }
    }
}

/// 1 s, 2 s, 4 s … capped at a minute.
fn retry_delay(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 6) as u32).min(Duration::from_secs(60))
}

/// The relay's read: due rows of this producer, oldest first.
/// Served by `outbox_pending`, an index of the pending rows alone, so what the
/// table holds besides them costs nothing.
pub const DRAIN_SQL: &str =
    "SELECT id, exchange, routing_key, message_id, correlation_id, headers, body, kind, attempts, created_at, sealed, reply_to
     FROM outbox
     WHERE published_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now() AND producer = $2
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Deletes what is done with: published (and given-up) outbox rows, and for a
/// service that consumes, dedupe records and idempotency keys past their
/// retention. Under the deploy roles each sees only its own rows of the first
/// two (row-level security). Cheap enough for every replica to run.
pub async fn sweep(pool: &Pool, consumes: bool) -> Result<u64, crate::db::DbError> {
    let c = pool.get().await?;
    let mut n = c.execute("DELETE FROM outbox WHERE published_at < now() - interval '1 day'", &[]).await?;
    n += c.execute("DELETE FROM outbox WHERE failed_at < now() - interval '1 day'", &[]).await?;
    if consumes {
        n += c.execute("DELETE FROM processed_messages WHERE processed_at < now() - interval '7 days'", &[]).await?;
        n += c.execute("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'", &[]).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_then_caps() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(40), Duration::from_secs(60));
    }
}
