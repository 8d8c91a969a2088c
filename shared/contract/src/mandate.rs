//! Mandates (DESIGN §1): their terms, parsed from `mandate_options`, and the
//! validation of a merchant-initiated charge against them — one rule, one code.

use crate::error::{ApiError, ErrorCode};
use crate::fields::Obj;
use crate::ids::{CustomerId, MandateId, MerchantId, PaymentMethodId};
use crate::lifecycle::wire_enum;
use crate::money::{parse_amount, Amount, Currency};
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

wire_enum!(MandateType { OnDemand => "on_demand", Scheduled => "scheduled" });
wire_enum!(MandateStatus { Active => "active", Revoked => "revoked", Expired => "expired" });
wire_enum!(RecurrenceType { Daily => "daily", Weekly => "weekly", Monthly => "monthly", Yearly => "yearly" });
wire_enum!(DayAdjustment { NearestWeekday => "nearest_weekday" });

/// Exact integer, or an inclusive range with either bound or both (Moment's
/// `{max}` alone is a ceiling, `{min}` alone a floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum MandateAmount {
    Exact(Amount),
    Range {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<Amount>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<Amount>,
    },
}

impl MandateAmount {
    pub fn allows(self, amount: Amount) -> bool {
        match self {
            MandateAmount::Exact(a) => a == amount,
            MandateAmount::Range { min, max } => min.is_none_or(|m| m <= amount) && max.is_none_or(|m| amount <= m),
        }
    }

