//! `payment_session.create`: the body parsed once into proven values.

use crate::error::{ApiError, ErrorCode};
use crate::fields::Obj;
use crate::ids::{CustomerId, MandateId, PaymentMethodId};
use crate::lifecycle::SessionType;
use crate::mandate::{parse_mandate_options, parse_recurrence, MandateAmount, MandateTerms, Recurrence, ValidityPeriod};
use crate::money::{parse_amount, Amount, Currency};
use crate::session::{CaptureMethod, SavePaymentMethod};
use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_LEN: usize = 40;
pub const MAX_METADATA_VALUE_LEN: usize = 500;
pub const MAX_EXTERNAL_REFERENCE_LEN: usize = 255;
pub const MAX_URL_LEN: usize = 2048;
pub const MIN_EXPIRES_IN: i64 = 60;
pub const MAX_EXPIRES_IN: i64 = 7 * 24 * 3600;
pub const DEFAULT_EXPIRES_IN: i64 = 24 * 3600;

/// An absolute http(s) URL the customer is sent back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnUrl(String);

impl ReturnUrl {
    pub fn parse(s: &str) -> Result<ReturnUrl, ApiError> {
        let bad = |why: &str| ApiError::param(ErrorCode::UrlInvalid, "return_url", format!("return_url {why}"));
        if s.len() > MAX_URL_LEN {
            return Err(ApiError::param(
                ErrorCode::StringTooLong,
                "return_url",
                format!("return_url must be at most {MAX_URL_LEN} characters"),
            ));
        }
        let u = url::Url::parse(s).map_err(|e| bad(&format!("is not an absolute URL: {e}")))?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(bad("must use https or http"));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(bad("must have a host"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        Ok(ReturnUrl(u.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    pub name: String,
    pub email: String,
}

fn parse_email(s: &str, param: &str) -> Result<String, ApiError> {
    let valid = s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && !domain.contains('@')
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(ApiError::param(ErrorCode::EmailInvalid, param, format!("{param} is not a valid email address")))
    }
}

/// Who the session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRef {
    New(NewCustomer),
    Existing(CustomerId),
}

/// What a `next_in_series` charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeTarget {
    Mandate(MandateId),
    PaymentMethod { customer_id: CustomerId, payment_method_id: PaymentMethodId },
}

/// `subscription_options`: the scheduler creates `next_in_series` sessions on
/// this plan once the `first_in_series` completes. What is left out is taken
/// from the mandate, as Moment does: its recurrence, its fixed amount (else
/// the session's), its validity period as the active period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SubscriptionOptions {
    pub recurrence: Recurrence,
    /// Defaults to the mandate's fixed amount, else the session's.
    pub amount: Option<Amount>,
    pub start_date: Option<NaiveDate>,
    /// No charge falls after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    pub max_occurrences: Option<u32>,
    /// The UTC time of day charges run; the scheduler's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hh_mm")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub scheduled_time: Option<NaiveTime>,
}

/// `HH:MM`, as Moment writes `scheduled_time`.
mod hh_mm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<NaiveTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.format("%H:%M").to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveTime>, D::Error> {
        Option::<String>::deserialize(d)?.map(|s| NaiveTime::parse_from_str(&s, "%H:%M").map_err(serde::de::Error::custom)).transpose()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSession {
    pub session_type: SessionType,
    pub amount: Amount,
    pub currency: Currency,
    pub customer: Option<CustomerRef>,
    pub return_url: Option<ReturnUrl>,
    pub save_payment_method: SavePaymentMethod,
    pub capture_method: CaptureMethod,
    pub mandate_terms: Option<MandateTerms>,
    pub subscription_options: Option<SubscriptionOptions>,
    pub charge_target: Option<ChargeTarget>,
    /// Customer-present only; seconds from creation.
    pub expires_in: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub external_reference: Option<String>,
    /// How this session's checkout looks, over the merchant's settings (DESIGN §13).
    pub branding: Option<crate::branding::Branding>,
    /// Redirect (the default), or framed in the merchant's page.
    pub presentation_mode: crate::branding::PresentationMode,
    /// The language its checkout speaks (none: the customer's browser decides).
    pub locale: Option<crate::branding::Locale>,
}

const COMMON: &[&str] = &["type", "amount", "currency", "capture_method", "metadata", "external_reference"];
const ONE_TIME: &[&str] =
    &["customer", "customer_id", "return_url", "save_payment_method", "expires_in", "branding", "presentation_mode", "locale"];
const FIRST_IN_SERIES: &[&str] = &[
    "customer",
    "customer_id",
    "return_url",
    "expires_in",
    "mandate_options",
    "subscription_options",
    "branding",
    "presentation_mode",
    "locale",
];
const NEXT_IN_SERIES: &[&str] = &["customer_id", "payment_method_id", "mandate_id"];

fn allowed_for(ty: SessionType) -> &'static [&'static str] {
    match ty {
        SessionType::OneTime => ONE_TIME,
        SessionType::FirstInSeries => FIRST_IN_SERIES,
        SessionType::NextInSeries => NEXT_IN_SERIES,
    }
}

/// Moment's pattern for `external_reference`.
fn is_reference(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn parse_external_reference(o: &Obj<'_>) -> Result<Option<String>, ApiError> {
    let Some(r) = o.str("external_reference", MAX_EXTERNAL_REFERENCE_LEN)? else { return Ok(None) };
    if !is_reference(r) {
        let p = o.param("external_reference");
        return Err(ApiError::param(
            ErrorCode::StringInvalidCharacters,
            p.as_str(),
            format!("{p} may hold only letters, digits, _ and - (^[a-zA-Z0-9_-]+$)"),
        ));
    }
    Ok(Some(r.to_owned()))
}

impl CreateSession {
    /// Either form, Moment's nested `options` or the flat one, into one
    /// request; errors name fields as the sender wrote them.
    pub fn parse(body: &Value) -> Result<CreateSession, ApiError> {
        let flat = crate::options::flatten(body)?;
        CreateSession::parse_flat(&flat.body).map_err(|e| flat.rename(e))
    }

    /// Checks, in order: shape, `type` (`one_time` when absent, as Moment's),
    /// unknown fields, fields foreign to the type, then each field. The first
    /// fault is the one reported.
    fn parse_flat(body: &Value) -> Result<CreateSession, ApiError> {
        let o = Obj::new(body, "")?;
        let session_type = match o.get("type") {
            None => SessionType::OneTime,
            Some(t) => t.as_str().and_then(SessionType::parse).ok_or_else(|| {
                ApiError::param(ErrorCode::SessionTypeInvalid, "type", "type must be one_time, first_in_series or next_in_series")
            })?,
        };

        let known = |k: &str| COMMON.contains(&k) || ONE_TIME.contains(&k) || FIRST_IN_SERIES.contains(&k) || NEXT_IN_SERIES.contains(&k);
        if let Some(k) = o.keys().find(|k| !known(k)) {
            return Err(ApiError::param(ErrorCode::ParameterUnknown, k.as_str(), format!("unknown field {k}")));
        }
        let allowed = allowed_for(session_type);
        if let Some(k) = o.keys().find(|k| !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str())) {
            return Err(ApiError::param(
                ErrorCode::ParameterNotAllowedForType,
                k.as_str(),
                format!("{k} is not allowed on a {session_type} session"),
            ));
        }

        // A zero amount verifies the card without charging it (Moment's payment
        // method verification), wherever the customer is there to give it.
        let verification_allowed = session_type.customer_present();
        let amount = parse_amount(o.require("amount")?, "amount", verification_allowed)?;
        let currency = Currency::parse(o.req_str("currency", 3).map_err(|e| match e.code {
            ErrorCode::StringTooLong => {
                ApiError::param(ErrorCode::CurrencyInvalid, "currency", "currency must be a 3-letter ISO 4217 code")
            }
            _ => e,
        })?)?;
        let capture_method = o.choice("capture_method", CaptureMethod::parse, "automatic, manual")?.unwrap_or(CaptureMethod::Automatic);
        if capture_method == CaptureMethod::Manual && amount.is_zero() {
            return Err(ApiError::param(
                ErrorCode::CaptureMethodNotAllowed,
                "capture_method",
                "a zero-amount verification has nothing to capture; use capture_method automatic",
            ));
        }
        let save_payment_method =
            o.choice("save_payment_method", SavePaymentMethod::parse, "always, never, prompt")?.unwrap_or(SavePaymentMethod::Never);

        let customer = parse_customer(&o, session_type)?;
        let needs_customer = session_type == SessionType::FirstInSeries || save_payment_method != SavePaymentMethod::Never;
        if needs_customer && customer.is_none() {
            let why = if session_type == SessionType::FirstInSeries {
                "a first_in_series session needs customer or customer_id: the mandate is theirs"
            } else {
                "saving the payment method needs customer or customer_id"
            };
            return Err(ApiError::param(ErrorCode::ParameterMissing, "customer", why));
        }

        // Optional, as Moment's: without one the checkout ends on its own receipt.
        let return_url = o.str("return_url", MAX_URL_LEN + 1)?.map(ReturnUrl::parse).transpose()?;
        let expires_in = o.int("expires_in", MIN_EXPIRES_IN, MAX_EXPIRES_IN, ErrorCode::ExpiresInOutOfRange)?;

        let mandate_terms = match session_type {
            SessionType::FirstInSeries => Some(match o.get("mandate_options") {
                Some(v) => {
                    let mut terms = parse_mandate_options(v, currency)?;
                    // Moment's consent page: terms without an amount consent to
                    // no more than this first payment. A verification has no
                    // amount to be a ceiling.
                    if terms.amount.is_none() && !amount.is_zero() {
                        terms.amount = Some(MandateAmount::Range { min: None, max: Some(amount) });
                    }
                    terms
                }
                None => MandateTerms::unconstrained(currency),
            }),
            _ => None,
        };
        let subscription_options = match (o.get("subscription_options"), &mandate_terms) {
            (Some(v), Some(terms)) => Some(parse_subscription(v, terms, amount)?),
            _ => None,
        };
        let charge_target = match session_type {
            SessionType::NextInSeries => Some(parse_charge_target(&o)?),
            _ => None,
        };

        Ok(CreateSession {
            session_type,
            amount,
            currency,
            customer,
            return_url,
            save_payment_method,
            capture_method,
            mandate_terms,
            subscription_options,
            charge_target,
            expires_in,
            metadata: parse_metadata(&o)?,
            external_reference: parse_external_reference(&o)?,
            branding: o.get("branding").map(|v| crate::branding::Branding::parse(v, "branding")).transpose()?,
            presentation_mode: o
                .choice("presentation_mode", crate::branding::PresentationMode::parse, "redirect, embedded_modal, embedded_inline")?
                .unwrap_or(crate::branding::PresentationMode::Redirect),
            locale: crate::branding::Locale::from_field(&o)?,
        })
    }
}

fn parse_customer(o: &Obj<'_>, ty: SessionType) -> Result<Option<CustomerRef>, ApiError> {
    if !ty.customer_present() {
        return Ok(None);
    }
    match (o.get("customer"), o.str("customer_id", 64)?) {
        (Some(_), Some(_)) => Err(ApiError::param(ErrorCode::ParameterConflict, "customer_id", "give customer or customer_id, not both")),
        (None, Some(id)) => Ok(Some(CustomerRef::Existing(CustomerId::parse(id).map_err(|e| e.with_param("customer_id"))?))),
        (Some(v), None) => {
            let c = Obj::new(v, "customer")?;
            c.only(&["name", "email"])?;
            let name = c.req_str("name", 255)?.to_owned();
            let email = parse_email(c.req_str("email", 254)?, "customer.email")?;
            Ok(Some(CustomerRef::New(NewCustomer { name, email })))
        }
        (None, None) => Ok(None),
    }
}

fn parse_charge_target(o: &Obj<'_>) -> Result<ChargeTarget, ApiError> {
    let id = |key: &str| o.str(key, 64);
    match (id("mandate_id")?, id("customer_id")?, id("payment_method_id")?) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::param(
            ErrorCode::ParameterConflict,
            "mandate_id",
            "give mandate_id, or customer_id with payment_method_id, not both",
        )),
        (Some(m), None, None) => Ok(ChargeTarget::Mandate(MandateId::parse(m).map_err(|e| e.with_param("mandate_id"))?)),
        (None, Some(c), Some(p)) => Ok(ChargeTarget::PaymentMethod {
            customer_id: CustomerId::parse(c).map_err(|e| e.with_param("customer_id"))?,
            payment_method_id: PaymentMethodId::parse(p).map_err(|e| e.with_param("payment_method_id"))?,
        }),
        (None, Some(_), None) => Err(o.missing("payment_method_id")),
        (None, None, _) => Err(ApiError::param(
            ErrorCode::ParameterMissing,
            "mandate_id",
            "a next_in_series session needs mandate_id, or customer_id with payment_method_id",
        )),
    }
}

