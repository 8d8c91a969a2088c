//! The commands lifecycle owns: cancel, capture, void, revoke.

use crate::attempts;
use crate::mandates;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::commands::{check_capture_amount, CaptureCommand, RevokeCommand, SessionCommand};
use ps_contract::events::EventType;
use ps_contract::idempotency::{request_fingerprint, IdempotencyKey};
use ps_contract::ids::MerchantId;
use ps_contract::internal::Operation;
use ps_contract::lifecycle::{transition, Transition};
use ps_contract::mandate::MandateStatus;
use ps_contract::routing::{command, header};
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::{Handled, HandlerError, Incoming, Outbound};
use ps_store::events::event;
use ps_store::idempotency::{self, Claim};
use ps_store::sessions;
use serde_json::Value;

/// A command's answer: the object to reply with and what to publish.
type Answer = Result<(Value, Vec<Outbound>), ApiError>;

pub async fn handle(tx: &Transaction<'_>, msg: &Incoming, now: DateTime<Utc>) -> Result<Handled, HandlerError> {
    let merchant = match msg.header(header::MERCHANT_ID).map(|m| MerchantId::parse(&m)) {
        None => {
            return Ok(refused(
                msg,
                &ApiError::param(ErrorCode::MerchantIdMissing, header::MERCHANT_ID, "the merchant-id header is required"),
            ))
        }
        Some(Err(e)) => return Ok(refused(msg, &e.with_param(header::MERCHANT_ID))),
        Some(Ok(m)) => m,
    };
    let key = match msg.header(header::IDEMPOTENCY_KEY).map(|k| IdempotencyKey::parse(&k)) {
        None => None,
        Some(Err(e)) => return Ok(refused(msg, &e.with_param(header::IDEMPOTENCY_KEY))),
        Some(Ok(k)) => Some(k),
    };
    let body: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => {
            let err = ApiError::new(ErrorCode::InvalidJson, format!("body is not JSON: {e}"));
            let mut h = refused(msg, &err);
            h.dead_letter = Some((err.code.as_str().into(), err.message.clone()));
            return Ok(h);
        }
    };
    if let Some(k) = &key {
        match idempotency::claim(tx, &merchant, k, &msg.routing_key, &request_fingerprint(&msg.routing_key, &body)).await? {
            Err(e) => return Ok(refused(msg, &e)),
            Ok(Claim::Replay(reply)) => return Ok(Handled::default().send(msg.reply(&reply, true))),
            Ok(Claim::New) => {}
        }
    }
    let answer = match msg.routing_key.as_str() {
        command::SESSION_CANCEL => cancel(tx, &merchant, &body, now).await?,
        command::PAYMENT_CAPTURE => settle(tx, &merchant, &body, Operation::Capture).await?,
        command::PAYMENT_VOID => settle(tx, &merchant, &body, Operation::Void).await?,
        command::MANDATE_REVOKE => revoke(tx, &merchant, &body, now).await?,
        other => Err(ApiError::new(ErrorCode::UnknownCommand, format!("lifecycle does not handle {other:?}"))),
    };
    match answer {
        Ok((reply, publish)) => {
            if let Some(k) = &key {
                idempotency::complete(tx, &merchant, k, &reply).await?;
            }
            let mut h = Handled::default().send(msg.reply(&reply, false));
            h.outbox.extend(publish);
            Ok(h)
        }
        Err(e) => {
            if let Some(k) = &key {
                idempotency::release(tx, &merchant, k).await?;
            }
            Ok(refused(msg, &e))
        }
    }
}

fn refused(msg: &Incoming, e: &ApiError) -> Handled {
    tracing::info!(command = %msg.routing_key, code = %e.code, "command refused");
    Handled::refuse(msg, e)
}

fn not_found(id: &str) -> ApiError {
    ApiError::param(ErrorCode::SessionNotFound, "payment_session_id", format!("no such payment session: {id}"))
}

fn to_json(v: &impl serde::Serialize) -> Result<Value, HandlerError> {
    serde_json::to_value(v).map_err(|e| HandlerError::Permanent(e.to_string()))
}

async fn cancel(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
    let cmd = match SessionCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let Some(mut s) = sessions::lock(tx, cmd.payment_session_id.as_str(), Some(merchant)).await? else {
        return Ok(Err(not_found(cmd.payment_session_id.as_str())));
    };
    let to = match transition(s.session.session_type, s.state(), Transition::Cancel) {
        Ok(to) => to,
        Err(e) => return Ok(Err(e.into())),
    };
    s.set_state(to, now);
    sessions::save(tx, &s).await?;
    tracing::info!(session = %s.session.id, "session cancelled");
    Ok(Ok((to_json(&s.session)?, vec![event(EventType::PaymentSessionUpdated, merchant, now, &s.session)])))
}

/// Capture or void a reservation: checked here, done by the gateway, applied when its result arrives.
async fn settle(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, op: Operation) -> Result<Answer, HandlerError> {
    let (id, requested) = match op {
        Operation::Capture => match CaptureCommand::parse(body) {
            Ok(c) => (c.payment_session_id, c.amount),
            Err(e) => return Ok(Err(e)),
        },
        _ => match SessionCommand::parse(body) {
            Ok(c) => (c.payment_session_id, None),
            Err(e) => return Ok(Err(e)),
        },
    };
    let Some(s) = sessions::lock(tx, id.as_str(), Some(merchant)).await? else {
        return Ok(Err(not_found(id.as_str())));
    };
    let t = if op == Operation::Capture { Transition::Capture } else { Transition::Void };
    if let Err(e) = transition(s.session.session_type, s.state(), t) {
        return Ok(Err(e.into()));
    }
    let Some(attempt) = attempts::lock_succeeded(tx, id.as_str()).await? else {
        return Err(HandlerError::Permanent(format!("reserved session {id} has no succeeded attempt")));
    };
    let amount = match check_capture_amount(requested, attempt.amount) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let reply = to_json(&s.session)?;
    if attempt.settlement.is_some() {
        // Already asked for: the same answer, and no second request to the processor.
        return Ok(Ok((reply, vec![])));
    }
    let marker = if op == Operation::Capture { "capture_requested" } else { "void_requested" };
    attempts::set_settlement(tx, &attempt.id, Some(marker), None).await?;
    Ok(Ok((reply, vec![attempts::settle_message(op, &attempt.id, &s, amount)])))
}

async fn revoke(tx: &Transaction<'_>, merchant: &MerchantId, body: &Value, now: DateTime<Utc>) -> Result<Answer, HandlerError> {
    let cmd = match RevokeCommand::parse(body) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let Some(mut m) = mandates::lock(tx, merchant, &cmd.mandate_id).await? else {
        return Ok(Err(ApiError::param(ErrorCode::MandateNotFound, "mandate_id", format!("no such mandate: {}", cmd.mandate_id))));
    };
    let mut publish = vec![];
    if m.status == MandateStatus::Active {
        mandates::set_status(tx, &m.id, MandateStatus::Revoked, now).await?;
        m.status = MandateStatus::Revoked;
        publish.push(event(EventType::MandateRevoked, merchant, now, &m));
        tracing::info!(mandate = %m.id, "mandate revoked");
    }
    Ok(Ok((to_json(&m)?, publish)))
}
