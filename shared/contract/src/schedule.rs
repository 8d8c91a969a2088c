//! Schedules (DESIGN §1, §3): when a scheduled mandate's charges fall due, the
//! `schedule` object, and the `schedule.trigger` batch billing schedulers send.
//! Pure: the charge-scheduler service applies it.

use crate::create::CreateSession;
use crate::error::{ApiError, ErrorCode};
use crate::ids::{CustomerId, MandateId, PaymentMethodId, ScheduleId, SessionId};
use crate::lifecycle::wire_enum;
use crate::mandate::{DayAdjustment, Recurrence, RecurrenceType};
use crate::money::Currency;
use crate::timestamp;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::Value;

wire_enum!(ScheduleStatus {
    Active => "active",
    Paused => "paused",
    Completed => "completed",
    Cancelled => "cancelled",
    Stopped => "stopped",
});

impl ScheduleStatus {
    /// No charge will ever come from it again.
    pub fn is_terminal(self) -> bool {
        match self {
            ScheduleStatus::Active | ScheduleStatus::Paused => false,
            ScheduleStatus::Completed | ScheduleStatus::Cancelled | ScheduleStatus::Stopped => true,
        }
    }
}

fn last_day_of_month(year: i32, month: u32) -> u32 {
    let first_next = if month == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1) } else { NaiveDate::from_ymd_opt(year, month + 1, 1) };
    first_next.and_then(|d| d.pred_opt()).map_or(28, |d| d.day())
}

fn days_in_year(year: i32) -> u32 {
    if NaiveDate::from_ymd_opt(year, 2, 29).is_some() {
        366
    } else {
        365
    }
}

/// The day charge `cycle` falls on: `cycle` × `interval_count` periods after the
/// anchor's period, on the recurrence's `on` day (by default the anchor's own),
/// clamped into the period: a monthly charge on the 31st falls on a shorter
/// month's last day, a yearly one from 29 February on the 28th in other years.
pub fn due_date(r: Recurrence, anchor: NaiveDate, cycle: u32) -> NaiveDate {
    let day = unadjusted_due_date(r, anchor, cycle);
    match r.adjustment {
        Some(DayAdjustment::NearestWeekday) => nearest_weekday(day),
        None => day,
    }
}

/// Saturday goes back to Friday and Sunday on to Monday, unless that leaves
/// the month (then the other way), so a charge never changes period.
fn nearest_weekday(d: NaiveDate) -> NaiveDate {
    let (back, on) = match d.weekday() {
        Weekday::Sat => (1, 2),
        Weekday::Sun => (2, 1),
        _ => return d,
    };
    let (earlier, later) = (d - Days::new(back), d + Days::new(on));
    let prefer_earlier = d.weekday() == Weekday::Sat;
    match (prefer_earlier, earlier.month() == d.month(), later.month() == d.month()) {
        (true, true, _) | (false, true, false) => earlier,
        _ => later,
    }
}

fn unadjusted_due_date(r: Recurrence, anchor: NaiveDate, cycle: u32) -> NaiveDate {
    let steps = r.interval_count.max(1).saturating_mul(cycle);
    match r.kind {
        RecurrenceType::Daily => anchor + Days::new(steps as u64),
        RecurrenceType::Weekly => {
            let monday = anchor - Days::new(anchor.weekday().num_days_from_monday() as u64);
            let on = r.on.unwrap_or(anchor.weekday().number_from_monday()).clamp(1, 7);
            monday + Days::new(7 * steps as u64 + (on - 1) as u64)
        }
        RecurrenceType::Monthly => {
            let first = anchor.with_day(1).expect("day 1 exists") + Months::new(steps);
            let day = r.on.unwrap_or(anchor.day()).clamp(1, last_day_of_month(first.year(), first.month()));
            first.with_day(day).expect("clamped into the month")
        }
        RecurrenceType::Yearly => {
            let year = anchor.year() + steps as i32;
            match r.on {
                Some(on) => NaiveDate::from_yo_opt(year, on.clamp(1, days_in_year(year))).expect("clamped into the year"),
                None => {
                    let day = anchor.day().min(last_day_of_month(year, anchor.month()));
                    NaiveDate::from_ymd_opt(year, anchor.month(), day).expect("clamped into the month")
                }
            }
        }
    }
}

/// The first cycle falling on or after `from`.
pub fn first_cycle_from(r: Recurrence, anchor: NaiveDate, from: NaiveDate) -> u32 {
    (0..=2).find(|c| due_date(r, anchor, *c) >= from).unwrap_or(1)
}

