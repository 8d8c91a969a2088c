//! `checkout`: the hosted page behind a session's `session_url`.

mod app;
pub mod i18n;
pub mod pages;
pub mod terms;

use ps_contract::session::Mode;
use ps_runtime::config::{ConfigError, Env, Secret};
use ps_runtime::service::{self, Running, StartError};
use ps_runtime::Config;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "checkout";

/// `--help`: what this binary is and what its own variables mean.
pub const MANUAL: ps_runtime::config::Manual = ps_runtime::config::Manual {
    name: SERVICE,
    version: env!("CARGO_PKG_VERSION"),
    about: "The hosted checkout page at each session's session_url: shows the terms, takes the card (into the gateway's vault) and submits the payment.",
    vars: &[
        ("CHECKOUT_ADDR", "where the checkout page is served"),
        ("VAULT_URL", "the gateway's card vault (https in live mode)"),
        ("VAULT_TOKEN", "bearer token presented to the vault (at least 32 characters; required)"),
        ("CHECKOUT_SUBMITS_PER_MINUTE", "card submissions a minute per client IP, whatever session they aim at (card-testing limit)"),
        ("CHECKOUT_CLIENT_IP_HEADER", "header carrying the client IP from a trusted proxy (e.g. x-forwarded-for); unset: the peer address"),
        ("CHECKOUT_VIEWS_PER_MINUTE", "page loads a minute per client IP, whatever session they aim at"),
        ("CHECKOUT_BASE_URL", "where customers reach the checkout (https required in live mode; https makes its cookies Secure and __Host-)"),
        ("PROCESSOR", "the gateway's processor (`sandbox` or `stripe`): with stripe the page runs Stripe.js for 3-D Secure"),
        ("STRIPE_JS_URL", "where the page loads Stripe.js from (PROCESSOR=stripe)"),
        ("STRIPE_PUBLISHABLE_KEY", "Stripe's publishable key, pk_test_… or pk_live_… as PS_MODE (PROCESSOR=stripe)"),
    ],
};
pub const DEFAULT_HEALTH_PORT: u16 = 9102;

#[derive(Debug, Clone)]
pub struct CheckoutConfig {
    pub common: Config,
    pub addr: SocketAddr,
    pub vault_url: String,
    pub vault_token: Secret,
    /// Card submissions one client may make a minute (a card-testing limit).
    pub submits_per_minute: u32,
    /// Page loads one client may make a minute (token guessing, scraping).
    pub views_per_minute: u32,
    /// Served over https (its public URL): cookies are `Secure` and `__Host-`.
    pub https: bool,
    /// With `PROCESSOR=stripe`: Stripe.js, for the challenges of 3-D Secure.
    pub stripe: Option<app::StripeBrowser>,
    /// The header a trusted proxy in front writes the client's address into
    /// (its first entry counts); unset, the connection's peer is the client.
    pub client_ip_header: Option<String>,
}

