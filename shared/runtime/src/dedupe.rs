//! The message-dedupe record: the first thing each consumer transaction
//! writes, and, once the message is handled, what it sends (DESIGN §5).

use deadpool_postgres::Transaction;
use serde_json::Value;

pub enum Claim {
    New,
    /// Applied before. Nothing changes; what it sent may be sent again (its
    /// ack may never have happened), and its reply, if any, answered again.
    Duplicate {
        reply: Option<Value>,
        outgoing: Option<Value>,
    },
}

/// Records that `consumer` is applying this message. Concurrent deliveries of
/// one message serialise on the primary key: the second waits for the first
/// transaction and then finds its row.
pub async fn claim(tx: &Transaction<'_>, consumer: &str, message_key: &str) -> Result<Claim, tokio_postgres::Error> {
    // Prepared once per connection: every message of every service runs these.
    let insert = tx.prepare_cached("INSERT INTO processed_messages (consumer, message_key) VALUES ($1, $2) ON CONFLICT DO NOTHING").await?;
    let n = tx.execute(&insert, &[&consumer, &message_key]).await?;
    if n == 1 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_opt("SELECT reply, outgoing FROM processed_messages WHERE consumer = $1 AND message_key = $2", &[&consumer, &message_key])
        .await?;
    Ok(match row {
        Some(r) => Claim::Duplicate { reply: r.get(0), outgoing: r.get(1) },
        None => Claim::Duplicate { reply: None, outgoing: None },
    })
}

/// What the message sends: its reply (answered again to a duplicate) and the
/// rest (published again if its ack never happened), in one statement.
pub async fn record(
    tx: &Transaction<'_>,
    consumer: &str,
    message_key: &str,
    reply: Option<&Value>,
    outgoing: Option<&Value>,
) -> Result<(), tokio_postgres::Error> {
    let update =
        tx.prepare_cached("UPDATE processed_messages SET reply = $3, outgoing = $4 WHERE consumer = $1 AND message_key = $2").await?;
    tx.execute(&update, &[&consumer, &message_key, &reply, &outgoing]).await?;
    Ok(())
}
