//! `gateway.result`: what the processor said, applied to the session.

use crate::mandates;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::events::EventType;
use ps_contract::ids::MerchantId;
use ps_contract::internal::{AttemptStatus, DisputeNotice, GatewayResult, Operation, Outcome};
use ps_contract::lifecycle::{transition, PaymentOutcome, Status, Success, Transition};
use ps_contract::mandate::MandateTerms;
use ps_contract::payment::Dispute;
use ps_contract::payment::PaymentAmounts;
use ps_contract::session::{saved_card_usage, CaptureMethod, PaymentSession};
use ps_runtime::{Handled, HandlerError, Outbound};
use ps_store::attempts::{self, Attempt, Settlement};
use ps_store::events::event;
use ps_store::sessions::{self, StoredSession};

/// `max_failed`: failed attempts a customer-present session allows before it ends `unpaid`.
pub async fn apply(tx: &Transaction<'_>, r: &GatewayResult, now: DateTime<Utc>, max_failed: u32) -> Result<Handled, HandlerError> {
    // Session before attempt, the order every writer of both takes, so two never deadlock.
    let Some(mut s) = sessions::lock(tx, r.session_id.as_str(), None).await? else {
        return Err(HandlerError::Permanent(format!("result for unknown session {}", r.session_id)));
    };
    let Some(attempt) = attempts::lock(tx, r.attempt_id.as_str()).await?.filter(|a| a.session_id == r.session_id.as_str()) else {
        return Err(HandlerError::Permanent(format!("result for unknown attempt {} of {}", r.attempt_id, r.session_id)));
    };
    if let Some(why) = unbacked(r, &attempt) {
        tracing::error!(attempt = %attempt.id, reason = %why, "processor result does not match its attempt; not applied");
        return Ok(Handled::dead_lettered("result_not_vouched", why));
    }
    match r.operation {
        Operation::Authorize => authorized(tx, r, &attempt, &mut s, now, max_failed).await,
        Operation::Capture => captured(tx, r, &attempt, &mut s, now).await,
        Operation::Void => voided(tx, r, &attempt, &mut s, now).await,
        Operation::Refund => crate::refunds::apply(tx, r, &mut s, now).await,
    }
}

/// Why a result does not belong to the attempt it names, if it does not
/// (DESIGN §10: internal messages are checked, not trusted). The amount, key
/// and card an authorize reports must be the attempt's; a capture reports
/// what was asked for, within what was authorised. (A refund's result is held
/// to its refund row in `refunds::apply`.)
fn unbacked(r: &GatewayResult, a: &Attempt) -> Option<String> {
    match r.operation {
        Operation::Authorize => {
            if r.amount != a.amount {
                Some(format!("amount {} differs from the attempt's {}", r.amount, a.amount))
            } else if r.processor_idempotency_key != a.processor_key {
                Some("the processor key is not the attempt's".into())
            } else if r.card_token.is_some() && a.card_token.is_some() && r.card_token != a.card_token {
                Some("the card is not the one the attempt was started with".into())
            } else {
                None
            }
        }
        Operation::Capture if r.outcome == Outcome::Succeeded => {
            let asked = a.settlement_amount.unwrap_or(a.amount);
            (r.amount != asked || r.amount > a.amount - a.captured)
                .then(|| format!("captured {} where {asked} of the {} still open was asked for", r.amount, a.amount - a.captured))
        }
        Operation::Capture | Operation::Void | Operation::Refund => None,
    }
}

