//! The envelope every command but create shares (DESIGN §4): `merchant-id`
//! required, `idempotency-key` honoured when given, a JSON body, a reply.

use crate::grants::{self, Access};
use crate::idempotency::{self, Claim};
use deadpool_postgres::Transaction;
use ps_contract::idempotency::{request_fingerprint, IdempotencyKey};
use ps_contract::ids::MerchantId;
use ps_contract::routing::command;
use ps_contract::routing::header;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::sealing::{context, sealed_json, At, Keyring, SecretsError};
use ps_runtime::{Admission, Handled, HandlerError, Incoming, Outbound};
use serde_json::Value;

/// How a command came out.
pub enum Answer {
    /// The object to reply with, and what to publish.
    Done(Value, Vec<Outbound>),
    /// Refused: changes nothing, and releases its idempotency key.
    Refused(ApiError),
}

/// A command ready for its handler.
pub struct Opened {
    pub merchant: MerchantId,
    pub key: Option<IdempotencyKey>,
    pub body: Value,
}

/// What opening a command's envelope came to.
pub enum Opening {
    /// Go on with the command.
    Proceed(Opened),
    /// The envelope is the whole answer: a refusal, or the replay of an earlier reply.
    Answered(Handled),
}

pub fn refused(msg: &Incoming, e: &ApiError) -> Handled {
    tracing::info!(command = %msg.routing_key, code = %e.code, "command refused");
    Handled::refuse(msg, e)
}

fn merchant_of(msg: &Incoming) -> Result<MerchantId, ApiError> {
    let m = msg
        .header(header::MERCHANT_ID)
        .ok_or_else(|| ApiError::param(ErrorCode::MerchantIdMissing, header::MERCHANT_ID, "the merchant-id header is required"))?;
    MerchantId::parse(&m).map_err(|e| e.with_param(header::MERCHANT_ID))
}

/// A command's admission (DESIGN §10), before anything about it is recorded
/// or replayed: a valid `merchant-id`, and a publisher (its broker user, as
/// RabbitMQ vouched) granted that merchant. A read is then answered every time
/// it comes; anything else is applied once.
pub async fn admit(tx: &Transaction<'_>, msg: &Incoming) -> Result<Admission, HandlerError> {
    let merchant = match merchant_of(msg) {
        Ok(m) => m,
        Err(e) => return Ok(Admission::Refused(refused(msg, &e))),
    };
    if let Access::Refused(e) = grants::check(tx, msg.user_id.as_deref(), &merchant).await? {
        return Ok(Admission::Refused(refused(msg, &e)));
    }
    Ok(if command::is_read(&msg.routing_key) { Admission::Answer } else { Admission::Apply })
}

/// Opens an admitted command: its idempotency key (claimed, unless the
/// command is a read, which is never replayed) and its JSON body.
/// `keys` opens a stored reply that was sealed (one holding a secret); a service
/// that never seals replies passes `None`.
pub async fn open(tx: &Transaction<'_>, msg: &Incoming, keys: Option<&Keyring>) -> Result<Opening, HandlerError> {
    let merchant = match merchant_of(msg) {
        Ok(m) => m,
        Err(e) => return Ok(Opening::Answered(refused(msg, &e))),
    };
    let key = match msg.header(header::IDEMPOTENCY_KEY).map(|k| IdempotencyKey::parse(&k)) {
        None => None,
        Some(Err(e)) => return Ok(Opening::Answered(refused(msg, &e.with_param(header::IDEMPOTENCY_KEY)))),
        Some(Ok(k)) => Some(k),
    };
    let body: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => {
            let err = ApiError::new(ErrorCode::InvalidJson, format!("body is not JSON: {e}"));
            tracing::info!(command = %msg.routing_key, code = %err.code, "command refused");
            return Ok(Opening::Answered(Handled::refuse_unparseable(msg, &err)));
        }
    };
    // A read changes nothing: its key binds nothing and nothing is replayed.
    let key = key.filter(|_| !command::is_read(&msg.routing_key));
    if let Some(k) = &key {
        match idempotency::claim(tx, &merchant, k, &msg.routing_key, &request_fingerprint(&msg.routing_key, &body)).await? {
            Claim::Refused(e) => return Ok(Opening::Answered(refused(msg, &e))),
            Claim::Replay(stored) => return Ok(Opening::Answered(replay(msg, &merchant, k, stored, keys)?)),
            Claim::New => {}
        }
    }
    Ok(Opening::Proceed(Opened { merchant, key, body }))
}

/// An earlier reply to the same key, sent again (opened first if it was sealed).
pub fn replay(
    msg: &Incoming,
    merchant: &MerchantId,
    key: &IdempotencyKey,
    stored: Value,
    keys: Option<&Keyring>,
) -> Result<Handled, HandlerError> {
    let sealed = sealed_json(&stored).is_some();
    let reply = match (sealed, keys) {
        (false, _) => stored,
        (true, Some(keys)) => keys
            .open_json(&At::idempotency_reply(merchant.as_str(), key.as_str()), stored)
            .map_err(|source| SecretsError::Open { context: context::IDEMPOTENCY_REPLY, source })?,
        (true, None) => return Err(SecretsError::NoKeys.into()),
    };
    // A refusal with nowhere to reply goes where the first one went: the DLQ.
    if msg.reply_to.is_none() {
        if let Some(e) = reply.get("error").and_then(|e| serde_json::from_value::<ApiError>(e.clone()).ok()) {
            return Ok(Handled::refuse(msg, &e));
        }
    }
    let again = msg.reply(&reply, true).map(|mut r| {
        r.sealed = sealed;
        r
    });
    Ok(Handled::default().send(again))
}

/// Replies with the answer and keeps it, a refusal too, for idempotent replays.
pub async fn close(tx: &Transaction<'_>, msg: &Incoming, opened: &Opened, answer: Answer) -> Result<Handled, HandlerError> {
    finish(tx, msg, opened, answer, None).await
}

/// As `close`, for an answer that holds a secret (a webhook signing secret): it
/// is kept sealed under `keys` wherever it rests (idempotency record, outbox).
pub async fn close_sealed(
    tx: &Transaction<'_>,
    msg: &Incoming,
    opened: &Opened,
    answer: Answer,
    keys: &Keyring,
) -> Result<Handled, HandlerError> {
    finish(tx, msg, opened, answer, Some(keys)).await
}

async fn finish(
    tx: &Transaction<'_>,
    msg: &Incoming,
    opened: &Opened,
    answer: Answer,
    seal: Option<&Keyring>,
) -> Result<Handled, HandlerError> {
    match answer {
        Answer::Done(reply, publish) => {
            if let Some(k) = &opened.key {
                let kept = match seal {
                    Some(keys) => keys.seal_json(&At::idempotency_reply(opened.merchant.as_str(), k.as_str()), &reply),
                    None => reply.clone(),
                };
                idempotency::complete(tx, &opened.merchant, k, &kept).await?;
            }
            let answer = msg.reply(&reply, false).map(|mut r| {
                r.sealed = seal.is_some();
                r
            });
            let mut h = Handled::default().send(answer);
            h.outbox.extend(publish);
            Ok(h)
        }
        // Kept like any answer (Moment replays a refusal too): the same key
        // and body get this error again, marked as a replay.
        Answer::Refused(e) => {
            if let Some(k) = &opened.key {
                idempotency::complete(tx, &opened.merchant, k, &e.to_reply()).await?;
            }
            Ok(refused(msg, &e))
        }
    }
}
