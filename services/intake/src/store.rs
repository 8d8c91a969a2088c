//! The customer rows intake writes and reads (sessions are `ps_store::sessions`'). Every query is scoped to the merchant:
//! another merchant's object is indistinguishable from a missing one.

use deadpool_postgres::Transaction;
use ps_contract::create::NewCustomer;
use ps_contract::ids::{CustomerId, MerchantId};

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
