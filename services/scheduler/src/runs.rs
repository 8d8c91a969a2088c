//! The clock loop: due schedules become `payment_session.create` commands (a
//! batch per transaction, claimed with SKIP LOCKED so replicas share the work),
//! and queued trigger charges are sent at the configured rate.

use crate::schedules::{self, Row};
use crate::{triggers, Ctx};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use ps_contract::events::EventType;
use ps_contract::money::Amount;
use ps_contract::schedule::ScheduleStatus;
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::outbox::Outbox;
use ps_runtime::{HandlerError, Outbound};
use ps_store::mandates::{self, MandateCharge};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub struct Runner {
    pub pool: Pool,
    pub outbox: Outbox,
    pub ctx: Arc<Ctx>,
    pub batch: i64,
    pub poll: Duration,
    pub trigger_rate: u32,
}

impl Runner {
    pub async fn run(self, stop: CancellationToken) {
        // Trigger charges allowed per pass: the rate over one poll interval.
        let allowance = ((self.trigger_rate as f64 * self.poll.as_secs_f64()).ceil() as i64).max(1);
        loop {
            let mut more = false;
            match self.charge_due().await {
                Ok(n) => more |= n as i64 == self.batch,
                Err(e) => tracing::warn!(error = %e, "charging due schedules failed; will retry"),
            }
            let mut rate_bound = false;
            match triggers::send_queued(&self.pool, &self.outbox, &self.ctx, allowance).await {
                Ok(n) => rate_bound = n as i64 == allowance,
                Err(e) => tracing::warn!(error = %e, "sending trigger charges failed; will retry"),
            }
            if more && !stop.is_cancelled() {
                continue;
            }
            // At the trigger rate's limit only the poll interval may pass; otherwise new work wakes it early.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.ctx.wake.notified(), if !rate_bound => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Claims up to a batch of due schedules and asks for their charges, in one
    /// transaction of a few set-based statements. Returns how many were claimed.
    pub async fn charge_due(&self) -> Result<usize, HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = self.ctx.clock.now();
        let due = schedules::claim_due(&tx, now, self.batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        // A span only when there is work, so an idle scheduler exports nothing; its
        // context travels in the commands' headers to intake and on.
        let span = tracing::info_span!("scheduler.charge_due", claimed = due.len());
        async {
            let amounts = due
                .iter()
                .map(|s| Amount::new(s.amount).map_err(|e| HandlerError::Permanent(format!("stored schedule {} amount: {e:?}", s.id))))
                .collect::<Result<Vec<_>, _>>()?;
            let charges: Vec<MandateCharge<'_>> = due
                .iter()
                .zip(&amounts)
                .map(|(s, a)| MandateCharge { merchant: &s.merchant_id, mandate: &s.mandate_id, amount: *a, currency: s.currency })
                .collect();
            let checks = mandates::check_mandate_charges(&tx, &charges, now).await?;
            let mut out = Vec::with_capacity(due.len());
            let mut started = Vec::with_capacity(due.len());
            for (s, check) in due.iter().zip(checks) {
                match check {
                    Ok(()) => {
                        out.push(schedules::run_command(&self.ctx, s));
                        started.push(s);
                    }
                    Err(e) => out.push(refused(&tx, s.clone(), &e, now).await?),
                }
            }
            schedules::start_runs(&tx, &started, now).await?;
            self.outbox.enqueue(&tx, &out).await?;
            tx.commit().await?;
            self.outbox.wake();
            crate::metrics::CLAIMED.inc_by(due.len() as u64);
            crate::metrics::RUNS.with_label_values(&["requested"]).inc_by(started.len() as u64);
            tracing::info!(claimed = due.len(), charged = started.len(), "due schedules charged");
            Ok::<_, HandlerError>(())
        }
        .instrument(span)
        .await?;
        Ok(due.len())
    }
}

/// The mandate refuses a due charge: its own caps and end are a natural finish,
/// anything else stops the schedule with the rule's code.
async fn refused(tx: &Transaction<'_>, mut s: Row, e: &ApiError, now: DateTime<Utc>) -> Result<Outbound, HandlerError> {
    let finished =
        matches!(e.code, ErrorCode::MandateMaxOccurrencesReached | ErrorCode::MandateTotalAmountExceeded | ErrorCode::MandateExpired);
    let (status, kind) = if finished {
        (ScheduleStatus::Completed, EventType::ScheduleCompleted)
    } else {
        (ScheduleStatus::Stopped, EventType::ScheduleStopped)
    };
    s.end(status, Some(e.code.as_str()), now);
    schedules::save(tx, &s).await?;
    crate::metrics::RUNS.with_label_values(&["refused_by_mandate"]).inc();
    tracing::info!(schedule = %s.id, code = %e.code, status = %status, "mandate refuses the charge; schedule ended");
    Ok(s.event(kind, now)?)
}
