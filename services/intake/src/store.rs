//! The rows intake writes and reads. Every query is scoped to the merchant:
//! another merchant's object is indistinguishable from a missing one.

use deadpool_postgres::Transaction;
use ps_contract::create::NewCustomer;
use ps_contract::ids::{CustomerId, MerchantId};
use ps_contract::session::PaymentSession;

pub async fn insert_customer(tx: &Transaction<'_>, merchant: &MerchantId, c: &NewCustomer) -> Result<CustomerId, tokio_postgres::Error> {
    let id = CustomerId::generate();
    tx.execute(
        &tx.prepare_cached("INSERT INTO customers (id, merchant_id, name, email) VALUES ($1, $2, $3, $4)").await?,
        &[&id.as_str(), &merchant.as_str(), &c.name, &c.email],
    )
    .await?;
    Ok(id)
}

pub async fn customer_exists(tx: &Transaction<'_>, merchant: &MerchantId, id: &CustomerId) -> Result<bool, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            &tx.prepare_cached("SELECT 1 FROM customers WHERE id = $1 AND merchant_id = $2").await?,
            &[&id.as_str(), &merchant.as_str()],
        )
        .await?
        .is_some())
}

/// What is stored beside the wire object.
pub struct SessionExtras<'a> {
    pub merchant: &'a MerchantId,
    pub capture_method: &'a str,
    pub save_payment_method: &'a str,
    pub checkout_token: Option<&'a str>,
    pub mandate_terms: Option<serde_json::Value>,
    pub subscription_options: Option<serde_json::Value>,
}

pub async fn insert_session(tx: &Transaction<'_>, s: &PaymentSession, x: &SessionExtras<'_>) -> Result<(), ps_runtime::HandlerError> {
    let metadata = serde_json::to_value(&s.metadata)?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO payment_sessions (id, merchant_id, type, status, payment_outcome, amount, currency, capture_method,
             save_payment_method, customer_id, payment_method_id, mandate_id, checkout_token, session_url, return_url,
             expires_at, metadata, external_reference, mode, mandate_terms, subscription_options, created_at, updated_at, traceparent, payment_created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $22, $23, $24)").await?,
        &[
            &s.id.as_str(),
            &x.merchant.as_str(),
            &s.session_type.as_str(),
            &s.status.as_str(),
            &s.payment_outcome.as_str(),
            &s.amount,
            &s.currency.code(),
            &x.capture_method,
            &x.save_payment_method,
            &s.customer_id.as_ref().map(|c| c.as_str()),
            &s.payment_method_id.as_ref().map(|p| p.as_str()),
            &s.mandate_id.as_ref().map(|m| m.as_str()),
            &x.checkout_token,
            &s.session_url,
            &s.return_url,
            &s.expires_at,
            &metadata,
            &s.external_reference,
            &s.mode.as_str(),
            &x.mandate_terms,
            &x.subscription_options,
            &s.created_at,
            &ps_runtime::telemetry::current_traceparent(),
            &s.payment.as_ref().map(|p| p.created_at),
        ],
    )
    .await?;
    Ok(())
}
