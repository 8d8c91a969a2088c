//! Typed configuration from the environment. A bad value stops start-up with
//! one line naming the variable and what is wrong with it.

use crate::sealing::Keyring;
use crate::tls::Trust;
use ps_contract::session::Mode;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

pub use ps_contract::secret::{Secret, SecretUrl};

/// Where variables come from: the process environment, or a map in tests.
/// It notes every variable asked for, with its default, so `--help` and
/// `docs/configuration.md` list what the code really reads.
pub struct Env {
    vars: HashMap<String, String>,
    read: std::cell::RefCell<Vec<(&'static str, Option<String>)>>,
}

/// One variable a binary reads, as `--help` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// The default as the code has it; `None` where there is none (required, or off when unset).
    pub default: Option<String>,
    pub about: &'static str,
}

impl Env {
    pub fn from_process() -> Env {
        Env::from_map(std::env::vars().collect())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env::from_map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    fn from_map(vars: HashMap<String, String>) -> Env {
        Env { vars, read: Default::default() }
    }

    /// An environment for listing what a binary reads: empty, except for
    /// stand-ins for the secrets it cannot start without.
    pub fn for_listing() -> Env {
        // The Stripe connector's path, so its variables are listed too.
        Env::from_pairs([
            ("PS_SECRET_KEYS", "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("VAULT_TOKEN", "listing-listing-listing-listing-listing"),
            ("PROCESSOR", "stripe"),
            ("STRIPE_SECRET_KEY", "sk_test_listing_listing"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_listing_listing"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_listing_listing"),
        ])
    }

    /// Every variable asked for so far, in the order first asked, with the
    /// descriptions from `about` (common ones first searched in [`COMMON_VARS`]).
    pub fn listing(&self, about: &[(&'static str, &'static str)]) -> Result<Vec<Var>, &'static str> {
        let mut out: Vec<Var> = Vec::new();
        for (name, default) in self.read.borrow().iter() {
            if let Some(v) = out.iter_mut().find(|v| v.name == *name) {
                v.default = v.default.take().or_else(|| default.clone());
                continue;
            }
            let about = about.iter().chain(COMMON_VARS).find(|(n, _)| n == name).map(|(_, a)| *a).ok_or(*name)?;
            out.push(Var { name, default: default.clone(), about });
        }
        Ok(out)
    }

    /// Notes a variable read elsewhere (telemetry reads the process
    /// environment itself), so it is listed.
    pub fn mention(&self, var: &'static str, default: Option<&str>) {
        self.note(var, default.map(str::to_owned));
    }

    fn note(&self, var: &'static str, default: Option<String>) {
        self.read.borrow_mut().push((var, default));
    }

    fn get(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The value if set and not empty; unset means off, or a default worked out by the caller.
    pub fn raw(&self, var: &'static str) -> Option<&str> {
        self.note(var, None);
        self.get(var)
    }

    /// A certificate chain and its key (PEM files), named by two variables
    /// that are set together or not at all.
    pub fn cert_pair(
        &self,
        cert: &'static str,
        key: &'static str,
    ) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>, ConfigError> {
        match (self.raw(cert), self.raw(key)) {
            (Some(c), Some(k)) => Ok(Some((c.into(), k.into()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError { var: key, problem: format!("is required with {cert}") }),
            (None, Some(_)) => Err(ConfigError { var: cert, problem: format!("is required with {key}") }),
        }
    }

    pub fn string(&self, var: &'static str, default: &str) -> String {
        self.note(var, Some(default.to_owned()));
        self.get(var).unwrap_or(default).to_owned()
    }

    pub fn parsed<T: FromStr + fmt::Display>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(var, Some(default.to_string()));
        match self.get(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError { var, problem: format!("{v:?} is not valid: {e}") }),
        }
    }

    pub fn ranged(&self, var: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.note(var, Some(format!("{default} ({min}–{max})")));
        let v = self.parsed(var, default)?;
        if v < min || v > max {
            return Err(ConfigError { var, problem: format!("{v} is outside {min}..={max}") });
        }
        Ok(v)
    }

    /// A required secret of at least `min_len` characters.
    pub fn secret(&self, var: &'static str, min_len: usize, what: &str) -> Result<Secret, ConfigError> {
        match self.raw(var) {
            Some(v) if v.chars().count() >= min_len => Ok(Secret::new(v)),
            Some(_) => Err(ConfigError { var, problem: format!("must be at least {min_len} characters ({what})") }),
            None => Err(ConfigError { var, problem: format!("is required ({what})") }),
        }
    }

    /// A processor key whose prefix says which mode it belongs to (Stripe's
    /// `sk_test_…` / `sk_live_…`, `rk_…` restricted keys, `pk_…` publishable
    /// keys): required, and refused in the other mode, so a live key never
    /// runs a test fleet nor a test key a live one.
    pub fn mode_key(&self, var: &'static str, kinds: &[&str], mode: ps_contract::session::Mode) -> Result<Secret, ConfigError> {
        let expected = if mode == ps_contract::session::Mode::Live { "live" } else { "test" };
        let Some(v) = self.raw(var) else {
            return Err(ConfigError { var, problem: format!("is required ({}_{expected}_…)", kinds.join("_/")) });
        };
        let found = kinds.iter().find_map(|k| v.strip_prefix(k)?.strip_prefix('_')?.split_once('_')).map(|(m, rest)| (m, rest.len()));
        match found {
            Some((m, len)) if m == expected && len >= 8 => Ok(Secret::new(v)),
            Some((m, len)) if len >= 8 && (m == "live" || m == "test") => Err(ConfigError {
                var,
                problem: format!("is a {m} key, and PS_MODE is {expected}: a {m} key never runs a {expected} fleet"),
            }),
            _ => Err(ConfigError { var, problem: format!("is not a key of the form {}_{expected}_…", kinds.join("_/")) }),
        }
    }

    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.note(var, Some(default.to_string()));
        match self.get(var) {
            None => Ok(default),
            Some("1" | "true" | "yes") => Ok(true),
            Some("0" | "false" | "no") => Ok(false),
            Some(v) => Err(ConfigError { var, problem: format!("{v:?} is not a boolean (true/false)") }),
        }
    }

    pub fn url(&self, var: &'static str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let v = self.string(var, default);
        match v.split_once("://") {
            Some((scheme, rest)) if schemes.contains(&scheme) && !rest.is_empty() => Ok(v),
            _ => Err(ConfigError { var, problem: format!("must be a {} URL", schemes.join(" or ")) }),
        }
    }
}

/// What every service's shared configuration means, for `--help` and `docs/configuration.md`.
pub const COMMON_VARS: &[(&str, &str)] = &[
    ("PS_MODE", "`test` or `live`; live refuses the sandbox processor, plain-http webhooks and fault injection"),
    ("PS_FAULT_ABORT_AFTER_COMMIT", "test-only: abort after a handler's commit, before its ack (refused in live mode)"),
    ("PS_FAULT_ABORT_AFTER_BATCH_COMMIT", "test-only: abort after a batch's commit, before its acks (refused in live mode)"),
    ("PS_FAULT_PANIC_ON", "test-only: handlers panic on messages with this routing key (refused in live mode)"),
    ("AMQP_NAME_PREFIX", "prefix for every exchange and queue name (isolates test runs on one broker)"),
    (
        "AMQP_URL",
        "the broker, `amqp://` or `amqps://` (credentials in the URL); several nodes of a cluster comma-separated, each connection trying them in turn",
    ),
    (
        "DATABASE_URL",
        "PostgreSQL, `postgres://`; `sslmode=verify-full` for TLS; several hosts (`h1:5432,h2:5432/db?target_session_attrs=read-write`) to follow a failover to whichever is primary",
    ),
    ("DATABASE_POOL_SIZE", "database connections at most"),
    ("DATABASE_MIGRATE", "migrate the schema at start; off where the role has no DDL rights"),
    ("AMQP_PREFETCH", "unacknowledged messages held per consumer"),
    ("CONSUMER_BATCH", "messages applied together in one transaction at most"),
    (
        "AMQP_DELIVERY_LIMIT",
        "redeliveries before RabbitMQ dead-letters a message that keeps failing; `policy`: declared without one, so a RabbitMQ policy's `delivery-limit` governs and can change without redeclaring",
    ),
    ("AMQP_PUBLISH_TIMEOUT_MS", "how long a publish waits for the broker's confirm"),
    (
        "AMQP_MAX_MESSAGE_BYTES",
        "a message body larger than this is refused unread (message_too_large) and never stored; keep the broker's max_message_size above it",
    ),
    ("HEALTH_ADDR", "where `/healthz`, `/readyz` and `/metrics` are served"),
    ("PS_SECRET_KEYS", "keys sealing secrets at rest, `id:base64(32 bytes)`, comma-separated, newest first"),
    ("SSL_CERT_FILE", "PEM file of CAs trusted beyond the system's (broker, database, webhooks, vault)"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "where spans are exported (OTLP/HTTP); unset: no export"),
    ("RUST_LOG", "log filter, e.g. `info,lapin=warn`"),
];

/// What every service reads. `Debug` shows the URLs without their passwords.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: SecretUrl,
    pub database_url: SecretUrl,
    pub database_pool_size: usize,
    /// Migrate the schema at start. Off where the service's role has no DDL rights.
    pub database_migrate: bool,
    /// Prefixes every exchange and queue name, to isolate test runs on one broker.
    pub name_prefix: String,
    pub prefetch: u16,
    /// Messages applied together in one transaction at most (1: each alone).
    pub batch: u16,
    /// Redeliveries before RabbitMQ dead-letters a message that keeps failing;
    /// `None` (`AMQP_DELIVERY_LIMIT=policy`): a RabbitMQ policy sets it, so it
    /// can change without redeclaring the queues.
    pub delivery_limit: Option<u32>,
    pub publish_timeout: Duration,
    /// Bodies larger than this are refused before they are parsed or stored.
    pub max_message_bytes: usize,
    pub health_addr: SocketAddr,
    pub mode: Mode,
    /// `PS_SECRET_KEYS`: what seals secrets at rest. Required by the services that keep any.
    pub secret_keys: Option<Keyring>,
    /// Roots trusted beyond the system's: `SSL_CERT_FILE`, for amqps, PostgreSQL and HTTPS.
    pub trust: Trust,
    /// Test-only fault injection: abort the process after a handler's commit, before its ack.
    pub fault_abort_after_commit: bool,
    /// Test-only fault injection: abort after a batch's commit (two or more messages), before its acks.
    pub fault_abort_after_batch_commit: bool,
    /// Test-only fault injection: handlers panic on messages with this routing key.
    pub fault_panic_on: Option<String>,
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/payment_sessions";

impl Config {
    /// The keyring, for a service that keeps secrets: without one it must not start.
    pub fn require_secret_keys(&self) -> Result<Keyring, ConfigError> {
        self.secret_keys.clone().ok_or_else(|| ConfigError {
            var: "PS_SECRET_KEYS",
            problem: "is required (id:base64 of 32 random bytes, e.g. k1:$(head -c 32 /dev/urandom | base64))".into(),
        })
    }

