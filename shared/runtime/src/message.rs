//! Messages in and out: typed views over AMQP properties and headers.

use lapin::message::Delivery;
use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Acker;
use ps_contract::error::printable;
use ps_contract::routing::header;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A message to publish. `exchange` is the logical name (`""` = default exchange).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Where the receiver should answer (a command the fleet itself sends).
    pub reply_to: Option<String>,
    /// String, boolean or integer values only.
    pub headers: Map<String, Value>,
    pub kind: OutboundKind,
    /// The body holds a secret: sealed at rest in the outbox, opened only to publish.
    pub sealed: bool,
}

/// What the relay does when a message cannot be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundKind {
    /// Events, internal work, dead letters: retried until they go.
    Durable,
    /// A reply to a `reply_to` queue that may be gone with its client: retried a
    /// few times, then recorded as failed. The reply stays retrievable by
    /// replaying the idempotency key.
    Reply,
}

impl OutboundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundKind::Durable => "durable",
            OutboundKind::Reply => "reply",
        }
    }
}

impl Outbound {
    pub fn json(exchange: &str, routing_key: &str, body: &Value) -> Outbound {
        Outbound::bytes(exchange, routing_key, serde_json::to_vec(body).expect("a JSON value serialises"))
    }

    /// A message whose body is `body` written as JSON, once, straight to bytes.
    pub fn to_json(exchange: &str, routing_key: &str, body: &impl serde::Serialize) -> Result<Outbound, serde_json::Error> {
        Ok(Outbound::bytes(exchange, routing_key, serde_json::to_vec(body)?))
    }

    /// A command as an upstream publishes it (DESIGN §10): on the commands
    /// exchange, for `merchant`, under its idempotency key when it has one.
    /// The body goes as given: the owning service judges it.
    pub fn command(routing_key: &str, merchant: &str, idempotency_key: Option<&str>, body: Vec<u8>) -> Outbound {
        let mut m = Outbound::bytes(ps_contract::routing::exchange::COMMANDS, routing_key, body).with_header(header::MERCHANT_ID, merchant);
        if let Some(key) = idempotency_key {
            m = m.with_header(header::IDEMPOTENCY_KEY, key);
        }
        m
    }

    fn bytes(exchange: &str, routing_key: &str, body: Vec<u8>) -> Outbound {
        Outbound {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body,
            message_id: None,
            correlation_id: None,
            reply_to: None,
            headers: Map::new(),
            kind: OutboundKind::Durable,
            sealed: false,
        }
    }

    /// Marks the body as holding a secret.
    pub fn sealed(mut self) -> Self {
        self.sealed = true;
        self
    }

    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.headers.insert(name.to_owned(), value.into());
        self
    }

    pub fn properties(&self) -> BasicProperties {
        let mut p = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_headers(to_field_table(&self.headers));
        if let Some(id) = &self.message_id {
            p = p.with_message_id(ShortString::from(id.as_str()));
        }
        if let Some(id) = &self.correlation_id {
            p = p.with_correlation_id(ShortString::from(id.as_str()));
        }
        if let Some(q) = &self.reply_to {
            p = p.with_reply_to(ShortString::from(q.as_str()));
        }
        p
    }
}

pub fn to_field_table(headers: &Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        let value = match v {
            Value::Bool(b) => AMQPValue::Boolean(*b),
            Value::Number(n) if n.is_i64() => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
            Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            other => AMQPValue::LongString(LongString::from(other.to_string())),
        };
        t.insert(ShortString::from(k.as_str()), value);
    }
    t
}

/// A string header, however the publisher typed it.
pub fn header_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    let v = headers?.inner().iter().find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))?.1;
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A delivery's headers without those only the fleet or the broker may write
/// (dead-letter origins and reasons, replay marks): a publisher's own copies of
/// them are dropped here, at the edge, so nothing downstream can mistake them
/// for the fleet's (DESIGN §10).
fn publisher_headers(headers: Option<&FieldTable>) -> FieldTable {
    let mut kept = FieldTable::default();
    for (k, v) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        if !header::set_by_fleet(k.as_str()) {
            kept.insert(k.clone(), v.clone());
        }
    }
    kept
}

/// A delivered message, properties read once.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// The publisher's broker user, as RabbitMQ vouches for it (it refuses a
    /// `user_id` that is not the connection's own).
    pub user_id: Option<String>,
    pub headers: FieldTable,
    pub redelivered: bool,
}

impl Incoming {
    /// Takes the delivery apart: the message (its body moved, not copied) and
    /// the acker that settles it.
    pub fn from_delivery(d: Delivery) -> (Incoming, Acker) {
        let Delivery { exchange, routing_key, redelivered, properties: p, data, acker, .. } = d;
        // Control characters are escaped: these land in TEXT and jsonb columns,
        // which refuse NUL, and in logs.
        let text = |v: &Option<ShortString>| v.as_ref().map(|s| printable(s.as_str().to_owned())).filter(|s| !s.is_empty());
        let msg = Incoming {
            exchange: exchange.as_str().to_owned(),
            routing_key: routing_key.as_str().to_owned(),
            message_id: text(p.message_id()),
            correlation_id: text(p.correlation_id()),
            reply_to: text(p.reply_to()),
            user_id: text(p.user_id()),
            headers: publisher_headers(p.headers().as_ref()),
            body: data,
            redelivered,
        };
        (msg, acker)
    }

    /// A header's value, control characters escaped.
    pub fn header(&self, name: &str) -> Option<String> {
        header_str(Some(&self.headers), name).map(printable)
    }

