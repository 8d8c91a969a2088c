//! The `fleet_members` table: which broker user each fleet service runs as
//! (DESIGN §10), registered by each service at start. Consumers take internal
//! messages, events and replies only from the services that send them, checked
//! against this record; the merchant grant covers commands. The only module that
//! reads or writes the table.

use deadpool_postgres::{GenericClient, Pool};
use std::collections::HashMap;
use std::sync::RwLock;

/// Records that `service` publishes as `broker_user` (a later start under
/// another user replaces it). Under the deploy roles a service may write only
/// its own row (row-level security).
pub async fn register(pool: &Pool, service: &str, broker_user: &str) -> Result<(), crate::db::DbError> {
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO fleet_members (service, broker_user) VALUES ($1, $2)
         ON CONFLICT (service) DO UPDATE SET broker_user = EXCLUDED.broker_user, registered_at = now()",
        &[&service, &broker_user],
    )
    .await?;
    Ok(())
}

/// The registry, cached: read again only when a publisher is not found in it
/// (a service that started, or moved to another user, since the last read).
#[derive(Debug, Default)]
pub struct Members {
    known: RwLock<HashMap<String, String>>,
}

impl Members {
    /// Whether broker user `user` is the one one of `services` registered.
    pub async fn include(&self, c: &impl GenericClient, user: Option<&str>, services: &[&str]) -> Result<bool, tokio_postgres::Error> {
        let Some(user) = user else { return Ok(false) };
        if self.cached(user, services) {
            return Ok(true);
        }
        let rows = c.query(&c.prepare_cached("SELECT service, broker_user FROM fleet_members").await?, &[]).await?;
        let fresh: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(self.cached(user, services))
    }

    fn cached(&self, user: &str, services: &[&str]) -> bool {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        services.iter().any(|s| known.get(*s).is_some_and(|u| u == user))
    }
}
