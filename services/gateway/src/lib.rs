//! `payment-gateway`: the only service that talks to the card processor, and
//! the only one that ever holds a card number (in its vault).

pub mod card;
mod handler;
mod metrics;
pub mod processor;
pub mod sandbox;
pub mod vault;

use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::{topology, Config};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "payment-gateway";
pub const DEFAULT_HEALTH_PORT: u16 = 9103;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub common: Config,
    /// Where the vault takes card numbers from the checkout.
    pub vault_addr: SocketAddr,
    pub processor_timeout: Duration,
    pub sandbox_latency: Duration,
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Result<GatewayConfig, ConfigError> {
        Ok(GatewayConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            vault_addr: env.parsed("VAULT_ADDR", SocketAddr::from(([127, 0, 0, 1], 9110)))?,
            processor_timeout: Duration::from_millis(env.ranged("PROCESSOR_TIMEOUT_MS", 10_000, 10, 120_000)?),
            sandbox_latency: Duration::from_millis(env.ranged("SANDBOX_LATENCY_MS", 0, 0, 60_000)?),
        })
    }
}

pub struct RunningGateway {
    pub service: Running,
    pub vault_addr: SocketAddr,
}

pub async fn start(config: GatewayConfig, stop: CancellationToken) -> Result<RunningGateway, StartError> {
    let pool = ps_runtime::db::pool(&config.common.database_url, config.common.database_pool_size)?;
    let processor = Arc::new(sandbox::SandboxProcessor::new(pool.clone(), config.sandbox_latency));
    let handler = handler::GatewayHandler { processor, timeout: config.processor_timeout, pool: pool.clone() };
    let consumes = vec![Consumes::new(topology::GATEWAY, Arc::new(handler))];
    let service = service::start(SERVICE, config.common, consumes, stop.clone()).await?;
    let vault_addr =
        vault::serve(config.vault_addr, pool, stop).await.map_err(|source| StartError::Health { addr: config.vault_addr, source })?;
    tracing::info!(%vault_addr, "vault listening");
    Ok(RunningGateway { service, vault_addr })
}
