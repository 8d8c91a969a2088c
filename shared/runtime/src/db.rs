//! PostgreSQL: the pool and the schema migrations.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::NoTls;

/// Applied in order, each once, each in its own transaction.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_spine", include_str!("../migrations/0001_spine.sql")),
    ("0002_paying", include_str!("../migrations/0002_paying.sql")),
    ("0003_webhooks", include_str!("../migrations/0003_webhooks.sql")),
    ("0004_settlement_tries", include_str!("../migrations/0004_settlement_tries.sql")),
    ("0005_outbox_producer", include_str!("../migrations/0005_outbox_producer.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error("database unavailable: {0}")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

pub fn pool(database_url: &str, size: usize) -> Result<Pool, DbError> {
    let mut cfg = tokio_postgres::Config::from_str(database_url).map_err(DbError::BadUrl)?;
    cfg.connect_timeout(std::time::Duration::from_secs(5));
    cfg.application_name("payment-sessions");
    let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
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
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name]).await?;
            applied.push(*name);
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// Whether the database answers, for `/readyz`.
pub async fn ping(pool: &Pool) -> bool {
    let check = async {
        let c = pool.get().await.ok()?;
        c.simple_query("SELECT 1").await.ok()
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), check).await, Ok(Some(_)))
}
