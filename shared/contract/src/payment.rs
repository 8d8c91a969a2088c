//! The payment object and refunds (DESIGN §9): what money a session moved,
//! derived in one place from the lifecycle and the amounts lifecycle keeps.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{PaymentId, RefundId, SessionId};
use crate::lifecycle::wire_enum;
use crate::money::{Amount, Currency};
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

wire_enum!(CaptureMethod { Automatic => "automatic", Manual => "manual" });
wire_enum!(
    /// Which keys an object was made with: `test` or `live`.
    Mode { Test => "test", Live => "live" }
);

impl CaptureMethod {
    fn automatic() -> Self {
        CaptureMethod::Automatic
    }
}

/// Why the last attempt failed; customer-present sessions stay active beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LastPaymentError {
    pub error_code: String,
    pub decline_code: Option<String>,
    pub message: String,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub timestamp: DateTime<Utc>,
}

/// What the card looks like outside the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    /// The first six digits (shown with the last four, as PCI DSS allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    /// `credit`, `debit`, `prepaid` or `unknown`, as the processor reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding: Option<String>,
}

wire_enum!(PaymentStatus { Pending => "pending", Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled" });
wire_enum!(RefundStatus { Pending => "pending", Succeeded => "succeeded", Failed => "failed" });
wire_enum!(
    /// Why the payment was made: to collect money, or to verify a card at amount 0.
    PaymentIntent { Payment => "payment", Verification => "verification" }
);
wire_enum!(RefundReason { Duplicate => "duplicate", Fraudulent => "fraudulent", RequestedByCustomer => "requested_by_customer" });

impl RefundStatus {
    pub fn is_terminal(self) -> bool {
        match self {
            RefundStatus::Pending => false,
            RefundStatus::Succeeded | RefundStatus::Failed => true,
        }
    }
}

/// The amounts lifecycle keeps on a session as the processor answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaymentAmounts {
    pub authorised: i64,
    pub paid: i64,
    pub voided: i64,
    /// Refunds that succeeded; pending ones are not counted until they do.
    pub refunded: i64,
}

/// How long a card authorisation can be captured: Stripe's (and the card
/// networks' usual) seven days for online card payments.
pub const AUTHORIZATION_VALIDITY: chrono::Duration = chrono::Duration::days(7);

/// `payment` on a session that has started paying: Moment's payment object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Payment {
    pub id: PaymentId,
    pub payment_session_id: SessionId,
    /// What the session asks for.
    pub amount: i64,
    pub authorised_amount: i64,
    pub paid_amount: i64,
    /// Released without being paid: a void, or what a smaller capture left.
    pub voided_amount: i64,
    pub refunded_amount: i64,
    pub status: PaymentStatus,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
    #[serde(default = "PaymentIntent::payment")]
    pub intent: PaymentIntent,
    #[serde(default = "CaptureMethod::automatic")]
    pub capture_method: CaptureMethod,
    /// The session's.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Until when a manual capture's authorisation can be captured; `null` otherwise.
    #[serde(default, with = "timestamp::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Timestamp>"))]
    pub authorization_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_payment_error: Option<LastPaymentError>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Metadata"))]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub external_reference: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, with = "timestamp::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Timestamp>"))]
    pub updated_at: Option<DateTime<Utc>>,
    /// The card the payment was made with, once an attempt has one.
    #[serde(default)]
    pub payment_method_details: Option<PaymentMethodDetails>,
}

/// Moment's `payment_method_details`: `{type: "card", card: {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PaymentMethodDetails {
    /// Always `"card"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub card: CardDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CardDetails {
    /// `CREDIT`, `DEBIT`, … when the processor says; `null` when it does not.
    #[serde(rename = "type")]
    pub funding: Option<String>,
    /// The card scheme in capitals: `VISA`, `MASTERCARD`, `AMEX`, …
    pub scheme: String,
    pub bin: Option<String>,
    pub last4: String,
}

impl PaymentMethodDetails {
    pub fn of(card: &CardSummary) -> PaymentMethodDetails {
        PaymentMethodDetails {
            kind: "card".to_owned(),
            card: CardDetails {
                funding: card.funding.clone(),
                scheme: card.brand.to_uppercase(),
                bin: card.bin.clone(),
                last4: card.last4.clone(),
            },
        }
    }
}

impl PaymentIntent {
    fn payment() -> Self {
        PaymentIntent::Payment
    }
}

/// The `refund` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Refund {
    pub id: RefundId,
    /// Always `"refund"`.
    pub object: String,
    pub payment_session_id: SessionId,
    pub payment_id: PaymentId,
    pub amount: i64,
    pub currency: Currency,
    pub status: RefundStatus,
    pub reason: Option<RefundReason>,
    /// Why the processor refused it: `expired_or_canceled_card`, `declined`, `unknown`.
    pub failure_reason: Option<String>,
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Metadata"))]
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
}

impl Refund {
    pub const OBJECT: &'static str = "refund";
}

/// The `dispute` object (`payment.disputed`'s data): the cardholder asked
/// their bank to reverse a payment. The processor's id, amount and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Dispute {
    /// The processor's id of the dispute (`dp_…` at Stripe).
    pub id: String,
    /// Always `"dispute"`.
    pub object: String,
    pub payment_session_id: SessionId,
    pub payment_id: PaymentId,
    pub amount: i64,
    pub currency: Currency,
    /// The processor's reason, e.g. `fraudulent`, `product_not_received`.
    pub reason: String,
    /// The processor's status, e.g. `needs_response`.
    pub status: String,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
}

impl Dispute {
    pub const OBJECT: &'static str = "dispute";
}

/// What a refund may take: the whole of what is left by default, never more.
/// `committed` is what earlier refunds took, pending ones included, so two
/// sent at once cannot together pass `paid`.
pub fn check_refund_amount(requested: Option<Amount>, paid: i64, committed: i64) -> Result<i64, ApiError> {
    let left = paid - committed;
    if left <= 0 {
        return Err(ApiError::param(
            ErrorCode::ChargeAlreadyRefunded,
            "payment_session_id",
            format!("the payment's {paid} paid has been refunded in full (refunds pending included)"),
        ));
    }
    match requested {
        None => Ok(left),
        Some(a) if a.minor() <= left => Ok(a.minor()),
        Some(a) => Err(ApiError::param(
            ErrorCode::AmountTooLarge,
            "amount",
            format!("cannot refund {a}: only {left} of the {paid} paid is left to refund (refunds pending included)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refunds_never_pass_what_was_paid() {
        let a = |n| Some(Amount::new(n).unwrap());
        assert_eq!(check_refund_amount(None, 100, 0), Ok(100));
        assert_eq!(check_refund_amount(None, 100, 30), Ok(70));
        assert_eq!(check_refund_amount(a(70), 100, 30), Ok(70));
        assert_eq!(check_refund_amount(a(71), 100, 30).unwrap_err().code, ErrorCode::AmountTooLarge);
        assert_eq!(check_refund_amount(None, 100, 100).unwrap_err().code, ErrorCode::ChargeAlreadyRefunded);
        assert_eq!(check_refund_amount(a(1), 0, 0).unwrap_err().code, ErrorCode::ChargeAlreadyRefunded);
    }
}
