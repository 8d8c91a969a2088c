//! Idempotency keys per merchant (DESIGN §4), kept 24 hours.

use deadpool_postgres::Transaction;
use ps_contract::idempotency::IdempotencyKey;
use ps_contract::ids::MerchantId;
use ps_contract::{ApiError, ErrorCode};
use serde_json::Value;

pub enum Claim {
    /// First use: go ahead, then `complete` (or `release` on failure).
    New,
    /// Seen before with the same body: send this stored reply again.
    Replay(Value),
    /// The key cannot be used for this request (another body, another command).
    Refused(ApiError),
}

/// Claims `key` for this request. Inserting first takes the row lock, so a
/// concurrent duplicate blocks here until this transaction ends, then sees its reply.
pub async fn claim(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    key: &IdempotencyKey,
    command: &str,
    fingerprint: &str,
) -> Result<Claim, tokio_postgres::Error> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO idempotency_keys (merchant_id, key, command, request_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&merchant.as_str(), &key.as_str(), &command, &fingerprint];
    if tx.execute(&insert, &params).await? == 1 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT command, request_hash, reply, created_at < now() - interval '24 hours' AS stale
             FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 FOR UPDATE",
            )
            .await?,
            &[&merchant.as_str(), &key.as_str()],
        )
        .await?;
    let (stored_command, stored_hash, reply, stale): (String, String, Option<Value>, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if stale {
        tx.execute(
            &tx.prepare_cached("DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2").await?,
            &[&merchant.as_str(), &key.as_str()],
        )
        .await?;
        tx.execute(&insert, &params).await?;
        return Ok(Claim::New);
    }
    if stored_command != command || stored_hash != fingerprint {
        return Ok(Claim::Refused(ApiError::param(
            ErrorCode::IdempotencyKeyReused,
            "idempotency-key",
            format!("idempotency key {key} was already used with a different request in the last 24 hours"),
        )));
    }
    match reply {
        Some(reply) => Ok(Claim::Replay(reply)),
        // A key row is only ever committed with its reply, or deleted.
        None => Ok(Claim::Refused(ApiError::internal())),
    }
}

pub async fn complete(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    key: &IdempotencyKey,
    reply: &Value,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("UPDATE idempotency_keys SET reply = $3 WHERE merchant_id = $1 AND key = $2").await?,
        &[&merchant.as_str(), &key.as_str(), reply],
    )
    .await?;
    Ok(())
}

/// A request refused after its key was claimed does not bind the key: the
/// merchant may fix the request and retry with the same key.
pub async fn release(tx: &Transaction<'_>, merchant: &MerchantId, key: &IdempotencyKey) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2").await?,
        &[&merchant.as_str(), &key.as_str()],
    )
    .await?;
    Ok(())
}
