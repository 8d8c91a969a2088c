//! The log of processor calls (`processor_calls`, this module its only
//! writer): what was asked under which key, and how it went. A log for
//! operators and tests, not the record of the money (that is the
//! processor's), so rows are written in batches beside the work, one
//! statement for all the calls that came meanwhile; a crash may lose the last few.

use deadpool_postgres::Pool;
use ps_contract::internal::Operation;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// How a call ended, as `processor_calls.result` (its CHECK constraint's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Succeeded,
    Failed,
    RequiresAction,
    Timeout,
    ResolvedByLookup,
    ResolvedNoRecord,
    Pending,
    Error,
}

impl CallResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Succeeded => "succeeded",
            CallResult::Failed => "failed",
            CallResult::RequiresAction => "requires_action",
            CallResult::Timeout => "timeout",
            CallResult::ResolvedByLookup => "resolved_by_lookup",
            CallResult::ResolvedNoRecord => "resolved_no_record",
            CallResult::Pending => "pending",
            CallResult::Error => "error",
        }
    }

    pub fn of(outcome: ps_contract::internal::Outcome) -> CallResult {
        match outcome {
            ps_contract::internal::Outcome::Succeeded => CallResult::Succeeded,
            ps_contract::internal::Outcome::Failed => CallResult::Failed,
            ps_contract::internal::Outcome::RequiresAction => CallResult::RequiresAction,
        }
    }
}

struct Row {
    attempt: String,
    operation: Operation,
    key: String,
    result: CallResult,
    latency_ms: i32,
}

/// Where the gateway notes its calls; the writer runs until stopped.
#[derive(Clone)]
pub struct CallLog {
    rows: UnboundedSender<Row>,
}

const BATCH: usize = 500;

impl CallLog {
    pub fn start(pool: Pool, stop: CancellationToken) -> (CallLog, tokio::task::JoinHandle<()>) {
        let (rows, rx) = unbounded_channel();
        (CallLog { rows }, tokio::spawn(write(pool, rx, stop)))
    }

    pub fn note(&self, attempt: &str, operation: Operation, key: &str, result: CallResult, elapsed: Duration) {
        let row = Row { attempt: attempt.to_owned(), operation, key: key.to_owned(), result, latency_ms: elapsed.as_millis() as i32 };
        if self.rows.send(row).is_err() {
            tracing::warn!(attempt, "the processor call log has stopped; call not recorded");
        }
    }
}

/// Writes what came meanwhile, a batch per statement, until stopped (then
/// what is left).
async fn write(pool: Pool, mut rx: UnboundedReceiver<Row>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            row = rx.recv() => row,
            _ = stop.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = insert(&pool, &batch).await {
            tracing::warn!(calls = batch.len(), error = %e, "could not record processor calls");
        }
        batch.clear();
    }
}

async fn insert(pool: &Pool, batch: &[Row]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let c = pool.get().await?;
    let attempts: Vec<&str> = batch.iter().map(|r| r.attempt.as_str()).collect();
    let operations: Vec<&str> = batch.iter().map(|r| r.operation.as_str()).collect();
    let keys: Vec<&str> = batch.iter().map(|r| r.key.as_str()).collect();
    let results: Vec<&str> = batch.iter().map(|r| r.result.as_str()).collect();
    let latencies: Vec<i32> = batch.iter().map(|r| r.latency_ms).collect();
    // One statement per batch, its own transaction.
    c.execute(
        &c.prepare_cached(
            "INSERT INTO processor_calls (attempt_id, operation, idempotency_key, result, latency_ms)
             SELECT a, o, k, r, l FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
                  WITH ORDINALITY AS c (a, o, k, r, l, n) ORDER BY n",
        )
        .await?,
        &[&attempts, &operations, &keys, &results, &latencies],
    )
    .await?;
    Ok(())
}