    /// The smallest charge allowed, when there is one.
    pub fn floor(self) -> Option<Amount> {
        match self {
            MandateAmount::Exact(a) => Some(a),
            MandateAmount::Range { min, .. } => min,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Recurrence {
    #[serde(rename = "type")]
    pub kind: RecurrenceType,
    pub interval_count: u32,
    /// Day of the period the scheduler charges on: weekday 1-7 (Monday = 1) for
    /// weekly, day of month 1-31 for monthly, day of year 1-366 for yearly.
    /// Moment's object form (`{days: ["mon"]}`, `{type: "day_of_month",
    /// days: [1]}`) is read into this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<u32>,
    /// A monthly or yearly day that falls on a weekend moves to the nearest
    /// weekday of the same month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<DayAdjustment>,
}

impl Recurrence {
    /// Index of the calendar period `d` falls in, counted in this recurrence's unit.
    fn period(self, d: NaiveDate) -> i64 {
        match self.kind {
            RecurrenceType::Daily => d.num_days_from_ce() as i64,
            // Days since a Monday, so weeks are ISO weeks.
            RecurrenceType::Weekly => (d.num_days_from_ce() as i64 - 1).div_euclid(7),
            RecurrenceType::Monthly => d.year() as i64 * 12 + d.month0() as i64,
            RecurrenceType::Yearly => d.year() as i64,
        }
    }

    /// One charge per `interval_count` calendar periods. Calendar periods rather
    /// than a rolling interval, so a charge retried on the 3rd of December does
    /// not push January's charge on the 1st out of bounds.
    pub fn allows_charge(self, last_charge_on: NaiveDate, today: NaiveDate) -> bool {
        self.period(today) - self.period(last_charge_on) >= self.interval_count as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ValidityPeriod {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
}

/// What the customer agreed to. Every term optional: none means unconstrained on-demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MandateTerms {
    #[serde(rename = "type")]
    pub mandate_type: MandateType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<MandateAmount>,
    /// Always the `first_in_series` session's currency.
    pub currency: Currency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity_period: Option<ValidityPeriod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_occurrences: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<Amount>,
}

impl MandateTerms {
    pub fn unconstrained(currency: Currency) -> Self {
        MandateTerms {
            mandate_type: MandateType::OnDemand,
            amount: None,
            currency,
            recurrence: None,
            validity_period: None,
            max_occurrences: None,
            total_amount: None,
        }
    }
}

pub(crate) fn parse_recurrence(v: &Value, param: &str) -> Result<Recurrence, ApiError> {
    let o = Obj::new(v, param)?;
    o.only(&["type", "interval_count", "on"])?;
    let kind = o.choice("type", RecurrenceType::parse, "daily, weekly, monthly, yearly")?.ok_or_else(|| o.missing("type"))?;
    let interval_count = o.int("interval_count", 1, 366, ErrorCode::RecurrenceInvalid)?.unwrap_or(1) as u32;
    let max_on = match kind {
        RecurrenceType::Daily => 0,
        RecurrenceType::Weekly => 7,
        RecurrenceType::Monthly => 31,
        RecurrenceType::Yearly => 366,
    };
    let (on, adjustment) = match o.get("on") {
        None => (None, None),
        Some(_) if max_on == 0 => {
            return Err(ApiError::param(ErrorCode::RecurrenceInvalid, o.param("on"), "a daily recurrence has no `on` day"))
        }
        Some(v) if v.is_object() => parse_on_object(v, kind, &o.param("on"))?,
        Some(_) => (Some(o.int("on", 1, max_on, ErrorCode::RecurrenceInvalid)?.unwrap_or(1) as u32), None),
    };
    Ok(Recurrence { kind, interval_count, on, adjustment })
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Moment's `on` object: `{days: ["mon"]}` for weekly, `{type: "day_of_month",
/// days: [1], adjustment}` for monthly, `{type: "day_of_year", days: [1]}` for
/// yearly. One day only: a recurrence here is one charge per period, which is
/// also what the mandate's consent allows.
fn parse_on_object(v: &Value, kind: RecurrenceType, param: &str) -> Result<(Option<u32>, Option<DayAdjustment>), ApiError> {
    let o = Obj::new(v, param)?;
    o.only(&["type", "days", "adjustment"])?;
    let invalid = |p: String, why: String| ApiError::param(ErrorCode::RecurrenceInvalid, p, why);
    let expected = match kind {
        RecurrenceType::Weekly => "day_of_week",
        RecurrenceType::Monthly => "day_of_month",
        _ => "day_of_year",
    };
    if let Some(t) = o.str("type", 32)? {
        if t != expected {
            return Err(invalid(o.param("type"), format!("a {kind} recurrence's `on` is {expected}, not {t}")));
        }
    }
    let days = o.require("days")?.as_array().ok_or_else(|| o.wrong_type("days", "an array with one day"))?;
    let [day] = days.as_slice() else {
        return Err(invalid(o.param("days"), "give exactly one day: a recurrence charges once per period".into()));
    };
    let on = match (kind, day) {
        (RecurrenceType::Weekly, Value::String(d)) => WEEKDAYS.iter().position(|w| w == d).map(|i| i as u32 + 1),
        (RecurrenceType::Monthly, n) => n.as_u64().filter(|n| (1..=31).contains(n)).map(|n| n as u32),
        (RecurrenceType::Yearly, n) => n.as_u64().filter(|n| (1..=366).contains(n)).map(|n| n as u32),
        _ => None,
    }
    .ok_or_else(|| {
        let want = match kind {
            RecurrenceType::Weekly => "one of mon, tue, wed, thu, fri, sat, sun",
            RecurrenceType::Monthly => "a day of the month, 1 to 31",
            _ => "a day of the year, 1 to 366",
        };
        invalid(o.param("days"), format!("{} must hold {want}", o.param("days")))
    })?;
    let adjustment = o.choice("adjustment", DayAdjustment::parse, "nearest_weekday")?;
    if adjustment.is_some() && kind == RecurrenceType::Weekly {
        return Err(invalid(o.param("adjustment"), "a weekly recurrence names its weekday; there is nothing to adjust".into()));
    }
    Ok((Some(on), adjustment))
}

/// Parses `mandate_options` of a `first_in_series` whose currency is `currency`.
pub fn parse_mandate_options(v: &Value, currency: Currency) -> Result<MandateTerms, ApiError> {
    let o = Obj::new(v, "mandate_options")?;
    o.only(&["type", "amount", "currency", "recurrence", "validity_period", "max_occurrences", "total_amount"])?;
    let mandate_type = o.choice("type", MandateType::parse, "on_demand, scheduled")?.unwrap_or(MandateType::OnDemand);

    if let Some(c) = o.str("currency", 3)? {
        let c = Currency::parse(c).map_err(|e| e.with_param(o.param("currency")))?;
        if c != currency {
            return Err(ApiError::param(
                ErrorCode::MandateCurrencyMismatch,
                o.param("currency"),
                format!("the mandate's currency must be the session's ({currency}), not {c}"),
            ));
        }
    }

    let amount = match o.get("amount") {
        None => None,
        Some(v) if v.is_object() => {
            let r = Obj::new(v, "mandate_options.amount")?;
            r.only(&["min", "max"])?;
            let min = r.get("min").map(|v| parse_amount(v, &r.param("min"), true)).transpose()?;
            let max = r.get("max").map(|v| parse_amount(v, &r.param("max"), false)).transpose()?;
            match (min, max) {
                (None, None) => {
                    return Err(ApiError::param(
                        ErrorCode::ParameterMissing,
                        o.param("amount"),
                        "mandate_options.amount needs min, max or both (or a number for a fixed amount)",
                    ))
                }
                (Some(min), Some(max)) if min > max => {
                    return Err(ApiError::param(
                        ErrorCode::MandateAmountRangeInvalid,
                        o.param("amount"),
                        format!("mandate_options.amount.min ({min}) is above max ({max})"),
                    ))
                }
                _ => {}
            }
            Some(MandateAmount::Range { min, max })
        }
        Some(v) => Some(MandateAmount::Exact(parse_amount(v, &o.param("amount"), false)?)),
    };

    let recurrence = o.get("recurrence").map(|v| parse_recurrence(v, &o.param("recurrence"))).transpose()?;
    if mandate_type == MandateType::Scheduled && recurrence.is_none() {
        return Err(ApiError::param(
            ErrorCode::ParameterMissing,
            o.param("recurrence"),
            "a scheduled mandate needs mandate_options.recurrence",
        ));
    }

    let validity_period = match o.get("validity_period") {
        None => None,
        Some(v) => {
            let p = Obj::new(v, "mandate_options.validity_period")?;
            p.only(&["start_date", "end_date"])?;
            let (start_date, end_date) = (p.date("start_date")?, p.date("end_date")?);
            if let (Some(s), Some(e)) = (start_date, end_date) {
                if s > e {
                    return Err(ApiError::param(
                        ErrorCode::ValidityPeriodInvalid,
                        o.param("validity_period"),
                        format!("start_date {s} is after end_date {e}"),
                    ));
                }
            }
            Some(ValidityPeriod { start_date, end_date })
        }
    };

    let max_occurrences = o.int("max_occurrences", 1, 100_000, ErrorCode::ParameterInvalidValue)?.map(|n| n as u32);
    let total_amount = o.get("total_amount").map(|v| parse_amount(v, &o.param("total_amount"), false)).transpose()?;
    if let (Some(a), Some(total)) = (amount.and_then(MandateAmount::floor), total_amount) {
        if a > total {
            return Err(ApiError::param(
                ErrorCode::MandateAmountRangeInvalid,
                o.param("total_amount"),
                format!("total_amount {total} is below the smallest charge the mandate allows ({a})"),
            ));
        }
    }

    Ok(MandateTerms { mandate_type, amount, currency, recurrence, validity_period, max_occurrences, total_amount })
}

/// A stored mandate, as validation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mandate {
    pub id: MandateId,
    pub merchant_id: MerchantId,
    pub customer_id: CustomerId,
    pub payment_method_id: PaymentMethodId,
    pub status: MandateStatus,
    pub terms: MandateTerms,
}

/// What the series has used so far: charges paid or still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MandateUsage {
    pub occurrences: u32,
    pub amount: i64,
    pub last_charge_on: Option<NaiveDate>,
}

/// The card behind the mandate: only its expiry matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardExpiry {
    pub month: u32,
    pub year: i32,
}

impl CardExpiry {
    /// A card is good through the last day of its expiry month.
    pub fn is_expired_on(self, today: NaiveDate) -> bool {
        (self.year, self.month) < (today.year(), today.month())
    }
}

/// A merchant-initiated charge someone asks to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge<'a> {
    pub merchant_id: &'a MerchantId,
    /// Set when the charge named the customer (customer_id + payment_method_id).
    pub customer_id: Option<&'a CustomerId>,
    pub amount: Amount,
    pub currency: Currency,
    pub today: NaiveDate,
}

/// Every rule of DESIGN §1, in the order a merchant would want them reported.
/// `mandate` is `None` when the lookup found nothing; a mandate of another
/// merchant is reported the same way, so its existence is not revealed.
pub fn validate_charge(mandate: Option<&Mandate>, usage: MandateUsage, card: CardExpiry, charge: &Charge<'_>) -> Result<(), ApiError> {
    let fail = |code, param: Option<&str>, message: String| {
        let e = ApiError::new(code, message);
        Err(match param {
            Some(p) => e.with_param(p),
            None => e,
        })
    };
    let m = match mandate {
        Some(m) if &m.merchant_id == charge.merchant_id => m,
        _ => return fail(ErrorCode::MandateNotFound, Some("mandate_id"), "no such mandate".into()),
    };
    if let Some(c) = charge.customer_id {
        if c != &m.customer_id {
            return fail(ErrorCode::MandateCustomerMismatch, Some("customer_id"), format!("mandate {} belongs to another customer", m.id));
        }
    }
    match m.status {
        MandateStatus::Active => {}
        MandateStatus::Revoked => return fail(ErrorCode::MandateRevoked, None, format!("mandate {} has been revoked", m.id)),
        MandateStatus::Expired => return fail(ErrorCode::MandateExpired, None, format!("mandate {} has expired", m.id)),
    }
    let t = &m.terms;
    if let Some(vp) = t.validity_period {
        if let Some(start) = vp.start_date.filter(|s| charge.today < *s) {
            return fail(ErrorCode::MandateNotYetValid, None, format!("mandate {} is valid from {start}", m.id));
        }
        if let Some(end) = vp.end_date.filter(|e| charge.today > *e) {
            return fail(ErrorCode::MandateExpired, None, format!("mandate {} ended on {end}", m.id));
        }
    }
    if charge.currency != t.currency {
        return fail(
            ErrorCode::MandateCurrencyMismatch,
            Some("currency"),
            format!("the mandate is for {}, not {}", t.currency, charge.currency),
        );
    }
    if let Some(allowed) = t.amount {
        if !allowed.allows(charge.amount) {
            let message = match allowed {
                MandateAmount::Exact(a) => format!("amount {} differs from the mandate's fixed amount of {a}", charge.amount),
                MandateAmount::Range { min: Some(min), .. } if charge.amount < min => {
                    format!("amount {} is below the mandate's minimum of {min}", charge.amount)
                }
                MandateAmount::Range { max, .. } => {
                    format!("amount {} is above the mandate's maximum of {}", charge.amount, max.map_or(0, Amount::minor))
                }
            };
            return fail(ErrorCode::AmountOutOfMandateRange, Some("amount"), message);
        }
    }
    if let Some(max) = t.max_occurrences.filter(|max| usage.occurrences >= *max) {
        return fail(ErrorCode::MandateMaxOccurrencesReached, None, format!("the mandate allows {max} charges and all have been used"));
    }
    if let Some(total) = t.total_amount {
        let after = usage.amount + charge.amount.minor();
        if after > total.minor() {
            return fail(
                ErrorCode::MandateTotalAmountExceeded,
                Some("amount"),
                format!("this charge would bring the series to {after}, above the mandate's total of {total}"),
            );
        }
    }
    if let (Some(r), Some(last)) = (t.recurrence, usage.last_charge_on) {
        if !r.allows_charge(last, charge.today) {
            return fail(
                ErrorCode::ChargeTooEarly,
                None,
                format!("the mandate allows one charge every {} {} period(s); the last was on {last}", r.interval_count, r.kind),
            );
        }
    }
    if card.is_expired_on(charge.today) {
        return fail(
            ErrorCode::PaymentMethodExpired,
            Some("payment_method_id"),
            format!("the card on mandate {} expired at the end of {:02}/{}", m.id, card.month, card.year),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zar() -> Currency {
        Currency::parse("ZAR").unwrap()
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn amt(n: i64) -> Amount {
        Amount::new(n).unwrap()
    }

    struct Case {
        mandate: Mandate,
        usage: MandateUsage,
        card: CardExpiry,
        merchant: MerchantId,
        customer: Option<CustomerId>,
        amount: Amount,
        currency: Currency,
        today: NaiveDate,
    }

    impl Case {
        /// The contract example: R199 monthly, Dec 2026 - Nov 2027, 12 charges.
        fn new() -> Case {
            let merchant = MerchantId::parse("gym").unwrap();
            let terms = parse_mandate_options(
                &json!({
                    "type": "scheduled", "amount": 19900,
                    "recurrence": {"type": "monthly", "interval_count": 1, "on": 1},
                    "validity_period": {"start_date": "2026-12-01", "end_date": "2027-11-30"},
                    "max_occurrences": 12, "total_amount": 238800
                }),
                zar(),
            )
            .unwrap();
            let mandate = Mandate {
                id: MandateId::generate(),
                merchant_id: merchant.clone(),
                customer_id: CustomerId::generate(),
                payment_method_id: PaymentMethodId::generate(),
                status: MandateStatus::Active,
                terms,
            };
            Case {
                customer: Some(mandate.customer_id.clone()),
                mandate,
                usage: MandateUsage::default(),
                card: CardExpiry { month: 12, year: 2030 },
                merchant,
                amount: amt(19900),
                currency: zar(),
                today: d("2026-12-01"),
            }
        }

        fn check(&self) -> Result<(), ErrorCode> {
            let charge = Charge {
                merchant_id: &self.merchant,
                customer_id: self.customer.as_ref(),
                amount: self.amount,
                currency: self.currency,
                today: self.today,
            };
            validate_charge(Some(&self.mandate), self.usage, self.card, &charge).map_err(|e| e.code)
        }
    }

    #[test]
    fn a_charge_within_every_term_passes() {
        assert_eq!(Case::new().check(), Ok(()));
        let mut c = Case::new();
        c.usage = MandateUsage { occurrences: 11, amount: 11 * 19900, last_charge_on: Some(d("2027-10-01")) };
        c.today = d("2027-11-01");
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn missing_mandate() {
        let c = Case::new();
        let charge = Charge { merchant_id: &c.merchant, customer_id: None, amount: c.amount, currency: c.currency, today: c.today };
        assert_eq!(validate_charge(None, c.usage, c.card, &charge).unwrap_err().code, ErrorCode::MandateNotFound);
    }

    #[test]
    fn another_merchants_mandate_looks_missing() {
        let mut c = Case::new();
        c.merchant = MerchantId::parse("someone-else").unwrap();
        assert_eq!(c.check(), Err(ErrorCode::MandateNotFound));
    }

    #[test]
    fn another_customers_mandate() {
        let mut c = Case::new();
        c.customer = Some(CustomerId::generate());
        assert_eq!(c.check(), Err(ErrorCode::MandateCustomerMismatch));
    }

    #[test]
    fn revoked_and_expired_status() {
        let mut c = Case::new();
        c.mandate.status = MandateStatus::Revoked;
        assert_eq!(c.check(), Err(ErrorCode::MandateRevoked));
        c.mandate.status = MandateStatus::Expired;
        assert_eq!(c.check(), Err(ErrorCode::MandateExpired));
    }

    #[test]
    fn validity_period_bounds_are_inclusive() {
        let mut c = Case::new();
        c.today = d("2026-11-30");
        assert_eq!(c.check(), Err(ErrorCode::MandateNotYetValid));
        c.today = d("2027-11-30");
        assert_eq!(c.check(), Ok(()));
        c.today = d("2027-12-01");
        assert_eq!(c.check(), Err(ErrorCode::MandateExpired));
    }

    #[test]
    fn currency_must_match() {
        let mut c = Case::new();
        c.currency = Currency::parse("USD").unwrap();
        assert_eq!(c.check(), Err(ErrorCode::MandateCurrencyMismatch));
    }

    #[test]
    fn exact_and_ranged_amounts() {
        let mut c = Case::new();
        c.amount = amt(19901);
        assert_eq!(c.check(), Err(ErrorCode::AmountOutOfMandateRange));
        c.mandate.terms.amount = Some(MandateAmount::Range { min: Some(amt(1000)), max: Some(amt(50000)) });
        c.mandate.terms.total_amount = None;
        for (a, ok) in [(999, false), (1000, true), (50000, true), (50001, false)] {
            c.amount = amt(a);
            assert_eq!(c.check().is_ok(), ok, "{a}");
        }
    }

    #[test]
    fn occurrences_cap() {
        let mut c = Case::new();
        c.usage = MandateUsage { occurrences: 12, amount: 0, last_charge_on: None };
        assert_eq!(c.check(), Err(ErrorCode::MandateMaxOccurrencesReached));
    }

    #[test]
    fn total_amount_cap() {
        let mut c = Case::new();
        c.mandate.terms.max_occurrences = None;
        c.usage = MandateUsage { occurrences: 3, amount: 238800 - 19899, last_charge_on: None };
        assert_eq!(c.check(), Err(ErrorCode::MandateTotalAmountExceeded));
        c.usage.amount = 238800 - 19900;
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn recurrence_allows_one_charge_per_period() {
        let mut c = Case::new();
        c.usage = MandateUsage { occurrences: 1, amount: 19900, last_charge_on: Some(d("2026-12-03")) };
        c.today = d("2026-12-31");
        assert_eq!(c.check(), Err(ErrorCode::ChargeTooEarly));
        c.today = d("2027-01-01");
        assert_eq!(c.check(), Ok(()));

        let weekly = Recurrence { kind: RecurrenceType::Weekly, interval_count: 2, on: None, adjustment: None };
        // 2026-11-23 is a Monday.
        assert!(!weekly.allows_charge(d("2026-11-23"), d("2026-12-06")));
        assert!(weekly.allows_charge(d("2026-11-29"), d("2026-12-07")));
        let daily = Recurrence { kind: RecurrenceType::Daily, interval_count: 1, on: None, adjustment: None };
        assert!(!daily.allows_charge(d("2026-11-23"), d("2026-11-23")));
        assert!(daily.allows_charge(d("2026-11-23"), d("2026-11-24")));
        let yearly = Recurrence { kind: RecurrenceType::Yearly, interval_count: 1, on: None, adjustment: None };
        assert!(!yearly.allows_charge(d("2026-01-01"), d("2026-12-31")));
        assert!(yearly.allows_charge(d("2026-12-31"), d("2027-01-01")));
    }

    #[test]
    fn expired_card() {
        let mut c = Case::new();
        c.card = CardExpiry { month: 11, year: 2026 };
        assert_eq!(c.check(), Err(ErrorCode::PaymentMethodExpired));
        c.card = CardExpiry { month: 12, year: 2026 };
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn unconstrained_mandate_allows_any_amount_any_day() {
        let mut c = Case::new();
        c.mandate.terms = MandateTerms::unconstrained(zar());
        c.amount = amt(1);
        c.today = d("2040-01-01");
        c.card = CardExpiry { month: 1, year: 2041 };
        c.usage = MandateUsage { occurrences: 500, amount: 10_000_000, last_charge_on: Some(d("2040-01-01")) };
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn options_parsing_errors() {
        let code = |v: Value| parse_mandate_options(&v, zar()).unwrap_err().code;
        assert_eq!(code(json!({"amount": {"min": 500, "max": 100}})), ErrorCode::MandateAmountRangeInvalid);
        assert_eq!(code(json!({"currency": "USD"})), ErrorCode::MandateCurrencyMismatch);
        assert_eq!(code(json!({"type": "scheduled"})), ErrorCode::ParameterMissing);
        assert_eq!(code(json!({"type": "sometimes"})), ErrorCode::ParameterInvalidValue);
        assert_eq!(code(json!({"recurrence": {"type": "monthly", "on": 32}})), ErrorCode::RecurrenceInvalid);
        assert_eq!(code(json!({"recurrence": {"type": "daily", "on": 1}})), ErrorCode::RecurrenceInvalid);
        assert_eq!(code(json!({"recurrence": {"type": "weekly", "interval_count": 0}})), ErrorCode::RecurrenceInvalid);
        assert_eq!(
            code(json!({"validity_period": {"start_date": "2027-01-01", "end_date": "2026-01-01"}})),
            ErrorCode::ValidityPeriodInvalid
        );
        assert_eq!(code(json!({"validity_period": {"start_date": "01/02/2027"}})), ErrorCode::DateInvalid);
        assert_eq!(code(json!({"frequency": "often"})), ErrorCode::ParameterUnknown);
        assert_eq!(code(json!({"amount": 1000, "total_amount": 999})), ErrorCode::MandateAmountRangeInvalid);
        assert_eq!(code(json!("monthly")), ErrorCode::ParameterInvalidType);
    }

    #[test]
    fn moments_amount_bounds_and_on_objects() {
        let terms = |v: Value| parse_mandate_options(&v, zar()).unwrap();
        let ceiling = terms(json!({"amount": {"max": 5000}})).amount.unwrap();
        assert_eq!(ceiling, MandateAmount::Range { min: None, max: Some(amt(5000)) });
        assert!(ceiling.allows(amt(1)) && ceiling.allows(amt(5000)) && !ceiling.allows(amt(5001)));
        let floor = terms(json!({"amount": {"min": 1000}})).amount.unwrap();
        assert!(!floor.allows(amt(999)) && floor.allows(amt(1_000_000)));

        let r = |v: Value| terms(json!({"type": "scheduled", "recurrence": v})).recurrence.unwrap();
        assert_eq!(r(json!({"type": "weekly", "interval_count": 1, "on": {"days": ["mon"]}})).on, Some(1));
        let monthly = r(json!({"type": "monthly", "on": {"type": "day_of_month", "days": [1], "adjustment": "nearest_weekday"}}));
        assert_eq!((monthly.on, monthly.adjustment), (Some(1), Some(DayAdjustment::NearestWeekday)));
        assert_eq!(r(json!({"type": "yearly", "on": {"type": "day_of_year", "days": [32]}})).on, Some(32));

        let code = |v: Value| parse_mandate_options(&v, zar()).unwrap_err();
        let rec = |on: Value, kind: &str| code(json!({"recurrence": {"type": kind, "on": on}}));
        let e = rec(json!({"days": ["mon", "thu"]}), "weekly");
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::RecurrenceInvalid, Some("mandate_options.recurrence.on.days")));
        assert_eq!(rec(json!({"days": ["funday"]}), "weekly").code, ErrorCode::RecurrenceInvalid);
        assert_eq!(rec(json!({"type": "nth_day_of_month", "days": [1]}), "monthly").code, ErrorCode::RecurrenceInvalid);
        assert_eq!(rec(json!({"type": "day_of_month", "days": [32]}), "monthly").code, ErrorCode::RecurrenceInvalid);
        assert_eq!(rec(json!({"days": [1], "adjustment": "sometimes"}), "monthly").code, ErrorCode::ParameterInvalidValue);
        assert_eq!(rec(json!({"days": ["mon"], "adjustment": "nearest_weekday"}), "weekly").code, ErrorCode::RecurrenceInvalid);
        assert_eq!(rec(json!({}), "monthly").code, ErrorCode::ParameterMissing);
        assert_eq!(code(json!({"amount": {}})).code, ErrorCode::ParameterMissing);
    }

    #[test]
    fn terms_round_trip_through_json() {
        let t = Case::new().mandate.terms;
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["amount"], 19900);
        assert_eq!(v["recurrence"]["type"], "monthly");
        let back: MandateTerms = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
        let ranged = MandateTerms { amount: Some(MandateAmount::Range { min: Some(amt(1)), max: Some(amt(9)) }), ..t };
        let back: MandateTerms = serde_json::from_value(serde_json::to_value(&ranged).unwrap()).unwrap();
        assert_eq!(back, ranged);
    }
}

/// The `mandate` object replies and events carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MandateObject {
    pub id: MandateId,
    /// Always `"mandate"`.
    pub object: String,
    pub status: MandateStatus,
    pub customer_id: CustomerId,
    pub payment_method_id: PaymentMethodId,
    pub terms: MandateTerms,
    pub occurrences_used: u32,
    pub amount_used: i64,
    #[serde(with = "crate::timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The `payment_method` object: the card as anyone outside the vault sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PaymentMethodObject {
    pub id: PaymentMethodId,
    /// Always `"payment_method"`.
    pub object: String,
    pub customer_id: CustomerId,
    pub card: crate::internal::CardSummary,
    /// `off_session` only with a mandate; a method saved by a `one_time` is `on_session`.
    pub usage: String,
}