pub(crate) fn parse_metadata(o: &Obj<'_>) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = o.get("metadata") else { return Ok(BTreeMap::new()) };
    let map = v.as_object().ok_or_else(|| o.wrong_type("metadata", "an object of strings"))?;
    let bad = |msg: String| ApiError::param(ErrorCode::MetadataInvalid, "metadata", msg);
    if map.len() > MAX_METADATA_KEYS {
        return Err(bad(format!("metadata may have at most {MAX_METADATA_KEYS} keys")));
    }
    map.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_LEN {
                return Err(bad(format!("metadata keys must be 1-{MAX_METADATA_KEY_LEN} characters")));
            }
            let control = |s: &str| s.chars().any(char::is_control);
            if control(k) || v.as_str().is_some_and(control) {
                let param = format!("metadata.{k}");
                return Err(ApiError::param(
                    ErrorCode::StringInvalidCharacters,
                    &param,
                    format!("{param} must not contain control characters"),
                ));
            }
            match v.as_str() {
                Some(s) if s.chars().count() <= MAX_METADATA_VALUE_LEN => Ok((k.clone(), s.to_owned())),
                Some(_) => Err(bad(format!("metadata.{k} must be at most {MAX_METADATA_VALUE_LEN} characters"))),
                None => Err(bad(format!("metadata.{k} must be a string"))),
            }
        })
        .collect()
}

