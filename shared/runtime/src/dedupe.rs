//! The message-dedupe record: the first thing each consumer transaction writes.

use deadpool_postgres::Transaction;

/// True if this message is new to `consumer`. False means a redelivery of a
/// message already applied: commit nothing else and ack it.
///
/// Concurrent deliveries of one message serialise on the primary key: the
/// second waits for the first transaction and then finds its row.
pub async fn claim(tx: &Transaction<'_>, consumer: &str, message_key: &str) -> Result<bool, tokio_postgres::Error> {
    let n = tx
        .execute(
            "INSERT INTO processed_messages (consumer, message_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&consumer, &message_key],
        )
        .await?;
    Ok(n == 1)
}
