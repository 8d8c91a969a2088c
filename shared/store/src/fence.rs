//! The fence between a processor call for an attempt and lifecycle giving up
//! on that attempt. The gateway holds the attempt's fence (shared) for as long
//! as its call takes; lifecycle gives up only if it can take the fence
//! (exclusive) at once. So an attempt is never abandoned mid-call, and once it
//! is abandoned no later authorize runs: the gateway checks the status after
//! taking the fence. Advisory locks, so neither side needs to write the row.

use deadpool_postgres::Transaction;

const SQL_KEY: &str = "hashtext('ps-attempt:' || $1)";

/// Held until the transaction ends. Waits for a lifecycle giving up on the attempt.
pub async fn hold_for_call(tx: &Transaction<'_>, attempt: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute(format!("SELECT pg_advisory_xact_lock_shared({SQL_KEY})").as_str(), &[&attempt]).await?;
    Ok(())
}

/// False while a call for the attempt is in flight.
pub async fn try_give_up(tx: &Transaction<'_>, attempt: &str) -> Result<bool, tokio_postgres::Error> {
    let row = tx.query_one(format!("SELECT pg_try_advisory_xact_lock({SQL_KEY})").as_str(), &[&attempt]).await?;
    Ok(row.get(0))
}
