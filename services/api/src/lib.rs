//! `payments-api`: Moment's REST surface (DESIGN §12) over the fleet's
//! commands. It authenticates a merchant's key (`psctl keys`), publishes the
//! command as any upstream would (its own broker user, granted per merchant),
//! and answers with the owning service's reply.

mod app;
mod rpc;

use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Running, StartError};
use ps_runtime::topology::Names;
use ps_runtime::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "payments-api";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about:
        "Moment's REST API (/collect/payment_sessions …) over the fleet's commands, for merchants' HTTP clients with keys from psctl keys.",
    vars: &[
        ("API_ADDR", "where the HTTP API listens (plain HTTP: put it behind a TLS-terminating ingress)"),
        ("API_REPLY_TIMEOUT_MS", "how long a request waits for its command's reply before a 504"),
        ("API_REQUESTS_PER_SECOND", "requests a second per key; more are answered 429 with Retry-After"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9107;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub common: Config,
    pub addr: SocketAddr,
    pub reply_timeout: Duration,
    pub requests_per_second: u32,
}

impl ApiConfig {
    pub fn from_env(env: &Env) -> Result<ApiConfig, ConfigError> {
        Ok(ApiConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            addr: env.parsed("API_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            reply_timeout: Duration::from_millis(env.ranged("API_REPLY_TIMEOUT_MS", 10_000, 100, 120_000)?),
            requests_per_second: env.ranged("API_REQUESTS_PER_SECOND", 100, 1, 100_000)? as u32,
        })
    }
}

pub struct RunningApi {
    pub service: Running,
    pub addr: SocketAddr,
}

/// The API consumes nothing: the shared service gives it its pool and health,
/// beside its web server and its connection for commands and replies.
pub async fn start(config: ApiConfig, stop: CancellationToken) -> Result<RunningApi, StartError> {
    let names = Names::new(config.common.name_prefix.clone());
    let rpc = rpc::Rpc::new(config.common.amqp_url.clone(), config.common.trust.clone(), &names, config.reply_timeout);
    let mode = config.common.mode;
    let service = service::start(SERVICE, config.common, vec![], stop.clone()).await?;
    let state = app::AppState::new(service.pool.clone(), rpc, mode, config.requests_per_second);
    let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(|source| StartError::Listen { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app::router(state)).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::error!(error = %e, "payments-api server stopped");
        }
    });
    tracing::info!(%addr, "payments-api listening");
    Ok(RunningApi { service, addr })
}
