//! A returning customer's cards, as the checkout offers them (issue 21):
//! read only, for the customer's own later checkouts (`on_session`) and not
//! yet expired. Lifecycle writes these rows (`payment_methods`).

use chrono::Datelike;
use deadpool_postgres::GenericClient;
use ps_contract::ids::{CustomerId, MerchantId};
use ps_runtime::HandlerError;

/// A card the customer saved, as the page may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
}

/// The customer's on-session cards that have not expired, newest first.
pub async fn for_customer(
    client: &impl GenericClient,
    merchant: &MerchantId,
    customer: &CustomerId,
) -> Result<Vec<SavedCard>, HandlerError> {
    let today = chrono::Utc::now().date_naive();
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT id, card_brand, card_last4, exp_month, exp_year FROM payment_methods
                     WHERE merchant_id = $1 AND customer_id = $2 AND usage = 'on_session'
                       AND (exp_year, exp_month) >= ($3, $4)
                     ORDER BY created_at DESC LIMIT 5",
                )
                .await?,
            &[&merchant.as_str(), &customer.as_str(), &today.year(), &(today.month() as i32)],
        )
        .await?;
    Ok(rows.iter().map(|r| SavedCard { id: r.get(0), brand: r.get(1), last4: r.get(2), exp_month: r.get(3), exp_year: r.get(4) }).collect())
}