async fn authorized(
    tx: &Transaction<'_>,
    r: &GatewayResult,
    attempt: &Attempt,
    s: &mut StoredSession,
    now: DateTime<Utc>,
    max_failed: u32,
) -> Result<Handled, HandlerError> {
    // An abandoned attempt is still waiting: for the answer its resolution brings.
    if r.outcome == Outcome::RequiresAction {
        // The customer is asked first; the answer comes when the challenge ends.
        if attempt.status == AttemptStatus::Pending && !s.session.status.is_terminal() {
            attempts::require_action(tx, &attempt.id, r.next_action.as_ref()).await?;
            tracing::info!(session = %s.session.id, attempt = %attempt.id, "the customer is asked to authenticate");
        }
        return Ok(Handled::default());
    }
    if !attempt.status.awaiting() || s.session.status.is_terminal() {
        return late(tx, r, attempt, s).await;
    }
    let ty = s.session.session_type;
    let mut out = Handled::default();
    if r.outcome == Outcome::Failed {
        // This failure counts too: it is recorded below, in the same transaction.
        let exhausted = ty.customer_present() && attempts::failed_count(tx, s.session.id.as_str()).await? + 1 >= i64::from(max_failed);
        let step = if exhausted { Transition::AttemptsExhausted } else { Transition::AttemptFailed };
        let to = transition(ty, s.state(), step).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        attempts::finish(
            tx,
            &attempt.id,
            AttemptStatus::Failed,
            r.error_code.as_deref(),
            r.decline_code.as_deref(),
            r.processor_reference.as_deref(),
            None,
        )
        .await?;
        let message = r.message.clone().unwrap_or_else(|| "The payment failed.".into());
        s.session.last_payment_error =
            Some(sessions::payment_error(r.error_code.as_deref().unwrap_or("card_declined"), r.decline_code.as_deref(), &message, now));
        // The card the customer last tried, as Moment shows a failed payment's.
        s.set_payment_card(r.card.clone());
        s.set_state(to, now);
        sessions::save(tx, s).await?;
        let m = &s.merchant_id;
        if exhausted {
            tracing::warn!(session = %s.session.id, max_failed, "failed-attempt limit reached: session ends unpaid");
            out = out
                .send(payment_event(EventType::PaymentAttemptFailed, m, now, &s.session)?)
                .send(payment_event(EventType::PaymentFailed, m, now, &s.session)?)
                .send(event(EventType::PaymentSessionCompleted, m, now, &s.session)?);
        } else if ty.customer_present() {
            out = out.send(payment_event(EventType::PaymentAttemptFailed, m, now, &s.session)?).send(event(
                EventType::PaymentSessionUpdated,
                m,
                now,
                &s.session,
            )?);
        } else {
            out = out.send(payment_event(EventType::PaymentFailed, m, now, &s.session)?).send(event(
                EventType::PaymentSessionCompleted,
                m,
                now,
                &s.session,
            )?);
        }
        tracing::info!(session = %s.session.id, decline_code = r.decline_code.as_deref().unwrap_or(""), "attempt failed");
        return Ok(out);
    }

    let success = if s.session.amount == 0 {
        Success::Verified
    } else if s.capture_method == CaptureMethod::Manual {
        Success::Reserved
    } else {
        Success::Paid
    };
    let to = transition(ty, s.state(), Transition::AttemptSucceeded(success)).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let captured = (success == Success::Paid).then_some(r.amount);
    attempts::finish(tx, &attempt.id, AttemptStatus::Succeeded, None, None, r.processor_reference.as_deref(), captured).await?;
    s.set_amounts(PaymentAmounts { authorised: r.amount, paid: captured.unwrap_or(0), ..s.amounts() }, now);
    s.set_payment_card(r.card.clone());

    // What a customer-present success leaves behind: a mandate, or a saved card.
    let keep_card = saved_card_usage(ty, s.save_payment_method, attempt.save_card);
    let mut mandate = None;
    // The card saved is the one the attempt was started with, as recorded.
    if let (Some(off_session), Some(card), Some(token), Some(customer)) =
        (keep_card, &r.card, &attempt.card_token, s.session.customer_id.clone())
    {
        let method = mandates::save_method(tx, &s.merchant_id, &customer, card, token, off_session).await?;
        if off_session {
            let terms = s.mandate_terms.clone().unwrap_or_else(|| MandateTerms::unconstrained(s.session.currency));
            let m = mandates::create(tx, &s.merchant_id, &customer, &method, &terms, now).await?;
            s.session.mandate_id = Some(m.id.clone());
            mandate = Some(m);
        }
        s.session.payment_method_id = Some(method);
    }
    s.session.last_payment_error = None;
    s.set_state(to, now);
    sessions::save(tx, s).await?;

    let m = s.merchant_id.clone();
    out = out.send(payment_event(EventType::PaymentSucceeded, &m, now, &s.session)?);
    if let Some(md) = &mandate {
        out = out.send(event(EventType::MandateCreated, &m, now, md)?);
    }
    out = out.send(event(EventType::PaymentSessionCompleted, &m, now, &s.session)?);
    tracing::info!(session = %s.session.id, outcome = %s.session.payment_outcome, mandate = ?mandate.as_ref().map(|m| m.id.to_string()), "payment succeeded");
    Ok(out)
}

