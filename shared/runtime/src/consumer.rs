//! The consume loop: one database transaction per message — its record, the
//! handler's change, and the outgoing messages kept with the record — then
//! commit, then publish them (confirmed), then ack (DESIGN §5).

use crate::broker::Publisher;
use crate::dedupe;
use crate::members::Members;
use crate::message::{Incoming, Outbound, OutboundKind};
use crate::metrics;
use crate::outbox::{EnqueueError, Outbox};
use crate::sealing::At;
use crate::sealing::SecretsError;
use crate::topology::{Names, Publishers, QueueSpec};
use backon::{ExponentialBuilder, Retryable};
use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Connection};
use ps_contract::{ApiError, ErrorCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What a handler decided. Everything in it is kept with the message's record
/// in its own transaction, and published once that commits.
#[derive(Debug, Default)]
pub struct Handled {
    /// Replies, events and work for other services.
    pub outbox: Vec<Outbound>,
    /// Also move the message to its queue's DLQ, with this code and reason.
    pub dead_letter: Option<(String, String)>,
}

impl Handled {
    pub fn send(mut self, msg: impl Into<Option<Outbound>>) -> Self {
        self.outbox.extend(msg.into());
        self
    }

    /// Nothing to apply: the message goes to its queue's DLQ with this code and reason.
    pub fn dead_lettered(code: &str, reason: impl Into<String>) -> Handled {
        Handled { outbox: vec![], dead_letter: Some((code.to_owned(), reason.into())) }
    }

    /// A refusal: an error reply if the sender asked for one. With nobody to
    /// tell, the message goes to the DLQ carrying the error, so it is never
    /// silently dropped.
    pub fn refuse(msg: &Incoming, error: &ApiError) -> Handled {
        match msg.reply(&error.to_reply(), false) {
            Some(reply) => Handled::default().send(reply),
            None => Handled::dead_lettered(error.code.as_str(), error.to_string()),
        }
    }

    /// A body that is not even JSON: answered if asked, and kept in the DLQ
    /// either way, for a person to look at.
    pub fn refuse_unparseable(msg: &Incoming, error: &ApiError) -> Handled {
        let mut h = Handled::refuse(msg, error);
        h.dead_letter = Some((error.code.as_str().to_owned(), error.message.clone()));
        h
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying only if `is_transient`: a lost connection, a deadlock.
    #[error("database error: {}", describe_db_error(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Worth retrying: something outside the database (a processor) is unavailable.
    #[error("{0}")]
    Transient(String),
    /// Something outside asked us to slow down (an HTTP 429): retried no
    /// sooner than it said.
    #[error("{why}; asked to wait {retry_after:?}")]
    Throttled { retry_after: Duration, why: String },
    /// Never going to work for this message (a bug, corrupt stored data).
    #[error("{0}")]
    Permanent(String),
    /// A secret this service keeps cannot be sealed or opened: its keys are missing or wrong.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The handler panicked: a bug. The message is dead-lettered, the consumer goes on.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// A message or stored value could not be written as JSON: a bug, never retried.
    #[error("cannot serialise to JSON")]
    Serialise(#[from] serde_json::Error),
}

impl From<EnqueueError> for HandlerError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Db(e) => HandlerError::Db(e),
            EnqueueError::Secrets(e) => HandlerError::Secrets(e),
        }
    }
}

/// The server's message and SQLSTATE where there is one; tokio-postgres alone says only "db error".
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl HandlerError {
    /// Connection trouble, serialization failures, deadlocks, resource limits and
    /// administrator shutdowns pass; anything else (a constraint, a type error) is
    /// a bug that retrying cannot fix.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Pool(_) | HandlerError::Transient(_) | HandlerError::Throttled { .. } => true,
            HandlerError::Permanent(_) | HandlerError::Secrets(_) | HandlerError::Panicked(_) | HandlerError::Serialise(_) => false,
            HandlerError::Db(e) => match e.code() {
                None => true,
                Some(code) => {
                    let class = &code.code()[..2];
                    matches!(class, "08" | "40" | "53" | "55" | "57" | "58")
                }
            },
        }
    }

    /// Something the message needs is not there at all (the database, the
    /// processor), as opposed to a conflict that the next try may not meet.
    /// No message can succeed meanwhile, so the message is held, not returned.
    pub fn is_unavailable(&self) -> bool {
        match self {
            HandlerError::Pool(_) | HandlerError::Transient(_) | HandlerError::Throttled { .. } => true,
            HandlerError::Db(e) => match e.code() {
                None => true,
                Some(code) => {
                    let code = code.code();
                    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
                }
            },
            _ => false,
        }
    }
}