/// The `schedule` object replies and `schedule.*` events carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Schedule {
    pub id: ScheduleId,
    pub object: String,
    pub status: ScheduleStatus,
    pub mandate_id: MandateId,
    pub customer_id: CustomerId,
    pub payment_method_id: PaymentMethodId,
    /// The first_in_series session that set it up.
    pub payment_session_id: SessionId,
    pub amount: i64,
    pub currency: Currency,
    pub recurrence: Recurrence,
    /// When the next charge (or retry) is made; none once the schedule has ended.
    #[serde(with = "timestamp::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Timestamp>"))]
    pub next_charge_at: Option<DateTime<Utc>>,
    /// Charges that were paid, and their sum.
    pub occurrences: u32,
    pub amount_charged: i64,
    pub max_occurrences: Option<u32>,
    /// Retries of the current charge after retryable declines (dunning).
    pub retries: u32,
    /// Every retry ever made.
    pub retries_total: u32,
    /// Why it stopped: an error or decline code.
    pub stop_reason: Option<String>,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub updated_at: DateTime<Utc>,
}

/// A decline worth trying again later (dunning); any other ends the schedule.
pub fn retryable_decline(decline_code: &str) -> bool {
    matches!(decline_code, "insufficient_funds" | "processing_error" | "try_again_later" | "issuer_unavailable")
}

/// `schedule.trigger` takes at most this many charges.
pub const MAX_TRIGGER_CHARGES: usize = 10_000;

/// The fields a trigger's charge may have.
const CHARGE_FIELDS: &[&str] = &["mandate_id", "customer_id", "payment_method_id", "amount", "currency", "external_reference", "metadata"];

/// A `schedule.trigger` body: the batch, each charge parsed as the
/// `next_in_series` it becomes (so its errors are the ones intake would give),
/// or its own error. A body that is not a batch at all is one error.
pub fn parse_trigger(body: &Value) -> Result<Vec<Result<CreateSession, ApiError>>, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::new(ErrorCode::BodyNotObject, "the body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "charges") {
        return Err(ApiError::param(ErrorCode::ParameterUnknown, k.clone(), format!("unknown field {k}")));
    }
    let charges = match obj.get("charges") {
        None | Some(Value::Null) => return Err(ApiError::param(ErrorCode::ParameterMissing, "charges", "charges is required")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::param(ErrorCode::ParameterInvalidType, "charges", "charges must be an array")),
    };
    if charges.is_empty() {
        return Err(ApiError::param(ErrorCode::ParameterInvalidEmpty, "charges", "charges must not be empty"));
    }
    if charges.len() > MAX_TRIGGER_CHARGES {
        return Err(ApiError::param(ErrorCode::TooManyCharges, "charges", format!("at most {MAX_TRIGGER_CHARGES} charges per trigger")));
    }
    Ok(charges.iter().map(parse_charge).collect())
}

