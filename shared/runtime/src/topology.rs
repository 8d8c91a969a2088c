//! The whole broker topology, defined once (DESIGN §4). Every service declares
//! all of it at start, so no publish can precede the queue meant to receive it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use ps_contract::routing::{command, exchange, internal};

/// A queue a service consumes, with what feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: &'static str,
    pub bindings: &'static [(&'static str, &'static str)],
}

pub const INTAKE: QueueSpec = QueueSpec { name: "payment_sessions.intake", bindings: &[(exchange::COMMANDS, command::SESSION_CREATE)] };

pub const GATEWAY: QueueSpec = QueueSpec {
    name: "payment_sessions.gateway",
    bindings: &[
        (exchange::INTERNAL, internal::GATEWAY_AUTHORIZE),
        (exchange::INTERNAL, internal::GATEWAY_CAPTURE),
        (exchange::INTERNAL, internal::GATEWAY_VOID),
        (exchange::INTERNAL, internal::GATEWAY_RESOLVE),
        (exchange::INTERNAL, internal::GATEWAY_REFUND),
    ],
};

pub const LIFECYCLE: QueueSpec = QueueSpec {
    name: "payment_sessions.lifecycle",
    bindings: &[
        (exchange::INTERNAL, internal::GATEWAY_RESULT),
        (exchange::COMMANDS, command::SESSION_CANCEL),
        (exchange::COMMANDS, command::PAYMENT_CAPTURE),
        (exchange::COMMANDS, command::PAYMENT_VOID),
        (exchange::COMMANDS, command::MANDATE_REVOKE),
        (exchange::COMMANDS, command::SESSION_RETRIEVE),
        (exchange::COMMANDS, command::SESSION_LIST),
        (exchange::COMMANDS, command::MANDATE_RETRIEVE),
        (exchange::COMMANDS, command::MANDATE_LIST),
        (exchange::COMMANDS, command::REFUND_CREATE),
        (exchange::COMMANDS, command::REFUND_RETRIEVE),
    ],
};

pub const SCHEDULER: QueueSpec = QueueSpec {
    name: "payment_sessions.scheduler",
    bindings: &[
        (exchange::COMMANDS, command::SCHEDULE_TRIGGER),
        (exchange::COMMANDS, command::SCHEDULE_RETRIEVE),
        (exchange::COMMANDS, command::SCHEDULE_LIST),
        (exchange::COMMANDS, command::SCHEDULE_PAUSE),
        (exchange::COMMANDS, command::SCHEDULE_RESUME),
        (exchange::COMMANDS, command::SCHEDULE_CANCEL),
        (exchange::EVENTS, "payment_session.completed"),
        (exchange::EVENTS, "mandate.revoked"),
    ],
};

/// Intake's answers to the `payment_session.create` commands the scheduler
/// sends (its `reply_to`): a durable queue, so no answer is lost while the
/// scheduler is down. Fed by the default exchange, by name.
pub const SCHEDULER_REPLIES: QueueSpec = QueueSpec { name: "payment_sessions.scheduler.replies", bindings: &[] };

pub const WEBHOOK_EVENTS: QueueSpec = QueueSpec { name: "payment_sessions.webhooks.events", bindings: &[(exchange::EVENTS, "#")] };

pub const WEBHOOK_COMMANDS: QueueSpec = QueueSpec {
    name: "payment_sessions.webhooks.commands",
    bindings: &[
        (exchange::COMMANDS, command::WEBHOOK_ENDPOINT_CREATE),
        (exchange::COMMANDS, command::WEBHOOK_ENDPOINT_DELETE),
        (exchange::COMMANDS, command::WEBHOOK_ENDPOINT_ROTATE_SECRET),
        (exchange::COMMANDS, command::WEBHOOK_EVENT_REDELIVER),
        (exchange::COMMANDS, command::WEBHOOK_ENDPOINT_ENABLE),
        (exchange::COMMANDS, command::WEBHOOK_ENDPOINT_DISABLE),
    ],
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
        for (exchange, key) in spec.bindings {
            channel.queue_bind(s(&queue), s(&names.exchange(exchange)), s(key), QueueBindOptions::default(), FieldTable::default()).await?;
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
            for (ex, key) in q.bindings {
                if *ex == exchange::COMMANDS {
                    assert!(owners.insert(*key), "{key} is consumed twice");
                }
            }
        }
        for c in [
            command::SESSION_CREATE,
            command::SESSION_CANCEL,
            command::PAYMENT_CAPTURE,
            command::PAYMENT_VOID,
            command::MANDATE_REVOKE,
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
    fn prefix_applies_to_everything_but_the_default_exchange() {
        let n = Names::new("t1.");
        assert_eq!(n.exchange(""), "");
        assert_eq!(n.exchange(exchange::EVENTS), "t1.payment_sessions.events");
        assert_eq!(n.dead_letter_queue(&INTAKE), "t1.payment_sessions.intake.dlq");
        assert!(n.all_queues().iter().all(|q| q.starts_with("t1.")));
    }
}
