//! Payment attempt rows (`payment_attempts`): this module is their one
//! writer. Intake and the checkout start them, lifecycle finishes and settles
//! them, and the gateway reads what it vouches for through it.

use crate::sessions::{self, StoredSession};
use chrono::Utc;
use deadpool_postgres::Transaction;
use ps_contract::ids::AttemptId;
use ps_contract::internal::{AttemptStatus, AuthenticateRequest, NextAction, Operation, ResolveRequest, SettleRequest};
use ps_contract::routing::{exchange, header, internal};
use ps_runtime::{HandlerError, Outbound};
use std::time::Duration;

/// Where an attempt's settlement stands, as `payment_attempts.settlement`
/// (its CHECK constraint's values). None: the authorisation is open (nothing
/// asked yet, or captures so far left the rest open); `Captured` / `Voided`:
/// closed, what no capture took released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    CaptureRequested,
    Captured,
    VoidRequested,
    Voided,
}

impl Settlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::CaptureRequested => "capture_requested",
            Settlement::Captured => "captured",
            Settlement::VoidRequested => "void_requested",
            Settlement::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Settlement> {
        Some(match s {
            "capture_requested" => Settlement::CaptureRequested,
            "captured" => Settlement::Captured,
            "void_requested" => Settlement::VoidRequested,
            "voided" => Settlement::Voided,
            _ => return None,
        })
    }

    /// The settlement asking for `op` (a capture or a void).
    pub fn requested(op: Operation) -> Settlement {
        if op == Operation::Capture {
            Settlement::CaptureRequested
        } else {
            Settlement::VoidRequested
        }
    }
}

/// Who started an attempt, as `payment_attempts.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The customer, at the checkout, with a card entered now.
    Checkout,
    /// The merchant (or the scheduler), charging a saved method.
    Merchant,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Checkout => "checkout",
            Source::Merchant => "merchant",
        }
    }
}

/// An attempt as it starts: everything the gateway will later hold its
/// request to (DESIGN §10).
pub struct NewAttempt<'a> {
    pub id: &'a AttemptId,
    pub session_id: &'a str,
    pub merchant_id: &'a str,
    pub amount: i64,
    pub currency: ps_contract::money::Currency,
    pub processor_key: &'a str,
    pub source: Source,
    pub capture_method: &'a str,
    /// A card entered now (its vault token).
    pub card_token: Option<&'a str>,
    /// A saved method charged instead.
    pub payment_method_id: Option<&'a str>,
    /// The customer asked to save the card.
    pub save_card: bool,
    /// The card outlives the attempt (saved, or a saved method's own).
    pub keep_card: bool,
    /// What a card saved now is for (`on_session` / `off_session`).
    pub save_for: Option<&'a str>,
}

/// Starts an attempt, `pending`.
pub async fn start(tx: &Transaction<'_>, a: &NewAttempt<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO payment_attempts (id, session_id, merchant_id, amount, currency, status, processor_idempotency_key, source,
                 capture_method, card_token, payment_method_id, save_card, keep_card, save_for)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .await?,
        &[
            &a.id.as_str(),
            &a.session_id,
            &a.merchant_id,
            &a.amount,
            &a.currency.code(),
            &AttemptStatus::Pending.as_str(),
            &a.processor_key,
            &a.source.as_str(),
            &a.capture_method,
            &a.card_token,
            &a.payment_method_id,
            &a.save_card,
            &a.keep_card,
            &a.save_for,
        ],
    )
    .await?;
    Ok(())
}

/// An attempt as the gateway holds a request to it: every term it was started with.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: String,
    pub session_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: AttemptStatus,
    pub key: String,
    pub settlement: Option<Settlement>,
    pub settlement_requests: i32,
    pub card_token: Option<String>,
    pub payment_method_id: Option<String>,
    pub capture_method: String,
    pub keep_card: bool,
    pub save_for: Option<String>,
    pub source: Source,
    /// The vault token of the saved method the attempt charges, if it charges one.
    pub saved_card: Option<String>,
    /// What its captures have taken so far.
    pub captured: i64,
}

impl Recorded {
    /// What the attempt charges.
    pub fn amount_and_currency(&self) -> Result<(i64, ps_contract::money::Currency), HandlerError> {
        let currency = ps_contract::money::Currency::parse(&self.currency)
            .map_err(|_| HandlerError::Permanent(format!("attempt holds currency {:?}", self.currency)))?;
        Ok((self.amount, currency))
    }
}

