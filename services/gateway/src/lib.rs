//! `payment-gateway`: the only service that talks to the card processor, and
//! the only one that ever holds a card number (in its vault).

pub mod calls;
pub mod card;
pub mod events;
mod handler;
mod metrics;
pub mod processor;
pub mod sandbox;
pub mod stripe;
pub mod vault;
mod vouch;

use ps_contract::session::Mode;
use ps_runtime::config::Secret;
use ps_runtime::config::{ConfigError, Env};
use ps_runtime::sealing::Keyring;
use ps_runtime::service::{self, Consumes, Running, StartError};
use ps_runtime::{topology, Config};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "payment-gateway";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about: "The payment gateway: the processor connector (authorize, capture, void, resolve by lookup), its card vault and the sandbox processor.",
    vars: &[
        ("PROCESSOR", "the processor connector: `sandbox` (refused in live mode) or `stripe`"),
        ("VAULT_TLS_CERT_FILE", "the vault's certificate chain, PEM (required in live mode)"),
        ("VAULT_TLS_KEY_FILE", "the vault's private key, PEM (required in live mode)"),
        ("VAULT_ORPHAN_AFTER_SECS", "a vaulted card number no attempt or saved method took is deleted after this long (a checkout that crashed mid-submit)"),
        ("VAULT_ADDR", "where the card vault listens"),
        ("VAULT_TOKEN", "bearer token the checkout must present to the vault (at least 32 characters; required)"),
        ("PROCESSOR_TIMEOUT_MS", "a processor call unanswered this long has an unknown outcome, resolved later by lookup"),
        ("SANDBOX_LATENCY_MS", "delay the sandbox processor adds to every call"),
        ("STRIPE_SECRET_KEY", "Stripe's secret (or restricted) key, sk_test_… or sk_live_… as PS_MODE (PROCESSOR=stripe)"),
        ("STRIPE_API_BASE", "Stripe's API (https in live mode)"),
        ("STRIPE_WEBHOOK_SECRET", "the signing secret (whsec_…) of the webhook endpoint registered at Stripe for PROCESSOR_EVENTS_ADDR"),
        ("PROCESSOR_EVENTS_ADDR", "where the processor's events (Stripe's webhooks) are taken, at /v1/processors/stripe/events"),
        ("PROCESSOR_EVENTS_TLS_CERT_FILE", "its certificate chain, PEM (else TLS ends at an ingress in front)"),
        ("PROCESSOR_EVENTS_TLS_KEY_FILE", "its private key, PEM"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9103;

/// Which `Processor` the gateway calls (`PROCESSOR`). A real acquirer's
/// connector is added here as a variant; see docs/processors.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// Pays by card number (DESIGN §7): never a real payment.
    Sandbox,
    /// Stripe's PaymentIntents API (DESIGN §11).
    Stripe,
}

impl ProcessorKind {
    fn parse(env: &Env, mode: Mode) -> Result<ProcessorKind, ConfigError> {
        let kind = match env.string("PROCESSOR", "sandbox").as_str() {
            "sandbox" => ProcessorKind::Sandbox,
            "stripe" => ProcessorKind::Stripe,
            other => {
                return Err(ConfigError {
                    var: "PROCESSOR",
                    problem: format!("{other:?} is not a processor this build has (sandbox, stripe)"),
                })
            }
        };
        if mode == Mode::Live && kind == ProcessorKind::Sandbox {
            return Err(ConfigError {
                var: "PROCESSOR",
                problem: "PS_MODE=live refuses the sandbox processor, which approves any Luhn-valid card; configure a real connector"
                    .into(),
            });
        }
        Ok(kind)
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub common: Config,
    /// Seals the vault's card numbers.
    pub keys: Keyring,
    pub processor: ProcessorKind,
    /// Where the vault takes card numbers from the checkout.
    pub vault_addr: SocketAddr,
    /// What the checkout must present to the vault.
    pub vault_token: Secret,
    /// The vault's certificate chain and key; required in live mode.
    pub vault_tls: Option<(PathBuf, PathBuf)>,
    pub processor_timeout: Duration,
    pub sandbox_latency: Duration,
    /// `PROCESSOR=stripe`: its keys and API.
    pub stripe: Option<stripe::StripeConfig>,
    /// Where the processor's events (Stripe's webhooks) are taken, and its TLS.
    pub events_addr: SocketAddr,
    pub events_tls: Option<(PathBuf, PathBuf)>,
    /// A vaulted card no attempt or saved method took loses its number after this long.
    pub orphan_after: Duration,
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Result<GatewayConfig, ConfigError> {
        let mut common = Config::from_env(env, DEFAULT_HEALTH_PORT)?;
        // Each message is a processor call: batched, they would wait on each
        // other's calls inside one transaction. The gateway applies them alone.
        common.batch = 1;
        let mode = common.mode;
        let vault_tls = |env: &Env, mode: Mode| -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
            match env.cert_pair("VAULT_TLS_CERT_FILE", "VAULT_TLS_KEY_FILE")? {
                None if mode == Mode::Live => Err(ConfigError {
                    var: "VAULT_TLS_CERT_FILE",
                    problem: "PS_MODE=live serves the vault over TLS only: set VAULT_TLS_CERT_FILE and VAULT_TLS_KEY_FILE".into(),
                }),
                pair => Ok(pair),
            }
        };
        let processor = ProcessorKind::parse(env, mode)?;
        let https_only: &[&str] = if mode == Mode::Live { &["https"] } else { &["http", "https"] };
        let stripe = match processor {
            ProcessorKind::Sandbox => None,
            ProcessorKind::Stripe => Some(stripe::StripeConfig {
                secret_key: env.mode_key("STRIPE_SECRET_KEY", &["sk", "rk"], mode)?,
                api_base: env.url("STRIPE_API_BASE", "https://api.stripe.com", https_only)?,
                webhook_secret: env.secret(
                    "STRIPE_WEBHOOK_SECRET",
                    16,
                    "the signing secret of the webhook endpoint registered at Stripe, whsec_…",
                )?,
            }),
        };
        let events_tls = env.cert_pair("PROCESSOR_EVENTS_TLS_CERT_FILE", "PROCESSOR_EVENTS_TLS_KEY_FILE")?;
        Ok(GatewayConfig {
            processor,
            stripe,
            events_addr: env.parsed("PROCESSOR_EVENTS_ADDR", SocketAddr::from(([127, 0, 0, 1], 9111)))?,
            events_tls,
            keys: common.require_secret_keys()?,
            common,
            vault_addr: env.parsed("VAULT_ADDR", SocketAddr::from(([127, 0, 0, 1], 9110)))?,
            vault_token: env.secret("VAULT_TOKEN", 32, "the bearer token the checkout presents to the vault")?,
            vault_tls: vault_tls(env, mode)?,
            processor_timeout: Duration::from_millis(env.ranged("PROCESSOR_TIMEOUT_MS", 10_000, 10, 120_000)?),
            sandbox_latency: Duration::from_millis(env.ranged("SANDBOX_LATENCY_MS", 0, 0, 60_000)?),
            orphan_after: Duration::from_secs(env.ranged("VAULT_ORPHAN_AFTER_SECS", 900, 1, 86_400)?),
        })
    }
}

pub struct RunningGateway {
    pub service: Running,
    pub vault_addr: SocketAddr,
    /// Where Stripe's events are taken (PROCESSOR=stripe).
    pub events_addr: Option<SocketAddr>,
}

pub async fn start(config: GatewayConfig, stop: CancellationToken) -> Result<RunningGateway, StartError> {
    let pool = ps_runtime::db::pool(config.common.database_url.expose(), config.common.database_pool_size, &config.common.trust)?;
    let client_tls = config.common.trust.client_config()?;
    let processor: Arc<dyn processor::Processor> = match (config.processor, &config.stripe) {
        (ProcessorKind::Stripe, Some(stripe)) => {
            Arc::new(stripe::StripeProcessor::new(stripe.clone(), pool.clone(), client_tls).map_err(StartError::HttpClient)?)
        }
        _ => Arc::new(sandbox::SandboxProcessor::new(pool.clone(), config.keys.clone(), config.sandbox_latency)),
    };
    let (calls, logging) = calls::CallLog::start(pool.clone(), stop.clone());
    let handler = handler::GatewayHandler::new(processor.clone(), config.processor_timeout, calls, pool.clone());
    let consumes = vec![Consumes::new(topology::GATEWAY, Arc::new(handler))];
    let tls = match &config.vault_tls {
        Some((cert, key)) => Some(ps_runtime::tls::server_config(cert, key)?),
        None => None,
    };
    // Bound before the service starts: a port it cannot have stops it before it says ready.
    let listen = |addr: SocketAddr| ps_runtime::web::bind(addr).map_err(|source| StartError::Listen { addr, source });
    let vault_listener = listen(config.vault_addr)?;
    let events_listener = config.stripe.as_ref().map(|_| listen(config.events_addr)).transpose()?;
    let service = service::start(SERVICE, config.common, consumes, stop.clone()).await?;
    let encrypted = tls.is_some();
    let vault_addr = vault::serve(vault_listener, pool, config.keys, config.vault_token, processor.clone(), tls, stop.clone())
        .map_err(|source| StartError::Listen { addr: config.vault_addr, source })?;
    tracing::info!(%vault_addr, tls = encrypted, "vault listening");
    let events_addr = match (&config.stripe, events_listener) {
        (Some(stripe), Some(listener)) => {
            let events_tls = match &config.events_tls {
                Some((cert, key)) => Some(ps_runtime::tls::server_config(cert, key)?),
                None => None,
            };
            let events =
                events::StripeEvents::new(service.pool.clone(), service.outbox.clone(), stripe.webhook_secret.clone(), processor.clone());
            let addr = events::serve(listener, events, events_tls, stop.clone())
                .map_err(|source| StartError::Listen { addr: config.events_addr, source })?;
            tracing::info!(%addr, "processor events listening");
            Some(addr)
        }
        _ => None,
    };
    let sweeping = tokio::spawn(sweep_orphans(service.pool.clone(), config.orphan_after, stop));
    Ok(RunningGateway { service: service.with_task(sweeping).with_task(logging), vault_addr, events_addr })
}

/// Deletes the numbers of vaulted cards nothing took, every so often.
async fn sweep_orphans(pool: deadpool_postgres::Pool, after: Duration, stop: CancellationToken) {
    let every = (after / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        match vault::forget_orphans(&pool, after).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(forgotten = n, "card numbers no attempt took were deleted from the vault"),
            Err(e) => tracing::warn!(error = %e, "orphaned cards not swept"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn live_mode_refuses_the_sandbox() {
        let token = ("VAULT_TOKEN", "t".repeat(32));
        let env = |extra: &[(&'static str, &str)]| {
            let mut pairs = vec![(token.0, token.1.as_str()), ("PS_SECRET_KEYS", KEYS)];
            pairs.extend_from_slice(extra);
            Env::from_pairs(pairs)
        };
        let live_links = [
            ("PS_MODE", "live"),
            ("AMQP_URL", "amqps://ps-gateway:pw@rabbit:5671/%2f"),
            ("DATABASE_URL", "postgres://ps_gateway:pw@db/ps?sslmode=verify-full"),
        ];
        let err = GatewayConfig::from_env(&env(&live_links)).unwrap_err();
        assert_eq!(err.var, "PROCESSOR");
        assert!(err.to_string().contains("sandbox") && !err.to_string().contains('\n'), "{err}");
        assert_eq!(GatewayConfig::from_env(&env(&[])).unwrap().processor, ProcessorKind::Sandbox);
        assert_eq!(GatewayConfig::from_env(&env(&[("PROCESSOR", "acme")])).unwrap_err().var, "PROCESSOR");
    }

    #[test]
    fn the_vault_needs_a_token_and_in_live_mode_tls() {
        let keys = ("PS_SECRET_KEYS", KEYS);
        assert_eq!(GatewayConfig::from_env(&Env::from_pairs([keys])).unwrap_err().var, "VAULT_TOKEN");
        assert_eq!(GatewayConfig::from_env(&Env::from_pairs([keys, ("VAULT_TOKEN", "short")])).unwrap_err().var, "VAULT_TOKEN");
        let t = "t".repeat(32);
        let half = Env::from_pairs([keys, ("VAULT_TOKEN", t.as_str()), ("VAULT_TLS_CERT_FILE", "/c.pem")]);
        assert_eq!(GatewayConfig::from_env(&half).unwrap_err().var, "VAULT_TLS_KEY_FILE");
        assert!(format!("{:?}", GatewayConfig::from_env(&Env::from_pairs([keys, ("VAULT_TOKEN", t.as_str())])).unwrap()).contains("***"));
        assert_eq!(GatewayConfig::from_env(&Env::from_pairs([("VAULT_TOKEN", t.as_str())])).unwrap_err().var, "PS_SECRET_KEYS");
    }

    #[test]
    fn stripe_keys_match_the_mode() {
        let token = "t".repeat(32);
        let live = [
            ("PS_MODE", "live"),
            ("AMQP_URL", "amqps://ps-gateway:pw@rabbit:5671/%2f"),
            ("DATABASE_URL", "postgres://ps_gateway:pw@db/ps?sslmode=verify-full"),
            ("VAULT_TLS_CERT_FILE", "/etc/ps/vault.pem"),
            ("VAULT_TLS_KEY_FILE", "/etc/ps/vault.key"),
        ];
        let stripe = |mode: &[(&'static str, &'static str)], key: &'static str, base: Option<&'static str>| {
            let mut pairs = vec![
                ("PS_SECRET_KEYS", KEYS),
                ("VAULT_TOKEN", token.as_str()),
                ("PROCESSOR", "stripe"),
                ("STRIPE_SECRET_KEY", key),
                ("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef"),
            ];
            pairs.extend_from_slice(mode);
            pairs.extend(base.map(|b| ("STRIPE_API_BASE", b)));
            GatewayConfig::from_env(&Env::from_pairs(pairs))
        };
        let config = stripe(&live, "sk_live_0123456789abcdef", None).expect("live mode starts with a live key");
        assert_eq!(config.processor, ProcessorKind::Stripe);
        let stripe_config = config.stripe.as_ref().unwrap();
        assert_eq!(stripe_config.api_base, "https://api.stripe.com");
        assert!(!format!("{config:?}").contains("sk_live_0123456789abcdef"), "the key is never printed");
        assert!(stripe(&live, "rk_live_0123456789abcdef", None).is_ok(), "a restricted live key is a live key");
        let refused = stripe(&live, "sk_test_0123456789abcdef", None).unwrap_err();
        assert_eq!(refused.var, "STRIPE_SECRET_KEY");
        assert!(refused.to_string().contains("test key") && !refused.to_string().contains("0123456789"), "{refused}");
        assert_eq!(stripe(&[], "sk_live_0123456789abcdef", None).unwrap_err().var, "STRIPE_SECRET_KEY", "test mode refuses a live key");
        assert!(stripe(&[], "sk_test_0123456789abcdef", None).is_ok());
        assert_eq!(
            stripe(&[], "pk_test_0123456789abcdef", None).unwrap_err().var,
            "STRIPE_SECRET_KEY",
            "a publishable key is no secret key"
        );
        let plain = stripe(&live, "sk_live_0123456789abcdef", Some("http://stripe.internal")).unwrap_err();
        assert_eq!(plain.var, "STRIPE_API_BASE", "live mode reaches Stripe over https only");
        assert!(stripe(&[], "sk_test_0123456789abcdef", Some("http://127.0.0.1:12111")).is_ok());
        let no_secret = Env::from_pairs([
            ("PS_SECRET_KEYS", KEYS),
            ("VAULT_TOKEN", token.as_str()),
            ("PROCESSOR", "stripe"),
            ("STRIPE_SECRET_KEY", "sk_test_0123456789abcdef"),
        ]);
        assert_eq!(GatewayConfig::from_env(&no_secret).unwrap_err().var, "STRIPE_WEBHOOK_SECRET");
    }
}
