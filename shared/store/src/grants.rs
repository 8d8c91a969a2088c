//! The `merchant_grants` table (DESIGN §10): which broker users may act for
//! which merchants. The only module that reads or writes it.

use deadpool_postgres::GenericClient;
use ps_contract::ids::MerchantId;
use ps_contract::{ApiError, ErrorCode};

/// A grant for every merchant: local mode's `guest`.
pub const EVERY_MERCHANT: &str = "*";

pub enum Access {
    Granted,
    Refused(ApiError),
}

/// Whether broker user `user` may act for `merchant`. No user at all (a
/// publisher that did not set `user_id`) is refused like a wrong one.
pub async fn check(c: &impl GenericClient, user: Option<&str>, merchant: &MerchantId) -> Result<Access, tokio_postgres::Error> {
    let refused = |why: String| Access::Refused(ApiError::param(ErrorCode::MerchantNotAuthorized, "merchant-id", why));
    let Some(user) = user else {
        return Ok(refused("commands must carry the AMQP user_id property of the publishing broker user".into()));
    };
    let granted = c
        .query_opt(
            &c.prepare_cached("SELECT 1 FROM merchant_grants WHERE broker_user = $1 AND merchant_id IN ($2, $3) LIMIT 1").await?,
            &[&user, &merchant.as_str(), &EVERY_MERCHANT],
        )
        .await?
        .is_some();
    Ok(if granted { Access::Granted } else { refused(format!("broker user {user} may not act for merchant {merchant}")) })
}

/// `merchant` is a merchant id or `*`.
pub async fn grant(c: &impl GenericClient, user: &str, merchant: &str) -> Result<bool, tokio_postgres::Error> {
    let n = c
        .execute(
            &c.prepare_cached("INSERT INTO merchant_grants (broker_user, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING").await?,
            &[&user, &merchant],
        )
        .await?;
    Ok(n == 1)
}

pub async fn revoke(c: &impl GenericClient, user: &str, merchant: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(c.execute(&c.prepare_cached("DELETE FROM merchant_grants WHERE broker_user = $1 AND merchant_id = $2").await?, &[&user, &merchant])
        .await?
        == 1)
}

/// (broker user, merchant, granted at), by user then merchant.
pub async fn list(c: &impl GenericClient) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>, tokio_postgres::Error> {
    Ok(c.query(&c.prepare_cached("SELECT broker_user, merchant_id, created_at FROM merchant_grants ORDER BY 1, 2").await?, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
