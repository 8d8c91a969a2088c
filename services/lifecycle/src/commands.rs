//! The commands lifecycle owns: cancel, capture, void, revoke.

use crate::mandates;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::branding::SettingsUpdate;
use ps_contract::commands::{check_capture_amount, CaptureCommand, MandateList, RevokeCommand, SessionCommand, SessionList};
use ps_contract::events::EventType;
use ps_contract::ids::MerchantId;
use ps_contract::internal::{CustomerCancel, Operation};
use ps_contract::lifecycle::{transition, Transition};
use ps_contract::mandate::MandateStatus;
use ps_contract::routing::command;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{Handled, HandlerError, Incoming};
use ps_store::attempts;
use ps_store::checkout_settings;
use ps_store::commands::{self, Answer, Opening};
use ps_store::events::event;
use ps_store::sessions;
use serde_json::Value;

pub async fn handle(tx: &Transaction<'_>, msg: &Incoming, now: DateTime<Utc>) -> Result<Handled, HandlerError> {
    let opened = match commands::open(tx, msg, None).await? {
        Opening::Proceed(o) => o,
        Opening::Answered(answered) => return Ok(answered),
    };
    let (merchant, body) = (&opened.merchant, &opened.body);
    let answer = match msg.routing_key.as_str() {
        command::SESSION_CANCEL => cancel(tx, merchant, body, now).await?,
        command::PAYMENT_CAPTURE => settle(tx, merchant, body, Operation::Capture, now).await?,
        command::PAYMENT_VOID => settle(tx, merchant, body, Operation::Void, now).await?,
        command::MANDATE_REVOKE => revoke(tx, merchant, body, now).await?,
        command::CHECKOUT_SETTINGS_UPDATE => update_checkout_settings(tx, merchant, body).await?,
        command::CHECKOUT_SETTINGS_RETRIEVE => retrieve_checkout_settings(tx, merchant, body).await?,
        command::SESSION_RETRIEVE => retrieve_session(tx, merchant, body).await?,
        command::SESSION_LIST => list_sessions(tx, merchant, body).await?,
        command::MANDATE_RETRIEVE => retrieve_mandate(tx, merchant, body).await?,
        command::MANDATE_LIST => list_mandates(tx, merchant, body).await?,
        command::REFUND_CREATE => crate::refunds::create(tx, merchant, opened.key.is_some(), body, now).await?,
        command::REFUND_RETRIEVE => crate::refunds::retrieve(tx, merchant, body).await?,
        other => Answer::Refused(ApiError::new(ErrorCode::UnknownCommand, format!("lifecycle does not handle {other:?}"))),
    };
    commands::close(tx, msg, &opened, answer).await
}

fn not_found(id: &str) -> ApiError {
    ApiError::param(ErrorCode::SessionNotFound, "payment_session_id", format!("no such payment session: {id}"))
}

fn to_json(v: &impl serde::Serialize) -> Result<Value, HandlerError> {
    Ok(serde_json::to_value(v)?)
}

/// The customer cancelled at the checkout (`checkout.cancel`): the session is
/// cancelled and announced as a merchant's cancel is, if it still may be; a
/// payment that started first goes on, and the checkout shows it.
pub async fn customer_cancel(tx: &Transaction<'_>, c: &CustomerCancel, now: DateTime<Utc>) -> Result<Handled, HandlerError> {
    let Some(mut s) = sessions::lock(tx, c.session_id.as_str(), Some(&c.merchant_id)).await? else {
        return Ok(Handled::dead_lettered("request_not_vouched", "a customer's cancel names no session of that merchant"));
    };
    let to = match transition(s.session.session_type, s.state(), Transition::Cancel) {
        Ok(to) => to,
        Err(e) => {
            tracing::info!(session = %s.session.id, error = %e, "the customer's cancel came too late; the session goes on");
            return Ok(Handled::default());
        }
    };
    s.set_state(to, now);
    sessions::save(tx, &s).await?;
    tracing::info!(session = %s.session.id, "session cancelled by the customer at the checkout");
    Ok(Handled::default().send(event(EventType::PaymentSessionUpdated, &s.merchant_id, now, &s.session)?))
}

