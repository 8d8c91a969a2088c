//! How a session the scheduler asked for ended, as lifecycle recorded it, and
//! the session lock that orders a reply and a completion: shared by the
//! schedules' runs (outcomes) and the triggers' items.

use deadpool_postgres::Transaction;
use ps_contract::lifecycle::{PaymentOutcome, Status};
use ps_runtime::HandlerError;
use serde_json::Value;

/// How a session the scheduler asked for ended.
pub struct Ended {
    pub paid: bool,
    pub outcome: PaymentOutcome,
    pub decline_code: Option<String>,
}

impl Ended {
    pub(crate) fn of(status: Status, outcome: PaymentOutcome, decline_code: Option<String>) -> Option<Ended> {
        (status == Status::Completed).then_some(Ended {
            paid: matches!(outcome, PaymentOutcome::Paid | PaymentOutcome::Reserved),
            outcome,
            decline_code,
        })
    }
}

pub async fn lock_session(tx: &Transaction<'_>, session: &str) -> Result<(), HandlerError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('ps-session:' || $1))", &[&session]).await?;
    Ok(())
}

/// The session's end as lifecycle recorded it, if it has ended.
pub async fn stored_end(tx: &Transaction<'_>, session: &str) -> Result<Option<Ended>, HandlerError> {
    let row = tx.query_opt("SELECT status, payment_outcome, last_payment_error FROM payment_sessions WHERE id = $1", &[&session]).await?;
    Ok(row.and_then(|r| {
        let status = Status::parse(r.get(0))?;
        let outcome = PaymentOutcome::parse(r.get(1))?;
        let decline = r.get::<_, Option<Value>>(2).and_then(|e| e["decline_code"].as_str().map(str::to_owned));
        Ended::of(status, outcome, decline)
    }))
}
