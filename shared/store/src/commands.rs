//! The envelope every command but create shares (DESIGN §4): `merchant-id`
//! required, `idempotency-key` honoured when given, a JSON body, a reply.

use crate::grants::{self, Access};
use crate::idempotency::{self, Claim};
use deadpool_postgres::Transaction;
use ps_contract::idempotency::{request_fingerprint, IdempotencyKey};
use ps_contract::ids::MerchantId;
use ps_contract::routing::header;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::consumer::REPLY_CONTEXT;
use ps_runtime::sealing::{sealed_json, Keyring, SecretsError};
use ps_runtime::{Handled, HandlerError, Incoming, Outbound};
use serde_json::Value;

/// A command's answer: the object to reply with and what to publish.
pub type Answer = Result<(Value, Vec<Outbound>), ApiError>;

/// A command ready for its handler.
pub struct Opened {
    pub merchant: MerchantId,
    pub key: Option<IdempotencyKey>,
    pub body: Value,
}

pub fn refused(msg: &Incoming, e: &ApiError) -> Handled {
    tracing::info!(command = %msg.routing_key, code = %e.code, "command refused");
    Handled::refuse(msg, e)
}

/// Checks the envelope and claims the idempotency key. `Err` is the whole
/// answer already (a refusal, or the replay of an earlier reply).
/// `keys` opens a stored reply that was sealed (one holding a secret); a service
/// that never seals replies passes `None`.
pub async fn open(tx: &Transaction<'_>, msg: &Incoming, keys: Option<&Keyring>) -> Result<Result<Opened, Handled>, HandlerError> {
    let merchant = match msg.header(header::MERCHANT_ID).map(|m| MerchantId::parse(&m)) {
        None => {
            return Ok(Err(refused(
                msg,
                &ApiError::param(ErrorCode::MerchantIdMissing, header::MERCHANT_ID, "the merchant-id header is required"),
            )))
        }
        Some(Err(e)) => return Ok(Err(refused(msg, &e.with_param(header::MERCHANT_ID)))),
        Some(Ok(m)) => m,
    };
    if let Access::Refused(e) = grants::check(tx, msg.user_id.as_deref(), &merchant).await? {
        return Ok(Err(refused(msg, &e)));
    }
    let key = match msg.header(header::IDEMPOTENCY_KEY).map(|k| IdempotencyKey::parse(&k)) {
        None => None,
        Some(Err(e)) => return Ok(Err(refused(msg, &e.with_param(header::IDEMPOTENCY_KEY)))),
        Some(Ok(k)) => Some(k),
    };
    let body: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => {
            let err = ApiError::new(ErrorCode::InvalidJson, format!("body is not JSON: {e}"));
            tracing::info!(command = %msg.routing_key, code = %err.code, "command refused");
            return Ok(Err(Handled::refuse_unparseable(msg, &err)));
        }
    };
    if let Some(k) = &key {
        match idempotency::claim(tx, &merchant, k, &msg.routing_key, &request_fingerprint(&msg.routing_key, &body)).await? {
            Err(e) => return Ok(Err(refused(msg, &e))),
            Ok(Claim::Replay(stored)) => {
                let sealed = sealed_json(&stored).is_some();
                let reply = match (sealed, keys) {
                    (false, _) => stored,
                    (true, Some(keys)) => keys
                        .open_json(REPLY_CONTEXT, stored)
                        .map_err(|source| SecretsError::Open { context: "idempotency_keys.reply", source })?,
                    (true, None) => return Err(SecretsError::NoKeys.into()),
                };
                let again = msg.reply(&reply, true).map(|mut r| {
                    r.sealed = sealed;
                    r
                });
                return Ok(Err(Handled::default().send(again)));
            }
            Ok(Claim::New) => {}
        }
    }
    Ok(Ok(Opened { merchant, key, body }))
}

/// Replies with the answer, keeps it for idempotent replays, or releases the key on refusal.
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
        Ok((reply, publish)) => {
            if let Some(k) = &opened.key {
                let kept = match seal {
                    Some(keys) => keys.seal_json(REPLY_CONTEXT, &reply),
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
        Err(e) => {
            if let Some(k) = &opened.key {
                idempotency::release(tx, &opened.merchant, k).await?;
            }
            Ok(refused(msg, &e))
        }
    }
}
