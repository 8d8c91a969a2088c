//! `webhook-dispatch`: every event, to every merchant endpoint that subscribes
//! to it, signed (Standard Webhooks), retried on a schedule that survives
//! restarts, never to private addresses.

pub mod deliver;
mod endpoints;
pub mod guard;
mod ingest;
mod metrics;
pub mod schedule;

use ps_runtime::config::{ConfigError, Env};
use ps_runtime::sealing::Keyring;
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::{topology, Config};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "webhook-dispatch";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about:
        "Webhook dispatch: records every event, delivers it signed to each endpoint of its merchant with retries, and manages endpoints.",
    vars: &[
        (
            "WEBHOOK_RETRY_SCHEDULE_SECS",
            "delays between delivery attempts, comma-separated seconds (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h)",
        ),
        ("WEBHOOK_ALLOWED_CIDRS", "special (private, loopback) address ranges endpoints may still resolve to, comma-separated CIDRs"),
        ("WEBHOOK_TIMEOUT_MS", "a delivery unanswered this long has failed"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "deliveries in flight to one endpoint at most"),
        ("WEBHOOK_CONCURRENCY", "deliveries in flight at most"),
        ("WEBHOOK_POLL_MS", "how often due deliveries are looked for"),
        ("WEBHOOK_DISABLE_AFTER_SECS", "an endpoint failing without a success for this long is disabled"),
        ("WEBHOOK_LOCAL_MODE", "allow plain http and loopback endpoints (test mode only; refused in live mode)"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_MERCHANT", "deliveries in flight to one merchant's endpoints together at most"),
        ("WEBHOOK_MAX_ENDPOINTS_PER_MERCHANT", "webhook endpoints one merchant may have"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9106;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub common: Config,
    /// Seals the endpoints' signing secrets (and replies that carry one).
    pub keys: Keyring,
    pub delivery: deliver::DeliveryConfig,
    /// `make run`'s local mode: http and loopback targets are allowed.
    pub local_mode: bool,
    pub allowed: Vec<ipnet::IpNet>,
    pub max_endpoints_per_merchant: i64,
}

impl WebhookConfig {
    pub fn from_env(env: &Env) -> Result<WebhookConfig, ConfigError> {
        let schedule = match env.raw("WEBHOOK_RETRY_SCHEDULE_SECS") {
            None => schedule::DEFAULT_SCHEDULE.to_vec(),
            Some(s) => schedule::parse_schedule(s).map_err(|problem| ConfigError { var: "WEBHOOK_RETRY_SCHEDULE_SECS", problem })?,
        };
        let allowed = env
            .raw("WEBHOOK_ALLOWED_CIDRS")
            .map(|s| s.split(',').map(|c| c.trim().parse::<ipnet::IpNet>()).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|e| ConfigError { var: "WEBHOOK_ALLOWED_CIDRS", problem: format!("not a list of CIDR ranges: {e}") })?
            .unwrap_or_default();
        let common = Config::from_env(env, DEFAULT_HEALTH_PORT)?;
        let local_mode = env.flag("WEBHOOK_LOCAL_MODE", false)?;
        if local_mode && common.mode == ps_contract::session::Mode::Live {
            return Err(ConfigError {
                var: "WEBHOOK_LOCAL_MODE",
                problem: "allows plain http and loopback endpoints: unset it for PS_MODE=live".into(),
            });
        }
        Ok(WebhookConfig {
            keys: common.require_secret_keys()?,
            common,
            delivery: deliver::DeliveryConfig {
                timeout: Duration::from_millis(env.ranged("WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000)?),
                schedule,
                per_endpoint: env.ranged("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", 8, 1, 1000)? as i64,
                per_merchant: env.ranged("WEBHOOK_MAX_IN_FLIGHT_PER_MERCHANT", 64, 1, 10_000)? as i64,
                concurrency: env.ranged("WEBHOOK_CONCURRENCY", 256, 1, 10_000)? as usize,
                poll: Duration::from_millis(env.ranged("WEBHOOK_POLL_MS", 250, 10, 60_000)?),
                disable_after: Duration::from_secs(env.ranged("WEBHOOK_DISABLE_AFTER_SECS", 5 * 86_400, 1, 365 * 86_400)?),
            },
            local_mode,
            allowed,
            max_endpoints_per_merchant: env.ranged("WEBHOOK_MAX_ENDPOINTS_PER_MERCHANT", 16, 1, 1000)? as i64,
        })
    }
}

pub async fn start(config: WebhookConfig, stop: CancellationToken) -> Result<Running, StartError> {
    let mut allowed = config.allowed.clone();
    if config.local_mode {
        allowed.extend(["127.0.0.0/8", "::1/128"].iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok()));
    }
    let guard = Arc::new(guard::Guard { allowed });
    let wake = Arc::new(Notify::new());
    let endpoints = endpoints::EndpointHandler {
        guard: guard.clone(),
        // Plain http only in local mode: an allow-list for private ranges
        // (a test receiver, an internal relay) does not open http to everyone.
        allow_http: config.local_mode,
        dispatcher: wake.clone(),
        keys: config.keys.clone(),
        max_per_merchant: config.max_endpoints_per_merchant,
    };
    let consumes = vec![
        Consumes { queue: topology::WEBHOOK_EVENTS, handler: Arc::new(ingest::IngestHandler), after_commit: Some(wake.clone()) },
        Consumes::new(topology::WEBHOOK_COMMANDS, Arc::new(endpoints)),
    ];
    let tls = config.common.trust.client_config().map_err(StartError::Tls)?;
    let running = service::start(SERVICE, config.common, consumes, stop.clone()).await?;
    let poll = config.delivery.poll;
    let dispatcher = deliver::Dispatcher::new(running.pool.clone(), config.delivery, guard, wake, running.outbox.clone(), tls, config.keys)
        .map_err(StartError::HttpClient)?;
    let delivering = tokio::spawn(Arc::new(dispatcher).run(stop.clone()));
    // The backlog gauges cost a count over pending deliveries: every 40 polls, at most every 10 s.
    let every = (poll * 40).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let watching = tokio::spawn(metrics::watch_backlog(running.pool.clone(), every, stop));
    Ok(running.with_task(delivering).with_task(watching))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_mode_refuses_local_mode() {
        let vars = [
            ("PS_MODE", "live"),
            ("AMQP_URL", "amqps://ps-webhooks:pw@rabbit:5671/%2f"),
            ("DATABASE_URL", "postgres://ps_webhooks:pw@db/ps?sslmode=verify-full"),
            ("PS_SECRET_KEYS", "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ];
        assert!(WebhookConfig::from_env(&Env::from_pairs(vars)).is_ok());
        let mut local = vars.to_vec();
        local.push(("WEBHOOK_LOCAL_MODE", "true"));
        assert_eq!(WebhookConfig::from_env(&Env::from_pairs(local)).unwrap_err().var, "WEBHOOK_LOCAL_MODE");
    }
}