const RECORDED_COLUMNS: &str =
    "SELECT a.id, a.session_id, a.merchant_id, a.amount, a.currency, a.status, a.processor_idempotency_key, a.settlement,
        a.settlement_requests, a.card_token, a.payment_method_id, a.capture_method, a.keep_card, a.source, a.save_for, m.vault_token,
        coalesce(a.captured_amount, 0)";
const RECORDED_FROM: &str =
    "FROM payment_attempts a LEFT JOIN payment_methods m ON m.id = a.payment_method_id AND m.merchant_id = a.merchant_id";

fn recorded_row(r: &tokio_postgres::Row) -> Result<Recorded, HandlerError> {
    let status: &str = r.get(5);
    let status = AttemptStatus::parse(status).ok_or_else(|| HandlerError::Permanent(format!("attempt status {status:?}")))?;
    let source = match r.get::<_, &str>(13) {
        "checkout" => Source::Checkout,
        "merchant" => Source::Merchant,
        other => return Err(HandlerError::Permanent(format!("attempt source {other:?}"))),
    };
    Ok(Recorded {
        id: r.get(0),
        session_id: r.get(1),
        merchant_id: r.get(2),
        amount: r.get(3),
        currency: r.get(4),
        status,
        key: r.get(6),
        settlement: settlement_of(r.get(7))?,
        settlement_requests: r.get(8),
        card_token: r.get(9),
        payment_method_id: r.get(10),
        capture_method: r.get(11),
        keep_card: r.get(12),
        source,
        save_for: r.get(14),
        saved_card: r.get(15),
        captured: r.get(16),
    })
}

/// The attempt `id`, as recorded.
pub async fn recorded(tx: &Transaction<'_>, id: &str) -> Result<Option<Recorded>, HandlerError> {
    let stmt = tx.prepare_cached(&format!("{RECORDED_COLUMNS} {RECORDED_FROM} WHERE a.id = $1")).await?;
    tx.query_opt(&stmt, &[&id]).await?.as_ref().map(recorded_row).transpose()
}

/// The attempt `id` as recorded, for an authorize about to call the
/// processor: a pending attempt is leased for `lease` (until then lifecycle
/// does not give up on it), in the same statement. `leased` false with the
/// status still read as pending means lifecycle gave up on it meanwhile:
/// read it again.
pub async fn lease_for_call(tx: &Transaction<'_>, id: &str, lease: Duration) -> Result<Option<Leased>, HandlerError> {
    let stmt = tx
        .prepare_cached(&format!(
            "WITH leased AS (
                UPDATE payment_attempts SET call_until = now() + $2::float8 * interval '1 second'
                WHERE id = $1 AND status = 'pending' RETURNING id)
             {RECORDED_COLUMNS}, EXISTS (SELECT 1 FROM leased) {RECORDED_FROM} WHERE a.id = $1"
        ))
        .await?;
    let row = tx.query_opt(&stmt, &[&id, &lease.as_secs_f64()]).await?;
    row.as_ref().map(|r| Ok(Leased { attempt: recorded_row(r)?, leased: r.get(17) })).transpose()
}

/// Ends an authorize's lease early: its call failed and will be made again
/// (after a pause, as a new lease), and lifecycle may give up on the attempt
/// meanwhile. A call that answered needs no release: its answer moves the
/// attempt on.
pub async fn end_call(pool: &deadpool_postgres::Pool, id: &str) -> Result<(), HandlerError> {
    let c = pool.get().await?;
    c.execute(&c.prepare_cached("UPDATE payment_attempts SET call_until = NULL WHERE id = $1").await?, &[&id]).await?;
    Ok(())
}

/// An attempt read by `lease_for_call`.
pub struct Leased {
    pub attempt: Recorded,
    /// Whether the call may go ahead: the attempt was pending and is now leased.
    pub leased: bool,
}

/// The attempt made under a processor key, as recorded.
pub async fn recorded_by_key(tx: &Transaction<'_>, key: &str) -> Result<Option<Recorded>, HandlerError> {
    let stmt = tx.prepare_cached(&format!("{RECORDED_COLUMNS} {RECORDED_FROM} WHERE a.processor_idempotency_key = $1")).await?;
    tx.query_opt(&stmt, &[&key]).await?.as_ref().map(recorded_row).transpose()
}

fn settlement_of(raw: Option<&str>) -> Result<Option<Settlement>, HandlerError> {
    raw.map(|s| Settlement::parse(s).ok_or_else(|| HandlerError::Permanent(format!("attempt settlement {s:?}")))).transpose()
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: AttemptId,
    pub session_id: String,
    pub status: AttemptStatus,
    pub save_card: bool,
    pub amount: i64,
    pub settlement: Option<Settlement>,
    /// What a capture or void was asked for.
    pub settlement_amount: Option<i64>,
    /// How many settlements have been asked for: the latest one's key is numbered so.
    pub settlement_requests: i32,
    /// What its captures have taken so far.
    pub captured: i64,
    /// The vault token of the card entered at checkout (none for a saved method's charge).
    pub card_token: Option<String>,
    pub processor_key: String,
}

