//! `checkout`: the hosted page behind a session's `session_url`.

mod app;
pub mod pages;
pub mod terms;

use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Running, StartError};
use ps_runtime::Config;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "checkout";
pub const DEFAULT_HEALTH_PORT: u16 = 9102;

#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    pub common: Config,
    pub addr: SocketAddr,
    pub vault_url: String,
}

impl CheckoutConfig {
    pub fn from_env(env: &Env) -> Result<CheckoutConfig, ConfigError> {
        Ok(CheckoutConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            addr: env.parsed("CHECKOUT_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            vault_url: env.url("VAULT_URL", "http://127.0.0.1:9110", &["http", "https"])?,
        })
    }
}

pub struct RunningCheckout {
    pub service: Running,
    pub addr: SocketAddr,
}

/// The checkout consumes nothing; it runs the shared service for its outbox
/// relay (the `gateway.authorize` it queues) and health, beside its web server.
pub async fn start(config: CheckoutConfig, stop: CancellationToken) -> Result<RunningCheckout, StartError> {
    let service = service::start(SERVICE, config.common, vec![], stop.clone()).await?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| StartError::Health { addr: config.addr, source: std::io::Error::other(e) })?;
    let state = app::AppState { pool: service.pool.clone(), outbox: service.outbox.clone(), vault_url: config.vault_url, http };
    let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(|source| StartError::Health { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Health { addr: config.addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app::router(state)).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::error!(error = %e, "checkout server stopped");
        }
    });
    tracing::info!(%addr, "checkout listening");
    Ok(RunningCheckout { service, addr })
}
