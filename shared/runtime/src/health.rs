//! `/healthz` (alive), `/readyz` (broker connected and database answering),
//! `/metrics` (Prometheus), on a port of the service's own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use deadpool_postgres::Pool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Health {
    broker_up: Arc<AtomicBool>,
    pool: Pool,
}

impl Health {
    pub fn new(pool: Pool) -> Health {
        Health { broker_up: Arc::new(AtomicBool::new(false)), pool }
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
        crate::metrics::BROKER_CONNECTED.set(up as i64);
    }

    pub async fn ready(&self) -> Result<(), &'static str> {
        if !self.broker_up.load(Ordering::Relaxed) {
            return Err("broker not connected");
        }
        if !crate::db::ping(&self.pool).await {
            return Err("database not answering");
        }
        Ok(())
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    match h.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
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
