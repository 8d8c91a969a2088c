//! Refunds (DESIGN §9): the one owner of refund rows. Asked for by
//! `refund.create`, done by the gateway under a key derived from the refund,
//! applied when its `gateway.result` comes, asked again when none does.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::commands::{RefundCommand, RefundRef};
use ps_contract::events::EventType;
use ps_contract::ids::{MerchantId, PaymentId, RefundId, SessionId};
use ps_contract::internal::{GatewayResult, Outcome, RefundRequest};
use ps_contract::lifecycle::PaymentOutcome;
use ps_contract::money::Currency;
use ps_contract::payment::{check_refund_amount, Refund, RefundReason, RefundStatus};
use ps_contract::routing::{exchange, header, internal};
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{Handled, HandlerError, Outbound};
use ps_store::attempts;
use ps_store::commands::Answer;
use ps_store::events::event;
use ps_store::sessions::{self, StoredSession};
use std::collections::BTreeMap;
use std::time::Duration;

const COLUMNS: &str = "id, session_id, amount, currency, status, reason, failure_reason, metadata, created_at, attempt_id, merchant_id";

/// A refund row: the wire object and what only the fleet sees.
struct Stored {
    refund: Refund,
    attempt_id: String,
    merchant_id: String,
}

fn corrupt(what: &str) -> HandlerError {
    HandlerError::Permanent(format!("corrupt stored refund: {what}"))
}

fn from_row(r: &tokio_postgres::Row) -> Result<Stored, HandlerError> {
    let session = SessionId::parse(r.get(1)).map_err(|_| corrupt("session_id"))?;
    let refund = Refund {
        id: RefundId::parse(r.get(0)).map_err(|_| corrupt("id"))?,
        object: Refund::OBJECT.to_owned(),
        payment_id: PaymentId::of(&session),
        payment_session_id: session,
        amount: r.get(2),
        currency: Currency::parse(r.get(3)).map_err(|_| corrupt("currency"))?,
        status: RefundStatus::parse(r.get(4)).ok_or_else(|| corrupt("status"))?,
        reason: r.get::<_, Option<&str>>(5).map(|s| RefundReason::parse(s).ok_or_else(|| corrupt("reason"))).transpose()?,
        failure_reason: r.get(6),
        metadata: serde_json::from_value::<BTreeMap<String, String>>(r.get(7)).map_err(|_| corrupt("metadata"))?,
        created_at: r.get(8),
    };
    Ok(Stored { refund, attempt_id: r.get(9), merchant_id: r.get(10) })
}

fn to_json(r: &Refund) -> Result<serde_json::Value, HandlerError> {
    Ok(serde_json::to_value(r)?)
}

