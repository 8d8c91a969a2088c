//! Stripe's own events (DESIGN §11): its webhooks, signature checked
//! (`Stripe-Signature`, timestamp within tolerance, compared in constant time),
//! each applied once by its id, fed into the same attempt state as the
//! synchronous answers. A webhook before, after, instead of the answer, or
//! three times, changes the state once: it becomes the same `gateway.result`
//! (same message id) the answer would have, and lifecycle applies a result once.

use crate::processor::{Processor, ProcessorError};
use crate::stripe::{intent_event_answer, setup_event_answer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use deadpool_postgres::{Pool, Transaction};
use hmac::{Hmac, Mac};
use ps_contract::internal::{CardSummary, DisputeNotice, GatewayResult, Operation, Outcome};
use ps_contract::money::Currency;
use ps_contract::routing::{exchange, header, internal};
use ps_contract::secret::Secret;
use ps_runtime::outbox::Outbox;
use ps_runtime::{HandlerError, Outbound};
use ps_store::attempts::{self, Recorded, Source};
use serde_json::Value;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How old a signed event may be (Stripe's own libraries use five minutes).
const TOLERANCE_SECS: i64 = 300;
/// Stripe's events are a few kilobytes; anything this large is not one.
const MAX_EVENT_BYTES: usize = 256 * 1024;

pub const PATH: &str = "/v1/processors/stripe/events";

#[derive(Clone)]
pub struct StripeEvents {
    pool: Pool,
    outbox: Outbox,
    secret: Secret,
    /// Reads a refund an event names from Stripe, as the synchronous path does.
    processor: Arc<dyn Processor>,
}

impl StripeEvents {
    pub fn new(pool: Pool, outbox: Outbox, secret: Secret, processor: Arc<dyn Processor>) -> Arc<StripeEvents> {
        Arc::new(StripeEvents { pool, outbox, secret, processor })
    }
}

/// Whether `header` (`t=…,v1=…[,v1=…]`) signs `body` with `secret` within
/// the tolerance of `now`. Constant-time in the signature.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut timestamp = None;
    let mut signatures = vec![];
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(hex::decode(s).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or("no timestamp")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err("timestamp outside the tolerance");
    }
    let signed = |sig: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(sig).is_ok()
    };
    if signatures.iter().any(|s| signed(s)) {
        Ok(())
    } else {
        Err("no signature matches")
    }
}

