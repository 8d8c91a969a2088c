//! Mandates and saved methods as a merchant-initiated charge needs them, and
//! the check of such a charge against its mandate (DESIGN §1): used by intake
//! for every `next_in_series`, and by the scheduler before it asks for one.
//! Lifecycle owns these rows; here they are only read (the mandate locked, so
//! concurrent charges under it count each other).

use crate::Checked;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use ps_contract::create::ChargeTarget;
use ps_contract::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId};
use ps_contract::mandate::{validate_charge, CardExpiry, Charge, Mandate, MandateStatus, MandateTerms, MandateUsage};
use ps_contract::money::{Amount, Currency};
use ps_contract::{ApiError, ErrorCode};
use ps_runtime::HandlerError;

/// A saved payment method, as a `next_in_series` needs it.
pub struct SavedMethod {
    pub id: PaymentMethodId,
    pub customer_id: CustomerId,
    pub off_session: bool,
    pub expiry: CardExpiry,
}

async fn payment_method(tx: &Transaction<'_>, merchant: &MerchantId, id: &PaymentMethodId) -> Result<Option<SavedMethod>, HandlerError> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT id, customer_id, usage, exp_month, exp_year FROM payment_methods WHERE id = $1 AND merchant_id = $2",
            )
            .await?,
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

async fn mandate(tx: &Transaction<'_>, merchant: &MerchantId, id: &MandateId) -> Result<Option<Mandate>, HandlerError> {
    mandate_where(tx, merchant, "id = $2", id.as_str()).await
}

/// The mandate a saved method was given under: the active one if any, else the latest.
async fn mandate_for_method(tx: &Transaction<'_>, merchant: &MerchantId, pm: &PaymentMethodId) -> Result<Option<Mandate>, HandlerError> {
    mandate_where(tx, merchant, "payment_method_id = $2", pm.as_str()).await
}

/// Charges under the mandate that count: paid, reserved, or still in flight.
/// Counters the database keeps as sessions change (migration 0010), so a
/// charge costs the same however many came before it.
pub async fn mandate_usage(tx: &Transaction<'_>, mandate: &MandateId) -> Result<MandateUsage, tokio_postgres::Error> {
    let stmt = tx.prepare_cached("SELECT used_occurrences, used_amount, last_charge_at FROM mandate_usage WHERE mandate_id = $1").await?;
    // No row yet: a mandate not charged so far.
    let Some(r) = tx.query_opt(&stmt, &[&mandate.as_str()]).await? else {
        return Ok(MandateUsage { occurrences: 0, amount: 0, last_charge_on: None });
    };
    let last: Option<DateTime<Utc>> = r.get(2);
    Ok(MandateUsage { occurrences: r.get::<_, i32>(0).max(0) as u32, amount: r.get(1), last_charge_on: last.map(|t| t.date_naive()) })
}

pub fn today(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// The mandate and saved method a charge of `amount` to `target` would use,
/// if every rule allows it now; otherwise the rule's error.
pub async fn check_charge(
    tx: &Transaction<'_>,
    merchant: &MerchantId,
    target: &ChargeTarget,
    amount: Amount,
    currency: Currency,
    now: DateTime<Utc>,
) -> Result<Checked<(Mandate, SavedMethod)>, HandlerError> {
    let (mandate, method, named_customer) = match target {
        ChargeTarget::Mandate(id) => {
            let Some(m) = mandate(tx, merchant, id).await? else {
                return Ok(Checked::Refused(ApiError::param(ErrorCode::MandateNotFound, "mandate_id", format!("no such mandate: {id}"))));
            };
            let method = payment_method(tx, merchant, &m.payment_method_id).await?;
            (Some(m), method, None)
        }
        ChargeTarget::PaymentMethod { customer_id, payment_method_id } => {
            let Some(method) = payment_method(tx, merchant, payment_method_id).await? else {
                return Ok(Checked::Refused(ApiError::param(
                    ErrorCode::PaymentMethodNotFound,
                    "payment_method_id",
                    format!("no such payment method: {payment_method_id}"),
                )));
            };
            let m = mandate_for_method(tx, merchant, payment_method_id).await?;
            if m.is_none() || !method.off_session {
                // Saved by a one_time session (or never mandated): customer-present use only.
                return Ok(Checked::Refused(ApiError::param(
                    ErrorCode::PaymentMethodHasNoMandate,
                    "payment_method_id",
                    format!(
                        "{payment_method_id} has no mandate for merchant-initiated payments; it can only be used with the customer present"
                    ),
                )));
            }
            if &method.customer_id != customer_id {
                return Ok(Checked::Refused(ApiError::param(
                    ErrorCode::MandateCustomerMismatch,
                    "customer_id",
                    format!("{payment_method_id} belongs to another customer"),
                )));
            }
            (m, Some(method), Some(customer_id))
        }
    };
    let Some(method) = method else {
        return Err(HandlerError::Permanent("mandate refers to a missing payment method".into()));
    };
    let usage = match &mandate {
        Some(m) => mandate_usage(tx, &m.id).await?,
        None => Default::default(),
    };
    let charge = Charge { merchant_id: merchant, customer_id: named_customer, amount, currency, today: today(now) };
    if let Err(e) = validate_charge(mandate.as_ref(), usage, method.expiry, &charge) {
        return Ok(Checked::Refused(e));
    }
    let mandate = mandate.expect("validate_charge refuses a missing mandate");
    Ok(Checked::Passed((mandate, method)))
}

/// A charge under a known mandate, as a batch checks it.
pub struct MandateCharge<'a> {
    pub merchant: &'a MerchantId,
    pub mandate: &'a MandateId,
    pub amount: Amount,
    pub currency: Currency,
}