async fn cancel(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
    let cmd = match SessionCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut s) = sessions::lock(tx, cmd.payment_session_id.as_str(), Some(merchant)).await? else {
        return Ok(Answer::Refused(not_found(cmd.payment_session_id.as_str())));
    };
    let to = match transition(s.session.session_type, s.state(), Transition::Cancel) {
        Ok(to) => to,
        Err(e) => return Ok(Answer::Refused(e.into())),
    };
    s.set_state(to, now);
    sessions::save(tx, &s).await?;
    tracing::info!(session = %s.session.id, "session cancelled");
    Ok(Answer::Done(to_json(&s.session)?, vec![event(EventType::PaymentSessionUpdated, merchant, now, &s.session)?]))
}

/// Capture part or all of a reservation, or void what is left of it: checked
/// here, done by the gateway, applied when its result arrives. Several
/// captures may follow one another until the authorisation is used or voided.
async fn settle(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    body: &Value,
    op: Operation,
    now: DateTime<Utc>,
) -> Result<Answer, HandlerError> {
    let (id, requested) = match op {
        Operation::Capture => match CaptureCommand::parse(body) {
            Ok(c) => (c.payment_session_id, c.amount),
            Err(e) => return Ok(Answer::Refused(e)),
        },
        _ => match SessionCommand::parse(body) {
            Ok(c) => (c.payment_session_id, None),
            Err(e) => return Ok(Answer::Refused(e)),
        },
    };
    let Some(s) = sessions::lock(tx, id.as_str(), Some(merchant)).await? else {
        return Ok(Answer::Refused(not_found(id.as_str())));
    };
    let t = if op == Operation::Capture { Transition::Capture } else { Transition::Void };
    if let Err(e) = transition(s.session.session_type, s.state(), t) {
        return Ok(Answer::Refused(e.into()));
    }
    // The network has released the funds: a capture now would fail at the
    // processor, so it is refused here (a void is still accepted: it costs nothing).
    let expires = s.session.payment.as_ref().and_then(|p| p.authorization_expires_at);
    if let Some(at) = expires.filter(|at| op == Operation::Capture && now > *at) {
        return Ok(Answer::Refused(ApiError::param(
            ErrorCode::AuthorizationExpired,
            "payment_session_id",
            format!("the authorisation expired at {}; it can no longer be captured", ps_contract::timestamp::format(&at)),
        )));
    }
    let Some(attempt) = attempts::lock_succeeded(tx, id.as_str()).await? else {
        return Err(HandlerError::Permanent(format!("reserved session {id} has no succeeded attempt")));
    };
    let reply = to_json(&s.session)?;
    let refuse = |code, message: String| Ok(Answer::Refused(ApiError::param(code, "payment_session_id", message)));
    let p = s.amounts();
    match attempt.settlement {
        // A void already asked for releases all that is open: the same answer, no second request.
        Some(attempts::Settlement::VoidRequested) if op == Operation::Void => return Ok(Answer::Done(reply, vec![])),
        // One settlement at a time: what is open after it is not known until it is answered.
        Some(attempts::Settlement::CaptureRequested | attempts::Settlement::VoidRequested) => {
            let other = if attempt.settlement == Some(attempts::Settlement::CaptureRequested) { "capture" } else { "void" };
            return refuse(
                ErrorCode::PaymentProcessing,
                format!("a {other} of this payment is being processed; ask again once it is answered (payment.captured / payment.voided)"),
            );
        }
        Some(attempts::Settlement::Voided) if op == Operation::Void => {
            return refuse(ErrorCode::IllegalTransition, format!("the payment has already been voided: {} released", p.voided));
        }
        Some(attempts::Settlement::Captured | attempts::Settlement::Voided) if op == Operation::Void => {
            return refuse(
                ErrorCode::IllegalTransition,
                format!("there is no remaining authorised amount to void: {} captured, {} released", p.paid, p.voided),
            );
        }
        Some(attempts::Settlement::Captured | attempts::Settlement::Voided) => {
            return refuse(
                ErrorCode::IllegalTransition,
                format!("the authorisation is closed and cannot be captured: {} captured, {} released", p.paid, p.voided),
            );
        }
        None => {}
    }
    let amount = match op {
        Operation::Capture => match check_capture_amount(requested, attempt.amount, attempt.open()) {
            Ok(a) => a,
            Err(e) => return Ok(Answer::Refused(e)),
        },
        // A void releases all that is open, after any captures (Moment's).
        _ => attempt.open(),
    };
    Ok(Answer::Done(reply, vec![attempts::request_settlement(tx, op, &attempt.id, &s, amount).await?]))
}

