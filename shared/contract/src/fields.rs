//! Reading a JSON object field by field, with the error each fault deserves.
//! Every parser in this crate goes through here so the codes stay uniform.

use crate::error::{ApiError, ErrorCode};
use serde_json::{Map, Value};

pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Obj<'a> {
    /// `param` names the object itself in errors (`""` for the body).
    pub(crate) fn new(v: &'a Value, param: &str) -> Result<Obj<'a>, ApiError> {
        match v.as_object() {
            Some(map) => {
                let prefix = if param.is_empty() { String::new() } else { format!("{param}.") };
                Ok(Obj { map, prefix })
            }
            None if param.is_empty() => Err(ApiError::new(ErrorCode::BodyNotObject, "the body must be a JSON object")),
            None => Err(ApiError::param(ErrorCode::ParameterInvalidType, param, format!("{param} must be an object"))),
        }
    }

    pub(crate) fn param(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    /// Refuses any field not named in `allowed`: unknown fields are errors, not ignored.
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::param(ErrorCode::ParameterUnknown, self.param(k), format!("unknown field {}", self.param(k)))),
            None => Ok(()),
        }
    }

    /// A present, non-null value. `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn require(&self, key: &str) -> Result<&'a Value, ApiError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    pub(crate) fn missing(&self, key: &str) -> ApiError {
        ApiError::param(ErrorCode::ParameterMissing, self.param(key), format!("{} is required", self.param(key)))
    }

    pub(crate) fn wrong_type(&self, key: &str, expected: &str) -> ApiError {
        ApiError::param(ErrorCode::ParameterInvalidType, self.param(key), format!("{} must be {expected}", self.param(key)))
    }

    pub(crate) fn str(&self, key: &str, max_len: usize) -> Result<Option<&'a str>, ApiError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let s = v.as_str().ok_or_else(|| self.wrong_type(key, "a string"))?;
        if s.is_empty() {
            return Err(ApiError::param(
                ErrorCode::ParameterInvalidEmpty,
                self.param(key),
                format!("{} must not be empty", self.param(key)),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(ApiError::param(
                ErrorCode::StringInvalidCharacters,
                self.param(key),
                format!("{} must not contain control characters", self.param(key)),
            ));
        }
        if s.chars().count() > max_len {
            return Err(ApiError::param(
                ErrorCode::StringTooLong,
                self.param(key),
                format!("{} must be at most {max_len} characters", self.param(key)),
            ));
        }
        Ok(Some(s))
    }

    pub(crate) fn req_str(&self, key: &str, max_len: usize) -> Result<&'a str, ApiError> {
        self.str(key, max_len)?.ok_or_else(|| self.missing(key))
    }

    /// An integer in `min..=max`; out of range is `out_of_range`'s code.
    pub(crate) fn int(&self, key: &str, min: i64, max: i64, out_of_range: ErrorCode) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n = match v.as_i64() {
            Some(n) => n,
            None if v.is_number() && v.as_f64().is_some_and(|f| f.fract() != 0.0) => {
                return Err(ApiError::param(
                    ErrorCode::ParameterInvalidInteger,
                    self.param(key),
                    format!("{} must be an integer", self.param(key)),
                ))
            }
            None if v.is_number() => i64::MAX,
            None => return Err(self.wrong_type(key, "an integer")),
        };
        if n < min || n > max {
            return Err(ApiError::param(out_of_range, self.param(key), format!("{} must be between {min} and {max}", self.param(key))));
        }
        Ok(Some(n))
    }

    /// One of a fixed set of strings, parsed by `parse`.
    pub(crate) fn choice<T>(&self, key: &str, parse: fn(&str) -> Option<T>, allowed: &str) -> Result<Option<T>, ApiError> {
        let Some(s) = self.str(key, 64)? else { return Ok(None) };
        parse(s).map(Some).ok_or_else(|| {
            ApiError::param(ErrorCode::ParameterInvalidValue, self.param(key), format!("{} must be one of {allowed}", self.param(key)))
        })
    }

    pub(crate) fn date(&self, key: &str) -> Result<Option<chrono::NaiveDate>, ApiError> {
        let Some(s) = self.str(key, 10)? else { return Ok(None) };
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Some).map_err(|_| {
            ApiError::param(ErrorCode::DateInvalid, self.param(key), format!("{} must be a date as YYYY-MM-DD", self.param(key)))
        })
    }
}