/// Moment's fields (`active_period`, `amount`, `scheduled_time`, `{}` valid)
/// and ours (`recurrence`, `start_date`, `max_occurrences`); what is left out
/// comes from the mandate. A plan the mandate would refuse is refused here.
fn parse_subscription(v: &Value, terms: &MandateTerms, session_amount: Amount) -> Result<SubscriptionOptions, ApiError> {
    let o = Obj::new(v, "subscription_options")?;
    o.only(&["recurrence", "amount", "start_date", "max_occurrences", "active_period", "scheduled_time"])?;
    let recurrence = match o.get("recurrence") {
        Some(r) => parse_recurrence(r, &o.param("recurrence"))?,
        None => terms.recurrence.ok_or_else(|| {
            ApiError::param(
                ErrorCode::ParameterMissing,
                o.param("recurrence"),
                "a subscription needs a recurrence: give mandate_options.recurrence or subscription_options.recurrence",
            )
        })?,
    };
    let active = match o.get("active_period") {
        Some(p) => {
            let p = Obj::new(p, &o.param("active_period"))?;
            p.only(&["start_date", "end_date"])?;
            Some(ValidityPeriod { start_date: p.date("start_date")?, end_date: p.date("end_date")? })
        }
        None => None,
    };
    let start_date = match (o.date("start_date")?, active.and_then(|a| a.start_date)) {
        (Some(_), Some(_)) => {
            return Err(ApiError::param(
                ErrorCode::ParameterConflict,
                o.param("start_date"),
                "give subscription_options.start_date or active_period.start_date, not both",
            ))
        }
        (mine, moments) => mine.or(moments),
    };
    let validity = terms.validity_period.unwrap_or(ValidityPeriod { start_date: None, end_date: None });
    let start_date = start_date.or(validity.start_date);
    let end_date = active.and_then(|a| a.end_date).or(validity.end_date);
    let outside = |d: NaiveDate| validity.start_date.is_some_and(|s| d < s) || validity.end_date.is_some_and(|e| d > e);
    if let Some(d) = start_date.filter(|d| outside(*d)).or(end_date.filter(|d| outside(*d))) {
        return Err(ApiError::param(
            ErrorCode::ValidityPeriodInvalid,
            o.param("active_period"),
            format!("the subscription's {d} falls outside the mandate's validity period"),
        ));
    }
    if let (Some(s), Some(e)) = (start_date, end_date) {
        if s > e {
            return Err(ApiError::param(ErrorCode::ValidityPeriodInvalid, o.param("active_period"), format!("start {s} is after end {e}")));
        }
    }
    let amount = match o.get("amount") {
        Some(a) => Some(parse_amount(a, &o.param("amount"), false)?),
        None => match terms.amount {
            Some(MandateAmount::Exact(a)) => Some(a),
            _ => None,
        },
    };
    let charged = amount.unwrap_or(session_amount);
    if charged.is_zero() {
        return Err(ApiError::param(
            ErrorCode::ParameterMissing,
            o.param("amount"),
            "a verification charges nothing: give the subscription an amount (or the mandate a fixed one)",
        ));
    }
    if let Some(allowed) = terms.amount.filter(|allowed| !allowed.allows(charged)) {
        return Err(ApiError::param(
            ErrorCode::AmountOutOfMandateRange,
            o.param("amount"),
            format!("the subscription would charge {charged}, which the mandate's amount ({}) does not allow", amount_terms(allowed)),
        ));
    }
    let scheduled_time = o
        .str("scheduled_time", 5)?
        .map(|t| {
            NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
                ApiError::param(ErrorCode::ParameterInvalidValue, o.param("scheduled_time"), "scheduled_time must be a UTC time as HH:MM")
            })
        })
        .transpose()?;
    Ok(SubscriptionOptions {
        recurrence,
        amount,
        start_date,
        end_date,
        max_occurrences: o.int("max_occurrences", 1, 100_000, ErrorCode::ParameterInvalidValue)?.map(|n| n as u32),
        scheduled_time,
    })
}