    /// `default_health_port` differs per service so a whole fleet fits on one host.
    pub fn from_env(env: &Env, default_health_port: u16) -> Result<Config, ConfigError> {
        let mode = match env.string("PS_MODE", "test").as_str() {
            "test" => Mode::Test,
            "live" => Mode::Live,
            other => return Err(ConfigError { var: "PS_MODE", problem: format!("{other:?} must be test or live") }),
        };
        // Fault injection is for the test suites; a live fleet must not carry it.
        for var in ["PS_FAULT_ABORT_AFTER_COMMIT", "PS_FAULT_ABORT_AFTER_BATCH_COMMIT", "PS_FAULT_PANIC_ON"] {
            if mode == Mode::Live && env.raw(var).is_some() {
                return Err(ConfigError { var, problem: "is test-only fault injection: unset it for PS_MODE=live".into() });
            }
        }
        env.mention("RUST_LOG", Some("info"));
        env.mention("OTEL_EXPORTER_OTLP_ENDPOINT", None);
        let name_prefix = env.string("AMQP_NAME_PREFIX", "");
        if !name_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) || name_prefix.len() > 64 {
            return Err(ConfigError { var: "AMQP_NAME_PREFIX", problem: "use at most 64 of A-Z a-z 0-9 . _ -".into() });
        }
        let amqp_url = env.url("AMQP_URL", DEFAULT_AMQP_URL, &["amqp", "amqps"])?;
        crate::broker::check_nodes(&amqp_url).map_err(|problem| ConfigError { var: "AMQP_URL", problem })?;
        let database_url = env.url("DATABASE_URL", DEFAULT_DATABASE_URL, &["postgres", "postgresql"])?;
        if mode == Mode::Live {
            live_links(&amqp_url, &database_url)?;
        }
        Ok(Config {
            amqp_url: SecretUrl::new(amqp_url),
            database_url: SecretUrl::new(database_url),
            database_pool_size: env.ranged("DATABASE_POOL_SIZE", 16, 1, 512)? as usize,
            database_migrate: env.flag("DATABASE_MIGRATE", true)?,
            name_prefix,
            prefetch: env.ranged("AMQP_PREFETCH", 32, 1, 10_000)? as u16,
            batch: env.ranged("CONSUMER_BATCH", 16, 1, 1_000)? as u16,
            delivery_limit: match env.raw("AMQP_DELIVERY_LIMIT") {
                Some("policy") => None,
                _ => Some(env.ranged("AMQP_DELIVERY_LIMIT", 10, 1, 1000)? as u32),
            },
            publish_timeout: Duration::from_millis(env.ranged("AMQP_PUBLISH_TIMEOUT_MS", 5000, 100, 120_000)?),
            max_message_bytes: env.ranged(
                "AMQP_MAX_MESSAGE_BYTES",
                crate::consumer::DEFAULT_MAX_MESSAGE_BYTES as u64,
                1024,
                64 * 1024 * 1024,
            )? as usize,
            health_addr: env.parsed("HEALTH_ADDR", SocketAddr::from(([127, 0, 0, 1], default_health_port)))?,
            mode,
            secret_keys: env
                .raw("PS_SECRET_KEYS")
                .map(Keyring::parse)
                .transpose()
                .map_err(|problem| ConfigError { var: "PS_SECRET_KEYS", problem })?,
            trust: match env.raw("SSL_CERT_FILE") {
                None => Trust::default(),
                Some(path) => Trust::with_ca_file(std::path::Path::new(path))
                    .map_err(|e| ConfigError { var: "SSL_CERT_FILE", problem: e.to_string() })?,
            },
            fault_abort_after_commit: env.flag("PS_FAULT_ABORT_AFTER_COMMIT", false)?,
            fault_abort_after_batch_commit: env.flag("PS_FAULT_ABORT_AFTER_BATCH_COMMIT", false)?,
            fault_panic_on: env.raw("PS_FAULT_PANIC_ON").map(str::to_owned),
        })
    }
}

