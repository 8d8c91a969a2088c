//! The message-dedupe record: the last thing each consumer transaction
//! writes, with what the message sends (DESIGN §5).

use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;

/// What a message applied before sent, for its duplicate: its reply
/// (answered again) and the rest (published again if its ack never happened).
pub struct Stored {
    pub reply: Option<Value>,
    pub outgoing: Option<Value>,
}

/// Records that `consumer` applied this message, with what it sends, in one
/// statement at the end of its transaction. False if it was applied before:
/// the caller rolls back what it did and answers it as a duplicate. A
/// concurrent delivery of the same message waits here for the other's
/// transaction and then finds its row.
pub async fn record(
    tx: &Transaction<'_>,
    consumer: &str,
    message_key: &str,
    reply: Option<&Value>,
    outgoing: Option<&Value>,
) -> Result<bool, tokio_postgres::Error> {
    // Prepared once per connection: every message of every service runs it.
    let insert = tx
        .prepare_cached(
            "INSERT INTO processed_messages (consumer, message_key, reply, outgoing) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .await?;
    Ok(tx.execute(&insert, &[&consumer, &message_key, &reply, &outgoing]).await? == 1)
}

/// The record of a message applied before (read after the duplicate's own
/// work was rolled back; a record outlives its 7 days only by accident, so a
/// missing one sends nothing).
pub async fn stored(client: &impl GenericClient, consumer: &str, message_key: &str) -> Result<Stored, tokio_postgres::Error> {
    let row = client
        .query_opt("SELECT reply, outgoing FROM processed_messages WHERE consumer = $1 AND message_key = $2", &[&consumer, &message_key])
        .await?;
    Ok(match row {
        Some(r) => Stored { reply: r.get(0), outgoing: r.get(1) },
        None => Stored { reply: None, outgoing: None },
    })
}
