//! The rows intake writes and reads. Every query is scoped to the merchant:
//! another merchant's object is indistinguishable from a missing one.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use ps_contract::create::NewCustomer;
use ps_contract::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId};
use ps_contract::mandate::{CardExpiry, Mandate, MandateStatus, MandateTerms, MandateUsage};
use ps_contract::session::PaymentSession;
use ps_runtime::HandlerError;

pub async fn insert_customer(tx: &Transaction<'_>, merchant: &MerchantId, c: &NewCustomer) -> Result<CustomerId, tokio_postgres::Error> {
    let id = CustomerId::generate();
    tx.execute(
        "INSERT INTO customers (id, merchant_id, name, email) VALUES ($1, $2, $3, $4)",
        &[&id.as_str(), &merchant.as_str(), &c.name, &c.email],
    )
    .await?;
    Ok(id)
}

pub async fn customer_exists(tx: &Transaction<'_>, merchant: &MerchantId, id: &CustomerId) -> Result<bool, tokio_postgres::Error> {
    Ok(tx.query_opt("SELECT 1 FROM customers WHERE id = $1 AND merchant_id = $2", &[&id.as_str(), &merchant.as_str()]).await?.is_some())
}

/// A saved payment method, as a `next_in_series` needs it.
pub struct SavedMethod {
    pub id: PaymentMethodId,
    pub customer_id: CustomerId,
    pub off_session: bool,
    pub expiry: CardExpiry,
}

pub async fn payment_method(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    id: &PaymentMethodId,
) -> Result<Option<SavedMethod>, HandlerError> {
    let row = tx
        .query_opt(
            "SELECT id, customer_id, usage, exp_month, exp_year FROM payment_methods WHERE id = $1 AND merchant_id = $2",
            &[&id.as_str(), &merchant.as_str()],
        )
        .await?;
    row.map(|r| {
        Ok(SavedMethod {
            id: parse_stored(r.get::<_, &str>(0), PaymentMethodId::parse)?,
            customer_id: parse_stored(r.get::<_, &str>(1), CustomerId::parse)?,
            off_session: r.get::<_, &str>(2) == "off_session",
            expiry: CardExpiry { month: r.get::<_, i32>(3) as u32, year: r.get(4) },
        })
    })
    .transpose()
}

fn parse_stored<T, E: std::fmt::Display>(s: &str, parse: fn(&str) -> Result<T, E>) -> Result<T, HandlerError> {
    parse(s).map_err(|e| HandlerError::Permanent(format!("corrupt stored value {s:?}: {e}")))
}

/// Locks the mandate row, so concurrent charges under it count each other.
async fn mandate_where(tx: &Transaction<'_>, merchant: &MerchantId, clause: &str, id: &str) -> Result<Option<Mandate>, HandlerError> {
    let sql = format!(
        "SELECT id, customer_id, payment_method_id, status, terms FROM mandates
         WHERE merchant_id = $1 AND {clause}
         ORDER BY status = 'active' DESC, created_at DESC LIMIT 1 FOR UPDATE"
    );
    let row = tx.query_opt(sql.as_str(), &[&merchant.as_str(), &id]).await?;
    row.map(|r| {
        let terms: MandateTerms =
            serde_json::from_value(r.get(4)).map_err(|e| HandlerError::Permanent(format!("corrupt mandate terms: {e}")))?;
        Ok(Mandate {
            id: parse_stored(r.get::<_, &str>(0), MandateId::parse)?,
            merchant_id: merchant.clone(),
            customer_id: parse_stored(r.get::<_, &str>(1), CustomerId::parse)?,
            payment_method_id: parse_stored(r.get::<_, &str>(2), PaymentMethodId::parse)?,
            status: MandateStatus::parse(r.get(3)).ok_or_else(|| HandlerError::Permanent("corrupt mandate status".into()))?,
            terms,
        })
    })
    .transpose()
}

pub async fn mandate(tx: &Transaction<'_>, merchant: &MerchantId, id: &MandateId) -> Result<Option<Mandate>, HandlerError> {
    mandate_where(tx, merchant, "id = $2", id.as_str()).await
}

/// The mandate a saved method was given under: the active one if any, else the latest.
pub async fn mandate_for_method(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    pm: &PaymentMethodId,
) -> Result<Option<Mandate>, HandlerError> {
    mandate_where(tx, merchant, "payment_method_id = $2", pm.as_str()).await
}

/// Charges under the mandate that count: paid, reserved, or still in flight.
pub async fn mandate_usage(tx: &Transaction<'_>, mandate: &MandateId) -> Result<MandateUsage, tokio_postgres::Error> {
    let r = tx
        .query_one(
            "SELECT count(*), coalesce(sum(amount), 0)::bigint, max(created_at)
             FROM payment_sessions
             WHERE mandate_id = $1 AND type = 'next_in_series' AND payment_outcome IN ('pending', 'paid', 'reserved')",
            &[&mandate.as_str()],
        )
        .await?;
    let last: Option<DateTime<Utc>> = r.get(2);
    Ok(MandateUsage { occurrences: r.get::<_, i64>(0) as u32, amount: r.get(1), last_charge_on: last.map(|t| t.date_naive()) })
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

pub async fn insert_session(tx: &Transaction<'_>, s: &PaymentSession, x: &SessionExtras<'_>) -> Result<(), tokio_postgres::Error> {
    let metadata = serde_json::to_value(&s.metadata).unwrap_or_default();
    tx.execute(
        "INSERT INTO payment_sessions (id, merchant_id, type, status, payment_outcome, amount, currency, capture_method,
             save_payment_method, customer_id, payment_method_id, mandate_id, checkout_token, session_url, return_url,
             expires_at, metadata, external_reference, mode, mandate_terms, subscription_options, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $22)",
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
        ],
    )
    .await?;
    Ok(())
}

pub async fn insert_attempt(
    tx: &Transaction<'_>,
    attempt: &str,
    session: &PaymentSession,
    merchant: &MerchantId,
    processor_key: &str,
    capture_method: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO payment_attempts (id, session_id, merchant_id, amount, currency, status, processor_idempotency_key, source, capture_method)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, 'merchant', $7)",
        &[&attempt, &session.id.as_str(), &merchant.as_str(), &session.amount, &session.currency.code(), &processor_key, &capture_method],
    )
    .await?;
    Ok(())
}

pub fn today(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}