/// What live mode asks of the links every service opens: TLS to the broker
/// and a verified certificate from PostgreSQL (`prefer` falls back to plaintext
/// without a word), and neither the broker's `guest` nor the database's
/// default superuser. (The service also refuses a superuser role at start.)
fn live_links(amqp_url: &str, database_url: &str) -> Result<(), ConfigError> {
    let amqp = |problem: &str| Err(ConfigError { var: "AMQP_URL", problem: format!("{problem} (PS_MODE=live)") });
    if !crate::broker::nodes(amqp_url).all(|node| node.starts_with("amqps://")) {
        return amqp("must be amqps:// (every node) so the broker link is encrypted");
    }
    if crate::broker::broker_user(amqp_url).is_none_or(|u| u == "guest") {
        return amqp("must log in as the service's own broker user, not guest");
    }
    let db = |problem: &str| Err(ConfigError { var: "DATABASE_URL", problem: format!("{problem} (PS_MODE=live)") });
    if database_url == DEFAULT_DATABASE_URL {
        return db("must be set: the default logs in as the postgres superuser without TLS");
    }
    let cfg: tokio_postgres::Config = match crate::db::split_sslmode(database_url) {
        Ok((url, _)) => url.parse().map_err(|e| ConfigError { var: "DATABASE_URL", problem: format!("is not a PostgreSQL URL: {e}") })?,
        Err(e) => return Err(ConfigError { var: "DATABASE_URL", problem: e.to_string() }),
    };
    if cfg.get_user().is_none_or(|u| u == "postgres") {
        return db("must log in as the service's own role (deploy/postgres/roles.sql), not postgres");
    }
    let verifying =
        database_url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "sslmode=verify-full" || p == "sslmode=verify-ca"));
    if !verifying {
        return db("must carry sslmode=verify-full (or verify-ca): disable, prefer and require do not verify the server, and prefer falls back to plaintext");
    }
    Ok(())
}