/// A result for an attempt already given up on, or a session that has ended:
/// money taken for a session that will not complete is given back.
async fn late(tx: &Transaction<'_>, r: &GatewayResult, attempt: &Attempt, s: &StoredSession) -> Result<Handled, HandlerError> {
    if r.outcome == Outcome::Succeeded && attempt.settlement.is_none() && attempt.status != AttemptStatus::Succeeded {
        tracing::warn!(session = %s.session.id, attempt = %attempt.id, status = %s.session.status, "late success for an ended session: voiding it");
        attempts::finish(tx, &attempt.id, AttemptStatus::Succeeded, None, None, r.processor_reference.as_deref(), None).await?;
        return Ok(Handled::default().send(attempts::request_settlement(tx, Operation::Void, &attempt.id, s, r.amount).await?));
    }
    tracing::info!(attempt = %attempt.id, "result for an attempt already resolved; nothing to do");
    Ok(Handled::default())
}

async fn captured(
    tx: &Transaction<'_>,
    r: &GatewayResult,
    attempt: &Attempt,
    s: &mut StoredSession,
    now: DateTime<Utc>,
) -> Result<Handled, HandlerError> {
    // Only the capture being asked for is answered: a copy of an earlier
    // answer must not count its amount twice.
    if attempt.settlement != Some(Settlement::CaptureRequested)
        || r.processor_idempotency_key != attempt.latest_settlement_key(Operation::Capture)
    {
        tracing::info!(session = %s.session.id, attempt = %attempt.id, "answer to a capture no longer awaited; nothing to do");
        return Ok(Handled::default());
    }
    if r.outcome == Outcome::Failed {
        tracing::warn!(session = %s.session.id, error = r.error_code.as_deref().unwrap_or(""), "capture failed; the reservation stands");
        attempts::set_settlement(tx, &attempt.id, None).await?;
        return settlement_failed(tx, r, s, now, "The capture failed; the reservation stands and may be captured or voided again.").await;
    }
    let to = match transition(s.session.session_type, s.state(), Transition::Capture) {
        Ok(to) => to,
        Err(e) => {
            tracing::info!(session = %s.session.id, error = %e, "capture result for a settled session; nothing to do");
            return Ok(Handled::default());
        }
    };
    // The rest stays open for more captures only where the processor kept it
    // so; otherwise (a single-capture processor) it was released.
    let paid = attempt.captured + r.amount;
    let closes = !r.authorization_open || paid >= attempt.amount;
    attempts::add_capture(tx, &attempt.id, r.amount, closes).await?;
    let held = s.amounts();
    s.set_amounts(PaymentAmounts { paid, voided: if closes { (held.authorised - paid).max(0) } else { 0 }, ..held }, now);
    s.set_state(to, now);
    sessions::save(tx, s).await?;
    let m = &s.merchant_id;
    Ok(Handled::default().send(payment_event(EventType::PaymentCaptured, m, now, &s.session)?).send(event(
        EventType::PaymentSessionUpdated,
        m,
        now,
        &s.session,
    )?))
}

