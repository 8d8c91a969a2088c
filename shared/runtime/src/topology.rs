//! The whole broker topology, defined once (DESIGN §4). Every service declares
//! all of it at start, so no publish can precede the queue meant to receive it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use ps_contract::routing::{command, exchange, internal, service};

/// Who may publish what a binding brings in (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishers {
    /// Commands: any broker user may send one; the merchant grant decides
    /// whether it counts (each handler's admission).
    Upstream,
    /// Only the broker users these fleet services registered (internal work,
    /// their events, their replies).
    Fleet(&'static [&'static str]),
}

/// One way into a queue: an exchange, a routing key (or pattern), and who may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub exchange: &'static str,
    pub key: &'static str,
    pub from: Publishers,
}

impl Binding {
    const fn command(key: &'static str) -> Binding {
        Binding { exchange: exchange::COMMANDS, key, from: Publishers::Upstream }
    }

    const fn internal(key: &'static str, from: &'static [&'static str]) -> Binding {
        Binding { exchange: exchange::INTERNAL, key, from: Publishers::Fleet(from) }
    }

    const fn event(key: &'static str, from: &'static [&'static str]) -> Binding {
        Binding { exchange: exchange::EVENTS, key, from: Publishers::Fleet(from) }
    }

    /// Whether a message published to `exchange` (logical) with `routing_key` came in through this binding.
    pub fn admits(&self, exchange: &str, routing_key: &str) -> bool {
        self.exchange == exchange && (self.key == "#" || self.key == routing_key)
    }
}

/// A queue a service consumes, with what feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: &'static str,
    pub bindings: &'static [Binding],
    /// A reply queue, fed by name through the default exchange: only these
    /// services' replies are taken from it, and only the owner's broker user
    /// may name it as a `reply_to` (DESIGN §10).
    pub replies: Option<ReplyQueue>,
}

/// Who answers into a registered reply queue, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyQueue {
    pub owner: &'static str,
    pub from: &'static [&'static str],
}

impl QueueSpec {
    /// How a message on logical `exchange` with `routing_key` may have reached
    /// this queue, if it may have at all. `""` is the default exchange (by name).
    pub fn route(&self, exchange: &str, routing_key: &str, real_name: &str) -> Option<Publishers> {
        if exchange.is_empty() {
            return self.replies.filter(|_| routing_key == real_name).map(|r| Publishers::Fleet(r.from));
        }
        self.bindings.iter().find(|b| b.admits(exchange, routing_key)).map(|b| b.from)
    }
}

const FROM_INTAKE_OR_CHECKOUT: &[&str] = &[service::INTAKE, service::CHECKOUT];
const FROM_CHECKOUT_OR_LIFECYCLE: &[&str] = &[service::CHECKOUT, service::LIFECYCLE];
const FROM_LIFECYCLE: &[&str] = &[service::LIFECYCLE];
const FROM_GATEWAY: &[&str] = &[service::GATEWAY];
const FROM_CHECKOUT: &[&str] = &[service::CHECKOUT];

pub const INTAKE: QueueSpec =
    QueueSpec { name: "payment_sessions.intake", bindings: &[Binding::command(command::SESSION_CREATE)], replies: None };

pub const GATEWAY: QueueSpec = QueueSpec {
    name: "payment_sessions.gateway",
    bindings: &[
        Binding::internal(internal::GATEWAY_AUTHORIZE, FROM_INTAKE_OR_CHECKOUT),
        Binding::internal(internal::GATEWAY_CAPTURE, FROM_LIFECYCLE),
        Binding::internal(internal::GATEWAY_VOID, FROM_LIFECYCLE),
        Binding::internal(internal::GATEWAY_RESOLVE, FROM_LIFECYCLE),
        Binding::internal(internal::GATEWAY_REFUND, FROM_LIFECYCLE),
        Binding::internal(internal::GATEWAY_AUTHENTICATE, FROM_CHECKOUT_OR_LIFECYCLE),
    ],
    replies: None,
};

pub const LIFECYCLE: QueueSpec = QueueSpec {
    name: "payment_sessions.lifecycle",
    bindings: &[
        Binding::internal(internal::GATEWAY_RESULT, FROM_GATEWAY),
        Binding::internal(internal::GATEWAY_DISPUTE, FROM_GATEWAY),
        Binding::internal(internal::CHECKOUT_CANCEL, FROM_CHECKOUT),
        Binding::command(command::SESSION_CANCEL),
        Binding::command(command::PAYMENT_CAPTURE),
        Binding::command(command::PAYMENT_VOID),
        Binding::command(command::MANDATE_REVOKE),
        Binding::command(command::CHECKOUT_SETTINGS_UPDATE),
        Binding::command(command::CHECKOUT_SETTINGS_RETRIEVE),
        Binding::command(command::SESSION_RETRIEVE),
        Binding::command(command::SESSION_LIST),
        Binding::command(command::MANDATE_RETRIEVE),
        Binding::command(command::MANDATE_LIST),
        Binding::command(command::REFUND_CREATE),
        Binding::command(command::REFUND_RETRIEVE),
    ],
    replies: None,
};

