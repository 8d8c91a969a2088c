//! `/healthz` (alive), `/readyz` (broker connected, every consumer and the
//! outbox relay running, database answering), `/metrics` (Prometheus), on a
//! port of the service's own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Health {
    broker_up: Arc<AtomicBool>,
    consumers_expected: Arc<AtomicUsize>,
    consumers_running: Arc<AtomicUsize>,
    relays_running: Arc<AtomicUsize>,
    pool: Pool,
}

/// Held by a running consumer or relay. Dropped when it ends for any reason,
/// a panic included, so readiness cannot outlive the work it reports on.
#[must_use]
pub struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Health {
    pub fn new(pool: Pool) -> Health {
        Health {
            broker_up: Arc::new(AtomicBool::new(false)),
            consumers_expected: Arc::new(AtomicUsize::new(0)),
            consumers_running: Arc::new(AtomicUsize::new(0)),
            relays_running: Arc::new(AtomicUsize::new(0)),
            pool,
        }
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
        crate::metrics::BROKER_CONNECTED.set(up as i64);
    }

    /// How many consumers a ready replica runs.
    pub fn expect_consumers(&self, n: usize) {
        self.consumers_expected.store(n, Ordering::SeqCst);
    }

    pub fn consumer_running(&self) -> Alive {
        self.consumers_running.fetch_add(1, Ordering::SeqCst);
        Alive(self.consumers_running.clone())
    }

    pub fn relay_running(&self) -> Alive {
        self.relays_running.fetch_add(1, Ordering::SeqCst);
        Alive(self.relays_running.clone())
    }

    /// What a replica needs to do its work; the first thing missing is the answer.
    pub async fn ready(&self) -> Result<(), String> {
        if !self.broker_up.load(Ordering::Relaxed) {
            return Err("broker not connected".into());
        }
        let (running, expected) = (self.consumers_running.load(Ordering::SeqCst), self.consumers_expected.load(Ordering::SeqCst));
        if running < expected {
            return Err(format!("{running} of {expected} consumers running"));
        }
        if self.relays_running.load(Ordering::SeqCst) == 0 {
            return Err("outbox relay not running".into());
        }
        if !crate::db::ping(&self.pool).await {
            return Err("database not answering".into());
        }
        Ok(())
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    match h.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { crate::metrics::render() }))
        .with_state(health)
}

/// Binds now (so a taken port fails start-up), serves until `stop`.
pub async fn serve(addr: SocketAddr, health: Health, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(health)).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        // Never connected: the flags are checked before the database is.
        let pool = crate::db::pool("postgres://nobody@127.0.0.1:1/none", 1, &crate::tls::Trust::default()).expect("pool config");
        Health::new(pool)
    }

    #[tokio::test]
    async fn a_consumer_or_relay_that_ends_makes_the_replica_unready() {
        let h = health();
        h.set_broker_up(true);
        h.expect_consumers(2);
        let relay = h.relay_running();
        let first = h.consumer_running();
        assert_eq!(h.ready().await.unwrap_err(), "1 of 2 consumers running");
        let second = h.consumer_running();
        assert_eq!(h.ready().await.unwrap_err(), "database not answering", "every flag passes; only the database is missing");
        // A consumer task that panics drops its guard while unwinding.
        let dying = std::thread::spawn(move || {
            let _held = second;
            panic!("consumer died");
        });
        assert!(dying.join().is_err());
        assert_eq!(h.ready().await.unwrap_err(), "1 of 2 consumers running");
        drop(relay);
        drop(first);
        assert_eq!(h.ready().await.unwrap_err(), "0 of 2 consumers running");
        let _again = (h.consumer_running(), h.consumer_running());
        assert_eq!(h.ready().await.unwrap_err(), "outbox relay not running");
    }
}
