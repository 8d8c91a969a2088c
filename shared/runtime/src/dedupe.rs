//! The message-dedupe record: the first thing each consumer transaction writes.

use deadpool_postgres::Transaction;
use serde_json::Value;

pub enum Claim {
    New,
    /// Applied before. Nothing changes; the reply it got, if any, may be sent again.
    Duplicate {
        reply: Option<Value>,
    },
}

/// Records that `consumer` is applying this message. Concurrent deliveries of
/// one message serialise on the primary key: the second waits for the first
/// transaction and then finds its row.
pub async fn claim(tx: &Transaction<'_>, consumer: &str, message_key: &str) -> Result<Claim, tokio_postgres::Error> {
    let n = tx
        .execute(
            "INSERT INTO processed_messages (consumer, message_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&consumer, &message_key],
        )
        .await?;
    if n == 1 {
        return Ok(Claim::New);
    }
    let row =
        tx.query_opt("SELECT reply FROM processed_messages WHERE consumer = $1 AND message_key = $2", &[&consumer, &message_key]).await?;
    Ok(Claim::Duplicate { reply: row.and_then(|r| r.get(0)) })
}

pub async fn record_reply(tx: &Transaction<'_>, consumer: &str, message_key: &str, reply: &Value) -> Result<(), tokio_postgres::Error> {
    tx.execute("UPDATE processed_messages SET reply = $3 WHERE consumer = $1 AND message_key = $2", &[&consumer, &message_key, reply])
        .await?;
    Ok(())
}