pub const SCHEDULER: QueueSpec = QueueSpec {
    name: "payment_sessions.scheduler",
    bindings: &[
        Binding::command(command::SCHEDULE_TRIGGER),
        Binding::command(command::SCHEDULE_RETRIEVE),
        Binding::command(command::SCHEDULE_LIST),
        Binding::command(command::SCHEDULE_PAUSE),
        Binding::command(command::SCHEDULE_RESUME),
        Binding::command(command::SCHEDULE_CANCEL),
        Binding::event("payment_session.completed", FROM_LIFECYCLE),
        Binding::event("mandate.revoked", FROM_LIFECYCLE),
    ],
    replies: None,
};

/// Intake's answers to the `payment_session.create` commands the scheduler
/// sends (its `reply_to`): a durable queue, so no answer is lost while the
/// scheduler is down. Fed by the default exchange, by name.
pub const SCHEDULER_REPLIES: QueueSpec = QueueSpec {
    name: "payment_sessions.scheduler.replies",
    bindings: &[],
    replies: Some(ReplyQueue { owner: service::SCHEDULER, from: &[service::INTAKE] }),
};

/// Every event, from whichever service announces it.
pub const WEBHOOK_EVENTS: QueueSpec =
    QueueSpec { name: "payment_sessions.webhooks.events", bindings: &[Binding::event("#", service::ALL)], replies: None };

pub const WEBHOOK_COMMANDS: QueueSpec = QueueSpec {
    name: "payment_sessions.webhooks.commands",
    bindings: &[
        Binding::command(command::WEBHOOK_ENDPOINT_CREATE),
        Binding::command(command::WEBHOOK_ENDPOINT_DELETE),
        Binding::command(command::WEBHOOK_ENDPOINT_ROTATE_SECRET),
        Binding::command(command::WEBHOOK_EVENT_REDELIVER),
        Binding::command(command::WEBHOOK_ENDPOINT_ENABLE),
        Binding::command(command::WEBHOOK_ENDPOINT_DISABLE),
    ],
    replies: None,
};

pub const QUEUES: &[QueueSpec] = &[INTAKE, GATEWAY, LIFECYCLE, SCHEDULER, SCHEDULER_REPLIES, WEBHOOK_EVENTS, WEBHOOK_COMMANDS];

pub const EXCHANGES: &[(&str, ExchangeKind)] = &[
    (exchange::COMMANDS, ExchangeKind::Topic),
    (exchange::EVENTS, ExchangeKind::Topic),
    (exchange::INTERNAL, ExchangeKind::Topic),
    (exchange::DEAD_LETTER, ExchangeKind::Direct),
];

/// Applies the optional isolation prefix to every broker name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Names {
        Names { prefix: prefix.into() }
    }

    /// The default exchange (`""`, for replies) is never prefixed.
    pub fn exchange(&self, logical: &str) -> String {
        if logical.is_empty() {
            String::new()
        } else {
            format!("{}{logical}", self.prefix)
        }
    }

    /// The logical name of one of this fleet's exchanges (`""` stays the
    /// default exchange); `None` for a name that is not this fleet's.
    pub fn logical_exchange<'a>(&self, real: &'a str) -> Option<&'a str> {
        if real.is_empty() {
            return Some(real);
        }
        real.strip_prefix(self.prefix.as_str()).filter(|l| EXCHANGES.iter().any(|(e, _)| e == l))
    }

    pub fn queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.name)
    }

    pub fn dead_letter_queue(&self, spec: &QueueSpec) -> String {
        format!("{}{}.dlq", self.prefix, spec.name)
    }

    /// Every exchange and queue this prefix owns, for tests to remove.
    pub fn all_queues(&self) -> Vec<String> {
        QUEUES.iter().flat_map(|q| [self.queue(q), self.dead_letter_queue(q)]).collect()
    }

    pub fn all_exchanges(&self) -> Vec<String> {
        EXCHANGES.iter().map(|(e, _)| self.exchange(e)).collect()
    }
}

fn s(v: &str) -> ShortString {
    ShortString::from(v)
}

