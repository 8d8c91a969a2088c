//! Internal messages are checked, not trusted (DESIGN §10): the gateway moves
//! money only for an attempt the fleet recorded, in the state and for the
//! amount the message claims. A forged or stale request charges nothing.

use deadpool_postgres::Transaction;
use ps_contract::internal::{
    AttemptStatus, AuthenticateRequest, AuthorizeRequest, Operation, RefundRequest, ResolveRequest, SettleRequest,
};
use ps_contract::payment::RefundStatus;
use ps_runtime::HandlerError;
pub use ps_store::attempts::Recorded;
use ps_store::attempts::{self, Settlement, Source};

pub enum Vouched {
    Yes,
    /// The attempt is past this step (a request republished under a new message
    /// id, or one that arrived after lifecycle gave up waiting for it): the
    /// processor may be asked what it did under the key, never to do it again.
    AlreadyDone {
        succeeded: bool,
    },
    /// Why the request does not match what the fleet recorded.
    No(String),
}

/// The parts every request must agree on with its attempt.
fn same_attempt(a: &Recorded, session: &str, merchant: &str, currency: &str) -> Option<String> {
    if a.session_id != session || a.merchant_id != merchant {
        return Some("the attempt belongs to another session or merchant".into());
    }
    (a.currency != currency).then(|| format!("currency {currency} differs from the attempt's {}", a.currency))
}

/// An authorize is checked as it leases its attempt for `lease` (lifecycle
/// does not give up on a leased attempt, so it is never abandoned mid-call;
/// once it has been, the lease is refused and the request is `AlreadyDone`).
pub async fn authorize(
    tx: &Transaction<'_>,
    req: &AuthorizeRequest,
    lease: std::time::Duration,
) -> Result<(Vouched, Option<Recorded>), HandlerError> {
    let Some(attempts::Leased { attempt: a, leased }) = attempts::lease_for_call(tx, req.attempt_id.as_str(), lease).await? else {
        return Ok((Vouched::No(format!("no attempt {} was recorded", req.attempt_id)), None));
    };
    if let Some(why) = same_attempt(&a, req.session_id.as_str(), req.merchant_id.as_str(), req.currency.code()) {
        return Ok((Vouched::No(why), None));
    }
    let vouched = if a.amount != req.amount {
        Vouched::No(format!("amount {} differs from the attempt's {}", req.amount, a.amount))
    } else if a.key != req.processor_idempotency_key {
        Vouched::No("the processor key is not the attempt's".into())
    } else if let Some(why) = same_terms(&a, req) {
        Vouched::No(why)
    } else if a.status != AttemptStatus::Pending {
        Vouched::AlreadyDone { succeeded: a.status == AttemptStatus::Succeeded }
    } else if !leased {
        // Read as pending from before lifecycle's change committed; the retry reads it as it is.
        return Err(HandlerError::Transient(format!("attempt {} changed while it was being leased", req.attempt_id)));
    } else {
        Vouched::Yes
    };
    Ok((vouched, Some(a)))
}

/// A challenge's end must name an attempt that is waiting for its customer
/// (or that lifecycle gave up on meanwhile), with its own key. Returns the
/// recorded attempt too: its card, to save or forget, and its amount.
pub async fn authenticate(tx: &Transaction<'_>, req: &AuthenticateRequest) -> Result<(Vouched, Option<Recorded>), HandlerError> {
    let Some(a) = attempts::recorded(tx, req.attempt_id.as_str()).await? else {
        return Ok((Vouched::No(format!("no attempt {} was recorded", req.attempt_id)), None));
    };
    if a.session_id != req.session_id.as_str() || a.merchant_id != req.merchant_id.as_str() {
        return Ok((Vouched::No("the attempt belongs to another session or merchant".into()), None));
    }
    let vouched = if a.key != req.processor_idempotency_key {
        Vouched::No("the processor key is not the attempt's".into())
    } else if matches!(a.status, AttemptStatus::RequiresAction | AttemptStatus::Abandoned) {
        Vouched::Yes
    } else if a.status == AttemptStatus::Pending {
        Vouched::No("the attempt is not waiting for its customer".into())
    } else {
        Vouched::AlreadyDone { succeeded: a.status == AttemptStatus::Succeeded }
    };
    Ok((vouched, Some(a)))
}

/// Everything else an authorize asks for must be what its attempt was
/// started with: the card (or saved method) charged, how it is captured,
/// whether the customer is there, whether the card outlives the attempt.
fn same_terms(a: &Recorded, req: &AuthorizeRequest) -> Option<String> {
    if a.card_token.as_deref() != req.card_token.as_deref() {
        Some("the card is not the one the attempt was started with".into())
    } else if a.payment_method_id.as_deref() != req.payment_method_id.as_ref().map(|p| p.as_str()) {
        Some("the payment method is not the attempt's".into())
    } else if a.capture_method != req.capture_method.as_str() {
        Some(format!("capture method {} differs from the attempt's {}", req.capture_method.as_str(), a.capture_method))
    } else if a.keep_card != req.keep_card {
        Some("whether the card is kept differs from the attempt's".into())
    } else if a.save_for.as_deref() != req.save_for.map(|u| u.as_str()) {
        Some("what the card is kept for differs from the attempt's".into())
    } else if (a.source == Source::Checkout) != req.customer_present {
        Some("whether the customer is present differs from the attempt's".into())
    } else {
        None
    }
}