    /// What deduplicates redeliveries (DESIGN §5): who published it (the broker
    /// user RabbitMQ vouched for), under which routing key, for which merchant,
    /// and its AMQP `message_id` (or, when a publisher sent none, a digest of its
    /// idempotency key and body). Another publisher's message never matches, so
    /// none can claim or replay another's record.
    pub fn dedupe_key(&self) -> String {
        let merchant = self.header(header::MERCHANT_ID).unwrap_or_default();
        let user = self.user_id.as_deref().unwrap_or_default();
        // Length-prefixed, so no value can make two keys collide.
        let mut key = String::with_capacity(96);
        for part in [user, self.routing_key.as_str(), merchant.as_str()] {
            key.push_str(&format!("{}:{part}:", part.len()));
        }
        match &self.message_id {
            Some(id) => key.push_str(&format!("id:{id}")),
            None => {
                let mut h = Sha256::new();
                for part in [self.header(header::IDEMPOTENCY_KEY).unwrap_or_default().as_bytes(), &self.body] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part);
                }
                key.push_str(&format!("sha256:{}", hex::encode(h.finalize())));
            }
        }
        key
    }

    /// A reply to this message, if its sender asked for one.
    pub fn reply(&self, body: &Value, replayed: bool) -> Option<Outbound> {
        let reply_to = self.reply_to.as_ref()?;
        let mut out = Outbound::json("", reply_to, body);
        out.kind = OutboundKind::Reply;
        out.correlation_id = self.correlation_id.clone();
        out.message_id = Some(uuid::Uuid::now_v7().to_string());
        if replayed {
            out.headers.insert(header::IDEMPOTENT_REPLAYED.to_owned(), Value::Bool(true));
        }
        Some(out)
    }

    /// This message, headed for `<queue>.dlq` with why, under the id of the
    /// fleet's record of it (`x-dead-letter-id`). `keep_body` false leaves the
    /// body out (one over the size limit is never stored) and says how big it was.
    pub fn dead_letter(&self, queue: &str, record_id: &str, code: &str, reason: &str, keep_body: bool) -> Outbound {
        let mut headers = Map::new();
        // Publishers' own x-original-* and the like were dropped on arrival; what is copied is theirs alone.
        for k in self.headers.inner().keys() {
            if let Some(s) = header_str(Some(&self.headers), k.as_str()) {
                headers.insert(printable(k.as_str().to_owned()), Value::String(printable(s)));
            }
        }
        headers.insert(header::DEAD_LETTER_ID.to_owned(), record_id.into());
        headers.insert(header::DEAD_LETTER_CODE.to_owned(), code.into());
        headers.insert(header::DEAD_LETTER_REASON.to_owned(), printable(reason.to_owned()).into());
        headers.insert(header::ORIGINAL_EXCHANGE.to_owned(), self.exchange.clone().into());
        headers.insert(header::ORIGINAL_ROUTING_KEY.to_owned(), self.routing_key.clone().into());
        if let Some(user) = &self.user_id {
            headers.insert(header::ORIGINAL_USER_ID.to_owned(), user.clone().into());
        }
        if !keep_body {
            headers.insert(header::ORIGINAL_SIZE.to_owned(), Value::from(self.body.len() as i64));
        }
        Outbound {
            exchange: ps_contract::routing::exchange::DEAD_LETTER.to_owned(),
            routing_key: queue.to_owned(),
            body: if keep_body { self.body.clone() } else { Vec::new() },
            message_id: self.message_id.clone(),
            correlation_id: self.correlation_id.clone(),
            reply_to: None,
            headers,
            kind: OutboundKind::Durable,
            sealed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(user: Option<&str>, routing_key: &str, message_id: Option<&str>) -> Incoming {
        let mut headers = FieldTable::default();
        headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString("shop".into()));
        Incoming {
            exchange: "payment_sessions.commands".into(),
            routing_key: routing_key.into(),
            body: b"{}".to_vec(),
            message_id: message_id.map(str::to_owned),
            correlation_id: None,
            reply_to: None,
            user_id: user.map(str::to_owned),
            headers,
            redelivered: false,
        }
    }

    #[test]
    fn a_record_belongs_to_its_publisher_and_routing_key() {
        let mine = incoming(Some("upstream"), "payment_session.cancel", Some("m-1")).dedupe_key();
        assert_eq!(mine, incoming(Some("upstream"), "payment_session.cancel", Some("m-1")).dedupe_key());
        assert_ne!(mine, incoming(Some("attacker"), "payment_session.cancel", Some("m-1")).dedupe_key());
        assert_ne!(mine, incoming(None, "payment_session.cancel", Some("m-1")).dedupe_key());
        assert_ne!(mine, incoming(Some("upstream"), "mandate.revoke", Some("m-1")).dedupe_key());
        let digest = incoming(Some("upstream"), "payment_session.cancel", None).dedupe_key();
        assert_ne!(digest, incoming(Some("attacker"), "payment_session.cancel", None).dedupe_key());
        // A user name cannot be made to look like another user plus a routing key.
        assert_ne!(incoming(Some("a:1:b"), "c", Some("x")).dedupe_key(), incoming(Some("a"), "b:1:c", Some("x")).dedupe_key());
    }

    #[test]
    fn headers_only_the_fleet_writes_are_dropped_on_arrival() {
        let mut h = FieldTable::default();
        for k in ["X-Original-User-Id", "x-original-exchange", "X-Dead-Letter-Id", "x-death", "x-replayed-from", "idempotent-replayed"] {
            h.insert(k.into(), AMQPValue::LongString("forged".into()));
        }
        h.insert("merchant-id".into(), AMQPValue::LongString("shop".into()));
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        let kept = publisher_headers(Some(&h));
        let names: Vec<&str> = kept.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["merchant-id", "x-delivery-count"]);
    }
}