/// `refund.create`. The session's row lock orders concurrent refunds of one
/// payment, and each counts the pending ones before it, so together they never
/// pass what was paid.
#[tracing::instrument(name = "lifecycle.refund_create", skip_all)]
pub async fn create(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    keyed: bool,
    body: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Answer, HandlerError> {
    if !keyed {
        return Ok(Answer::Refused(ApiError::param(
            ErrorCode::IdempotencyKeyMissing,
            header::IDEMPOTENCY_KEY,
            "refund.create needs an idempotency-key header, so a resent refund is not made twice",
        )));
    }
    let cmd = match RefundCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let id = cmd.payment_session_id.as_str();
    let Some(s) = sessions::lock(tx, id, Some(merchant)).await? else {
        return Ok(Answer::Refused(ApiError::param(
            ErrorCode::SessionNotFound,
            "payment_session_id",
            format!("no such payment session: {id}"),
        )));
    };
    // What was paid: a payment, or what was captured of a reservation.
    if s.amounts().paid == 0 {
        let why = match s.session.payment_outcome {
            PaymentOutcome::Reserved => "nothing of the reservation was captured: capture or void it instead",
            PaymentOutcome::Pending => "the payment is still processing",
            PaymentOutcome::PaymentMethodVerified => "the card was verified; nothing was paid",
            _ => "nothing was paid in this session",
        };
        return Ok(Answer::Refused(ApiError::param(ErrorCode::PaymentNotRefundable, "payment_session_id", why)));
    }
    let Some(attempt) = attempts::lock_succeeded(tx, id).await? else {
        return Err(HandlerError::Permanent(format!("paid session {id} has no succeeded attempt")));
    };
    let committed: i64 = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE session_id = $1 AND status IN ('pending', 'succeeded')",
            )
            .await?,
            &[&id],
        )
        .await?
        .get(0);
    let amount = match check_refund_amount(cmd.amount, s.amounts().paid, committed) {
        Ok(a) => a,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let refund = Refund {
        id: RefundId::generate(),
        object: Refund::OBJECT.to_owned(),
        payment_session_id: s.session.id.clone(),
        payment_id: PaymentId::of(&s.session.id),
        amount,
        currency: s.session.currency,
        status: RefundStatus::Pending,
        reason: cmd.reason,
        failure_reason: None,
        metadata: cmd.metadata,
        created_at: now,
    };
    let key = RefundRequest::idempotency_key_for(&refund.id);
    let metadata = serde_json::to_value(&refund.metadata)?;
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO refunds (id, merchant_id, session_id, attempt_id, amount, currency, status, reason, metadata,
             processor_idempotency_key, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $10)",
        )
        .await?,
        &[
            &refund.id.as_str(),
            &merchant.as_str(),
            &id,
            &attempt.id.as_str(),
            &amount,
            &refund.currency.code(),
            &refund.reason.map(|r| r.as_str()),
            &metadata,
            &key,
            &now,
        ],
    )
    .await?;
    tracing::info!(refund = %refund.id, session = id, amount, "refund requested");
    let req = RefundRequest {
        refund_id: refund.id.clone(),
        attempt_id: attempt.id.clone(),
        session_id: s.session.id.clone(),
        merchant_id: s.merchant_id.clone(),
        amount,
        currency: refund.currency,
        processor_idempotency_key: key.clone(),
    };
    let ask = message(&req, key)?;
    Ok(Answer::Done(to_json(&refund)?, vec![event(EventType::RefundCreated, merchant, now, &refund)?, ask]))
}

/// A `gateway.refund`.
fn message(req: &RefundRequest, message_id: String) -> Result<Outbound, HandlerError> {
    Ok(Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_REFUND, req)?
        .with_message_id(message_id)
        .with_header(header::MERCHANT_ID, req.merchant_id.as_str()))
}

/// `refund.retrieve`: another merchant's refund is answered as a missing one.
pub async fn retrieve(tx: &Transaction<'_>, merchant: &MerchantId, body: &serde_json::Value) -> Result<Answer, HandlerError> {
    let cmd = match RefundRef::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE id = $1 AND merchant_id = $2");
    match tx.query_opt(sql.as_str(), &[&cmd.refund_id.as_str(), &merchant.as_str()]).await? {
        Some(r) => Ok(Answer::Done(to_json(&from_row(&r)?.refund)?, vec![])),
        None => Ok(Answer::Refused(ApiError::param(ErrorCode::RefundNotFound, "refund_id", format!("no such refund: {}", cmd.refund_id)))),
    }
}

