//! `session-intake`: consumes `payment_session.create`.

mod create;
mod metrics;
mod series;
mod store;

use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::topology;
use ps_runtime::Config;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "session-intake";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about: "Session intake: validates payment_session.create, creates the session (and a next_in_series charge's payment) and answers.",
    vars: &[("CHECKOUT_BASE_URL", "base of every session_url the checkout serves")],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9101;
pub const DEFAULT_CHECKOUT_BASE_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone)]
pub struct IntakeConfig {
    pub common: Config,
    pub checkout_base_url: String,
}

impl IntakeConfig {
    pub fn from_env(env: &Env) -> Result<IntakeConfig, ConfigError> {
        let common = Config::from_env(env, DEFAULT_HEALTH_PORT)?;
        // A session_url carries its checkout token: in live mode it is never sent in clear.
        let schemes: &[&str] = if common.mode == ps_contract::session::Mode::Live { &["https"] } else { &["http", "https"] };
        Ok(IntakeConfig { checkout_base_url: env.url("CHECKOUT_BASE_URL", DEFAULT_CHECKOUT_BASE_URL, schemes)?, common })
    }
}

pub async fn start(config: IntakeConfig, stop: CancellationToken) -> Result<Running, StartError> {
    let handler = create::CreateHandler { checkout_base_url: config.checkout_base_url, mode: config.common.mode };
    let consumes = vec![Consumes::new(topology::INTAKE, Arc::new(handler))];
    service::start(SERVICE, config.common, consumes, stop).await
}