pub async fn lock(tx: &Transaction<'_>, id: &str) -> Result<Option<Attempt>, HandlerError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, session_id, status, save_card, amount, settlement, settlement_amount, card_token, processor_idempotency_key,
                    settlement_requests, coalesce(captured_amount, 0)
                 FROM payment_attempts WHERE id = $1 FOR UPDATE",
            )
            .await?,
            &[&id],
        )
        .await?;
    row.map(|r| {
        let status: &str = r.get(2);
        Ok(Attempt {
            id: parse_id(r.get(0))?,
            session_id: r.get(1),
            status: AttemptStatus::parse(status).ok_or_else(|| HandlerError::Permanent(format!("attempt {id} holds status {status:?}")))?,
            save_card: r.get(3),
            amount: r.get(4),
            settlement: settlement_of(r.get(5))?,
            settlement_amount: r.get(6),
            card_token: r.get(7),
            processor_key: r.get(8),
            settlement_requests: r.get(9),
            captured: r.get(10),
        })
    })
    .transpose()
}

impl Attempt {
    /// What of the authorisation can still be captured or voided: none once
    /// it is closed, or while a settlement is being asked for.
    pub fn open(&self) -> i64 {
        match (self.status, self.settlement) {
            (AttemptStatus::Succeeded, None) => (self.amount - self.captured).max(0),
            _ => 0,
        }
    }

    /// The key of the latest settlement asked for: only its answer is applied.
    pub fn latest_settlement_key(&self, op: Operation) -> String {
        SettleRequest::idempotency_key_for(op, &self.id, self.settlement_requests.max(0) as u32)
    }
}

/// How many of a session's attempts have failed.
pub async fn failed_count(tx: &Transaction<'_>, session_id: &str) -> Result<i64, HandlerError> {
    Ok(tx
        .query_one(
            &tx.prepare_cached("SELECT count(*) FROM payment_attempts WHERE session_id = $1 AND status = 'failed'").await?,
            &[&session_id],
        )
        .await?
        .get(0))
}

/// The attempt that succeeded for a session (the one a capture or void settles).
pub async fn lock_succeeded(tx: &Transaction<'_>, session_id: &str) -> Result<Option<Attempt>, HandlerError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached("SELECT id FROM payment_attempts WHERE session_id = $1 AND status = 'succeeded' FOR UPDATE").await?,
            &[&session_id],
        )
        .await?;
    match row {
        Some(r) => lock(tx, r.get::<_, &str>(0)).await,
        None => Ok(None),
    }
}

/// The attempt's final answer. A challenge it waited on is over.
pub async fn finish(
    tx: &Transaction<'_>,
    id: &AttemptId,
    status: AttemptStatus,
    error_code: Option<&str>,
    decline_code: Option<&str>,
    reference: Option<&str>,
    captured: Option<i64>,
) -> Result<(), HandlerError> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE payment_attempts SET status = $2, error_code = $3, decline_code = $4, processor_reference = $5,
             captured_amount = $6, next_action = NULL, updated_at = now() WHERE id = $1",
        )
        .await?,
        &[&id.as_str(), &status.as_str(), &error_code, &decline_code, &reference, &captured],
    )
    .await?;
    Ok(())
}

/// The processor asks the customer first (3-D Secure): the attempt waits in
/// `requires_action`, keeping what the checkout needs to show the challenge.
pub async fn require_action(tx: &Transaction<'_>, id: &AttemptId, action: Option<&NextAction>) -> Result<(), HandlerError> {
    let action = action.map(serde_json::to_value).transpose()?;
    tx.execute(
        &tx.prepare_cached(
            "UPDATE payment_attempts SET status = 'requires_action', next_action = $2, updated_at = now() WHERE id = $1 AND status = 'pending'",
        )
        .await?,
        &[&id.as_str(), &action],
    )
    .await?;
    Ok(())
}