async fn receive(State(events): State<Arc<StripeEvents>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if body.len() > MAX_EVENT_BYTES {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(why) = verify(events.secret.expose(), signature, &body, chrono::Utc::now().timestamp()) {
        tracing::warn!(reason = why, "processor event refused: its signature does not hold");
        return StatusCode::BAD_REQUEST;
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    match events.apply(&event).await {
        Ok(()) => StatusCode::OK,
        // Stripe retries anything but a 2xx, for days: nothing is lost while the database is away.
        Err(e) => {
            tracing::warn!(error = %e, "processor event not applied; Stripe will send it again");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl StripeEvents {
    /// One event, in one transaction: its id recorded (a second delivery ends
    /// there), and what it means queued for lifecycle.
    async fn apply(&self, event: &Value) -> Result<(), HandlerError> {
        let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
            tracing::warn!("processor event without an id or type; ignored");
            return Ok(());
        };
        let object = &event["data"]["object"];
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let new = tx
            .execute("INSERT INTO processor_events (event_id, type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING", &[&id, &kind])
            .await?;
        if new == 0 {
            tracing::info!(event = id, kind, "processor event seen before; nothing to do");
            return Ok(());
        }
        let out: Vec<Outbound> = match kind {
            "payment_intent.succeeded"
            | "payment_intent.amount_capturable_updated"
            | "payment_intent.payment_failed"
            | "payment_intent.canceled" => self.authorization(&tx, object, false).await?.into_iter().collect(),
            "setup_intent.succeeded" | "setup_intent.setup_failed" | "setup_intent.canceled" => {
                self.authorization(&tx, object, true).await?.into_iter().collect()
            }
            // A charge refunded, or one of its refunds finished: the intent's refunds still waiting.
            "charge.refunded" | "charge.refund.updated" | "refund.updated" | "refund.failed" => self.refunds(&tx, object).await?,
            "charge.dispute.created" => self.dispute(&tx, object).await?.into_iter().collect(),
            _ => {
                tracing::debug!(kind, "processor event not one the fleet acts on");
                vec![]
            }
        };
        self.outbox.enqueue(&tx, &out).await?;
        tx.commit().await?;
        if !out.is_empty() {
            self.outbox.wake();
        }
        tracing::info!(event = id, kind, "processor event applied");
        Ok(())
    }

    /// The attempt behind a Stripe object, by the key it was made under.
    async fn attempt_of(&self, tx: &Transaction<'_>, object_id: &str) -> Result<Option<(String, Recorded)>, HandlerError> {
        let Some(key) = tx
            .query_opt(
                "SELECT idempotency_key FROM processor_objects WHERE object_id = $1 AND idempotency_key LIKE 'authorize:%'",
                &[&object_id],
            )
            .await?
            .map(|r| r.get::<_, String>(0))
        else {
            return Ok(None);
        };
        Ok(attempts::recorded_by_key(tx, &key).await?.map(|a| (key, a)))
    }

    /// An intent's (or setup intent's) new state: the attempt's answer, as the
    /// synchronous call would have given it, if the attempt still waits for one.
    async fn authorization(&self, tx: &Transaction<'_>, object: &Value, setup: bool) -> Result<Option<Outbound>, HandlerError> {
        let Some(object_id) = object["id"].as_str() else { return Ok(None) };
        let Some((key, attempt)) = self.attempt_of(tx, object_id).await? else {
            tracing::info!(object = object_id, "processor event for no attempt of ours; ignored");
            return Ok(None);
        };
        if !attempt.status.awaiting() {
            return Ok(None);
        }
        let answer = if setup { setup_event_answer(object) } else { intent_event_answer(object) };
        let Some(resp) = answer else { return Ok(None) };
        // Off-session, a demand for the customer is the synchronous path's to turn into a decline.
        if resp.outcome == Outcome::RequiresAction && attempt.source != Source::Checkout {
            return Ok(None);
        }
        let card = match &attempt.card_token {
            Some(t) => card_summary(tx, t).await?,
            None => None,
        };
        let result = GatewayResult {
            operation: Operation::Authorize,
            attempt_id: parse(&attempt.id, ps_contract::ids::AttemptId::parse)?,
            session_id: parse(&attempt.session_id, ps_contract::ids::SessionId::parse)?,
            merchant_id: parse(&attempt.merchant_id, ps_contract::ids::MerchantId::parse)?,
            outcome: resp.outcome,
            amount: attempt.amount,
            currency: Currency::parse(&attempt.currency).map_err(|e| HandlerError::Permanent(e.to_string()))?,
            message: resp.decline_code.as_deref().map(|d| crate::card::decline_message(d).to_owned()),
            error_code: resp.error_code,
            decline_code: resp.decline_code,
            card,
            card_token: if resp.outcome == Outcome::Succeeded { attempt.card_token.clone() } else { None },
            processor_reference: Some(resp.reference),
            processor_idempotency_key: key,
            refund_id: None,
            next_action: resp.next_action,
            authorization_open: false,
        };
        tracing::info!(attempt = %result.attempt_id, outcome = %result.outcome, "processor event answers an attempt");
        Ok(Some(
            Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_RESULT, &result)?
                .with_message_id(result.message_id())
                .with_header(header::MERCHANT_ID, result.merchant_id.as_str()),
        ))
    }

    /// The refunds of an intent that still wait for their answer, answered as
    /// the synchronous path answers them: from Stripe's record under each
    /// refund's key (the event's own copy may be older than Stripe's state).
    /// A refund made outside the fleet (Stripe's dashboard) has no row of
    /// ours and changes nothing here.
    async fn refunds(&self, tx: &Transaction<'_>, object: &Value) -> Result<Vec<Outbound>, HandlerError> {
        let Some(intent) = object["payment_intent"].as_str() else { return Ok(vec![]) };
        let Some((_, attempt)) = self.attempt_of(tx, intent).await? else {
            tracing::info!(intent, "a refund on no payment of ours; ignored");
            return Ok(vec![]);
        };
        let waiting = tx
            .query(
                "SELECT id, amount, currency, processor_idempotency_key FROM refunds WHERE attempt_id = $1 AND status = 'pending'",
                &[&attempt.id],
            )
            .await?;
        // The refunds the event carries (a refund object, or a charge's list):
        // the id of one whose answer was lost reaches us here.
        let carried: Vec<&Value> = match object["object"].as_str() {
            Some("refund") => vec![object],
            _ => object["refunds"]["data"].as_array().map(|l| l.iter().collect()).unwrap_or_default(),
        };
        let mut out = vec![];
        for r in waiting {
            let key: String = r.get(3);
            if let Some(id) = carried.iter().find(|c| c["metadata"]["ps_key"] == key.as_str()).and_then(|c| c["id"].as_str()) {
                // On its own connection, as the connector records: the lookup below reads it there.
                self.pool.get().await?.execute(
                    "INSERT INTO processor_objects (idempotency_key, object_id) VALUES ($1, $2) ON CONFLICT (idempotency_key) DO NOTHING",
                    &[&key, &id],
                )
                .await?;
            }
            let resp = match self.processor.lookup(&key).await {
                Ok(Some(resp)) => resp,
                // Not made yet, or still in progress: the refund sweep asks again.
                Ok(None) | Err(ProcessorError::Pending(_)) => continue,
                Err(e) => return Err(HandlerError::Transient(e.to_string())),
            };
            let result = GatewayResult {
                operation: Operation::Refund,
                attempt_id: parse(&attempt.id, ps_contract::ids::AttemptId::parse)?,
                session_id: parse(&attempt.session_id, ps_contract::ids::SessionId::parse)?,
                merchant_id: parse(&attempt.merchant_id, ps_contract::ids::MerchantId::parse)?,
                outcome: resp.outcome,
                amount: r.get(1),
                currency: Currency::parse(r.get(2)).map_err(|e| HandlerError::Permanent(e.to_string()))?,
                message: resp.decline_code.as_deref().map(|d| crate::card::decline_message(d).to_owned()),
                error_code: resp.error_code,
                decline_code: resp.decline_code,
                card: None,
                card_token: None,
                processor_reference: Some(resp.reference),
                processor_idempotency_key: key,
                refund_id: Some(parse(r.get(0), ps_contract::ids::RefundId::parse)?),
                next_action: None,
                authorization_open: false,
            };
            tracing::info!(refund = ?result.refund_id, outcome = %result.outcome, "processor event answers a refund");
            out.push(
                Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_RESULT, &result)?
                    .with_message_id(result.message_id())
                    .with_header(header::MERCHANT_ID, result.merchant_id.as_str()),
            );
        }
        Ok(out)
    }

    /// A dispute on a payment of ours: told to lifecycle, which tells the merchant.
    async fn dispute(&self, tx: &Transaction<'_>, dispute: &Value) -> Result<Option<Outbound>, HandlerError> {
        let (Some(id), Some(intent)) = (dispute["id"].as_str(), dispute["payment_intent"].as_str()) else {
            tracing::warn!("a dispute without its id or payment intent; ignored");
            return Ok(None);
        };
        let Some((_, attempt)) = self.attempt_of(tx, intent).await? else {
            tracing::info!(intent, "a dispute on no payment of ours; ignored");
            return Ok(None);
        };
        let notice = DisputeNotice {
            attempt_id: parse(&attempt.id, ps_contract::ids::AttemptId::parse)?,
            session_id: parse(&attempt.session_id, ps_contract::ids::SessionId::parse)?,
            merchant_id: parse(&attempt.merchant_id, ps_contract::ids::MerchantId::parse)?,
            dispute_id: id.to_owned(),
            amount: dispute["amount"].as_i64().unwrap_or(attempt.amount),
            currency: Currency::parse(&dispute["currency"].as_str().unwrap_or(&attempt.currency).to_ascii_uppercase())
                .map_err(|e| HandlerError::Permanent(e.to_string()))?,
            reason: dispute["reason"].as_str().unwrap_or("general").to_owned(),
            status: dispute["status"].as_str().unwrap_or("needs_response").to_owned(),
        };
        tracing::warn!(attempt = %notice.attempt_id, dispute = id, "a payment is disputed");
        Ok(Some(
            Outbound::to_json(exchange::INTERNAL, internal::GATEWAY_DISPUTE, &notice)?
                .with_message_id(format!("dispute:{id}"))
                .with_header(header::MERCHANT_ID, notice.merchant_id.as_str()),
        ))
    }
}

fn parse<T, E: std::fmt::Display>(raw: &str, f: fn(&str) -> Result<T, E>) -> Result<T, HandlerError> {
    f(raw).map_err(|e| HandlerError::Permanent(format!("{raw:?}: {e}")))
}

async fn card_summary(tx: &Transaction<'_>, token: &str) -> Result<Option<CardSummary>, HandlerError> {
    let sql = format!("SELECT {} FROM vault_cards WHERE token = $1", crate::vault::SUMMARY);
    let row = tx.query_opt(&sql, &[&token]).await?;
    Ok(row.map(|r| crate::vault::summary_at(&r, 0)))
}

/// Serves the events endpoint: over TLS when given a server config.
pub fn serve(
    listener: std::net::TcpListener,
    events: Arc<StripeEvents>,
    tls: Option<rustls::ServerConfig>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = Router::new().route(PATH, post(receive)).with_state(events);
    ps_runtime::web::serve(listener, app, tls, stop, "processor events")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_holds_only_for_its_secret_body_and_time() {
        let (secret, body, t) = ("whsec_test_secret", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let good = format!("t={t},v1={}", sign(secret, t, body));
        assert_eq!(verify(secret, &good, body, t + 10), Ok(()));
        assert_eq!(verify(secret, &format!("t={t},v1=00,v1={}", sign(secret, t, body)), body, t), Ok(()), "one of several");
        assert!(verify("whsec_other", &good, body, t).is_err());
        assert!(verify(secret, &good, br#"{"id":"evt_2"}"#, t).is_err());
        assert!(verify(secret, &good, body, t + TOLERANCE_SECS + 1).is_err(), "too old");
        assert!(verify(secret, &format!("v1={}", sign(secret, t, body)), body, t).is_err(), "no timestamp");
        assert!(verify(secret, "", body, t).is_err());
    }
}