/// A refund's `gateway.result`. The caller holds the session's lock. An answer
/// for a refund that already has one changes nothing.
pub async fn apply(tx: &Transaction<'_>, r: &GatewayResult, s: &mut StoredSession, now: DateTime<Utc>) -> Result<Handled, HandlerError> {
    let Some(id) = &r.refund_id else {
        return Err(HandlerError::Permanent(format!("refund result for {} names no refund", r.session_id)));
    };
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE id = $1 FOR UPDATE");
    let Some(row) = tx.query_opt(sql.as_str(), &[&id.as_str()]).await? else {
        return Err(HandlerError::Permanent(format!("result for unknown refund {id}")));
    };
    let mut stored = from_row(&row)?;
    if stored.refund.payment_session_id != r.session_id
        || stored.merchant_id != s.merchant_id.as_str()
        || stored.attempt_id != r.attempt_id.as_str()
    {
        return Err(HandlerError::Permanent(format!("result for refund {id} names another session or attempt")));
    }
    if r.amount != stored.refund.amount || r.currency != stored.refund.currency {
        let why = format!(
            "{} {} differs from the refund's {} {}",
            r.amount,
            r.currency.code(),
            stored.refund.amount,
            stored.refund.currency.code()
        );
        tracing::error!(refund = %id, reason = %why, "refund result does not match its refund; not applied");
        return Ok(Handled::dead_lettered("result_not_vouched", why));
    }
    if stored.refund.status.is_terminal() {
        tracing::info!(refund = %id, status = %stored.refund.status, "refund already has its answer; nothing to do");
        return Ok(Handled::default());
    }
    let m = s.merchant_id.clone();
    if r.outcome == Outcome::Failed {
        let reason = r.decline_code.clone().unwrap_or_else(|| "unknown".into());
        tx.execute(
            &tx.prepare_cached(
                "UPDATE refunds SET status = 'failed', failure_reason = $2, processor_reference = $3, updated_at = now() WHERE id = $1",
            )
            .await?,
            &[&id.as_str(), &reason, &r.processor_reference],
        )
        .await?;
        tracing::warn!(refund = %id, failure_reason = %reason, "refund failed");
        stored.refund.status = RefundStatus::Failed;
        stored.refund.failure_reason = Some(reason);
        return Ok(Handled::default().send(event(EventType::RefundFailed, &m, now, &stored.refund)?));
    }
    tx.execute(
        &tx.prepare_cached("UPDATE refunds SET status = 'succeeded', processor_reference = $2, updated_at = now() WHERE id = $1").await?,
        &[&id.as_str(), &r.processor_reference],
    )
    .await?;
    let mut amounts = s.amounts();
    amounts.refunded += stored.refund.amount;
    s.set_amounts(amounts, now);
    sessions::save(tx, s).await?;
    tracing::info!(refund = %id, amount = stored.refund.amount, refunded = amounts.refunded, "refund succeeded");
    stored.refund.status = RefundStatus::Succeeded;
    Ok(Handled::default().send(event(EventType::RefundSucceeded, &m, now, &stored.refund)?).send(event(
        EventType::PaymentSessionUpdated,
        &m,
        now,
        &s.session,
    )?))
}

/// Refunds asked for `after` ago or more with no answer: each is asked again
/// under its own key (the processor refunds at most once and answers what it
/// did), and its clock restarts. Locked, so one sweeping replica sends each.
pub async fn unanswered(tx: &Transaction<'_>, after: Duration) -> Result<Vec<Outbound>, HandlerError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "UPDATE refunds SET updated_at = now() WHERE id IN (
                 SELECT id FROM refunds WHERE status = 'pending' AND updated_at <= now() - $1::float8 * interval '1 second'
                 ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED)
             RETURNING id, session_id, attempt_id, amount, currency, processor_idempotency_key, merchant_id",
            )
            .await?,
            &[&after.as_secs_f64()],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        // The row names everything the request needs: no session to read.
        let req = RefundRequest {
            refund_id: RefundId::parse(r.get(0)).map_err(|_| corrupt("id"))?,
            attempt_id: ps_contract::ids::AttemptId::parse(r.get(2)).map_err(|_| corrupt("attempt_id"))?,
            session_id: SessionId::parse(r.get(1)).map_err(|_| corrupt("session_id"))?,
            merchant_id: MerchantId::parse(r.get(6)).map_err(|_| corrupt("merchant_id"))?,
            amount: r.get(3),
            currency: Currency::parse(r.get(4)).map_err(|_| corrupt("currency"))?,
            processor_idempotency_key: r.get(5),
        };
        tracing::warn!(refund = %req.refund_id, "refund unanswered: asking the processor again under the same key");
        // Each ask is its own message: the gateway's dedupe must not swallow a second one.
        let message_id = format!("{}:{}", req.processor_idempotency_key, Utc::now().timestamp_micros());
        out.push(message(&req, message_id)?);
    }
    Ok(out)
}
