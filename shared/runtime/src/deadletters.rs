//! The `dead_letters` table: the fleet's own record of each message it
//! dead-lettered (DESIGN §10). A dead letter names its record in the
//! `x-dead-letter-id` header; a replay trusts the record (who published the
//! message, where, and its body's digest), never what the message says of itself.
//! The only module that reads or writes the table.

use crate::message::Incoming;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};

/// What the fleet recorded when it dead-lettered a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// The logical queue the message was consumed from.
    pub queue: String,
    /// The logical exchange it was published to (`""`: the default exchange).
    pub exchange: String,
    pub routing_key: String,
    /// The broker user that published it, as RabbitMQ vouched (AMQP `user_id`).
    pub publisher: Option<String>,
    pub body_sha256: Vec<u8>,
    pub code: String,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl Record {
    /// Whether `body` is the body this record was made for.
    pub fn matches(&self, body: &[u8]) -> bool {
        digest(body) == self.body_sha256
    }
}

pub fn digest(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Records `msg`, consumed from `queue` (logical) and published to logical
/// `exchange`, as dead-lettered with `code`, in the caller's transaction.
pub async fn record(
    c: &impl GenericClient,
    id: &str,
    queue: &str,
    exchange: &str,
    msg: &Incoming,
    code: &str,
) -> Result<(), tokio_postgres::Error> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO dead_letters (id, queue, exchange, routing_key, publisher, message_id, body_sha256, code)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    c.execute(&stmt, &[&id, &queue, &exchange, &msg.routing_key, &msg.user_id, &msg.message_id, &digest(&msg.body), &code]).await?;
    Ok(())
}

pub async fn find(c: &impl GenericClient, id: &str) -> Result<Option<Record>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT id, queue, exchange, routing_key, publisher, body_sha256, code, replayed_at FROM dead_letters WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| Record {
        id: r.get(0),
        queue: r.get(1),
        exchange: r.get(2),
        routing_key: r.get(3),
        publisher: r.get(4),
        body_sha256: r.get(5),
        code: r.get(6),
        replayed_at: r.get(7),
    }))
}

/// Marks a record replayed; false if it already was (or is gone), so one
/// dead letter is replayed once however many copies of it turn up.
pub async fn mark_replayed(c: &impl GenericClient, id: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(c.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL", &[&id]).await? == 1)
}

/// Undoes `mark_replayed` when the replay did not go out.
pub async fn unmark_replayed(c: &impl GenericClient, id: &str) -> Result<(), tokio_postgres::Error> {
    c.execute("UPDATE dead_letters SET replayed_at = NULL WHERE id = $1", &[&id]).await?;
    Ok(())
}

/// Forgets a discarded dead letter's record.
pub async fn forget(c: &impl GenericClient, id: &str) -> Result<(), tokio_postgres::Error> {
    c.execute("DELETE FROM dead_letters WHERE id = $1", &[&id]).await?;
    Ok(())
}
