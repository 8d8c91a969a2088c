//! `session-lifecycle`: owns session state after creation, payments, mandates
//! and saved payment methods.

mod commands;
pub mod expiry;
mod mandates;
mod refunds;
mod results;

use chrono::Utc;
use deadpool_postgres::Transaction;
use futures::future::BoxFuture;
use ps_contract::internal::{CustomerCancel, DisputeNotice, GatewayResult};
use ps_contract::routing::internal;
use ps_runtime::config::{ConfigError, Env};
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::{topology, Admission, Config, Handled, Handler, HandlerError, Incoming};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "session-lifecycle";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about: "Session lifecycle: applies gateway results, cancels, captures, voids, revokes mandates, answers reads, and sweeps expired sessions and unanswered attempts.",
    vars: &[
        ("EXPIRY_SWEEP_INTERVAL_MS", "how often the sweep runs (expiry, unanswered attempts and settlements)"),
        ("ATTEMPT_ABANDON_AFTER_SECS", "an attempt unanswered this long is resolved with the processor"),
        ("SETTLEMENT_RETRY_AFTER_SECS", "a capture, void or refund unanswered this long is asked for again"),
        ("CHECKOUT_MAX_FAILED_ATTEMPTS", "failed payment attempts before a session fails"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9104;

#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub common: Config,
    pub expiry_interval: Duration,
    pub abandon_after: Duration,
    pub settle_retry_after: Duration,
    /// Failed attempts a customer-present session allows before it ends unpaid (a card-testing limit).
    pub max_failed_attempts: u32,
}

impl LifecycleConfig {
    pub fn from_env(env: &Env) -> Result<LifecycleConfig, ConfigError> {
        Ok(LifecycleConfig {
            common: Config::from_env(env, DEFAULT_HEALTH_PORT)?,
            expiry_interval: Duration::from_millis(env.ranged("EXPIRY_SWEEP_INTERVAL_MS", 5_000, 10, 3_600_000)?),
            abandon_after: Duration::from_secs(env.ranged("ATTEMPT_ABANDON_AFTER_SECS", 900, 1, 86_400)?),
            settle_retry_after: Duration::from_secs(env.ranged("SETTLEMENT_RETRY_AFTER_SECS", 60, 1, 86_400)?),
            max_failed_attempts: env.ranged("CHECKOUT_MAX_FAILED_ATTEMPTS", 5, 1, 100)? as u32,
        })
    }
}

struct LifecycleHandler {
    max_failed_attempts: u32,
}

impl Handler for LifecycleHandler {
    /// A processor's answer comes from the gateway, which the consumer checked
    /// (DESIGN §10); a command needs its merchant's grant.
    fn admit<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Admission, HandlerError>> {
        Box::pin(async move {
            match msg.routing_key.as_str() {
                internal::GATEWAY_RESULT | internal::GATEWAY_DISPUTE | internal::CHECKOUT_CANCEL => Ok(Admission::Apply),
                _ => ps_store::commands::admit(tx, msg).await,
            }
        })
    }

    fn handle<'a>(&'a self, tx: &'a Transaction<'_>, msg: &'a Incoming) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        Box::pin(async move {
            let now = Utc::now();
            match msg.routing_key.as_str() {
                internal::GATEWAY_RESULT => match serde_json::from_slice::<GatewayResult>(&msg.body) {
                    Ok(r) => results::apply(tx, &r, now, self.max_failed_attempts).await,
                    Err(e) => Ok(Handled::dead_lettered("invalid_message", e.to_string())),
                },
                internal::GATEWAY_DISPUTE => match serde_json::from_slice::<DisputeNotice>(&msg.body) {
                    Ok(d) => results::disputed(tx, &d, now).await,
                    Err(e) => Ok(Handled::dead_lettered("invalid_message", e.to_string())),
                },
                internal::CHECKOUT_CANCEL => match serde_json::from_slice::<CustomerCancel>(&msg.body) {
                    Ok(c) => commands::customer_cancel(tx, &c, now).await,
                    Err(e) => Ok(Handled::dead_lettered("invalid_message", e.to_string())),
                },
                _ => commands::handle(tx, msg, now).await,
            }
        })
    }
}

pub async fn start(config: LifecycleConfig, stop: CancellationToken) -> Result<Running, StartError> {
    let consumes = vec![Consumes::new(topology::LIFECYCLE, Arc::new(LifecycleHandler { max_failed_attempts: config.max_failed_attempts }))];
    let running = service::start(SERVICE, config.common, consumes, stop.clone()).await?;
    let sweeper = expiry::Sweeper {
        pool: running.pool.clone(),
        outbox: running.outbox.clone(),
        interval: config.expiry_interval,
        abandon_after: config.abandon_after,
        settle_retry_after: config.settle_retry_after,
    };
    let sweeping = tokio::spawn(sweeper.run(stop));
    Ok(running.with_task(sweeping))
}