/// Challenges of sessions past `expires_at` that nobody has given up on in
/// the last `again_after`: each is given up on (the processor cancels or
/// fails it), so the session can expire. Locked, so one sweeping replica sends each.
pub async fn expired_challenges(tx: &Transaction<'_>, again_after: Duration) -> Result<Vec<Outbound>, HandlerError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "UPDATE payment_attempts a SET updated_at = now() FROM (
                     SELECT a.id FROM payment_attempts a JOIN payment_sessions s ON s.id = a.session_id
                     WHERE a.status = 'requires_action' AND s.status = 'active' AND s.expires_at <= now()
                       AND a.updated_at <= now() - $1::float8 * interval '1 second'
                     ORDER BY a.updated_at LIMIT 100 FOR UPDATE OF a SKIP LOCKED) due
                 WHERE a.id = due.id
                 RETURNING a.id, a.session_id, a.merchant_id, a.processor_idempotency_key",
            )
            .await?,
            &[&again_after.as_secs_f64()],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let req = AuthenticateRequest {
            attempt_id: parse_id(r.get(0))?,
            session_id: ps_contract::ids::SessionId::parse(r.get(1)).map_err(|e| HandlerError::Permanent(e.to_string()))?,
            merchant_id: ps_contract::ids::MerchantId::parse(r.get(2)).map_err(|e| HandlerError::Permanent(e.to_string()))?,
            completed: false,
            processor_idempotency_key: r.get(3),
        };
        tracing::info!(attempt = %req.attempt_id, "session expired mid-challenge: giving the challenge up");
        // Each give-up its own message: the gateway's dedupe must not swallow a second one.
        let id = format!("give-up:{}:{}", req.attempt_id, Utc::now().timestamp_micros());
        out.push(
            Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_AUTHENTICATE, &req)?
                .with_message_id(id)
                .with_header(header::MERCHANT_ID, req.merchant_id.as_str()),
        );
    }
    Ok(out)
}

/// Where the attempt's settlement now stands (a failed one: open again).
pub async fn set_settlement(tx: &Transaction<'_>, id: &AttemptId, settlement: Option<Settlement>) -> Result<(), HandlerError> {
    tx.execute(
        &tx.prepare_cached("UPDATE payment_attempts SET settlement = $2, updated_at = now() WHERE id = $1").await?,
        &[&id.as_str(), &settlement.map(Settlement::as_str)],
    )
    .await?;
    Ok(())
}

/// A capture went through: its amount added to what was captured, and the
/// authorisation closed (`Captured`) or left open for more (`None`).
pub async fn add_capture(tx: &Transaction<'_>, id: &AttemptId, amount: i64, closes: bool) -> Result<(), HandlerError> {
    let settlement = closes.then_some(Settlement::Captured).map(Settlement::as_str);
    tx.execute(
        &tx.prepare_cached(
            "UPDATE payment_attempts SET settlement = $2, captured_amount = coalesce(captured_amount, 0) + $3, updated_at = now() WHERE id = $1",
        )
        .await?,
        &[&id.as_str(), &settlement, &amount],
    )
    .await?;
    Ok(())
}

/// Asks the processor to capture or void `amount` of the attempt, as its next
/// numbered settlement. The request is kept on the row so it can be sent again.
/// A capture of all that is open is final: it closes the authorisation.
pub async fn request_settlement(
    tx: &Transaction<'_>,
    op: Operation,
    attempt: &AttemptId,
    s: &StoredSession,
    amount: i64,
) -> Result<Outbound, HandlerError> {
    let marker = Settlement::requested(op).as_str();
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "UPDATE payment_attempts SET settlement = $2, settlement_amount = $3, settlement_requests = settlement_requests + 1,
                 updated_at = now() WHERE id = $1 RETURNING settlement_requests, amount - coalesce(captured_amount, 0)",
            )
            .await?,
            &[&attempt.as_str(), &marker, &amount],
        )
        .await?;
    let final_capture = op != Operation::Capture || amount >= row.get::<_, i64>(1);
    settle_message(op, attempt, row.get::<_, i32>(0) as u32, s, amount, final_capture)
}

/// The settlement failed in a way another try may not: it is asked for again,
/// under its next key, when the sweep next finds it unanswered.
pub async fn retry_settlement_later(tx: &Transaction<'_>, attempt: &AttemptId) -> Result<(), HandlerError> {
    tx.execute(
        &tx.prepare_cached("UPDATE payment_attempts SET settlement_requests = settlement_requests + 1, updated_at = now() WHERE id = $1")
            .await?,
        &[&attempt.as_str()],
    )
    .await?;
    Ok(())
}

