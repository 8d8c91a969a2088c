//! `payments-api`: Moment's REST surface (DESIGN §12) over the fleet's
//! commands. It authenticates a merchant's key (`psctl keys`), publishes the
//! command as any upstream would (its own broker user, granted per merchant),
//! and answers with the owning service's reply.

mod app;
mod routes;
mod rpc;

use axum::routing::{delete, get, post};
use axum::Router;

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
        ("API_ADDR", "where the HTTP API listens"),
        ("API_TLS_CERT_FILE", "its certificate chain, PEM: served over TLS (else TLS ends at an ingress in front)"),
        ("API_TLS_KEY_FILE", "the certificate's private key, PEM"),
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
    /// Certificate and key files: TLS on the listener itself.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl ApiConfig {
    pub fn from_env(env: &Env) -> Result<ApiConfig, ConfigError> {
        Ok(ApiConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            addr: env.parsed("API_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            reply_timeout: Duration::from_millis(env.ranged("API_REPLY_TIMEOUT_MS", 10_000, 100, 120_000)?),
            requests_per_second: env.ranged("API_REQUESTS_PER_SECOND", 100, 1, 100_000)? as u32,
            tls: env.cert_pair("API_TLS_CERT_FILE", "API_TLS_KEY_FILE")?,
        })
    }
}

/// Every path and its handler: Moment's `/collect/…` surface, and ours for
/// webhook endpoints and schedules. Each becomes one command (routes.rs).
fn router(state: app::AppState) -> Router {
    use routes::*;
    Router::new()
        .route("/collect/payment_sessions", post(create_session).get(list_sessions))
        .route("/collect/payment_sessions/{id}", get(retrieve_session))
        .route("/collect/payment_sessions/{id}/cancel", post(cancel_session))
        .route("/collect/payments/{id}", get(retrieve_payment))
        .route("/collect/payments/{id}/captures", post(capture_payment))
        .route("/collect/payments/{id}/voids", post(void_payment))
        .route("/collect/refunds", post(create_refund))
        .route("/collect/refunds/{id}", get(retrieve_refund))
        .route("/collect/mandates", get(list_mandates))
        .route("/collect/mandates/{id}", get(retrieve_mandate))
        .route("/collect/mandates/{id}/revoke", post(revoke_mandate))
        .route("/collect/schedules", get(list_schedules))
        .route("/collect/schedules/trigger", post(trigger_schedule))
        .route("/collect/schedules/{id}", get(retrieve_schedule))
        .route("/collect/schedules/{id}/{action}", post(schedule_action))
        .route("/webhook_endpoints", post(create_endpoint))
        .route("/webhook_endpoints/{id}", delete(delete_endpoint))
        .route("/webhook_endpoints/{id}/{action}", post(endpoint_action))
        .route("/webhook_events/{id}/redeliver", post(redeliver_event))
        .fallback(app::no_route)
        .with_state(state)
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
    // Bound before the service starts: a port it cannot have stops it before it says ready.
    let listener = ps_runtime::web::bind(config.addr).map_err(|source| StartError::Listen { addr: config.addr, source })?;
    let service = service::start(SERVICE, config.common, vec![], stop.clone()).await?;
    let state = app::AppState::new(service.pool.clone(), rpc, mode, config.requests_per_second);
    let tls = match &config.tls {
        Some((cert, key)) => Some(ps_runtime::tls::server_config(cert, key)?),
        None => None,
    };
    let encrypted = tls.is_some();
    let addr = ps_runtime::web::serve(listener, router(state), tls, stop, SERVICE)
        .map_err(|source| StartError::Listen { addr: config.addr, source })?;
    tracing::info!(%addr, tls = encrypted, "payments-api listening");
    Ok(RunningApi { service, addr })
}
