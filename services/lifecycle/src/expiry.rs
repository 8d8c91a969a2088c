//! The sweep: sessions past `expires_at` expire, unanswered attempts are
//! resolved by asking the processor, unanswered settlements are asked again.
//! Any number of replicas may sweep at once; SKIP LOCKED gives each row to one.

use chrono::Utc;
use deadpool_postgres::Pool;
use ps_contract::events::EventType;
use ps_contract::lifecycle::{transition, PaymentOutcome, Transition};
use ps_runtime::outbox::Outbox;
use ps_runtime::HandlerError;
use ps_store::attempts;
use ps_store::events::event;
use ps_store::sessions;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Sweeper {
    pub pool: Pool,
    pub outbox: Outbox,
    pub interval: Duration,
    /// An attempt unanswered this long is resolved by asking the processor.
    pub abandon_after: Duration,
    /// A capture, void or refund unanswered this long is asked for again.
    pub settle_retry_after: Duration,
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

    /// One round: expire what is due, resolve what has gone unanswered, ask
    /// again for unanswered settlements. Returns how many sessions expired.
    pub async fn sweep(&self) -> Result<usize, HandlerError> {
        let expired = self.expire().await?;
        self.give_up_challenges().await?;
        self.resolve().await?;
        self.resettle().await?;
        self.refund_again().await?;
        Ok(expired)
    }

    /// Expires what is due, a batch per transaction. A session whose attempt is
    /// still unanswered waits for its resolution: the processor's answer, not a
    /// guess, decides whether the customer paid.
    async fn expire(&self) -> Result<usize, HandlerError> {
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
        let mut out = vec![];
        for row in due {
            let id: &str = row.get(0);
            let Some(mut s) = sessions::lock(&tx, id, None).await? else { continue };
            if s.session.payment_outcome == PaymentOutcome::Pending {
                continue;
            }
            match transition(s.session.session_type, s.state(), Transition::Expire) {
                Ok(to) => {
                    s.set_state(to, now);
                    sessions::save(&tx, &s).await?;
                    out.push(event(EventType::PaymentSessionUpdated, &s.merchant_id, now, &s.session)?);
                }
                Err(e) => tracing::warn!(session = id, error = %e, "cannot expire"),
            }
        }
        let expired = out.len();
        self.commit(tx, &out).await?;
        Ok(expired)
    }

    /// Attempts silent for `abandon_after` (the authorize lost, its result lost,
    /// the processor never answering): lifecycle stops waiting and asks the
    /// processor, through the gateway, what it did under the attempt's key.
    async fn resolve(&self) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut out = vec![];
        for (session, attempt) in attempts::unanswered(&tx, self.abandon_after).await? {
            // Session before attempt, the order every writer of both takes.
            let Some(s) = sessions::lock(&tx, &session, None).await? else { continue };
            if let Some(ask) = attempts::abandon(&tx, &s, &attempt, self.abandon_after).await? {
                tracing::warn!(session, attempt, "attempt unanswered: asking the processor what happened");
                out.push(ask);
            }
        }
        self.commit(tx, &out).await
    }

    /// A session past `expires_at` whose attempt still waits for the customer's
    /// challenge: the challenge is given up (asked again after
    /// `settle_retry_after` if no answer comes), the attempt fails, and the
    /// next round expires the session.
    async fn give_up_challenges(&self) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let out = attempts::expired_challenges(&tx, self.settle_retry_after).await?;
        self.commit(tx, &out).await
    }

    async fn resettle(&self) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let out = attempts::unanswered_settlements(&tx, self.settle_retry_after).await?;
        self.commit(tx, &out).await
    }

    async fn refund_again(&self) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let out = crate::refunds::unanswered(&tx, self.settle_retry_after).await?;
        self.commit(tx, &out).await
    }

    async fn commit(&self, tx: deadpool_postgres::Transaction<'_>, out: &[ps_runtime::Outbound]) -> Result<(), HandlerError> {
        self.outbox.enqueue(&tx, out).await?;
        tx.commit().await?;
        if !out.is_empty() {
            self.outbox.wake();
        }
        Ok(())
    }
}