async fn voided(
    tx: &Transaction<'_>,
    r: &GatewayResult,
    attempt: &Attempt,
    s: &mut StoredSession,
    now: DateTime<Utc>,
) -> Result<Handled, HandlerError> {
    if attempt.settlement != Some(Settlement::VoidRequested) {
        tracing::info!(session = %s.session.id, attempt = %attempt.id, "answer to a void no longer awaited; nothing to do");
        return Ok(Handled::default());
    }
    // A merchant's void of a reservation is theirs to retry; giving back a
    // late charge is ours, until the processor does it or says it cannot.
    let reservation = s.session.status == Status::Completed && s.session.payment_outcome == PaymentOutcome::Reserved;
    if r.outcome == Outcome::Failed && !reservation && !void_is_final(r) {
        tracing::warn!(session = %s.session.id, attempt = %attempt.id, decline_code = r.decline_code.as_deref().unwrap_or(""),
            "void of a late charge failed; asking again later under a new key");
        attempts::retry_settlement_later(tx, &attempt.id).await?;
        return Ok(Handled::default());
    }
    if r.outcome == Outcome::Failed {
        tracing::error!(session = %s.session.id, attempt = %attempt.id, error = r.error_code.as_deref().unwrap_or(""), "void failed; needs an operator");
        attempts::set_settlement(tx, &attempt.id, None).await?;
        return settlement_failed(tx, r, s, now, "The void failed; the payment stands.").await;
    }
    attempts::set_settlement(tx, &attempt.id, Some(Settlement::Voided)).await?;
    let m = s.merchant_id.clone();
    let mut out = Handled::default();
    // Voiding a reservation changes the session; voiding a late charge does not.
    if s.session.status == Status::Completed {
        if let Ok(to) = transition(s.session.session_type, s.state(), Transition::Void) {
            let held = s.amounts();
            // What captures took stays paid; the rest is released.
            s.set_amounts(PaymentAmounts { voided: (held.authorised - held.paid).max(0), ..held }, now);
            s.set_state(to, now);
            sessions::save(tx, s).await?;
            out = out.send(event(EventType::PaymentSessionUpdated, &m, now, &s.session)?);
        }
    }
    Ok(out.send(payment_event(EventType::PaymentVoided, &m, now, &s.session)?))
}

/// A `payment.*` event: it carries the payment, as Moment's do (the
/// `payment_session.*` ones carry the session).
fn payment_event(kind: EventType, merchant: &MerchantId, now: DateTime<Utc>, s: &PaymentSession) -> Result<Outbound, HandlerError> {
    let payment = s.payment.as_ref().ok_or_else(|| HandlerError::Permanent(format!("session {} has no payment to announce", s.id)))?;
    Ok(event(kind, merchant, now, payment)?)
}

/// The processor's refusals no retry changes: nothing (left) to void.
fn void_is_final(r: &GatewayResult) -> bool {
    matches!(r.decline_code.as_deref(), Some("already_settled" | "no_authorization"))
}

/// A capture or void the processor refused: the merchant hears of it on the session.
async fn settlement_failed(
    tx: &Transaction<'_>,
    r: &GatewayResult,
    s: &mut StoredSession,
    now: DateTime<Utc>,
    message: &str,
) -> Result<Handled, HandlerError> {
    s.session.last_payment_error =
        Some(sessions::payment_error(r.error_code.as_deref().unwrap_or("processing_error"), r.decline_code.as_deref(), message, now));
    s.session.updated_at = now;
    sessions::save(tx, s).await?;
    Ok(Handled::default().send(event(EventType::PaymentSessionUpdated, &s.merchant_id, now, &s.session)?))
}

/// The cardholder disputed a payment: the merchant hears of it
/// (`payment.disputed`, its data the `dispute`), once per dispute.
pub async fn disputed(tx: &Transaction<'_>, d: &DisputeNotice, now: DateTime<Utc>) -> Result<Handled, HandlerError> {
    let Some(s) = sessions::get(tx, d.session_id.as_str()).await? else {
        return Err(HandlerError::Permanent(format!("dispute for unknown session {}", d.session_id)));
    };
    if s.merchant_id != d.merchant_id {
        return Ok(Handled::dead_lettered("result_not_vouched", "the dispute names another merchant than its session's"));
    }
    let Some(payment_id) = s.session.payment_id.clone() else {
        return Ok(Handled::dead_lettered("result_not_vouched", "a dispute for a session that has no payment"));
    };
    let dispute = Dispute {
        id: d.dispute_id.clone(),
        object: Dispute::OBJECT.to_owned(),
        payment_session_id: d.session_id.clone(),
        payment_id,
        amount: d.amount,
        currency: d.currency,
        reason: d.reason.clone(),
        status: d.status.clone(),
        created_at: now,
    };
    tracing::warn!(session = %d.session_id, dispute = %d.dispute_id, amount = d.amount, "payment disputed");
    Ok(Handled::default().send(event(EventType::PaymentDisputed, &s.merchant_id, now, &dispute)?))
}