/// `check_charge` for many charges under known mandates at once: one query
/// locks every mandate and reads its method and usage, then the same rules
/// decide each. Results are in input order.
pub async fn check_mandate_charges(
    tx: &Transaction<'_>,
    charges: &[MandateCharge<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<Result<(), ApiError>>, HandlerError> {
    let ids: Vec<&str> = charges.iter().map(|c| c.mandate.as_str()).collect();
    // Not prepared: planned with the array in hand, a generic plan cannot see how many ids it holds.
    let rows = tx
        .query(
            "SELECT m.id, m.merchant_id, m.customer_id, m.payment_method_id, m.status, m.terms, pm.exp_month, pm.exp_year,
                    coalesce(u.used_occurrences, 0), coalesce(u.used_amount, 0), u.last_charge_at
             FROM mandates m
             JOIN payment_methods pm ON pm.id = m.payment_method_id
             LEFT JOIN mandate_usage u ON u.mandate_id = m.id
             WHERE m.id = ANY($1)
             ORDER BY m.id
             FOR UPDATE OF m",
            &[&ids],
        )
        .await?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        let merchant = parse_stored(r.get::<_, &str>(1), MerchantId::parse)?;
        let terms: MandateTerms =
            serde_json::from_value(r.get(5)).map_err(|e| HandlerError::Permanent(format!("corrupt mandate terms: {e}")))?;
        let mandate = Mandate {
            id: parse_stored(r.get::<_, &str>(0), MandateId::parse)?,
            merchant_id: merchant,
            customer_id: parse_stored(r.get::<_, &str>(2), CustomerId::parse)?,
            payment_method_id: parse_stored(r.get::<_, &str>(3), PaymentMethodId::parse)?,
            status: MandateStatus::parse(r.get(4)).ok_or_else(|| HandlerError::Permanent("corrupt mandate status".into()))?,
            terms,
        };
        let last: Option<DateTime<Utc>> = r.get(10);
        let usage =
            MandateUsage { occurrences: r.get::<_, i32>(8).max(0) as u32, amount: r.get(9), last_charge_on: last.map(|t| t.date_naive()) };
        let expiry = CardExpiry { month: r.get::<_, i32>(6) as u32, year: r.get(7) };
        found.insert(r.get::<_, String>(0), (mandate, usage, expiry));
    }
    Ok(charges
        .iter()
        .map(|c| {
            // Another merchant's mandate is as good as missing.
            let entry = found.get(c.mandate.as_str()).filter(|(m, _, _)| &m.merchant_id == c.merchant);
            let charge = Charge { merchant_id: c.merchant, customer_id: None, amount: c.amount, currency: c.currency, today: today(now) };
            match entry {
                Some((m, usage, expiry)) => validate_charge(Some(m), *usage, *expiry, &charge),
                None => validate_charge(None, MandateUsage::default(), CardExpiry { month: 12, year: 9999 }, &charge),
            }
        })
        .collect())
}
