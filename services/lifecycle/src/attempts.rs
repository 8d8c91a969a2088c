//! Payment attempt rows, as lifecycle reads and settles them.

use deadpool_postgres::Transaction;
use ps_contract::ids::AttemptId;
use ps_contract::internal::{Operation, SettleRequest};
use ps_contract::routing::{exchange, header, internal};
use ps_runtime::{HandlerError, Outbound};
use ps_store::sessions::StoredSession;

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: AttemptId,
    pub session_id: String,
    pub status: String,
    pub save_card: bool,
    pub amount: i64,
    pub settlement: Option<String>,
}

pub async fn lock(tx: &Transaction<'_>, id: &str) -> Result<Option<Attempt>, HandlerError> {
    let row = tx
        .query_opt("SELECT id, session_id, status, save_card, amount, settlement FROM payment_attempts WHERE id = $1 FOR UPDATE", &[&id])
        .await?;
    row.map(|r| {
        Ok(Attempt {
            id: AttemptId::parse(r.get(0)).map_err(|_| HandlerError::Permanent("corrupt attempt id".into()))?,
            session_id: r.get(1),
            status: r.get(2),
            save_card: r.get(3),
            amount: r.get(4),
            settlement: r.get(5),
        })
    })
    .transpose()
}

/// How many of a session's attempts have failed.
pub async fn failed_count(tx: &Transaction<'_>, session_id: &str) -> Result<i64, HandlerError> {
    Ok(tx.query_one("SELECT count(*) FROM payment_attempts WHERE session_id = $1 AND status = 'failed'", &[&session_id]).await?.get(0))
}

/// The attempt that succeeded for a session (the one a capture or void settles).
pub async fn lock_succeeded(tx: &Transaction<'_>, session_id: &str) -> Result<Option<Attempt>, HandlerError> {
    let row =
        tx.query_opt("SELECT id FROM payment_attempts WHERE session_id = $1 AND status = 'succeeded' FOR UPDATE", &[&session_id]).await?;
    match row {
        Some(r) => lock(tx, r.get::<_, &str>(0)).await,
        None => Ok(None),
    }
}

pub async fn finish(
    tx: &Transaction<'_>,
    id: &AttemptId,
    status: &str,
    error_code: Option<&str>,
    decline_code: Option<&str>,
    reference: Option<&str>,
    captured: Option<i64>,
) -> Result<(), HandlerError> {
    tx.execute(
        "UPDATE payment_attempts SET status = $2, error_code = $3, decline_code = $4, processor_reference = $5,
             captured_amount = $6, updated_at = now() WHERE id = $1",
        &[&id.as_str(), &status, &error_code, &decline_code, &reference, &captured],
    )
    .await?;
    Ok(())
}

pub async fn set_settlement(
    tx: &Transaction<'_>,
    id: &AttemptId,
    settlement: Option<&str>,
    captured: Option<i64>,
) -> Result<(), HandlerError> {
    tx.execute(
        "UPDATE payment_attempts SET settlement = $2, captured_amount = coalesce($3, captured_amount), updated_at = now() WHERE id = $1",
        &[&id.as_str(), &settlement, &captured],
    )
    .await?;
    Ok(())
}

/// Numbers a new settlement request of the attempt; its processor key derives from it.
pub async fn next_settlement(tx: &Transaction<'_>, id: &AttemptId) -> Result<u32, HandlerError> {
    let row = tx
        .query_one(
            "UPDATE payment_attempts SET settlement_requests = settlement_requests + 1 WHERE id = $1 RETURNING settlement_requests",
            &[&id.as_str()],
        )
        .await?;
    Ok(row.get::<_, i32>(0) as u32)
}

/// A `gateway.capture` or `gateway.void` for the attempt, as its `request`-th settlement.
pub fn settle_message(op: Operation, attempt: &AttemptId, request: u32, s: &StoredSession, amount: i64) -> Outbound {
    let req = SettleRequest {
        attempt_id: attempt.clone(),
        session_id: s.session.id.clone(),
        merchant_id: s.merchant_id.clone(),
        amount,
        currency: s.session.currency,
        processor_idempotency_key: SettleRequest::idempotency_key_for(op, attempt, request),
    };
    let key = if op == Operation::Capture { internal::GATEWAY_CAPTURE } else { internal::GATEWAY_VOID };
    Outbound::json(exchange::INTERNAL, key, &serde_json::to_value(&req).unwrap_or_default())
        .with_message_id(req.processor_idempotency_key.clone())
        .with_header(header::MERCHANT_ID, s.merchant_id.as_str())
}
