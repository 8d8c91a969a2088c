//! PostgreSQL: the pool and the schema migrations.

use crate::tls::{TlsError, Trust};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Applied in order, each once, each in its own transaction.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_spine", include_str!("../migrations/0001_spine.sql")),
    ("0002_paying", include_str!("../migrations/0002_paying.sql")),
    ("0003_webhooks", include_str!("../migrations/0003_webhooks.sql")),
    ("0004_settlement_tries", include_str!("../migrations/0004_settlement_tries.sql")),
    ("0005_outbox_producer", include_str!("../migrations/0005_outbox_producer.sql")),
    ("0006_identity", include_str!("../migrations/0006_identity.sql")),
    ("0007_sealed", include_str!("../migrations/0007_sealed.sql")),
    ("0008_scheduler", include_str!("../migrations/0008_scheduler.sql")),
    ("0009_resolution", include_str!("../migrations/0009_resolution.sql")),
    ("0010_hot_paths", include_str!("../migrations/0010_hot_paths.sql")),
    ("0011_observability", include_str!("../migrations/0011_observability.sql")),
    ("0012_refunds", include_str!("../migrations/0012_refunds.sql")),
    ("0013_mandate_usage", include_str!("../migrations/0013_mandate_usage.sql")),
    ("0014_trust", include_str!("../migrations/0014_trust.sql")),
    ("0015_processors", include_str!("../migrations/0015_processors.sql")),
    ("0016_direct", include_str!("../migrations/0016_direct.sql")),
    ("0017_calls", include_str!("../migrations/0017_calls.sql")),
    ("0018_api_keys", include_str!("../migrations/0018_api_keys.sql")),
    ("0019_subscription_plan", include_str!("../migrations/0019_subscription_plan.sql")),
    ("0020_payment_card", include_str!("../migrations/0020_payment_card.sql")),
    ("0021_reservations_stay", include_str!("../migrations/0021_reservations_stay.sql")),
    ("0022_captures", include_str!("../migrations/0022_captures.sql")),
    ("0023_checkout_settings", include_str!("../migrations/0023_checkout_settings.sql")),
    ("0024_customer_cancel", include_str!("../migrations/0024_customer_cancel.sql")),
    ("0025_presentation_mode", include_str!("../migrations/0025_presentation_mode.sql")),
    ("0026_card_funding", include_str!("../migrations/0026_card_funding.sql")),
    ("0027_locale", include_str!("../migrations/0027_locale.sql")),
    ("0028_checkout_logos", include_str!("../migrations/0028_checkout_logos.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("DATABASE_URL: sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    BadSslMode(String),
    #[error("TLS to PostgreSQL: {0}")]
    Tls(#[from] TlsError),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error("database unavailable: {}", causes(.0))]
    Unavailable(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("DATABASE_URL logs in as {0}, a role no grant or row-level security binds (superuser or BYPASSRLS): run each service under its own role (deploy/postgres/roles.sql) in live mode")]
    Superuser(String),
    #[error("migration {name} failed: {}", describe(.source))]
    Migration { name: &'static str, source: tokio_postgres::Error },
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => causes(e),
    }
}

/// How much of the server's certificate is checked: libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// `disable`, `prefer` (the default), `require`: encrypted when TLS is used, the server not verified.
    Nothing,
    /// `verify-ca`: the chain, against the system roots and `SSL_CERT_FILE`.
    Chain,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// Takes `sslmode` out of the URL, since tokio-postgres knows only disable,
/// prefer and require; the verify modes become `require` plus a verifying connector.
pub fn split_sslmode(database_url: &str) -> Result<(String, Verify), DbError> {
    let Some((base, query)) = database_url.split_once('?') else { return Ok((database_url.to_owned(), Verify::Nothing)) };
    let mut verify = Verify::Nothing;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", mode)) => {
                verify = match mode {
                    "disable" | "prefer" | "require" => {
                        kept.push(pair.to_owned());
                        Verify::Nothing
                    }
                    "verify-ca" | "verify-full" => {
                        kept.push("sslmode=require".to_owned());
                        if mode == "verify-ca" {
                            Verify::Chain
                        } else {
                            Verify::Full
                        }
                    }
                    other => return Err(DbError::BadSslMode(other.to_owned())),
                }
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    Ok((if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }, verify))
}

/// An error and every cause under it: tokio-postgres alone says only "db error".
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = c.source();
    }
    text
}

pub fn pool(database_url: &str, size: usize, trust: &Trust) -> Result<Pool, DbError> {
    let (url, verify) = split_sslmode(database_url)?;
    let mut cfg = tokio_postgres::Config::from_str(&url).map_err(DbError::BadUrl)?;
    cfg.connect_timeout(std::time::Duration::from_secs(5));
    cfg.application_name("payment-sessions");
    let tls = match verify {
        Verify::Nothing => Trust::client_config_unverified()?,
        Verify::Chain => trust.client_config_any_name()?,
        Verify::Full => trust.client_config()?,
    };
    if cfg.get_ssl_mode() == SslMode::Disable {
        tracing::debug!("PostgreSQL without TLS (sslmode=disable)");
    }
    let manager = Manager::from_config(cfg, MakeRustlsConnect::new(tls), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Brings the schema up to date. Safe to run from many replicas at once: an
/// advisory lock makes them take turns, and each skips what is applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<&'static str>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7431902211);
         CREATE TABLE IF NOT EXISTS schema_migrations (
             name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE name = $1", &[name]).await?.is_some();
        if !done {
            tx.batch_execute(sql).await.map_err(|source| DbError::Migration { name, source })?;
            tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name]).await?;
            applied.push(*name);
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// Live mode's check of the role a service logs in as: never a superuser,
/// which row-level security and every grant in deploy/postgres/roles.sql
/// would not bind (DESIGN §10).
pub async fn refuse_superuser(pool: &Pool) -> Result<(), DbError> {
    let c = pool.get().await?;
    let row = c.query_one("SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user", &[]).await?;
    let (role, unbound): (String, bool) = (row.get(0), row.get(1));
    if unbound {
        return Err(DbError::Superuser(role));
    }
    Ok(())
}

/// Whether the database answers, for `/readyz`.
pub async fn ping(pool: &Pool) -> bool {
    let check = async {
        let c = pool.get().await.ok()?;
        c.simple_query("SELECT 1").await.ok()
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), check).await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_split_out_of_the_url() {
        let base = "postgres://u@h:5432/db";
        assert_eq!(split_sslmode(base).unwrap(), (base.to_owned(), Verify::Nothing));
        assert_eq!(split_sslmode(&format!("{base}?sslmode=verify-full")).unwrap(), (format!("{base}?sslmode=require"), Verify::Full));
        assert_eq!(
            split_sslmode(&format!("{base}?application_name=x&sslmode=verify-ca")).unwrap(),
            (format!("{base}?application_name=x&sslmode=require"), Verify::Chain)
        );
        assert_eq!(split_sslmode(&format!("{base}?sslmode=require")).unwrap().1, Verify::Nothing);
        assert!(matches!(split_sslmode(&format!("{base}?sslmode=strict")), Err(DbError::BadSslMode(_))));
    }
}
