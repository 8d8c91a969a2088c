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
use ps_contract::routing::{exchange, header, service};
use ps_runtime::deadletters;
use ps_runtime::members::Members;
use ps_runtime::message::header_str;
use ps_runtime::topology::{Names, QueueSpec};
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
    /// Dead letters asked to be replayed but kept, with why.
    pub refused: Vec<(String, String)>,
}

/// A dead letter as `dlq list` shows it: no body.
pub fn summary(m: &BasicGetMessage) -> Value {
    let p = &m.delivery.properties;
    let h = p.headers().as_ref();
    json!({
        "message_id": p.message_id().as_ref().map(|s| s.as_str()),
        "routing_key": header_str(h, header::ORIGINAL_ROUTING_KEY).or_else(|| death_routing_key(h)),
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

/// The routing key RabbitMQ recorded when it dead-lettered a message itself
/// (its delivery limit), from `x-death`. A publisher can write an `x-death` of
/// its own, so this names no more than a candidate, checked against the queue.
fn death_routing_key(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().last()? else { return None };
    let AMQPValue::FieldArray(keys) = first.inner().get("routing-keys")? else { return None };
    match keys.as_slice().first()? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
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

/// Where and as whom a dead letter goes back, decided from what the fleet
/// recorded (DESIGN §10), never from what the message says of itself.
struct Plan {
    exchange: String,
    routing_key: String,
    /// Sent as this broker user again, so the merchant check applies as it did.
    user: Option<String>,
    message_id: String,
    /// The fleet's record, marked replayed once the copy is confirmed.
    record: Option<String>,
}

/// What becomes of a dead letter asked to be replayed.
enum Decision {
    Replay(Plan),
    /// Kept where it is, with why.
    Keep(String),
}

/// Decides replays for one queue's DLQ.
pub struct Replayer<'a> {
    pub db: &'a deadpool_postgres::Client,
    pub names: &'a Names,
    pub spec: &'static QueueSpec,
    pub members: Members,
}

impl Replayer<'_> {
    /// The plan for `m`, or why it may not be replayed (it is then kept).
    ///
    /// A dead letter the fleet made names its record (`x-dead-letter-id`): the
    /// copy must have been published by a fleet service, the record must be of
    /// this queue and this very body, not yet replayed, and not internal work
    /// (the sweeps resolve that, with the processor). One RabbitMQ dead-lettered
    /// (delivery limit) has no record: it goes back only as a command of this
    /// queue, on the commands exchange, as the broker user RabbitMQ vouched
    /// published it.
    async fn plan(&self, m: &BasicGetMessage) -> Result<Decision> {
        let p = &m.delivery.properties;
        let headers = p.headers().as_ref();
        let copied_by = p.user_id().as_ref().map(|u| u.as_str().to_owned());
        let old_id = p.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
        if let Some(id) = header_str(headers, header::DEAD_LETTER_ID) {
            let Some(record) = deadletters::find(self.db, &id).await? else {
                return Ok(Decision::Keep(format!("names a fleet record {id} that does not exist")));
            };
            if !self.members.include(self.db, copied_by.as_deref(), service::ALL).await? {
                return Ok(Decision::Keep(format!("names fleet record {id} but was not dead-lettered by a fleet service")));
            }
            if record.queue != self.spec.name || !record.matches(&m.delivery.data) {
                return Ok(Decision::Keep(format!("is not the message fleet record {id} was made for")));
            }
            if let Some(at) = record.replayed_at {
                return Ok(Decision::Keep(format!("was replayed already, at {at}; discard this copy")));
            }
            if ![exchange::COMMANDS, exchange::EVENTS].contains(&record.exchange.as_str()) {
                return Ok(Decision::Keep(format!(
                    "was published to {:?}: internal work and replies are not replayed (the sweeps resolve unanswered attempts, settlements and refunds with the processor)",
                    record.exchange
                )));
            }
            return Ok(Decision::Replay(Plan {
                exchange: self.names.exchange(&record.exchange),
                routing_key: record.routing_key,
                user: record.publisher,
                message_id: format!("replay:{}", record.id),
                record: Some(record.id),
            }));
        }
        let Some(key) = death_routing_key(headers) else {
            return Ok(Decision::Keep("has neither a fleet record nor RabbitMQ's x-death: nothing says where it came from".into()));
        };
        if !self.spec.bindings.iter().any(|b| b.exchange == exchange::COMMANDS && b.key == key) {
            return Ok(Decision::Keep(format!("{key:?} is not a command this queue takes: only commands RabbitMQ dead-lettered go back")));
        }
        Ok(Decision::Replay(Plan {
            exchange: self.names.exchange(exchange::COMMANDS),
            routing_key: key,
            user: copied_by,
            message_id: format!("{old_id}:replay:{}", uuid::Uuid::now_v7()),
            record: None,
        }))
    }

    /// Sends a dead letter back as planned, under a new message id (the old
    /// one is recorded as applied, so it would be skipped; a fleet record's
    /// replay always gets the same one, so a second copy is a duplicate);
    /// idempotency keys still stop a second effect. Headers only the fleet
    /// writes are left behind. Returns why not, when it may not go.
    async fn replay(&self, ch: &Channel, m: &BasicGetMessage) -> Result<Option<String>> {
        let plan = match self.plan(m).await? {
            Decision::Replay(plan) => plan,
            Decision::Keep(why) => return Ok(Some(why)),
        };
        if let Some(id) = &plan.record {
            if !deadletters::mark_replayed(self.db, id).await? {
                return Ok(Some("was replayed already; discard this copy".into()));
            }
        }
        let p = &m.delivery.properties;
        let mut headers = FieldTable::default();
        for (k, v) in p.headers().as_ref().map(|h| h.inner().iter()).into_iter().flatten() {
            if !header::set_by_fleet(k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
        let old_id = p.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
        headers.insert(header::REPLAYED_FROM.into(), AMQPValue::LongString(LongString::from(old_id.as_str())));
        let mut props = p.clone().with_headers(headers).with_message_id(plan.message_id.as_str().into());
        // RabbitMQ allows another user_id only to a user tagged `impersonator` (docs/security.md).
        props = match &plan.user {
            Some(user) => props.with_user_id(user.as_str().into()),
            None => lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(props.headers().clone().unwrap_or_default())
                .with_message_id(plan.message_id.as_str().into()),
        };
        if let Err(e) = publish(ch, &plan.exchange, &plan.routing_key, m, props).await {
            if let Some(id) = &plan.record {
                deadletters::unmark_replayed(self.db, id).await?;
            }
            return Err(e);
        }
        Ok(None)
    }

    /// Forgets the fleet's record of a discarded dead letter (if it is this one's).
    async fn forget(&self, m: &BasicGetMessage) -> Result<()> {
        if let Some(id) = header_str(m.delivery.properties.headers().as_ref(), header::DEAD_LETTER_ID) {
            if let Some(record) = deadletters::find(self.db, &id).await? {
                if record.queue == self.spec.name && record.matches(&m.delivery.data) {
                    deadletters::forget(self.db, &id).await?;
                }
            }
        }
        Ok(())
    }
}

/// Walks every message in `dlq` once, in order, doing what `decide` says with
/// each; `seen` is called with every message, whatever the verdict. Replays
/// and discards go through `replayer` (required for them).
pub async fn walk(
    ch: &Channel,
    dlq: &str,
    mut decide: impl FnMut(&BasicGetMessage) -> Verdict,
    replayer: Option<&Replayer<'_>>,
    mut seen: impl FnMut(&BasicGetMessage),
) -> Result<Walk> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = ch.queue_declare(dlq.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?;
    let mut done = Walk::default();
    // Only what is there now: copies go to the back and must not be walked again.
    for _ in 0..q.message_count() {
        let Some(m) = ch.basic_get(dlq.into(), BasicGetOptions::default()).await? else { break };
        seen(&m);
        let mut verdict = decide(&m);
        let sent = match (verdict, replayer) {
            (Verdict::Keep, _) => publish(ch, "", dlq, &m, m.delivery.properties.clone()).await,
            (Verdict::Replay, Some(r)) => match r.replay(ch, &m).await {
                Ok(None) => Ok(()),
                Ok(Some(why)) => {
                    let id = m.delivery.properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default();
                    done.refused.push((id, why));
                    verdict = Verdict::Keep;
                    publish(ch, "", dlq, &m, m.delivery.properties.clone()).await
                }
                Err(e) => Err(e),
            },
            (Verdict::Discard, Some(r)) => r.forget(&m).await,
            (_, None) => Err("replaying or discarding needs the database".into()),
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