pub async fn settle(tx: &Transaction<'_>, op: Operation, req: &SettleRequest) -> Result<Vouched, HandlerError> {
    let Some(a) = attempts::recorded(tx, req.attempt_id.as_str()).await? else {
        return Ok(Vouched::No(format!("no attempt {} was recorded", req.attempt_id)));
    };
    if let Some(why) = same_attempt(&a, req.session_id.as_str(), req.merchant_id.as_str(), req.currency.code()) {
        return Ok(Vouched::No(why));
    }
    let numbered = (1..=a.settlement_requests.max(0) as u32)
        .any(|n| SettleRequest::idempotency_key_for(op, &req.attempt_id, n) == req.processor_idempotency_key);
    Ok(if a.status != AttemptStatus::Succeeded {
        Vouched::No(format!("the attempt is {}: nothing to {op}", a.status))
    } else if req.amount <= 0 || req.amount > a.amount {
        Vouched::No(format!("amount {} is not within the authorised {}", req.amount, a.amount))
    } else if op == Operation::Capture && a.settlement == Some(Settlement::CaptureRequested) && req.amount > a.amount - a.captured {
        Vouched::No(format!("amount {} is more than the {} still open", req.amount, a.amount - a.captured))
    } else if !numbered {
        Vouched::No("the processor key is not one the fleet issued".into())
    } else if a.settlement != Some(Settlement::requested(op))
        || req.processor_idempotency_key != SettleRequest::idempotency_key_for(op, &req.attempt_id, a.settlement_requests.max(0) as u32)
    {
        // Answered already, or an earlier capture's copy while a later one is
        // asked for: answered from the processor's record, never made again.
        Vouched::AlreadyDone { succeeded: true }
    } else {
        Vouched::Yes
    })
}

/// A `gateway.resolve` must name an attempt lifecycle has given up on, with its
/// own key and amount. Returns the recorded attempt too: its card token, for a
/// success to save and a failure to forget.
pub async fn resolve(tx: &Transaction<'_>, req: &ResolveRequest) -> Result<(Vouched, Option<Recorded>), HandlerError> {
    let Some(a) = attempts::recorded(tx, req.attempt_id.as_str()).await? else {
        return Ok((Vouched::No(format!("no attempt {} was recorded", req.attempt_id)), None));
    };
    if let Some(why) = same_attempt(&a, req.session_id.as_str(), req.merchant_id.as_str(), req.currency.code()) {
        return Ok((Vouched::No(why), None));
    }
    let vouched = if a.amount != req.amount {
        Vouched::No(format!("amount {} differs from the attempt's {}", req.amount, a.amount))
    } else if a.key != req.processor_idempotency_key {
        Vouched::No("the processor key is not the attempt's".into())
    } else if matches!(a.status, AttemptStatus::Pending | AttemptStatus::RequiresAction) {
        Vouched::No(format!("the attempt is {}: lifecycle has not given up on it", a.status))
    } else if a.status != AttemptStatus::Abandoned {
        Vouched::AlreadyDone { succeeded: a.status == AttemptStatus::Succeeded }
    } else {
        Vouched::Yes
    };
    Ok((vouched, Some(a)))
}

/// A `gateway.refund` must name a refund lifecycle recorded, for its attempt,
/// amount and key. One that already has its answer is `AlreadyDone`.
pub async fn refund(tx: &Transaction<'_>, req: &RefundRequest) -> Result<Vouched, HandlerError> {
    let row = tx
        .query_opt(
            "SELECT session_id, merchant_id, attempt_id, amount, currency, status, processor_idempotency_key FROM refunds WHERE id = $1",
            &[&req.refund_id.as_str()],
        )
        .await?;
    let Some(r) = row else { return Ok(Vouched::No(format!("no refund {} was recorded", req.refund_id))) };
    let (session, merchant, attempt): (&str, &str, &str) = (r.get(0), r.get(1), r.get(2));
    let (amount, currency, status, key): (i64, &str, &str, &str) = (r.get(3), r.get(4), r.get(5), r.get(6));
    Ok(if session != req.session_id.as_str() || merchant != req.merchant_id.as_str() || attempt != req.attempt_id.as_str() {
        Vouched::No("the refund belongs to another session, merchant or attempt".into())
    } else if amount != req.amount || currency != req.currency.code() {
        Vouched::No(format!("{} {} differs from the refund's {amount} {currency}", req.amount, req.currency.code()))
    } else if key != req.processor_idempotency_key {
        Vouched::No("the processor key is not the refund's".into())
    } else if status != RefundStatus::Pending.as_str() {
        Vouched::AlreadyDone { succeeded: status == RefundStatus::Succeeded.as_str() }
    } else {
        Vouched::Yes
    })
}
