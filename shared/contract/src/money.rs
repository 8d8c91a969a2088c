//! Money: ISO 4217 currencies with their exponents, and amounts in minor units.

use crate::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A supported ISO 4217 currency. Parsing is the only way to get one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// (code, minor-unit exponent). Kept to currencies card processors settle.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("BWP", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GHS", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MUR", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
    ("ZMW", 2),
];

impl Currency {
    /// Upper-case ISO 4217 code only: `usd` is refused rather than guessed at.
    pub fn parse(code: &str) -> Result<Currency, ApiError> {
        CURRENCIES.iter().find(|(c, _)| *c == code).map(|(c, e)| Currency { code: c, exponent: *e }).ok_or_else(|| {
            ApiError::param(
                ErrorCode::CurrencyInvalid,
                "currency",
                format!("currency {code:?} is not a supported upper-case ISO 4217 code"),
            )
        })
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point: 2 for ZAR, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// `12550 ZAR` → `125.50`; for display on checkout pages and in messages.
    pub fn format_minor(self, minor: i64) -> String {
        let e = self.exponent as u32;
        if e == 0 {
            return minor.to_string();
        }
        let div = 10i64.pow(e);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!("{sign}{}.{:0width$}", abs / div as u64, abs % div as u64, width = e as usize)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A non-negative amount in the currency's minor units.
///
/// Zero is representable because a `first_in_series` card verification charges
/// nothing; whether zero is allowed is the caller's rule, not this type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// 10^12 - 1 minor units: far above any card charge, far below i64 overflow
    /// when a series' amounts are summed.
    pub const MAX: i64 = 999_999_999_999;

    pub fn new(minor: i64) -> Result<Amount, AmountError> {
        if minor < 0 {
            Err(AmountError::Negative)
        } else if minor > Amount::MAX {
            Err(AmountError::TooLarge)
        } else {
            Ok(Amount(minor))
        }
    }

    pub const fn zero() -> Amount {
        Amount(0)
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "integer", "description": "In the currency's minor units.", "minimum": 0, "maximum": Amount::MAX})
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = CURRENCIES.iter().map(|(c, _)| *c).collect();
        schemars::json_schema!({"type": "string", "description": "ISO 4217, upper case.", "enum": codes})
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    Negative,
    TooLarge,
}

/// Parses a JSON value as an amount, with the error a reply should carry.
pub fn parse_amount(v: &serde_json::Value, param: &str, allow_zero: bool) -> Result<Amount, ApiError> {
    let n = v.as_i64().ok_or_else(|| {
        if v.is_u64() || v.as_f64().is_some_and(|f| f > Amount::MAX as f64) {
            ApiError::param(ErrorCode::AmountTooLarge, param, format!("{param} exceeds the maximum of {}", Amount::MAX))
        } else if v.is_number() {
            ApiError::param(ErrorCode::ParameterInvalidInteger, param, format!("{param} must be an integer number of minor units"))
        } else {
            ApiError::param(ErrorCode::ParameterInvalidType, param, format!("{param} must be an integer"))
        }
    })?;
    if n == 0 && allow_zero {
        return Ok(Amount::zero());
    }
    if n <= 0 {
        let least = if allow_zero { 0 } else { 1 };
        return Err(ApiError::param(ErrorCode::AmountTooSmall, param, format!("{param} must be at least {least}, got {n}")));
    }
    Amount::new(n).map_err(|_| ApiError::param(ErrorCode::AmountTooLarge, param, format!("{param} exceeds the maximum of {}", Amount::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exponents_of_the_currencies_we_promise() {
        for (code, exp) in [("ZAR", 2), ("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0), ("KWD", 3)] {
            assert_eq!(Currency::parse(code).unwrap().exponent(), exp, "{code}");
        }
    }

    #[test]
    fn unknown_and_lower_case_currencies_are_refused() {
        for bad in ["XXX", "usd", "US", "", "EURO"] {
            assert_eq!(Currency::parse(bad).unwrap_err().code, ErrorCode::CurrencyInvalid, "{bad}");
        }
    }

    #[test]
    fn formats_minor_units_with_the_exponent() {
        assert_eq!(Currency::parse("ZAR").unwrap().format_minor(12550), "125.50");
        assert_eq!(Currency::parse("JPY").unwrap().format_minor(500), "500");
        assert_eq!(Currency::parse("KWD").unwrap().format_minor(1005), "1.005");
        assert_eq!(Currency::parse("USD").unwrap().format_minor(7), "0.07");
    }

    #[test]
    fn amount_parsing_gives_a_specific_code_per_fault() {
        let code = |v, zero| parse_amount(&v, "amount", zero).unwrap_err().code;
        assert_eq!(code(json!(-1), false), ErrorCode::AmountTooSmall);
        assert_eq!(code(json!(0), false), ErrorCode::AmountTooSmall);
        assert_eq!(code(json!(-5), true), ErrorCode::AmountTooSmall);
        assert_eq!(code(json!(12.5), false), ErrorCode::ParameterInvalidInteger);
        assert_eq!(code(json!("100"), false), ErrorCode::ParameterInvalidType);
        assert_eq!(code(json!(u64::MAX), false), ErrorCode::AmountTooLarge);
        assert_eq!(code(json!(1e30), false), ErrorCode::AmountTooLarge);
        assert_eq!(code(json!(Amount::MAX + 1), false), ErrorCode::AmountTooLarge);
        assert_eq!(parse_amount(&json!(0), "amount", true).unwrap(), Amount::zero());
        assert_eq!(parse_amount(&json!(Amount::MAX), "amount", false).unwrap().minor(), Amount::MAX);
    }
}
