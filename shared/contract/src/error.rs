//! The one error shape every reply carries, with codes that are public API.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Broad class of an error, as in the reference API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ErrorType {
    InvalidRequestError,
    IdempotencyError,
    /// The HTTP API's key is missing, unknown, revoked or of the other mode.
    AuthenticationError,
    /// The HTTP API's key sent more than its rate.
    RateLimitError,
    ApiError,
}

macro_rules! error_codes {
    ($($variant:ident => $code:literal, $ty:ident;)*) => {
        /// Stable, machine-readable error codes. Renaming one breaks clients.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            pub fn error_type(self) -> ErrorType {
                match self { $(ErrorCode::$variant => ErrorType::$ty,)* }
            }

            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    // The message envelope.
    InvalidJson => "invalid_json", InvalidRequestError;
    BodyNotObject => "body_not_object", InvalidRequestError;
    MerchantIdMissing => "merchant_id_missing", InvalidRequestError;
    MerchantIdInvalid => "merchant_id_invalid", InvalidRequestError;
    IdempotencyKeyMissing => "idempotency_key_missing", IdempotencyError;
    IdempotencyKeyInvalid => "idempotency_key_invalid", IdempotencyError;
    IdempotencyKeyReused => "idempotency_key_reused", IdempotencyError;
    UnknownCommand => "unknown_command", InvalidRequestError;
    MessageTooLarge => "message_too_large", InvalidRequestError;
    // Fields of a body.
    ParameterMissing => "parameter_missing", InvalidRequestError;
    ParameterUnknown => "parameter_unknown", InvalidRequestError;
    ParameterNotAllowedForType => "parameter_not_allowed_for_type", InvalidRequestError;
    ParameterInvalidType => "parameter_invalid_type", InvalidRequestError;
    ParameterInvalidEmpty => "parameter_invalid_empty", InvalidRequestError;
    ParameterInvalidInteger => "parameter_invalid_integer", InvalidRequestError;
    ParameterInvalidValue => "parameter_invalid_value", InvalidRequestError;
    ParameterConflict => "parameter_conflict", InvalidRequestError;
    SessionTypeInvalid => "session_type_invalid", InvalidRequestError;
    AmountTooSmall => "amount_too_small", InvalidRequestError;
    AmountTooLarge => "amount_too_large", InvalidRequestError;
    CurrencyInvalid => "currency_invalid", InvalidRequestError;
    StringTooLong => "string_too_long", InvalidRequestError;
    StringInvalidCharacters => "string_invalid_characters", InvalidRequestError;
    EmailInvalid => "email_invalid", InvalidRequestError;
    UrlInvalid => "url_invalid", InvalidRequestError;
    IdInvalid => "id_invalid", InvalidRequestError;
    MetadataInvalid => "metadata_invalid", InvalidRequestError;
    ExpiresInOutOfRange => "expires_in_out_of_range", InvalidRequestError;
    DateInvalid => "date_invalid", InvalidRequestError;
    ValidityPeriodInvalid => "validity_period_invalid", InvalidRequestError;
    MandateAmountRangeInvalid => "mandate_amount_range_invalid", InvalidRequestError;
    RecurrenceInvalid => "recurrence_invalid", InvalidRequestError;
    CaptureMethodNotAllowed => "capture_method_not_allowed", InvalidRequestError;
    // Objects a command refers to, and the mandate rules (DESIGN §1).
    CustomerNotFound => "customer_not_found", InvalidRequestError;
    PaymentMethodNotFound => "payment_method_not_found", InvalidRequestError;
    PaymentMethodHasNoMandate => "payment_method_has_no_mandate", InvalidRequestError;
    PaymentMethodExpired => "payment_method_expired", InvalidRequestError;
    MandateNotFound => "mandate_not_found", InvalidRequestError;
    MandateCustomerMismatch => "mandate_customer_mismatch", InvalidRequestError;
    MandateRevoked => "mandate_revoked", InvalidRequestError;
    MandateNotYetValid => "mandate_not_yet_valid", InvalidRequestError;
    MandateExpired => "mandate_expired", InvalidRequestError;
    MandateCurrencyMismatch => "mandate_currency_mismatch", InvalidRequestError;
    AmountOutOfMandateRange => "amount_out_of_mandate_range", InvalidRequestError;
    MandateMaxOccurrencesReached => "mandate_max_occurrences_reached", InvalidRequestError;
    MandateTotalAmountExceeded => "mandate_total_amount_exceeded", InvalidRequestError;
    ChargeTooEarly => "charge_too_early", InvalidRequestError;
    // Lifecycle.
    SessionNotFound => "session_not_found", InvalidRequestError;
    SessionNotActive => "session_not_active", InvalidRequestError;
    PaymentProcessing => "payment_processing", InvalidRequestError;
    IllegalTransition => "illegal_transition", InvalidRequestError;
    // Payments (DESIGN §12): a session's payment, by its `pay_` id.
    PaymentNotFound => "payment_not_found", InvalidRequestError;
    AuthorizationExpired => "authorization_expired", InvalidRequestError;
    AmountExceedsRemaining => "amount_exceeds_remaining", InvalidRequestError;
    // Refunds (DESIGN §9).
    PaymentNotRefundable => "payment_not_refundable", InvalidRequestError;
    ChargeAlreadyRefunded => "charge_already_refunded", InvalidRequestError;
    RefundNotFound => "refund_not_found", InvalidRequestError;
    // Webhooks.
    WebhookUrlNotAllowed => "webhook_url_not_allowed", InvalidRequestError;
    EnabledEventsInvalid => "enabled_events_invalid", InvalidRequestError;
    WebhookEndpointNotFound => "webhook_endpoint_not_found", InvalidRequestError;
    EventNotFound => "event_not_found", InvalidRequestError;
    WebhookEndpointLimitReached => "webhook_endpoint_limit_reached", InvalidRequestError;
    // Schedules (DESIGN §3).
    ScheduleNotFound => "schedule_not_found", InvalidRequestError;
    ScheduleNotActive => "schedule_not_active", InvalidRequestError;
    TooManyCharges => "too_many_charges", InvalidRequestError;
    DuplicateCharge => "duplicate_charge", InvalidRequestError;
    // Identity (DESIGN §10).
    MerchantNotAuthorized => "merchant_not_authorized", InvalidRequestError;
    // The HTTP API (DESIGN §12).
    InvalidApiKey => "invalid_api_key", AuthenticationError;
    RateLimited => "rate_limited", RateLimitError;
    // Ours.
    InternalError => "internal_error", ApiError;
}