/// What a binary is and what it reads: its `--help`.
pub struct Manual {
    pub name: &'static str,
    pub version: &'static str,
    pub about: &'static str,
    /// Descriptions of the variables the binary reads beyond [`COMMON_VARS`].
    pub vars: &'static [(&'static str, &'static str)],
}

impl Manual {
    /// Every variable `config` reads, with its default and meaning; an error
    /// names a variable read but not described (a test keeps that from shipping).
    pub fn variables<C>(&self, config: fn(&Env) -> Result<C, ConfigError>) -> Result<Vec<Var>, String> {
        let env = Env::for_listing();
        config(&env).map_err(|e| format!("{}: cannot list its configuration: {e}", self.name))?;
        env.listing(self.vars).map_err(|var| format!("{}: {var} is read but not described in its Manual", self.name))
    }

    pub fn help<C>(&self, config: fn(&Env) -> Result<C, ConfigError>) -> Result<String, String> {
        use std::fmt::Write;
        let vars = self.variables(config)?;
        let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
        let mut out = format!(
            "{} {}\n{}\n\nUsage: {} [--help | --version]\n\nConfigured by environment variables only:\n\n",
            self.name, self.version, self.about, self.name
        );
        for v in vars {
            let default = v.default.filter(|d| !d.is_empty()).map(|d| format!(" [default: {d}]")).unwrap_or_default();
            let _ = writeln!(out, "  {:width$}  {}{default}", v.name, v.about);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_mode_refuses_fault_injection() {
        let env = Env::from_pairs([("PS_MODE", "live"), ("PS_FAULT_PANIC_ON", "payment_session.create")]);
        let e = Config::from_env(&env, 9101).unwrap_err();
        assert_eq!(e.var, "PS_FAULT_PANIC_ON");
        let test = Env::from_pairs([("PS_FAULT_PANIC_ON", "payment_session.create")]);
        assert_eq!(Config::from_env(&test, 9101).unwrap().fault_panic_on.as_deref(), Some("payment_session.create"));
    }

    #[test]
    fn live_mode_refuses_guest_the_superuser_and_unverified_links() {
        let good_db = "postgres://ps_intake:pw@db.internal:5432/ps?sslmode=verify-full";
        let good_amqp = "amqps://ps-intake:pw@rabbit.internal:5671/%2f";
        let live =
            |amqp: &str, db: &str| Config::from_env(&Env::from_pairs([("PS_MODE", "live"), ("AMQP_URL", amqp), ("DATABASE_URL", db)]), 1);
        assert!(live(good_amqp, good_db).is_ok());
        let cluster =
            "amqps://ps-intake:pw@rabbit-0:5671/%2f, amqps://ps-intake:pw@rabbit-1:5671/%2f,amqps://ps-intake:pw@rabbit-2:5671/%2f";
        assert!(live(cluster, good_db).is_ok(), "three nodes of one cluster");
        assert_eq!(crate::broker::broker_user(cluster).as_deref(), Some("ps-intake"));
        for (amqp, db, var, says) in [
            ("amqp://ps-intake:pw@rabbit:5672/%2f", good_db, "AMQP_URL", "amqps"),
            ("amqps://guest:guest@rabbit:5671/%2f", good_db, "AMQP_URL", "guest"),
            ("amqps://ps-intake:pw@rabbit-0:5671/%2f,amqp://ps-intake:pw@rabbit-1:5672/%2f", good_db, "AMQP_URL", "every node"),
            ("amqps://ps-intake:pw@rabbit-0:5671/%2f,amqps://ps-other:pw@rabbit-1:5671/%2f", good_db, "AMQP_URL", "same user"),
            ("amqps://ps-intake:pw@rabbit-0:5671/%2f,amqps://rabbit 1", good_db, "AMQP_URL", "node 2"),
            (good_amqp, DEFAULT_DATABASE_URL, "DATABASE_URL", "superuser"),
            (good_amqp, "postgres://postgres:pw@db/ps?sslmode=verify-full", "DATABASE_URL", "postgres"),
            (good_amqp, "postgres://ps_intake:pw@db/ps", "DATABASE_URL", "sslmode"),
            (good_amqp, "postgres://ps_intake:pw@db/ps?sslmode=prefer", "DATABASE_URL", "plaintext"),
            (good_amqp, "postgres://ps_intake:pw@db/ps?sslmode=require", "DATABASE_URL", "verify-full"),
        ] {
            let e = live(amqp, db).unwrap_err();
            assert_eq!(e.var, var, "{amqp} {db}");
            assert!(e.problem.contains(says), "{e}");
            assert!(!e.to_string().contains("pw"), "no password in the error: {e}");
        }
        // Test mode keeps local defaults.
        assert!(Config::from_env(&Env::from_pairs([]), 1).is_ok());
    }

    #[test]
    fn a_processor_key_belongs_to_its_mode() {
        use ps_contract::session::Mode;
        let env = |k: &str| Env::from_pairs([("STRIPE_SECRET_KEY", k)]);
        let key = |k: &str, mode| env(k).mode_key("STRIPE_SECRET_KEY", &["sk", "rk"], mode);
        assert_eq!(key("sk_test_abcdefgh12", Mode::Test).unwrap().expose(), "sk_test_abcdefgh12");
        assert!(key("rk_live_abcdefgh12", Mode::Live).is_ok());
        let e = key("sk_live_abcdefgh12", Mode::Test).unwrap_err();
        assert!(e.problem.contains("live key") && !e.to_string().contains("abcdefgh"), "{e}");
        assert!(key("sk_test_abcdefgh12", Mode::Live).unwrap_err().problem.contains("test key"));
        assert!(key("pk_test_abcdefgh12", Mode::Test).is_err(), "a publishable key is not a secret key");
        assert!(key("sk_test_x", Mode::Test).is_err());
        assert_eq!(Env::from_pairs([]).mode_key("STRIPE_SECRET_KEY", &["sk"], Mode::Test).unwrap_err().var, "STRIPE_SECRET_KEY");
    }

    #[test]
    fn debug_output_holds_no_password() {
        let c = Config::from_env(
            &Env::from_pairs([("AMQP_URL", "amqp://svc:s3cret-amqp@rabbit/%2f"), ("DATABASE_URL", "postgres://svc:s3cret-db@db/ps")]),
            1,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && shown.contains("svc:***@rabbit"), "{shown}");
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::from_env(&Env::from_pairs([]), 9101).unwrap();
        assert_eq!(c.amqp_url.expose(), DEFAULT_AMQP_URL);
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.health_addr.port(), 9101);
        assert_eq!(c.mode, Mode::Test);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("AMQP_URL", "http://x"),
            ("DATABASE_URL", "mysql://x"),
            ("AMQP_PREFETCH", "0"),
            ("AMQP_PREFETCH", "many"),
            ("HEALTH_ADDR", "localhost"),
            ("PS_MODE", "prod"),
            ("DATABASE_MIGRATE", "maybe"),
            ("AMQP_NAME_PREFIX", "has space"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(var, value)]), 9101).unwrap_err();
            assert_eq!(err.var, var);
            let line = err.to_string();
            assert!(line.starts_with(&format!("configuration error: {var}: ")) && !line.contains('\n'), "{line}");
        }
    }
}