fn parse_charge(v: &Value) -> Result<CreateSession, ApiError> {
    let obj = v.as_object().ok_or_else(|| ApiError::new(ErrorCode::ParameterInvalidType, "each charge must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !CHARGE_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::param(ErrorCode::ParameterUnknown, k.clone(), format!("unknown field {k}")));
    }
    if obj.get("external_reference").is_none_or(Value::is_null) {
        return Err(ApiError::param(ErrorCode::ParameterMissing, "external_reference", "external_reference is required on each charge"));
    }
    let mut session = obj.clone();
    session.insert("type".into(), Value::String("next_in_series".into()));
    CreateSession::parse(&Value::Object(session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn r(kind: RecurrenceType, interval_count: u32, on: Option<u32>) -> Recurrence {
        Recurrence { kind, interval_count, on, adjustment: None }
    }

    #[test]
    fn nearest_weekday_stays_in_the_month() {
        let adj = |on| Recurrence { adjustment: Some(DayAdjustment::NearestWeekday), ..r(RecurrenceType::Monthly, 1, Some(on)) };
        // 2026-08-01 is a Saturday: Friday 31 July would leave August, so Monday 3rd.
        assert_eq!(due_date(adj(1), d("2026-07-15"), 1), d("2026-08-03"));
        // 2026-11-01 is a Sunday: Monday 2nd.
        assert_eq!(due_date(adj(1), d("2026-10-15"), 1), d("2026-11-02"));
        // 2026-05-31 is a Sunday: Monday would leave May, so Friday 29th.
        assert_eq!(due_date(adj(31), d("2026-04-15"), 1), d("2026-05-29"));
        // 2026-12-05 is a Saturday: Friday 4th. A weekday stays.
        assert_eq!(due_date(adj(5), d("2026-11-15"), 1), d("2026-12-04"));
        assert_eq!(due_date(adj(2), d("2026-11-15"), 1), d("2026-12-02"));
    }

    #[test]
    fn monthly_on_the_31st_falls_on_each_months_last_day() {
        let m = r(RecurrenceType::Monthly, 1, Some(31));
        let got: Vec<_> = (0..4).map(|c| due_date(m, d("2027-01-31"), c)).collect();
        assert_eq!(got, [d("2027-01-31"), d("2027-02-28"), d("2027-03-31"), d("2027-04-30")]);
        assert_eq!(due_date(m, d("2028-01-15"), 1), d("2028-02-29"), "leap year");
    }

    #[test]
    fn interval_count_three_and_the_anchor_day_by_default() {
        let q = r(RecurrenceType::Monthly, 3, None);
        assert_eq!(due_date(q, d("2026-11-30"), 1), d("2027-02-28"));
        assert_eq!(due_date(q, d("2026-11-30"), 2), d("2027-05-30"));
        assert_eq!(due_date(r(RecurrenceType::Daily, 3, None), d("2026-12-30"), 2), d("2027-01-05"));
    }

    #[test]
    fn weekly_on_a_weekday() {
        // 2026-11-25 is a Wednesday; on = 5 is Friday.
        let w = r(RecurrenceType::Weekly, 1, Some(5));
        assert_eq!(due_date(w, d("2026-11-25"), 0), d("2026-11-27"));
        assert_eq!(due_date(w, d("2026-11-25"), 1), d("2026-12-04"));
        assert_eq!(due_date(r(RecurrenceType::Weekly, 2, Some(1)), d("2026-11-25"), 1), d("2026-12-07"));
        assert_eq!(due_date(r(RecurrenceType::Weekly, 1, None), d("2026-11-25"), 1), d("2026-12-02"));
    }

    #[test]
    fn yearly_from_a_leap_day_and_by_day_of_year() {
        let y = r(RecurrenceType::Yearly, 1, None);
        assert_eq!(due_date(y, d("2028-02-29"), 1), d("2029-02-28"));
        assert_eq!(due_date(y, d("2028-02-29"), 4), d("2032-02-29"));
        assert_eq!(due_date(r(RecurrenceType::Yearly, 1, Some(366)), d("2026-01-01"), 1), d("2027-12-31"));
        assert_eq!(due_date(r(RecurrenceType::Yearly, 1, Some(366)), d("2026-01-01"), 2), d("2028-12-31"));
    }

    #[test]
    fn first_cycle_from_a_start_date() {
        let m = r(RecurrenceType::Monthly, 1, Some(1));
        assert_eq!(first_cycle_from(m, d("2026-12-15"), d("2026-12-15")), 1, "the 1st of December has passed");
        assert_eq!(first_cycle_from(m, d("2026-12-01"), d("2026-12-01")), 0);
    }

    #[test]
    fn due_dates_rise_and_keep_to_their_periods() {
        // A property over every anchor of four years and each kind: strictly increasing,
        // one per period, and allowed by the mandate's own one-per-period rule.
        let mut day = d("2026-01-01");
        while day < d("2030-01-01") {
            for (kind, on) in [
                (RecurrenceType::Daily, None),
                (RecurrenceType::Weekly, Some(7)),
                (RecurrenceType::Monthly, Some(31)),
                (RecurrenceType::Monthly, None),
                (RecurrenceType::Yearly, None),
            ] {
                for interval in [1, 3] {
                    let rec = r(kind, interval, on);
                    let dates: Vec<_> = (0..14).map(|c| due_date(rec, day, c)).collect();
                    for w in dates.windows(2) {
                        assert!(w[0] < w[1], "{rec:?} from {day}: {w:?}");
                        assert!(rec.allows_charge(w[0], w[1]), "{rec:?} from {day}: {w:?} too close");
                    }
                }
            }
            day = day.succ_opt().unwrap();
        }
    }

    #[test]
    fn trigger_items_fail_alone() {
        let ok = json!({"mandate_id": "md_00000000000000000000000000", "amount": 100, "currency": "ZAR", "external_reference": "inv-1"});
        let parsed = parse_trigger(&json!({"charges": [ok, {"amount": 100}, {"mandate_id": "md_00000000000000000000000000", "amount": 0,
            "currency": "ZAR", "external_reference": "x"}, {"mandate_id": "md_00000000000000000000000000", "amount": 1, "currency": "ZAR",
            "external_reference": "y", "capture_method": "manual"}]}))
        .unwrap();
        assert!(parsed[0].is_ok());
        assert_eq!(parsed[1].as_ref().unwrap_err().code, ErrorCode::ParameterMissing);
        assert_eq!(parsed[2].as_ref().unwrap_err().code, ErrorCode::AmountTooSmall);
        assert_eq!(parsed[3].as_ref().unwrap_err().code, ErrorCode::ParameterUnknown);
        assert_eq!(parse_trigger(&json!({"charges": []})).unwrap_err().code, ErrorCode::ParameterInvalidEmpty);
        let many = vec![ok_charge(); MAX_TRIGGER_CHARGES + 1];
        assert_eq!(parse_trigger(&json!({ "charges": many })).unwrap_err().code, ErrorCode::TooManyCharges);
    }

    fn ok_charge() -> Value {
        json!({"mandate_id": "md_00000000000000000000000000", "amount": 100, "currency": "ZAR", "external_reference": "inv"})
    }
}
