//! Dead-letter queues, handled so that looking never loses a message.
//!
//! A message is never returned to a DLQ (nack with requeue, or a closed
//! channel): each return counts toward a quorum queue's delivery limit, which
//! RabbitMQ 4 sets to 20 by default, and a DLQ has nowhere to dead-letter to.
//! Instead psctl walks the queue once: it takes each message, publishes a copy
//! to the back of the same queue (a fresh message, its count at zero), waits
//! for the broker's confirm, and only then acks the original. A crash between
//! the two leaves a duplicate, never a gap. Replaying or discarding is the same
//! walk with the copy sent to the message's origin, or not at all.

use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation};
use ps_contract::routing::header;
use ps_runtime::message::header_str;
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What to do with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it in the queue (as a copy at the back).
    Keep,
    /// Send it back where it was first published.
    Replay,
    /// Remove it for good.
    Discard,
}

/// What a walk did.
#[derive(Debug, Default)]
pub struct Walk {
    pub kept: usize,
    pub replayed: usize,
    pub discarded: usize,
}

/// A dead letter as `dlq list` shows it: no body.
pub fn summary(m: &BasicGetMessage) -> Value {
    let p = &m.delivery.properties;
    let h = p.headers().as_ref();
    json!({
        "message_id": p.message_id().as_ref().map(|s| s.as_str()),
        "routing_key": header_str(h, header::ORIGINAL_ROUTING_KEY).or_else(|| origin(h).map(|(_, k)| k)),
        "code": header_str(h, header::DEAD_LETTER_CODE).unwrap_or_else(|| if h.is_some_and(|h| h.inner().contains_key("x-death")) { "delivery_limit".into() } else { "-".into() }),
        "reason": header_str(h, header::DEAD_LETTER_REASON),
        "merchant_id": header_str(h, header::MERCHANT_ID),
        "bytes": m.delivery.data.len(),
    })
}

/// One dead letter in full, body included, for `dlq show`.
pub fn detail(m: &BasicGetMessage) -> Value {
    let mut v = summary(m);
    let p = &m.delivery.properties;
    let headers: serde_json::Map<String, Value> = p
        .headers()
        .as_ref()
        .map(|h| h.inner().iter().map(|(k, val)| (k.to_string(), Value::String(format!("{val:?}")))).collect())
        .unwrap_or_default();
    v["headers"] = Value::Object(headers);
    v["correlation_id"] = p.correlation_id().as_ref().map(|s| s.as_str()).into();
    v["body"] =
        serde_json::from_slice(&m.delivery.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&m.delivery.data).into_owned()));
    v
}

/// Where a dead letter was first published: our own dead-lettering records it in
/// headers; RabbitMQ's (delivery limit) in `x-death`.
pub fn origin(headers: Option<&FieldTable>) -> Option<(String, String)> {
    if let (Some(e), Some(k)) = (header_str(headers, header::ORIGINAL_EXCHANGE), header_str(headers, header::ORIGINAL_ROUTING_KEY)) {
        return Some((e, k));
    }
    let death = headers?.inner().get("x-death")?;
    let AMQPValue::FieldArray(deaths) = death else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().last()? else { return None };
    let exchange = header_str(Some(first), "exchange")?;
    let AMQPValue::FieldArray(keys) = first.inner().get("routing-keys")? else { return None };
    let key = match keys.as_slice().first()? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    };
    Some((exchange, key))
}

async fn publish(ch: &Channel, exchange: &str, key: &str, m: &BasicGetMessage, props: lapin::BasicProperties) -> Result<()> {
    let confirm = ch
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(key),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &m.delivery.data,
            props,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        other => Err(format!("the broker did not take the message to {exchange:?}/{key} ({other:?})").into()),
    }
}

/// Sends a dead letter back to where it was first published, as its first
/// publisher, under a new message id (the old one is recorded as applied, so
/// it would be skipped); idempotency keys still stop a second effect.
async fn replay(ch: &Channel, m: &BasicGetMessage) -> Result<()> {
    let p = &m.delivery.properties;
    let (exchange, routing_key) = origin(p.headers().as_ref()).ok_or("a dead letter without its origin; kept")?;
    let mut headers = p.headers().clone().unwrap_or_default();
    let old_id = p.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
    headers.insert("x-replayed-from".into(), AMQPValue::LongString(LongString::from(old_id.as_str())));
    let mut props = p.clone().with_headers(headers).with_message_id(format!("{old_id}:replay:{}", uuid::Uuid::now_v7()).as_str().into());
    // Sent again as its first publisher, so the merchant check applies as it did. RabbitMQ
    // allows that only to the same user or one tagged `impersonator` (docs/security.md).
    if let Some(user) = header_str(p.headers().as_ref(), header::ORIGINAL_USER_ID) {
        props = props.with_user_id(user.as_str().into());
    }
    publish(ch, &exchange, &routing_key, m, props).await
}

/// Walks every message in `dlq` once, in order, doing what `decide` says with
/// each; `seen` is called with every message, whatever the verdict.
pub async fn walk(
    ch: &Channel,
    dlq: &str,
    mut decide: impl FnMut(&BasicGetMessage) -> Verdict,
    mut seen: impl FnMut(&BasicGetMessage),
) -> Result<Walk> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = ch.queue_declare(dlq.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?;
    let mut done = Walk::default();
    // Only what is there now: copies go to the back and must not be walked again.
    for _ in 0..q.message_count() {
        let Some(m) = ch.basic_get(dlq.into(), BasicGetOptions::default()).await? else { break };
        seen(&m);
        let verdict = decide(&m);
        let sent = match verdict {
            Verdict::Keep => publish(ch, "", dlq, &m, m.delivery.properties.clone()).await,
            Verdict::Replay => replay(ch, &m).await,
            Verdict::Discard => Ok(()),
        };
        if let Err(e) = sent {
            // Not copied or not replayed: the original stays where it was.
            m.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
            return Err(e);
        }
        m.delivery.acker.ack(Default::default()).await?;
        match verdict {
            Verdict::Keep => done.kept += 1,
            Verdict::Replay => done.replayed += 1,
            Verdict::Discard => done.discarded += 1,
        }
    }
    Ok(done)
}