impl ErrorCode {
    /// The HTTP status the API answers this error with (DESIGN §12): 404 for
    /// an object named in the path that is not the merchant's, 409 for a
    /// conflict with the object's state or an idempotency key's first use, 422
    /// for a well-formed request the rules refuse (a mandate's limits), 413
    /// for a body over the limit, 403 for a merchant the API may not act for,
    /// 500 for ours, 400 for every other fault in the request.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            SessionNotFound
            | PaymentNotFound
            | RefundNotFound
            | WebhookEndpointNotFound
            | EventNotFound
            | ScheduleNotFound
            | CustomerNotFound
            | PaymentMethodNotFound
            | MandateNotFound => 404,
            IdempotencyKeyReused
            | SessionNotActive
            | PaymentProcessing
            | IllegalTransition
            | ScheduleNotActive
            | AuthorizationExpired
            | AmountExceedsRemaining => 409,
            PaymentMethodHasNoMandate
            | PaymentMethodExpired
            | MandateCustomerMismatch
            | MandateRevoked
            | MandateNotYetValid
            | MandateExpired
            | MandateCurrencyMismatch
            | AmountOutOfMandateRange
            | MandateMaxOccurrencesReached
            | MandateTotalAmountExceeded
            | ChargeTooEarly
            | PaymentNotRefundable
            | ChargeAlreadyRefunded
            | WebhookEndpointLimitReached
            | TooManyCharges
            | DuplicateCharge => 422,
            MessageTooLarge => 413,
            InvalidApiKey => 401,
            RateLimited => 429,
            MerchantNotAuthorized => 403,
            InternalError => 500,
            InvalidJson
            | BodyNotObject
            | MerchantIdMissing
            | MerchantIdInvalid
            | IdempotencyKeyMissing
            | IdempotencyKeyInvalid
            | UnknownCommand
            | ParameterMissing
            | ParameterUnknown
            | ParameterNotAllowedForType
            | ParameterInvalidType
            | ParameterInvalidEmpty
            | ParameterInvalidInteger
            | ParameterInvalidValue
            | ParameterConflict
            | SessionTypeInvalid
            | AmountTooSmall
            | AmountTooLarge
            | CurrencyInvalid
            | StringTooLong
            | StringInvalidCharacters
            | EmailInvalid
            | UrlInvalid
            | IdInvalid
            | MetadataInvalid
            | ExpiresInOutOfRange
            | DateInvalid
            | ValidityPeriodInvalid
            | MandateAmountRangeInvalid
            | RecurrenceInvalid
            | CaptureMethodNotAllowed
            | WebhookUrlNotAllowed
            | EnabledEventsInvalid => 400,
        }
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        schemars::json_schema!({"type": "string", "description": "Stable, machine-readable; renaming one breaks clients.", "enum": codes})
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s}")))
    }
}

/// An error as a reply carries it: `{"error": {type, code, message, param}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    /// Messages and params may echo what a sender wrote (an unknown field's
    /// name): control characters are escaped, so a reply is always storable
    /// (PostgreSQL's jsonb refuses `\u0000`) and safe to print.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { error_type: code.error_type(), code, message: printable(message.into()), param: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(printable(param.into()));
        self
    }

    pub fn param(code: ErrorCode, param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(code, message).with_param(param)
    }

    /// The reply body: `{"error": {...}}`.
    pub fn to_reply(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }

    pub fn internal() -> Self {
        ApiError::new(ErrorCode::InternalError, "an internal error occurred; the command may be retried")
    }
}

/// `s` with each control character written as its `\u{..}` escape.
pub fn printable(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars().fold(String::with_capacity(s.len() + 8), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
        out
    })
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{} ({}): {}", self.code, p, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(code.as_str().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn echoed_text_never_carries_control_characters() {
        let e = ApiError::param(ErrorCode::ParameterUnknown, "a\u{0}b", "unknown field a\u{0}b\n");
        assert_eq!(e.param.as_deref(), Some("a\\u{0}b"));
        assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
    }

    #[test]
    fn reply_shape_matches_the_contract_example() {
        let e = ApiError::param(ErrorCode::AmountOutOfMandateRange, "amount", "amount 60000 is above the mandate's maximum of 50000");
        let v = e.to_reply();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "amount_out_of_mandate_range");
        assert_eq!(v["error"]["param"], "amount");
        let back: ApiError = serde_json::from_value(v["error"].clone()).unwrap();
        assert_eq!(back, e);
    }
}