async fn revoke(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
    let cmd = match RevokeCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let Some(mut m) = mandates::lock(tx, merchant, &cmd.mandate_id).await? else {
        return Ok(Answer::Refused(ApiError::param(
            ErrorCode::MandateNotFound,
            "mandate_id",
            format!("no such mandate: {}", cmd.mandate_id),
        )));
    };
    let mut publish = vec![];
    if m.status == MandateStatus::Active {
        mandates::set_status(tx, &m.id, MandateStatus::Revoked, now).await?;
        m.status = MandateStatus::Revoked;
        publish.push(event(EventType::MandateRevoked, merchant, now, &m)?);
        tracing::info!(mandate = %m.id, "mandate revoked");
    }
    Ok(Answer::Done(to_json(&m)?, publish))
}

async fn update_checkout_settings(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let update = match SettingsUpdate::parse(body) {
        Ok(u) => u,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let settings = checkout_settings::update(tx, merchant, &update).await?;
    tracing::info!(merchant = %merchant, "checkout settings updated");
    Ok(Answer::Done(to_json(&settings)?, vec![]))
}

async fn retrieve_checkout_settings(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    if let Some(k) = body.as_object().and_then(|o| o.keys().next()) {
        return Ok(Answer::Refused(ApiError::param(ErrorCode::ParameterUnknown, k.as_str(), format!("unknown field {k}"))));
    }
    Ok(Answer::Done(to_json(&checkout_settings::get(tx, merchant).await?)?, vec![]))
}

/// `{"object": "list", "data", "has_more"}` from a page fetched with one row extra.
fn page<T: serde::Serialize>(mut rows: Vec<T>, limit: u32) -> Result<Value, HandlerError> {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(serde_json::json!({"object": "list", "data": to_json(&rows)?, "has_more": has_more}))
}

async fn retrieve_session(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let cmd = match SessionCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    match sessions::get(tx, cmd.payment_session_id.as_str()).await? {
        Some(s) if &s.merchant_id == merchant => Ok(Answer::Done(to_json(&s.session)?, vec![])),
        // Another merchant's session is answered exactly as a missing one.
        _ => Ok(Answer::Refused(not_found(cmd.payment_session_id.as_str()))),
    }
}

async fn list_sessions(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let q = match SessionList::parse(body) {
        Ok(q) => q,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let rows: Vec<_> = sessions::list(tx, merchant, &q).await?.into_iter().map(|s| s.session).collect();
    Ok(Answer::Done(page(rows, q.limit)?, vec![]))
}

async fn retrieve_mandate(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let cmd = match RevokeCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    match mandates::get(tx, merchant, &cmd.mandate_id).await? {
        Some(m) => Ok(Answer::Done(to_json(&m)?, vec![])),
        None => {
            Ok(Answer::Refused(ApiError::param(ErrorCode::MandateNotFound, "mandate_id", format!("no such mandate: {}", cmd.mandate_id))))
        }
    }
}

async fn list_mandates(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value) -> Result<Answer, HandlerError> {
    let q = match MandateList::parse(body) {
        Ok(q) => q,
        Err(e) => return Ok(Answer::Refused(e)),
    };
    let rows = mandates::list(tx, merchant, &q).await?;
    Ok(Answer::Done(page(rows, q.limit)?, vec![]))
}
