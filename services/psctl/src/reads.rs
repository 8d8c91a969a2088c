//! What an operator reads straight from the database: rows as JSON objects,
//! scoped to a merchant when one is given. Reads only; every change goes
//! through the owning service as a command.

use deadpool_postgres::Client;
use serde_json::Value;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Each row of `select` (which must name its columns) as a JSON object.
async fn rows(c: &Client, select: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<Value>> {
    let sql = format!("SELECT to_jsonb(r) FROM ({select}) r");
    Ok(c.query(sql.as_str(), params).await?.iter().map(|r| r.get::<_, Value>(0)).collect())
}

pub struct SessionFilter {
    pub merchant: Option<String>,
    pub customer: Option<String>,
    pub reference: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
}

pub async fn sessions(c: &Client, f: &SessionFilter) -> Result<Vec<Value>> {
    rows(
        c,
        "SELECT id, merchant_id, type, status, payment_outcome, amount, currency, customer_id, mandate_id, external_reference, created_at
         FROM payment_sessions
         WHERE ($1::text IS NULL OR merchant_id = $1) AND ($2::text IS NULL OR customer_id = $2)
           AND ($3::text IS NULL OR external_reference = $3) AND ($4::text IS NULL OR status = $4)
         ORDER BY id DESC LIMIT $5",
        &[&f.merchant, &f.customer, &f.reference, &f.status, &f.limit],
    )
    .await
}

pub async fn session(c: &Client, id: &str) -> Result<Value> {
    let s = ps_store::sessions::get(c, id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no session {id}"))?;
    let attempts = rows(
        c,
        "SELECT id, status, source, error_code, decline_code, settlement, created_at FROM payment_attempts WHERE session_id = $1 ORDER BY created_at",
        &[&id],
    )
    .await?;
    let refunds = rows(c, &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE session_id = $1 ORDER BY created_at"), &[&id]).await?;
    let mut out = serde_json::to_value(&s.session)?;
    out["merchant_id"] = s.merchant_id.as_str().into();
    out["attempts"] = Value::Array(attempts);
    out["refunds"] = Value::Array(refunds);
    Ok(out)
}

const REFUND_COLUMNS: &str = "id, merchant_id, session_id, attempt_id, amount, currency, status, reason, failure_reason, metadata,
    processor_reference, created_at, updated_at";

pub async fn refund(c: &Client, id: &str) -> Result<Value> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
    rows(c, &sql, &[&id]).await?.pop().ok_or_else(|| format!("no refund {id}").into())
}

const MANDATE_COLUMNS: &str = "m.id, m.merchant_id, m.customer_id, m.payment_method_id, m.status, m.terms,
    coalesce(u.used_occurrences, 0) AS used_occurrences, coalesce(u.used_amount, 0) AS used_amount, u.last_charge_at,
    m.created_at, m.updated_at";

pub async fn mandates(c: &Client, merchant: Option<&str>, customer: Option<&str>, status: Option<&str>, limit: i64) -> Result<Vec<Value>> {
    let sql = format!(
        "SELECT {MANDATE_COLUMNS} FROM mandates m LEFT JOIN mandate_usage u ON u.mandate_id = m.id
         WHERE ($1::text IS NULL OR m.merchant_id = $1) AND ($2::text IS NULL OR m.customer_id = $2) AND ($3::text IS NULL OR m.status = $3)
         ORDER BY m.id DESC LIMIT $4"
    );
    rows(c, &sql, &[&merchant, &customer, &status, &limit]).await
}

pub async fn mandate(c: &Client, id: &str) -> Result<Value> {
    let sql = format!("SELECT {MANDATE_COLUMNS} FROM mandates m LEFT JOIN mandate_usage u ON u.mandate_id = m.id WHERE m.id = $1");
    rows(c, &sql, &[&id]).await?.pop().ok_or_else(|| format!("no mandate {id}").into())
}

/// Endpoints without their secrets.
pub async fn endpoints(c: &Client, merchant: Option<&str>) -> Result<Vec<Value>> {
    rows(
        c,
        "SELECT id, merchant_id, url, enabled_events, status, disabled_reason, failing_since, created_at,
                (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = p.id AND d.status = 'pending') AS pending
         FROM webhook_endpoints p WHERE status <> 'deleted' AND ($1::text IS NULL OR merchant_id = $1) ORDER BY created_at DESC",
        &[&merchant],
    )
    .await
}

/// Which merchant owns a row, for commands an operator sends on its behalf.
pub async fn merchant_of(c: &Client, table: Owned, id: &str) -> Result<String> {
    let sql = match table {
        Owned::Mandate => "SELECT merchant_id FROM mandates WHERE id = $1",
        Owned::Endpoint => "SELECT merchant_id FROM webhook_endpoints WHERE id = $1 AND status <> 'deleted'",
        Owned::Event => "SELECT merchant_id FROM webhook_events WHERE id = $1",
        Owned::Session => "SELECT merchant_id FROM payment_sessions WHERE id = $1",
    };
    Ok(c.query_opt(sql, &[&id]).await?.ok_or_else(|| format!("no such {table:?} {id}"))?.get(0))
}

#[derive(Debug, Clone, Copy)]
pub enum Owned {
    Mandate,
    Endpoint,
    Event,
    Session,
}

/// Every delivery of an event, each with its attempts.
pub async fn deliveries(c: &Client, event_id: &str) -> Result<Vec<Value>> {
    rows(
        c,
        "SELECT d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.finished_at,
                coalesce((SELECT json_agg(json_build_object('at', a.attempted_at, 'status', a.status_code, 'ms', a.latency_ms, 'error', a.error) ORDER BY a.id)
                          FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS tries
         FROM webhook_deliveries d WHERE d.event_id = $1 ORDER BY d.id",
        &[&event_id],
    )
    .await
}

/// Failed deliveries finished since `since` (RFC 3339): (merchant, event, endpoint).
pub async fn failed_since(c: &Client, since: &str, merchant: Option<&str>) -> Result<Vec<(String, String, String)>> {
    let since =
        chrono::DateTime::parse_from_rfc3339(since).map_err(|e| format!("--failed-since {since:?} is not an RFC 3339 time: {e}"))?;
    Ok(c.query(
        "SELECT DISTINCT merchant_id, event_id, endpoint_id FROM webhook_dead_letters
         WHERE finished_at >= $1 AND ($2::text IS NULL OR merchant_id = $2) ORDER BY event_id",
        &[&since.with_timezone(&chrono::Utc), &merchant],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

/// The fleet's pending work, oldest first, as (what, count, oldest in seconds).
pub async fn backlog(c: &Client) -> Result<Vec<Value>> {
    rows(
        c,
        "SELECT 'outbox: waiting to be published' AS what, count(*) AS count, extract(epoch FROM now() - min(created_at))::bigint AS oldest_secs
           FROM outbox WHERE published_at IS NULL AND failed_at IS NULL
         UNION ALL
         SELECT 'outbox: given up', count(*), extract(epoch FROM now() - min(created_at))::bigint FROM outbox WHERE failed_at IS NOT NULL
         UNION ALL
         SELECT 'payment attempts in flight', count(*), extract(epoch FROM now() - min(created_at))::bigint FROM payment_attempts WHERE status = 'pending'
         UNION ALL
         SELECT 'webhook deliveries due', count(*), extract(epoch FROM now() - min(next_attempt_at))::bigint
           FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()
         UNION ALL
         SELECT 'webhook deliveries waiting to retry', count(*), NULL FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at > now()
         UNION ALL
         SELECT 'webhook deliveries dead (24 h)', count(*), NULL FROM webhook_deliveries WHERE status = 'failed' AND finished_at > now() - interval '24 hours'
         UNION ALL
         SELECT 'webhook endpoints disabled', count(*), NULL FROM webhook_endpoints WHERE status = 'disabled'
         UNION ALL
         SELECT 'schedules due', count(*), extract(epoch FROM now() - min(next_charge_at))::bigint
           FROM schedules WHERE status = 'active' AND next_charge_at <= now()",
        &[],
    )
    .await
}
