//! Saved payment methods and mandates: created when a customer-present payment
//! succeeds, revoked on command.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use ps_contract::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId};
use ps_contract::internal::CardSummary;
use ps_contract::mandate::{MandateObject, MandateStatus, MandateTerms};
use ps_runtime::HandlerError;

pub async fn save_method(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    customer: &CustomerId,
    card: &CardSummary,
    vault_token: &str,
    off_session: bool,
) -> Result<PaymentMethodId, HandlerError> {
    let id = PaymentMethodId::generate();
    let usage = if off_session { "off_session" } else { "on_session" };
    tx.execute(
        "INSERT INTO payment_methods (id, merchant_id, customer_id, usage, card_brand, card_last4, exp_month, exp_year, vault_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id.as_str(),
            &merchant.as_str(),
            &customer.as_str(),
            &usage,
            &card.brand,
            &card.last4,
            &(card.exp_month as i32),
            &card.exp_year,
            &vault_token,
        ],
    )
    .await?;
    Ok(id)
}

pub async fn create(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    customer: &CustomerId,
    method: &PaymentMethodId,
    terms: &MandateTerms,
    now: DateTime<Utc>,
) -> Result<MandateObject, HandlerError> {
    let id = MandateId::generate();
    let stored = serde_json::to_value(terms)?;
    tx.execute(
        "INSERT INTO mandates (id, merchant_id, customer_id, payment_method_id, status, terms, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'active', $5, $6, $6)",
        &[&id.as_str(), &merchant.as_str(), &customer.as_str(), &method.as_str(), &stored, &now],
    )
    .await?;
    Ok(MandateObject {
        id,
        object: "mandate".into(),
        status: MandateStatus::Active,
        customer_id: customer.clone(),
        payment_method_id: method.clone(),
        terms: terms.clone(),
        occurrences_used: 0,
        amount_used: 0,
        created_at: now,
    })
}

// What was paid: charged outright, or captured from a reservation (which stays `reserved`).
const OBJECT_COLUMNS: &str = "m.id, m.customer_id, m.payment_method_id, m.status, m.terms, m.created_at,
    (SELECT count(*) FROM payment_sessions s WHERE s.mandate_id = m.id AND s.type = 'next_in_series' AND s.paid_amount > 0),
    (SELECT coalesce(sum(paid_amount), 0)::bigint FROM payment_sessions s WHERE s.mandate_id = m.id AND s.type = 'next_in_series' AND s.paid_amount > 0)";

fn object(r: &tokio_postgres::Row) -> Result<MandateObject, HandlerError> {
    let id: &str = r.get(0);
    let corrupt = |what: &str| HandlerError::Permanent(format!("corrupt mandate {id}: {what}"));
    Ok(MandateObject {
        id: MandateId::parse(id).map_err(|_| corrupt("id"))?,
        object: "mandate".into(),
        customer_id: CustomerId::parse(r.get(1)).map_err(|_| corrupt("customer"))?,
        payment_method_id: PaymentMethodId::parse(r.get(2)).map_err(|_| corrupt("payment method"))?,
        status: MandateStatus::parse(r.get(3)).ok_or_else(|| corrupt("status"))?,
        terms: serde_json::from_value(r.get(4)).map_err(|_| corrupt("terms"))?,
        created_at: r.get(5),
        occurrences_used: r.get::<_, i64>(6) as u32,
        amount_used: r.get(7),
    })
}

/// Loads (and locks) a merchant's mandate as its wire object; another merchant's is `None`.
pub async fn lock(tx: &Transaction<'_>, merchant: &MerchantId, id: &MandateId) -> Result<Option<MandateObject>, HandlerError> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM mandates m WHERE m.id = $1 AND m.merchant_id = $2 FOR UPDATE OF m");
    tx.query_opt(sql.as_str(), &[&id.as_str(), &merchant.as_str()]).await?.as_ref().map(object).transpose()
}

/// As `lock`, without the lock: for reads.
pub async fn get(tx: &Transaction<'_>, merchant: &MerchantId, id: &MandateId) -> Result<Option<MandateObject>, HandlerError> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM mandates m WHERE m.id = $1 AND m.merchant_id = $2");
    tx.query_opt(sql.as_str(), &[&id.as_str(), &merchant.as_str()]).await?.as_ref().map(object).transpose()
}

/// A merchant's mandates, newest first, one more than `limit` (to tell whether there are more).
pub async fn list(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    q: &ps_contract::commands::MandateList,
) -> Result<Vec<MandateObject>, HandlerError> {
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM mandates m WHERE m.merchant_id = $1 AND ($2::text IS NULL OR m.customer_id = $2)
           AND ($3::text IS NULL OR m.status = $3) AND ($4::text IS NULL OR m.id < $4) ORDER BY m.id DESC LIMIT $5"
    );
    let rows = tx
        .query(
            sql.as_str(),
            &[
                &merchant.as_str(),
                &q.customer_id.as_ref().map(|c| c.as_str()),
                &q.status.map(|s| s.as_str()),
                &q.starting_after.as_ref().map(|m| m.as_str()),
                &(q.limit as i64 + 1),
            ],
        )
        .await?;
    rows.iter().map(object).collect()
}

pub async fn set_status(tx: &Transaction<'_>, id: &MandateId, status: MandateStatus, now: DateTime<Utc>) -> Result<(), HandlerError> {
    tx.execute("UPDATE mandates SET status = $2, updated_at = $3 WHERE id = $1", &[&id.as_str(), &status.as_str(), &now]).await?;
    Ok(())
}
