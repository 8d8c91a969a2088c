//! The expiry sweep: sessions past `expires_at` expire. Any number of replicas
//! may sweep at once; SKIP LOCKED gives each session to one of them.

use chrono::Utc;
use deadpool_postgres::Pool;
use ps_contract::events::EventType;
use ps_contract::lifecycle::{transition, PaymentOutcome, Transition};
use ps_runtime::outbox::Outbox;
use ps_runtime::HandlerError;
use ps_store::events::event;
use ps_store::sessions;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Sweeper {
    pub pool: Pool,
    pub outbox: Outbox,
    pub interval: Duration,
    /// An attempt still pending this long after it started is given up on.
    pub abandon_after: Duration,
}

impl Sweeper {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expiry sweep"),
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Expires what is due, a batch per transaction. Returns how many expired.
    pub async fn sweep(&self) -> Result<usize, HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx
            .query(
                "SELECT id FROM payment_sessions WHERE status = 'active' AND expires_at <= now()
                 ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .await?;
        let now = Utc::now();
        let abandon = chrono::Duration::from_std(self.abandon_after).unwrap_or_default();
        let mut expired = 0;
        let mut out = vec![];
        for row in due {
            let id: &str = row.get(0);
            let Some(mut s) = sessions::lock(&tx, id, None).await? else { continue };
            if s.session.payment_outcome == PaymentOutcome::Pending {
                // Expiry waits for a result, unless the attempt has been silent too long.
                let stale = tx
                    .query_opt(
                        "UPDATE payment_attempts SET status = 'abandoned', updated_at = now()
                         WHERE session_id = $1 AND status = 'pending' AND created_at <= $2 RETURNING id",
                        &[&id, &(now - abandon)],
                    )
                    .await?;
                if stale.is_none() {
                    continue;
                }
                let failed = transition(s.session.session_type, s.state(), Transition::AttemptFailed)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                s.set_state(failed, now);
                s.session.last_payment_error = Some(sessions::payment_error(
                    "processing_error",
                    Some("processor_timeout"),
                    "The payment did not complete in time.",
                    now,
                ));
            }
            match transition(s.session.session_type, s.state(), Transition::Expire) {
                Ok(to) => {
                    s.set_state(to, now);
                    sessions::save(&tx, &s).await?;
                    out.push(event(EventType::PaymentSessionUpdated, &s.merchant_id, now, &s.session));
                    expired += 1;
                }
                Err(e) => tracing::warn!(session = id, error = %e, "cannot expire"),
            }
        }
        self.outbox.enqueue(&tx, &out).await?;
        tx.commit().await?;
        if !out.is_empty() {
            self.outbox.wake();
        }
        Ok(expired)
    }
}