/// What a handler's admission decided about a message, before the fleet's
/// record of it is consulted (DESIGN §5, §10).
#[derive(Debug)]
pub enum Admission {
    /// Apply it at most once: its record keys on its publisher, and a
    /// redelivery gets the first delivery's reply again.
    Apply,
    /// A read: answered every time it arrives, never recorded or replayed.
    Answer,
    /// Applied every time it arrives, without a record of its own: the
    /// handler's write is keyed so that a repeat changes nothing (an event
    /// stored by its id), and it sends nothing a redelivery would have to
    /// send again. One statement fewer per message.
    Idempotent,
    /// Refused before anything is recorded or replayed: this is the whole answer.
    Refused(Handled),
}

pub trait Handler: Send + Sync + 'static {
    /// Whether the publisher may send this message at all (for a command: the
    /// merchant grant), and whether it is applied once or answered each time.
    /// Runs after the consumer checked the route, the publisher of internal
    /// messages and the `reply_to`; before any record is claimed or replayed.
    fn admit<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>>;
    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>>;

    /// Whether this handler's work includes a call to another system (the
    /// gateway's processor). Its messages are then applied in two short
    /// transactions with the call between them, holding neither a transaction
    /// nor a pooled connection while it waits: `prepare`, the call, `complete`.
    /// Never batched. `handle` is not used.
    fn calls_out(&self) -> bool {
        false
    }

    /// After the gate, in a transaction committed before the call: the
    /// checks, and whatever must be durable before the call is made.
    fn prepare<'a>(&'a self, _tx: &'a Transaction<'_>, _msg: &'a Incoming) -> BoxFuture<'a, Result<Prepared, HandlerError>> {
        Box::pin(async { Err(HandlerError::Permanent("this handler makes no calls".into())) })
    }

    /// After the call, in the transaction that claims the message's record:
    /// what the call's result changes and sends.
    fn complete<'a>(
        &'a self,
        _tx: &'a Transaction<'_>,
        _msg: &'a Incoming,
        _called: Called,
    ) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async { Err(HandlerError::Permanent("this handler makes no calls".into())) })
    }
}