/// Settlements asked for `after` ago or more with no answer yet: each is asked
/// again under the same key (the processor does it at most once), and its
/// clock restarts. Locked, so one sweeping replica sends each.
pub async fn unanswered_settlements(tx: &Transaction<'_>, after: Duration) -> Result<Vec<Outbound>, HandlerError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "UPDATE payment_attempts SET updated_at = now() WHERE id IN (
                 SELECT id FROM payment_attempts
                 WHERE settlement IN ('capture_requested', 'void_requested') AND updated_at <= now() - $1::float8 * interval '1 second'
                 ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED)
             RETURNING id, session_id, settlement, settlement_requests, coalesce(settlement_amount, amount),
                amount - coalesce(captured_amount, 0)",
            )
            .await?,
            &[&after.as_secs_f64()],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id = parse_id(r.get(0))?;
        let Some(s) = sessions::get(tx, r.get::<_, &str>(1)).await? else { continue };
        let op = if settlement_of(r.get(2))? == Some(Settlement::CaptureRequested) { Operation::Capture } else { Operation::Void };
        tracing::warn!(attempt = %id, operation = %op, "settlement unanswered: asking the processor again under the same key");
        let amount: i64 = r.get(4);
        let final_capture = op != Operation::Capture || amount >= r.get::<_, i64>(5);
        out.push(settle_message(op, &id, r.get::<_, i32>(3) as u32, &s, amount, final_capture)?);
    }
    Ok(out)
}

/// Attempts no answer has come for in `after`: pending ones, and abandoned
/// ones whose resolution has not come back either. Oldest first.
pub async fn unanswered(tx: &Transaction<'_>, after: Duration) -> Result<Vec<(String, String)>, HandlerError> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT session_id, id FROM payment_attempts
             WHERE status IN ('pending', 'abandoned') AND updated_at <= now() - $1::float8 * interval '1 second'
             ORDER BY updated_at LIMIT 100",
            )
            .await?,
            &[&after.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Stops waiting for the attempt's answer and asks the processor what it did.
/// From the moment this commits the gateway executes no authorize for it
/// (its lease takes only a pending attempt); one whose call may still be in
/// flight (leased until later than now, or being leased) is skipped now and
/// resolved on a later sweep if its answer does not come. The caller holds
/// the session's lock.
pub async fn abandon(tx: &Transaction<'_>, s: &StoredSession, attempt: &str, after: Duration) -> Result<Option<Outbound>, HandlerError> {
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, amount, processor_idempotency_key FROM payment_attempts
             WHERE id = $1 AND status IN ('pending', 'abandoned') AND updated_at <= now() - $2::float8 * interval '1 second'
               AND (call_until IS NULL OR call_until <= now())
             FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&attempt, &after.as_secs_f64()],
        )
        .await?
    else {
        return Ok(None);
    };
    tx.execute(
        &tx.prepare_cached("UPDATE payment_attempts SET status = 'abandoned', updated_at = now() WHERE id = $1").await?,
        &[&attempt],
    )
    .await?;
    let req = ResolveRequest {
        attempt_id: parse_id(row.get(0))?,
        session_id: s.session.id.clone(),
        merchant_id: s.merchant_id.clone(),
        amount: row.get(1),
        currency: s.session.currency,
        processor_idempotency_key: row.get(2),
        final_capture: true,
    };

    // Each ask is its own message: the gateway's dedupe must not swallow a second one.
    let id = format!("resolve:{}:{}", req.attempt_id, Utc::now().timestamp_micros());
    Ok(Some(
        Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_RESOLVE, &req)?
            .with_message_id(id)
            .with_header(header::MERCHANT_ID, s.merchant_id.as_str()),
    ))
}

fn parse_id(raw: &str) -> Result<AttemptId, HandlerError> {
    AttemptId::parse(raw).map_err(|_| HandlerError::Permanent(format!("corrupt attempt id {raw:?}")))
}

/// A `gateway.capture` or `gateway.void` for the attempt, as its `request`-th settlement.
fn settle_message(
    op: Operation,
    attempt: &AttemptId,
    request: u32,
    s: &StoredSession,
    amount: i64,
    final_capture: bool,
) -> Result<Outbound, HandlerError> {
    let req = SettleRequest {
        attempt_id: attempt.clone(),
        session_id: s.session.id.clone(),
        merchant_id: s.merchant_id.clone(),
        amount,
        currency: s.session.currency,
        processor_idempotency_key: SettleRequest::idempotency_key_for(op, attempt, request),
        final_capture,
    };
    let key = if op == Operation::Capture { internal::GATEWAY_CAPTURE } else { internal::GATEWAY_VOID };
    Ok(Outbound::to_json(exchange::INTERNAL, key, &req)?
        .with_message_id(req.processor_idempotency_key.clone())
        .with_header(header::MERCHANT_ID, s.merchant_id.as_str()))
}
