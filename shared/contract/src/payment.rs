//! The payment object and refunds (DESIGN §9): what money a session moved,
//! derived in one place from the lifecycle and the amounts lifecycle keeps.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{PaymentId, RefundId, SessionId};
use crate::lifecycle::{wire_enum, PaymentOutcome};
use crate::money::{Amount, Currency};
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

wire_enum!(PaymentStatus { Pending => "pending", Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled" });
wire_enum!(RefundStatus { Pending => "pending", Succeeded => "succeeded", Failed => "failed" });
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

/// `payment` on a session that has started paying.
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
}

impl Payment {
    /// The payment of a session, or `None` before its first attempt.
    /// `pending` covers an attempt in flight and an authorisation waiting to be
    /// captured; a customer-present session whose last attempt failed is
    /// `failed` until the customer tries again; a released reservation is `cancelled`.
    pub fn of(
        session: &SessionId,
        amount: i64,
        outcome: PaymentOutcome,
        m: PaymentAmounts,
        started: Option<DateTime<Utc>>,
    ) -> Option<Payment> {
        let status = match outcome {
            PaymentOutcome::NotStarted => return None,
            PaymentOutcome::Pending | PaymentOutcome::Reserved => PaymentStatus::Pending,
            PaymentOutcome::Paid | PaymentOutcome::PaymentMethodVerified => PaymentStatus::Succeeded,
            PaymentOutcome::Unpaid if m.voided > 0 && m.paid == 0 => PaymentStatus::Cancelled,
            PaymentOutcome::Unpaid => PaymentStatus::Failed,
        };
        Some(Payment {
            id: PaymentId::of(session),
            payment_session_id: session.clone(),
            amount,
            authorised_amount: m.authorised,
            paid_amount: m.paid,
            voided_amount: m.voided,
            refunded_amount: m.refunded,
            status,
            created_at: started?,
        })
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

    fn sid() -> SessionId {
        SessionId::parse("ps_01JDV3V9QK2H7M4N6P8R0S1T2U").unwrap()
    }

    #[test]
    fn a_payment_exists_once_paying_starts_and_says_how_it_ended() {
        let t = Some(Utc::now());
        let m = PaymentAmounts::default();
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::NotStarted, m, t), None);
        let p = Payment::of(&sid(), 100, PaymentOutcome::Pending, m, t).unwrap();
        assert_eq!((p.id.as_str(), p.status), ("pay_01JDV3V9QK2H7M4N6P8R0S1T2U", PaymentStatus::Pending));
        let paid = PaymentAmounts { authorised: 100, paid: 100, ..m };
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::Paid, paid, t).unwrap().status, PaymentStatus::Succeeded);
        let reserved = PaymentAmounts { authorised: 100, ..m };
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::Reserved, reserved, t).unwrap().status, PaymentStatus::Pending);
        let voided = PaymentAmounts { authorised: 100, voided: 100, ..m };
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::Unpaid, voided, t).unwrap().status, PaymentStatus::Cancelled);
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::Unpaid, m, t).unwrap().status, PaymentStatus::Failed);
        let part = PaymentAmounts { authorised: 100, paid: 60, voided: 40, refunded: 0 };
        assert_eq!(Payment::of(&sid(), 100, PaymentOutcome::Paid, part, t).unwrap().status, PaymentStatus::Succeeded);
    }

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