/// What a calling handler's `prepare` decided.
pub enum Prepared {
    /// Decided from the database alone (a refusal, nothing to do): handled in
    /// the first transaction, with the message's record, as any other message.
    Handled(Handled),
    /// The call, made once the first transaction has committed; what it
    /// returns goes to `complete`. It owns what it needs: no transaction
    /// outlives `prepare`.
    Call(BoxFuture<'static, Result<Called, HandlerError>>),
}

/// A call's result, handed from the call to `complete` (the handler's own type).
pub type Called = Box<dyn std::any::Any + Send>;

/// Bodies larger than this are refused unread unless `AMQP_MAX_MESSAGE_BYTES` says otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

pub struct ConsumerContext {
    /// Names the consumer in the dedupe table: the queue's logical name.
    pub consumer: &'static str,
    /// The queue: its bindings say what may come in, and from whom.
    pub spec: QueueSpec,
    pub names: Names,
    /// The queue's real (prefixed) name.
    pub queue: String,
    /// Which broker user each fleet service publishes as.
    pub members: Arc<Members>,
    /// Bodies larger than this are refused unread and never stored.
    pub max_message_bytes: usize,
    pub pool: Pool,
    pub outbox: Outbox,
    pub handler: Arc<dyn Handler>,
    pub after_commit: Option<Arc<tokio::sync::Notify>>,
    pub fault_abort_after_commit: bool,
    pub fault_abort_after_batch_commit: bool,
    /// Test-only fault injection: the handler panics on messages with this routing key.
    pub fault_panic_on: Option<String>,
    pub health: crate::health::Health,
    /// The service's stop: a message held for an unavailable dependency is let go.
    pub stop: CancellationToken,
}

/// How long a held message waits between rounds of tries.
const HOLD_PAUSE: Duration = Duration::from_secs(2);

enum Applied {
    New,
    Duplicate,
    DeadLettered,
}

/// What applying a message did, and what it sends once committed.
struct Done {
    applied: Applied,
    send: Vec<Outbound>,
}

/// A message applied inside a transaction, or found applied before.
enum Applying {
    Done(Done),
    /// Its record was there already (written last, so only now known): the
    /// caller rolls back what this delivery did and answers it as a duplicate.
    Seen(String),
}

/// A message the consumer's own checks let through, or their answer.
enum Gate {
    Pass(Admission),
    Refused(Handled),
}

/// A refusal at the gate, dead-lettered with why and answered to nobody: the
/// sender is not trusted with an answer (or gave nowhere trustworthy to send it).
fn turned_away(code: &str, why: String) -> Gate {
    tracing::warn!(code, reason = %why, "message turned away before it was recorded");
    Gate::Refused(Handled::dead_lettered(code, why))
}

impl ConsumerContext {
    /// The checks every message passes before anything is recorded, replayed
    /// or answered (DESIGN §10): that it came in through one of the queue's
    /// bindings; that a fleet service's message (internal work, an event, a
    /// reply) was published by that service's broker user; that its
    /// `reply_to` is a reply queue and not another's queue; the handler's own
    /// admission (a command's merchant grant); and its size.
    async fn gate(&self, tx: &Transaction<'_>, msg: &Incoming) -> Result<Gate, HandlerError> {
        let route = self.names.logical_exchange(&msg.exchange).and_then(|ex| self.spec.route(ex, &msg.routing_key, &self.queue));
        let Some(from) = route else {
            return Ok(turned_away(
                "unexpected_route",
                format!("{:?} on exchange {:?} is not one of this queue's bindings", msg.routing_key, msg.exchange),
            ));
        };
        if let Publishers::Fleet(services) = from {
            if !self.members.include(tx, msg.user_id.as_deref(), services).await? {
                let who = msg.user_id.as_deref().unwrap_or("(no user_id)");
                return Ok(turned_away(
                    "publisher_not_allowed",
                    format!("{} is taken only from {services:?}, not from broker user {who}", msg.routing_key),
                ));
            }
        }
        if let Some(reply_to) = msg.reply_to.as_deref() {
            if !self.reply_to_allowed(tx, msg, reply_to).await? {
                return Ok(turned_away(
                    "reply_to_not_allowed",
                    format!("reply_to {reply_to:?} is neither a RabbitMQ reply queue nor one registered for this publisher"),
                ));
            }
        }
        let admission = match self.handler.admit(tx, msg).await? {
            Admission::Refused(h) => return Ok(Gate::Refused(h)),
            a => a,
        };
        if msg.body.len() > self.max_message_bytes {
            let e = ApiError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "the body is {} bytes; this fleet takes at most {} (AMQP_MAX_MESSAGE_BYTES)",
                    msg.body.len(),
                    self.max_message_bytes
                ),
            );
            tracing::warn!(bytes = msg.body.len(), limit = self.max_message_bytes, "message over the size limit refused unread");
            return Ok(Gate::Refused(Handled::refuse(msg, &e)));
        }
        Ok(Gate::Pass(admission))
    }

    /// RabbitMQ's own reply queues (direct reply-to, or a server-named
    /// `amq.gen-` queue, which no client can name itself) take anyone's
    /// replies; a registered reply queue (the scheduler's) only its owner's.
    /// Any other queue name would let a publisher send the fleet's answer
    /// into a queue a service consumes.
    async fn reply_to_allowed(&self, tx: &Transaction<'_>, msg: &Incoming, reply_to: &str) -> Result<bool, HandlerError> {
        if reply_to.starts_with("amq.rabbitmq.reply-to.") || reply_to.starts_with("amq.gen-") {
            return Ok(true);
        }
        for q in crate::topology::QUEUES {
            if let Some(r) = q.replies.filter(|_| self.names.queue(q) == reply_to) {
                return Ok(self.members.include(tx, msg.user_id.as_deref(), &[r.owner]).await?);
            }
        }
        Ok(false)
    }

    /// The dead letter of `msg` with the fleet's record of it, so a replay
    /// never has to believe the message about itself. A body over the size
    /// limit is left out.
    async fn dead_letter(&self, tx: &Transaction<'_>, msg: &Incoming, code: &str, reason: &str) -> Result<Outbound, HandlerError> {
        let id = uuid::Uuid::now_v7().to_string();
        let exchange = self.names.logical_exchange(&msg.exchange).unwrap_or(msg.exchange.as_str());
        crate::deadletters::record(tx, &id, self.consumer, exchange, msg, code).await?;
        Ok(msg.dead_letter(&self.queue, &id, code, reason, msg.body.len() <= self.max_message_bytes))
    }

    /// One message inside `tx` (its own transaction, or a batch's): the
    /// gate, the handler's change, its outgoing messages, and last the record
    /// keeping them (for what is applied once). Commits nothing.
    async fn apply_in(&self, tx: &Transaction<'_>, msg: &Incoming) -> Result<Applying, HandlerError> {
        let admission = match self.gate(tx, msg).await? {
            Gate::Pass(a) => a,
            Gate::Refused(h) => return self.finish(tx, msg, None, h).await,
        };
        let key = match admission {
            Admission::Apply => Some(msg.dedupe_key()),
            Admission::Answer | Admission::Idempotent | Admission::Refused(_) => None,
        };
        let unrecorded_work = matches!(admission, Admission::Idempotent);
        if self.fault_panic_on.as_deref() == Some(msg.routing_key.as_str()) {
            panic!("fault injection: handler panic on {}", msg.routing_key);
        }
        let mut handled = self.handler.handle(tx, msg).await?;
        if unrecorded_work && !handled.outbox.is_empty() {
            // Nothing keeps them for a redelivery: they go the outbox's way, with the change.
            self.outbox.enqueue(tx, &std::mem::take(&mut handled.outbox)).await?;
            self.outbox.wake();
        }
        self.finish(tx, msg, key.as_deref(), handled).await
    }

    /// What a handled message sends (and its dead letter), kept with its
    /// record when it has one: its reply to answer a duplicate with, the rest
    /// to publish again should the ack never happen. The record is written
    /// here, last, in one statement; finding it there already means the
    /// message was applied before (`Seen`).
    async fn finish(&self, tx: &Transaction<'_>, msg: &Incoming, key: Option<&str>, handled: Handled) -> Result<Applying, HandlerError> {
        let mut out = handled.outbox;
        let dead = handled.dead_letter.is_some();
        if let Some((code, reason)) = handled.dead_letter {
            out.push(self.dead_letter(tx, msg, &code, &reason).await?);
        }
        for m in &mut out {
            crate::telemetry::inject_current(&mut m.headers);
        }
        if let Some(key) = key {
            let reply = match out.iter().find(|m| m.kind == OutboundKind::Reply) {
                Some(reply) => match serde_json::from_slice::<serde_json::Value>(&reply.body) {
                    // A reply holding a secret is kept sealed, bound to its record's row.
                    Ok(body) => Some(match (reply.sealed, self.outbox.keys()) {
                        (false, _) => body,
                        (true, Some(keys)) => keys.seal_json(&At::dedupe_reply(self.consumer, key), &body),
                        (true, None) => return Err(SecretsError::NoKeys.into()),
                    }),
                    Err(_) => None,
                },
                None => None,
            };
            let rest: Vec<&Outbound> = out.iter().filter(|m| m.kind != OutboundKind::Reply).collect();
            let outgoing = if rest.is_empty() { None } else { Some(self.outbox.store(self.consumer, key, &rest)?) };
            if !dedupe::record(tx, self.consumer, key, reply.as_ref(), outgoing.as_ref()).await? {
                return Ok(Applying::Seen(key.to_owned()));
            }
        }
        Ok(Applying::Done(Done { applied: if dead { Applied::DeadLettered } else { Applied::New }, send: out }))
    }

    /// `tx`'s work committed, or, for a message applied before, rolled back
    /// and the message answered from its record.
    async fn conclude(&self, tx: Transaction<'_>, msg: &Incoming, applying: Applying) -> Result<Done, HandlerError> {
        match applying {
            Applying::Done(done) => {
                tx.commit().await?;
                self.committed(false);
                Ok(done)
            }
            Applying::Seen(key) => {
                // Read committed: the record its insert met is visible to the next statement.
                let stored = dedupe::stored(&tx, self.consumer, &key).await?;
                tx.rollback().await?;
                self.duplicate(msg, &key, stored.reply, stored.outgoing)
            }
        }
    }

    /// What follows every commit: the service's own worker told.
    fn committed(&self, batch: bool) {
        if let Some(n) = &self.after_commit {
            n.notify_one();
        }
        if self.fault_abort_after_commit || (batch && self.fault_abort_after_batch_commit) {
            tracing::error!("fault injection: aborting after commit, before ack");
            std::process::abort();
        }
    }

    /// One message in a transaction of its own (two, around its call, for a
    /// handler that calls out).
    async fn apply(&self, msg: &Incoming) -> Result<Done, HandlerError> {
        let applied = if self.handler.calls_out() { self.apply_calling(msg).await } else { self.apply_alone(msg).await };
        match applied {
            Err(e) if !e.is_transient() => {
                let reason = e.to_string();
                tracing::error!(%reason, "handler failed permanently; dead-lettering");
                self.dead_letter_alone(msg, &reason).await
            }
            other => other,
        }
    }

    async fn apply_alone(&self, msg: &Incoming) -> Result<Done, HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let applying = self.apply_in(&tx, msg).await?;
        self.conclude(tx, msg, applying).await
    }

    /// A message whose handler calls another system. The first transaction
    /// runs the gate and the handler's checks and commits what the call needs
    /// recorded first; the call is made with nothing held; the second
    /// transaction keeps the result, what it sends and, last, the message's
    /// record. A crash anywhere before the second commit leaves no record, so
    /// the redelivery goes through all three again: the call is repeated under
    /// the same key, which the other system answers as before (the
    /// processor's idempotency key), never acts on twice. A redelivery after
    /// the second commit finds the record and sends the kept set.
    async fn apply_calling(&self, msg: &Incoming) -> Result<Done, HandlerError> {
        let (key, call) = {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let admission = match self.gate(&tx, msg).await? {
                Gate::Pass(a) => a,
                Gate::Refused(h) => {
                    let applying = self.finish(&tx, msg, None, h).await?;
                    return self.conclude(tx, msg, applying).await;
                }
            };
            if matches!(admission, Admission::Idempotent) {
                // Its sends would have no record to be sent again from across the call.
                return Err(HandlerError::Permanent("a handler that calls out applies its messages once (Admission::Apply)".into()));
            }
            let key = matches!(admission, Admission::Apply).then(|| msg.dedupe_key());
            if self.fault_panic_on.as_deref() == Some(msg.routing_key.as_str()) {
                panic!("fault injection: handler panic on {}", msg.routing_key);
            }
            match self.handler.prepare(&tx, msg).await? {
                Prepared::Handled(handled) => {
                    let applying = self.finish(&tx, msg, key.as_deref(), handled).await?;
                    return self.conclude(tx, msg, applying).await;
                }
                Prepared::Call(call) => {
                    tx.commit().await?;
                    (key, call)
                }
            }
        };
        let called = call.await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let handled = self.handler.complete(&tx, msg, called).await?;
        let applying = self.finish(&tx, msg, key.as_deref(), handled).await?;
        self.conclude(tx, msg, applying).await
    }

    /// A message applied before changes nothing. What it sent goes again,
    /// under the same message ids (its ack may never have happened, so they
    /// may never have gone; their consumers recognise them if they did). If
    /// its sender wants a reply, it gets the one the first delivery produced,
    /// marked as a replay; the record is its own publisher's, so nobody
    /// else's reply can come back.
    fn duplicate(
        &self,
        msg: &Incoming,
        key: &str,
        reply: Option<serde_json::Value>,
        outgoing: Option<serde_json::Value>,
    ) -> Result<Done, HandlerError> {
        let mut send = match &outgoing {
            Some(stored) => self.outbox.open_stored(self.consumer, key, stored).map_err(|e| match e {
                crate::outbox::StoredError::Secrets(e) => HandlerError::Secrets(e),
                e => HandlerError::Permanent(e.to_string()),
            })?,
            None => vec![],
        };
        if let Some(stored) = reply {
            let sealed = crate::sealing::sealed_json(&stored).is_some();
            let reply = match (sealed, self.outbox.keys()) {
                (false, _) => stored,
                (true, Some(keys)) => keys
                    .open_json(&At::dedupe_reply(self.consumer, key), stored)
                    .map_err(|source| SecretsError::Open { context: crate::sealing::context::DEDUPE_REPLY, source })?,
                (true, None) => return Err(SecretsError::NoKeys.into()),
            };
            if let Some(mut again) = msg.reply(&reply, true) {
                again.sealed = sealed;
                crate::telemetry::inject_current(&mut again.headers);
                send.push(again);
            }
        }
        Ok(Done { applied: Applied::Duplicate, send })
    }

    /// Messages delivered together, applied in one transaction, optimistically:
    /// no savepoint per message (two statements each, a sixth of all the
    /// statements a session costs). One that fails (or panics) rolls the whole
    /// transaction back; the batch is applied again without it, once, and what
    /// still fails then comes back `None`, for the single-message path with
    /// its retries, holds and dead letters. Nothing is acknowledged before the
    /// commit, and nothing outside the database is done by a batched handler
    /// (the gateway, which calls a processor, applies its messages alone).
    async fn apply_batch(&self, msgs: &[(Incoming, Acker)]) -> Result<Vec<Option<Done>>, HandlerError> {
        let mut left_out = vec![false; msgs.len()];
        for _ in 0..2 {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let mut applied = Vec::with_capacity(msgs.len());
            let mut failed = None;
            for (i, (msg, _)) in msgs.iter().enumerate() {
                if left_out[i] {
                    applied.push(None);
                    continue;
                }
                match std::panic::AssertUnwindSafe(self.apply_in(&tx, msg)).catch_unwind().await {
                    Ok(Ok(Applying::Done(done))) => applied.push(Some(done)),
                    // A duplicate (or a failure) undoes the batch's work: the
                    // rest go again without it, and it goes alone.
                    _ => {
                        failed = Some(i);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    tx.commit().await?;
                    self.committed(true);
                    return Ok(applied);
                }
                Some(i) => {
                    tx.rollback().await?;
                    metrics::BATCH_RETRIES.with_label_values(&[self.consumer]).inc();
                    left_out[i] = true;
                }
            }
        }
        Ok(msgs.iter().map(|_| None).collect())
    }

    /// `apply`, with a panic turned into a dead letter: one bad message must
    /// not take the consumer (and every message behind it) down.
    async fn apply_contained(&self, msg: &Incoming) -> Result<Done, HandlerError> {
        match std::panic::AssertUnwindSafe(self.apply(msg)).catch_unwind().await {
            Ok(applied) => applied,
            Err(panic) => {
                let why = HandlerError::Panicked(panic_text(panic.as_ref()));
                tracing::error!(error = %why, "dead-lettering the message");
                self.dead_letter_alone(msg, &why.to_string()).await
            }
        }
    }

    /// A message whose handling failed for good: dead-lettered in a
    /// transaction of its own, after the same gate (and, for what is applied
    /// once, the same record) as any other.
    async fn dead_letter_alone(&self, msg: &Incoming, reason: &str) -> Result<Done, HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let applying = match self.gate(&tx, msg).await? {
            Gate::Refused(h) => self.finish(&tx, msg, None, h).await?,
            Gate::Pass(admission) => {
                let key = matches!(admission, Admission::Apply).then(|| msg.dedupe_key());
                let mut h = Handled::dead_lettered(ErrorCode::InternalError.as_str(), reason);
                h.outbox.extend(msg.reply(&ApiError::internal().to_reply(), false));
                self.finish(&tx, msg, key.as_deref(), h).await?
            }
        };
        self.conclude(tx, msg, applying).await
    }

    fn span(&self, msg: &Incoming) -> tracing::Span {
        // OpenTelemetry's messaging conventions, so tracing back-ends show the hops as such.
        let name = format!("process {}", self.queue);
        let span = tracing::info_span!(
            "consume",
            otel.name = name.as_str(),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.destination.name = self.queue.as_str(),
            messaging.rabbitmq.destination.routing_key = msg.routing_key.as_str(),
            messaging.operation.type = "process",
            messaging.operation.name = "consume",
            messaging.message.id = msg.message_id.as_deref().unwrap_or(""),
            messaging.message.conversation_id = msg.correlation_id.as_deref().unwrap_or(""),
            messaging.message.body.size = msg.body.len(),
            redelivered = msg.redelivered,
            batch = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, &msg.headers);
        span
    }

    /// Publishes what an applied message sends, confirmed, then acks it, and
    /// records how it went, inside its span. A publish that fails is handed
    /// to the outbox, whose relay retries it; only if that fails too is the
    /// message returned to the queue, for its redelivery to send the kept set.
    async fn delivered(&self, publisher: &Publisher, acker: &Acker, done: Done, started: Instant) {
        let Done { applied, mut send } = done;
        if !send.is_empty() {
            let spans: Vec<tracing::Span> = send.iter_mut().map(|m| crate::telemetry::publish_span(m, publisher.names())).collect();
            let results = publisher.publish_batch(&send).await;
            let mut failed = vec![];
            for ((m, result), span) in send.into_iter().zip(results).zip(&spans) {
                let outcome = if result.is_ok() { "confirmed" } else { "to_outbox" };
                span.record("outcome", outcome);
                metrics::DIRECT_PUBLISHED.with_label_values(&[m.kind.as_str(), outcome]).inc();
                if let Err(e) = result {
                    tracing::warn!(routing_key = %m.routing_key, error = %e, "publish after commit failed; handing it to the outbox");
                    failed.push(m);
                }
            }
            if !failed.is_empty() {
                if let Err(e) = self.to_outbox(&failed).await {
                    tracing::error!(error = %e, "neither published nor handed to the outbox; returning the message");
                    let _ = acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                    self.handled("requeued", started);
                    return;
                }
                self.outbox.wake();
            }
        }
        if let Err(e) = acker.ack(BasicAckOptions::default()).await {
            // The commit stands; the redelivery finds the record and sends its set again.
            tracing::warn!(error = %e, "ack failed after commit");
        }
        let outcome = match applied {
            Applied::New => "applied",
            Applied::Duplicate => "duplicate",
            Applied::DeadLettered => "dead_lettered",
        };
        self.handled(outcome, started);
    }

    /// Messages a direct publish could not send, for the relay.
    async fn to_outbox(&self, msgs: &[Outbound]) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        self.outbox.enqueue(&tx, msgs).await?;
        tx.commit().await?;
        Ok(())
    }

    fn handled(&self, outcome: &'static str, started: Instant) {
        tracing::Span::current().record("outcome", outcome);
        tracing::info!(outcome, elapsed_ms = started.elapsed().as_millis() as u64, "message handled");
        metrics::MESSAGES.with_label_values(&[self.consumer, outcome]).inc();
        metrics::HANDLE_SECONDS.with_label_values(&[self.consumer]).observe(started.elapsed().as_secs_f64());
    }

    /// Deliveries that were waiting together: applied as one batch when there
    /// are several, each alone otherwise (and each the batch left out).
    async fn process_batch(&self, deliveries: Vec<lapin::message::Delivery>, publisher: &Publisher) {
        let started = Instant::now();
        let msgs: Vec<(Incoming, Acker)> = deliveries.into_iter().map(Incoming::from_delivery).collect();
        if msgs.len() == 1 {
            let (msg, acker) = msgs.into_iter().next().expect("one message");
            return self.process(msg, acker, started, publisher).await;
        }
        metrics::BATCH_SIZE.with_label_values(&[self.consumer]).observe(msgs.len() as f64);
        let applied = match self.apply_batch(&msgs).await {
            Ok(applied) => applied,
            Err(e) => {
                tracing::warn!(error = %e, size = msgs.len(), "batch not applied; each message on its own");
                msgs.iter().map(|_| None).collect()
            }
        };
        let mut alone = vec![];
        let mut sending = vec![];
        for ((msg, acker), applied) in msgs.into_iter().zip(applied) {
            match applied {
                Some(done) => {
                    let span = self.span(&msg);
                    span.record("batch", true);
                    sending.push(async move { self.delivered(publisher, &acker, done, started).instrument(span).await });
                }
                None => alone.push((msg, acker)),
            }
        }
        // Together: their confirms come back in one round trip.
        futures::future::join_all(sending).await;
        // Side by side: one held for an outage must not keep the others waiting.
        futures::future::join_all(alone.into_iter().map(|(msg, acker)| self.process(msg, acker, Instant::now(), publisher))).await;
    }

    async fn process(&self, msg: Incoming, acker: Acker, started: Instant, publisher: &Publisher) {
        let span = self.span(&msg);
        async {
            // A conflict (deadlock, serialization) is retried briefly, then the
            // message goes back to the queue, where RabbitMQ counts it against the
            // delivery limit. A dependency that is down is waited out with the
            // message held: returning it would burn its delivery attempts (and
            // dead-letter it) while nothing could have succeeded.
            let mut held: Option<Instant> = None;
            let result = loop {
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(3))
                    .with_max_times(6)
                    .with_jitter();
                let result = (|| self.apply_contained(&msg))
                    .retry(backoff)
                    .when(HandlerError::is_transient)
                    .adjust(|e, wait| match e {
                        HandlerError::Throttled { retry_after, .. } => wait.map(|w| w.max(*retry_after)),
                        _ => wait,
                    })
                    .notify(|e, wait| {
                        metrics::RETRIES.with_label_values(&[self.consumer]).inc();
                        tracing::warn!(error = %e, retry_in = ?wait, "message not applied; retrying")
                    })
                    .await;
                match result {
                    Err(e) if e.is_unavailable() && !self.stop.is_cancelled() => {
                        if held.is_none() {
                            held = Some(Instant::now());
                            metrics::HELD.with_label_values(&[self.consumer]).inc();
                            tracing::warn!(error = %e, "a dependency is unavailable: holding the message until it answers");
                        }
                        let pause = match &e {
                            HandlerError::Throttled { retry_after, .. } => HOLD_PAUSE.max(*retry_after),
                            _ => HOLD_PAUSE,
                        };
                        tokio::select! {
                            _ = self.stop.cancelled() => {}
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    other => break other,
                }
            };
            if let Some(since) = held {
                metrics::HELD.with_label_values(&[self.consumer]).dec();
                tracing::info!(held_ms = since.elapsed().as_millis() as u64, "dependency back: held message released");
            }
            match result {
                Ok(done) => self.delivered(publisher, &acker, done, started).await,
                Err(e) => {
                    tracing::error!(error = %e, "message not applied; returning it to the queue");
                    let _ = acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                    self.handled("requeued", started);
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled the consumer of {0}")]
    Cancelled(String),
}

/// Consumes `ctx.queue` with up to `prefetch` messages in flight, until `stop`
/// (then finishes what is in flight) or the connection fails. With `batch`
/// above 1, messages already waiting are taken up to `batch` at a time into
/// one transaction, `prefetch / batch` transactions at once: under light load
/// each message still goes alone and at once; under heavy load they share
/// commits.
pub async fn consume(
    conn: &Connection,
    ctx: Arc<ConsumerContext>,
    publisher: Arc<Publisher>,
    prefetch: u16,
    batch: u16,
    stop: CancellationToken,
) -> Result<(), ConsumeError> {
    let channel = conn.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(ShortString::from(ctx.queue.as_str()), ShortString::from(""), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let tag = consumer.tag();
    let _running = ctx.health.consumer_running();
    tracing::info!(queue = %ctx.queue, prefetch, "consuming");
    let stopped = stop.clone();
    // A calling handler's messages each wait on their own call: never batched.
    let batch = if ctx.handler.calls_out() { 1 } else { batch.clamp(1, prefetch) as usize };
    let concurrent = (prefetch as usize / batch).max(1);
    consumer
        .take_until(stopped.cancelled_owned())
        .ready_chunks(batch)
        .map(|chunk| chunk.into_iter().collect::<Result<Vec<_>, _>>().map_err(ConsumeError::from))
        .try_for_each_concurrent(concurrent, |deliveries| {
            let (ctx, publisher) = (ctx.clone(), publisher.clone());
            async move {
                ctx.process_batch(deliveries, &publisher).await;
                Ok(())
            }
        })
        .await?;
    if !stop.is_cancelled() {
        return Err(ConsumeError::Cancelled(ctx.queue.clone()));
    }
    let _ = channel.basic_cancel(tag, BasicCancelOptions::default()).await;
    let _ = channel.close(200, ShortString::from("shutting down")).await;
    Ok(())
}

/// What a panic said, when it said it with a string.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".into(),
    }
}