fn quorum_args(delivery_limit: Option<u32>, dead_letter: Option<(&str, &str)>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(s("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
    if let Some(limit) = delivery_limit {
        t.insert(s("x-delivery-limit"), AMQPValue::LongLongInt(limit as i64));
    }
    if let Some((dlx, key)) = dead_letter {
        t.insert(s("x-dead-letter-exchange"), AMQPValue::LongString(LongString::from(dlx)));
        t.insert(s("x-dead-letter-routing-key"), AMQPValue::LongString(LongString::from(key)));
        // At-least-once dead-lettering: the DLQ confirms before the source lets go.
        t.insert(s("x-dead-letter-strategy"), AMQPValue::LongString(LongString::from("at-least-once")));
        t.insert(s("x-overflow"), AMQPValue::LongString(LongString::from("reject-publish")));
    }
    t
}

/// Declares everything; idempotent, so every replica of every service may run it.
/// `delivery_limit` `None` leaves the limit to a RabbitMQ policy: a queue
/// argument would override it, and changing an argument means redeclaring.
pub async fn declare(channel: &Channel, names: &Names, delivery_limit: Option<u32>) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for (name, kind) in EXCHANGES {
        channel.exchange_declare(s(&names.exchange(name)), kind.clone(), durable, FieldTable::default()).await?;
    }
    let dlx = names.exchange(exchange::DEAD_LETTER);
    let qopts = QueueDeclareOptions { durable: true, ..Default::default() };
    for spec in QUEUES {
        let queue = names.queue(spec);
        let dlq = names.dead_letter_queue(spec);
        channel.queue_declare(s(&dlq), qopts, quorum_args(None, None)).await?;
        channel.queue_bind(s(&dlq), s(&dlx), s(&queue), QueueBindOptions::default(), FieldTable::default()).await?;
        channel.queue_declare(s(&queue), qopts, quorum_args(delivery_limit, Some((&dlx, &queue)))).await?;
        for b in spec.bindings {
            channel
                .queue_bind(s(&queue), s(&names.exchange(b.exchange)), s(b.key), QueueBindOptions::default(), FieldTable::default())
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_command_has_exactly_one_owner() {
        let mut owners = HashSet::new();
        for q in QUEUES {
            for b in q.bindings {
                if b.exchange == exchange::COMMANDS {
                    assert!(owners.insert(b.key), "{} is consumed twice", b.key);
                }
            }
        }
        for c in [
            command::SESSION_CREATE,
            command::SESSION_CANCEL,
            command::PAYMENT_CAPTURE,
            command::PAYMENT_VOID,
            command::MANDATE_REVOKE,
            command::CHECKOUT_SETTINGS_UPDATE,
            command::CHECKOUT_SETTINGS_RETRIEVE,
            command::SESSION_RETRIEVE,
            command::SESSION_LIST,
            command::MANDATE_RETRIEVE,
            command::MANDATE_LIST,
            command::REFUND_CREATE,
            command::REFUND_RETRIEVE,
            command::SCHEDULE_TRIGGER,
            command::SCHEDULE_RETRIEVE,
            command::SCHEDULE_LIST,
            command::SCHEDULE_PAUSE,
            command::SCHEDULE_RESUME,
            command::SCHEDULE_CANCEL,
            command::WEBHOOK_ENDPOINT_CREATE,
            command::WEBHOOK_ENDPOINT_DELETE,
            command::WEBHOOK_ENDPOINT_ROTATE_SECRET,
            command::WEBHOOK_EVENT_REDELIVER,
        ] {
            assert!(owners.contains(c), "nobody consumes {c}");
        }
    }

    #[test]
    fn a_queue_admits_only_what_its_bindings_bring() {
        let real = "t1.payment_sessions.scheduler.replies";
        assert_eq!(SCHEDULER_REPLIES.route("", real, real), Some(Publishers::Fleet(&[service::INTAKE])));
        assert_eq!(SCHEDULER_REPLIES.route("", "t1.payment_sessions.lifecycle", real), None);
        assert_eq!(LIFECYCLE.route("", "t1.payment_sessions.lifecycle", "t1.payment_sessions.lifecycle"), None, "not by name");
        assert_eq!(LIFECYCLE.route(exchange::INTERNAL, internal::GATEWAY_RESULT, ""), Some(Publishers::Fleet(FROM_GATEWAY)));
        assert_eq!(LIFECYCLE.route(exchange::COMMANDS, internal::GATEWAY_RESULT, ""), None, "an internal key on the commands exchange");
        assert_eq!(LIFECYCLE.route(exchange::COMMANDS, command::SESSION_CANCEL, ""), Some(Publishers::Upstream));
        assert_eq!(WEBHOOK_EVENTS.route(exchange::EVENTS, "anything.at_all", ""), Some(Publishers::Fleet(service::ALL)));
        let n = Names::new("t1.");
        assert_eq!(n.logical_exchange("t1.payment_sessions.internal"), Some(exchange::INTERNAL));
        assert_eq!(n.logical_exchange("payment_sessions.internal"), None);
        assert_eq!(n.logical_exchange(""), Some(""));
    }

    #[test]
    fn prefix_applies_to_everything_but_the_default_exchange() {
        let n = Names::new("t1.");
        assert_eq!(n.exchange(""), "");
        assert_eq!(n.exchange(exchange::EVENTS), "t1.payment_sessions.events");
        assert_eq!(n.dead_letter_queue(&INTAKE), "t1.payment_sessions.intake.dlq");
        assert!(n.all_queues().iter().all(|q| q.starts_with("t1.")));
    }
}