impl CheckoutConfig {
    pub fn from_env(env: &Env) -> Result<CheckoutConfig, ConfigError> {
        let common = Config::from_env(env, DEFAULT_HEALTH_PORT)?;
        // Card numbers cross this channel: in live mode it is encrypted or nothing.
        let schemes: &[&str] = if common.mode == Mode::Live { &["https"] } else { &["http", "https"] };
        Ok(CheckoutConfig {
            addr: env.parsed("CHECKOUT_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            vault_url: env.url("VAULT_URL", "http://127.0.0.1:9110", schemes)?,
            vault_token: env.secret("VAULT_TOKEN", 32, "the bearer token the vault expects")?,
            submits_per_minute: env.ranged("CHECKOUT_SUBMITS_PER_MINUTE", 10, 1, 10_000)? as u32,
            views_per_minute: env.ranged("CHECKOUT_VIEWS_PER_MINUTE", 120, 1, 100_000)? as u32,
            https: env.url("CHECKOUT_BASE_URL", "http://127.0.0.1:8080", schemes)?.starts_with("https://"),
            stripe: match env.string("PROCESSOR", "sandbox").as_str() {
                "sandbox" => None,
                "stripe" => {
                    let js = env.url("STRIPE_JS_URL", "https://js.stripe.com/v3/", schemes)?;
                    let pk = env.mode_key("STRIPE_PUBLISHABLE_KEY", &["pk"], common.mode)?;
                    Some(
                        app::StripeBrowser::new(js, pk.expose().to_owned())
                            .map_err(|problem| ConfigError { var: "STRIPE_JS_URL", problem })?,
                    )
                }
                other => return Err(ConfigError { var: "PROCESSOR", problem: format!("{other:?} is not one of sandbox, stripe") }),
            },
            client_ip_header: env.raw("CHECKOUT_CLIENT_IP_HEADER").map(str::to_ascii_lowercase),
            common,
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
    let tls = config.common.trust.client_config()?;
    // Bound before the service starts: a port it cannot have stops it before it says ready.
    let listener = tokio::net::TcpListener::bind(config.addr).await.map_err(|source| StartError::Listen { addr: config.addr, source })?;
    let service = service::start(SERVICE, config.common, vec![], stop.clone()).await?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(StartError::HttpClient)?;
    let state = app::AppState {
        pool: service.pool.clone(),
        outbox: service.outbox.clone(),
        vault_url: config.vault_url,
        vault_token: config.vault_token,
        http,
        limiter: std::sync::Arc::new(app::ClientLimiter::new(config.submits_per_minute, config.client_ip_header.clone())),
        views: std::sync::Arc::new(app::ClientLimiter::new(config.views_per_minute, config.client_ip_header)),
        https: config.https,
        stripe: config.stripe.map(std::sync::Arc::new),
    };
    let (limiter, views, pruning) = (state.limiter.clone(), state.views.clone(), stop.clone());
    tokio::spawn(async move {
        while tokio::time::timeout(std::time::Duration::from_secs(60), pruning.cancelled()).await.is_err() {
            limiter.prune();
            views.prune();
        }
    });
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app::router(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "checkout server stopped");
        }
    });
    tracing::info!(%addr, "checkout listening");
    Ok(RunningCheckout { service, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_mode_sends_cards_to_the_vault_over_tls_only() {
        let token = "t".repeat(32);
        let env = |mode: &'static str, url: &'static str| {
            Env::from_pairs([
                ("PS_MODE", mode),
                ("VAULT_URL", url),
                ("VAULT_TOKEN", token.as_str()),
                ("AMQP_URL", "amqps://ps-checkout:pw@rabbit:5671/%2f"),
                ("DATABASE_URL", "postgres://ps_checkout:pw@db/ps?sslmode=verify-full"),
                ("CHECKOUT_BASE_URL", "https://pay.example.com"),
            ])
        };
        let err = CheckoutConfig::from_env(&env("live", "http://vault:9110")).unwrap_err();
        assert_eq!(err.var, "VAULT_URL");
        let plain_page = Env::from_pairs([
            ("PS_MODE", "live"),
            ("VAULT_URL", "https://vault:9110"),
            ("VAULT_TOKEN", token.as_str()),
            ("AMQP_URL", "amqps://ps-checkout:pw@rabbit:5671/%2f"),
            ("DATABASE_URL", "postgres://ps_checkout:pw@db/ps?sslmode=verify-full"),
            ("CHECKOUT_BASE_URL", "http://pay.example.com"),
        ]);
        assert_eq!(
            CheckoutConfig::from_env(&plain_page).unwrap_err().var,
            "CHECKOUT_BASE_URL",
            "live mode serves customers over https only"
        );
        assert!(CheckoutConfig::from_env(&env("live", "https://vault:9110")).is_ok());
        assert!(CheckoutConfig::from_env(&env("test", "http://127.0.0.1:9110")).is_ok());
        assert_eq!(CheckoutConfig::from_env(&Env::from_pairs([])).unwrap_err().var, "VAULT_TOKEN");
        assert!(format!("{:?}", CheckoutConfig::from_env(&env("live", "https://vault:9110")).unwrap()).contains("***"));
    }
}