fn amount_terms(a: MandateAmount) -> String {
    match a {
        MandateAmount::Exact(a) => format!("exactly {a}"),
        MandateAmount::Range { min, max } => {
            let b = |x: Option<Amount>| x.map_or("-".to_owned(), |a| a.to_string());
            format!("{} to {}", b(min), b(max))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one_time() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/create-one_time.json")).unwrap()
    }

    fn with(mut v: Value, key: &str, val: Value) -> Value {
        v[key] = val;
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn code(v: Value) -> (ErrorCode, Option<String>) {
        let e = CreateSession::parse(&v).unwrap_err();
        (e.code, e.param)
    }

    #[test]
    fn the_contract_examples_parse() {
        let s = CreateSession::parse(&one_time()).unwrap();
        assert_eq!(s.session_type, SessionType::OneTime);
        assert_eq!(s.amount.minor(), 12550);
        assert_eq!(s.save_payment_method, SavePaymentMethod::Prompt);
        assert_eq!(s.expires_in, Some(3600));

        let f: Value = serde_json::from_str(include_str!("../tests/fixtures/create-first_in_series.json")).unwrap();
        let s = CreateSession::parse(&f).unwrap();
        assert_eq!(s.mandate_terms.unwrap().max_occurrences, Some(12));

        let n: Value = serde_json::from_str(include_str!("../tests/fixtures/create-next_in_series.json")).unwrap();
        let s = CreateSession::parse(&n).unwrap();
        assert!(matches!(s.charge_target, Some(ChargeTarget::PaymentMethod { .. })));
    }

    #[test]
    fn each_fault_has_its_code_and_param() {
        let p = |s: &str| Some(s.to_owned());
        assert_eq!(code(json!([1, 2])), (ErrorCode::BodyNotObject, None));
        assert_eq!(CreateSession::parse(&without(one_time(), "type")).unwrap().session_type, SessionType::OneTime);
        assert_eq!(code(with(one_time(), "type", json!("recurring"))), (ErrorCode::SessionTypeInvalid, p("type")));
        assert_eq!(code(with(one_time(), "colour", json!("red"))), (ErrorCode::ParameterUnknown, p("colour")));
        assert_eq!(code(with(one_time(), "mandate_id", json!("md_x"))), (ErrorCode::ParameterNotAllowedForType, p("mandate_id")));
        assert_eq!(code(without(one_time(), "amount")), (ErrorCode::ParameterMissing, p("amount")));
        assert_eq!(code(with(one_time(), "amount", json!("12550"))), (ErrorCode::ParameterInvalidType, p("amount")));
        assert_eq!(code(with(one_time(), "amount", json!(-1))), (ErrorCode::AmountTooSmall, p("amount")));
        assert!(CreateSession::parse(&with(one_time(), "amount", json!(0))).unwrap().amount.is_zero(), "a one_time verification");
        assert_eq!(code(with(one_time(), "amount", json!(1e20))), (ErrorCode::AmountTooLarge, p("amount")));
        assert_eq!(code(with(one_time(), "currency", json!("XYZ"))), (ErrorCode::CurrencyInvalid, p("currency")));
        assert_eq!(code(with(one_time(), "currency", json!("RANDS"))), (ErrorCode::CurrencyInvalid, p("currency")));
        assert_eq!(code(with(one_time(), "capture_method", json!("later"))), (ErrorCode::ParameterInvalidValue, p("capture_method")));
        assert_eq!(
            code(with(one_time(), "external_reference", json!("r".repeat(256)))),
            (ErrorCode::StringTooLong, p("external_reference"))
        );
        assert_eq!(code(with(one_time(), "external_reference", json!(""))), (ErrorCode::ParameterInvalidEmpty, p("external_reference")));
        assert_eq!(code(with(one_time(), "return_url", json!("ftp://x.example/"))), (ErrorCode::UrlInvalid, p("return_url")));
        assert_eq!(code(with(one_time(), "return_url", json!("/relative"))), (ErrorCode::UrlInvalid, p("return_url")));
        assert_eq!(CreateSession::parse(&without(one_time(), "return_url")).unwrap().return_url, None);
        assert_eq!(
            code(with(one_time(), "external_reference", json!("inv 1/2"))),
            (ErrorCode::StringInvalidCharacters, p("external_reference"))
        );
        assert_eq!(code(with(one_time(), "expires_in", json!(10))), (ErrorCode::ExpiresInOutOfRange, p("expires_in")));
        assert_eq!(code(with(one_time(), "expires_in", json!(1.5))), (ErrorCode::ParameterInvalidInteger, p("expires_in")));
        assert_eq!(code(with(one_time(), "metadata", json!({"n": 1}))), (ErrorCode::MetadataInvalid, p("metadata")));
        assert_eq!(
            code(with(one_time(), "customer", json!({"name": "A", "email": "not-an-email"}))),
            (ErrorCode::EmailInvalid, p("customer.email"))
        );
        assert_eq!(code(with(one_time(), "customer", json!({"name": "A"}))), (ErrorCode::ParameterMissing, p("customer.email")));
        assert_eq!(
            code(with(one_time(), "customer_id", json!("cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3"))),
            (ErrorCode::ParameterConflict, p("customer_id"))
        );
        assert_eq!(code(with(without(one_time(), "customer"), "customer_id", json!("cus_nope"))), (ErrorCode::IdInvalid, p("customer_id")));
        assert_eq!(code(without(one_time(), "customer")), (ErrorCode::ParameterMissing, p("customer")));
    }

    #[test]
    fn type_specific_rules() {
        let next = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR"});
        assert_eq!(code(next.clone()), (ErrorCode::ParameterMissing, Some("mandate_id".into())));
        assert_eq!(code(with(next.clone(), "return_url", json!("https://x.example"))).0, ErrorCode::ParameterNotAllowedForType);
        assert_eq!(code(with(next.clone(), "customer_id", json!("cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3"))).1, Some("payment_method_id".into()));
        let both = with(
            with(next.clone(), "mandate_id", json!("md_01JDV4A7A1B2C3D4E5F6G7H8J9")),
            "customer_id",
            json!("cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3"),
        );
        assert_eq!(code(both).0, ErrorCode::ParameterConflict);
        let ok = CreateSession::parse(&with(next, "mandate_id", json!("md_01JDV4A7A1B2C3D4E5F6G7H8J9"))).unwrap();
        assert_eq!(ok.return_url, None);

        let verify = json!({"type": "first_in_series", "amount": 0, "currency": "USD",
            "customer": {"name": "B", "email": "b@example.com"}, "return_url": "https://x.example/r"});
        let s = CreateSession::parse(&verify).unwrap();
        assert!(s.amount.is_zero());
        assert_eq!(s.mandate_terms.unwrap(), MandateTerms::unconstrained(Currency::parse("USD").unwrap()));
        assert_eq!(code(with(verify.clone(), "capture_method", json!("manual"))).0, ErrorCode::CaptureMethodNotAllowed);
        assert_eq!(code(with(verify.clone(), "save_payment_method", json!("always"))).0, ErrorCode::ParameterNotAllowedForType);
        assert_eq!(code(without(verify, "customer")).1, Some("customer".into()));
    }

    /// Moment's documented bodies, as written on its pages.
    #[test]
    fn moments_nested_bodies() {
        let manual = json!({"amount": 100000, "currency": "ZAR", "type": "one_time",
            "options": {"checkout_options": {"return_url": "https://merchant.example/order/123/status"},
                        "payment_method_options": {"card": {"capture_method": "manual"}}},
            "external_reference": "order_123"});
        let s = CreateSession::parse(&manual).unwrap();
        assert_eq!(
            (s.capture_method, s.return_url.unwrap().as_str()),
            (CaptureMethod::Manual, "https://merchant.example/order/123/status")
        );

        let minimal = CreateSession::parse(&json!({"amount": 200, "currency": "ZAR"})).unwrap();
        assert_eq!((minimal.session_type, minimal.return_url), (SessionType::OneTime, None));

        let recurring = json!({"type": "first_in_series", "amount": 5000, "currency": "ZAR",
            "options": {"customer": {"name": "Alex", "email": "alex@example.com"}}});
        let s = CreateSession::parse(&recurring).unwrap();
        assert!(matches!(s.customer, Some(CustomerRef::New(ref c)) if c.name == "Alex"));
        assert_eq!(s.mandate_terms.unwrap(), MandateTerms::unconstrained(Currency::parse("ZAR").unwrap()));

        let next = json!({"type": "next_in_series", "amount": 5000, "currency": "ZAR",
            "options": {"customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3", "payment_method_id": "pm_01JDV3W2M8K5F4Q7Z9X0A1B2C3"}});
        assert!(matches!(CreateSession::parse(&next).unwrap().charge_target, Some(ChargeTarget::PaymentMethod { .. })));

        // The subscriptions page's monthly example: `{}` takes all from the mandate.
        let monthly = json!({"type": "first_in_series", "amount": 2000, "currency": "ZAR",
            "options": {"customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3",
            "mandate_options": {"type": "scheduled", "amount": 2000,
                "validity_period": {"start_date": "2026-01-01", "end_date": "2026-12-31"},
                "recurrence": {"type": "monthly", "interval_count": 1,
                               "on": {"type": "day_of_month", "days": [1], "adjustment": "nearest_weekday"}}},
            "subscription_options": {}}});
        let sub = CreateSession::parse(&monthly).unwrap().subscription_options.unwrap();
        assert_eq!((sub.recurrence.on, sub.amount.map(|a| a.minor())), (Some(1), Some(2000)));
        assert_eq!((sub.start_date, sub.end_date), (NaiveDate::from_ymd_opt(2026, 1, 1), NaiveDate::from_ymd_opt(2026, 12, 31)));
    }

    #[test]
    fn moments_mandate_and_subscription_rules() {
        let first = |options: Value| {
            json!({"type": "first_in_series", "amount": 5000, "currency": "ZAR",
            "options": {"customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3", "mandate_options": options}})
        };
        // No amount in the terms: the first payment is the ceiling.
        let t = CreateSession::parse(&first(json!({"type": "on_demand"}))).unwrap().mandate_terms.unwrap();
        assert_eq!(t.amount, Some(MandateAmount::Range { min: None, max: Some(Amount::new(5000).unwrap()) }));

        let with_sub = |sub: Value| {
            let mut b = first(json!({"type": "scheduled", "amount": {"max": 3000}, "recurrence": {"type": "weekly"},
                "validity_period": {"end_date": "2027-06-30"}}));
            b["options"]["subscription_options"] = sub;
            CreateSession::parse(&b)
        };
        let e = with_sub(json!({})).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::AmountOutOfMandateRange, Some("options.subscription_options.amount")));
        let s = with_sub(json!({"amount": 2500, "scheduled_time": "09:30"})).unwrap().subscription_options.unwrap();
        assert_eq!(
            (s.amount.unwrap().minor(), s.scheduled_time, s.end_date),
            (2500, NaiveTime::from_hms_opt(9, 30, 0), NaiveDate::from_ymd_opt(2027, 6, 30))
        );
        let e = with_sub(json!({"amount": 2500, "active_period": {"end_date": "2028-01-01"}})).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::ValidityPeriodInvalid, Some("options.subscription_options.active_period")));
        let e = with_sub(json!({"amount": 2500, "scheduled_time": "9am"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("options.subscription_options.scheduled_time"));

        let mut no_cadence = first(json!({"type": "on_demand"}));
        no_cadence["options"]["subscription_options"] = json!({});
        let e = CreateSession::parse(&no_cadence).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), (ErrorCode::ParameterMissing, Some("options.subscription_options.recurrence")));
    }

    #[test]
    fn null_means_absent() {
        let s = CreateSession::parse(&with(one_time(), "external_reference", Value::Null)).unwrap();
        assert_eq!(s.external_reference, None);
    }
}
