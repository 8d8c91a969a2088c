//! The payment object and refunds (DESIGN §9): what money a session moved,
//! derived in one place from the lifecycle and the amounts lifecycle keeps.

use crate::error::{ApiError, ErrorCode};
use crate::ids::{PaymentId, RefundId, SessionId};
use crate::lifecycle::{wire_enum, PaymentOutcome};
use crate::money::{Amount, Currency};
use crate::session::{CaptureMethod, LastPaymentError, Mode, PaymentSession};
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
}

impl PaymentIntent {
    fn payment() -> Self {
        PaymentIntent::Payment
    }
}

impl Payment {
    /// The payment of a session, or `None` before its first attempt.
    /// `pending` covers an attempt in flight; a customer-present session whose
    /// last attempt failed is `failed` until the customer tries again; a
    /// reservation is `succeeded` (funds held, as Moment shows it) until it is
    /// released in full (`cancelled`).
    pub fn of(s: &PaymentSession, capture_method: CaptureMethod, m: PaymentAmounts, started: Option<DateTime<Utc>>) -> Option<Payment> {
        let status = match s.payment_outcome {
            PaymentOutcome::NotStarted => return None,
            PaymentOutcome::Pending => PaymentStatus::Pending,
            PaymentOutcome::Reserved | PaymentOutcome::Paid | PaymentOutcome::PaymentMethodVerified => PaymentStatus::Succeeded,
            PaymentOutcome::Unpaid if m.voided > 0 && m.paid == 0 => PaymentStatus::Cancelled,
            PaymentOutcome::Unpaid => PaymentStatus::Failed,
        };
        let started = started?;
        let held = capture_method == CaptureMethod::Manual && m.authorised > 0;
        Some(Payment {
            id: PaymentId::of(&s.id),
            payment_session_id: s.id.clone(),
            amount: s.amount,
            authorised_amount: m.authorised,
            paid_amount: m.paid,
            voided_amount: m.voided,
            refunded_amount: m.refunded,
            status,
            created_at: started,
            intent: if s.amount == 0 { PaymentIntent::Verification } else { PaymentIntent::Payment },
            capture_method,
            currency: Some(s.currency),
            authorization_expires_at: held.then(|| started + AUTHORIZATION_VALIDITY),
            last_payment_error: s.last_payment_error.clone(),
            metadata: s.metadata.clone(),
            external_reference: s.external_reference.clone(),
            mode: Some(s.mode),
            updated_at: Some(s.updated_at),
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

    fn session(outcome: PaymentOutcome) -> PaymentSession {
        let mut v: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/reply-session.json")).unwrap();
        v["id"] = "ps_01JDV3V9QK2H7M4N6P8R0S1T2U".into();
        v["amount"] = 100.into();
        let mut s: PaymentSession = serde_json::from_value(v).unwrap();
        s.payment_outcome = outcome;
        s
    }

    fn of(outcome: PaymentOutcome, m: PaymentAmounts) -> Option<Payment> {
        Payment::of(&session(outcome), CaptureMethod::Automatic, m, Some(Utc::now()))
    }

    #[test]
    fn a_payment_exists_once_paying_starts_and_says_how_it_ended() {
        let m = PaymentAmounts::default();
        assert_eq!(of(PaymentOutcome::NotStarted, m), None);
        let p = of(PaymentOutcome::Pending, m).unwrap();
        assert_eq!((p.id.as_str(), p.status, p.intent), ("pay_01JDV3V9QK2H7M4N6P8R0S1T2U", PaymentStatus::Pending, PaymentIntent::Payment));
        let paid = PaymentAmounts { authorised: 100, paid: 100, ..m };
        assert_eq!(of(PaymentOutcome::Paid, paid).unwrap().status, PaymentStatus::Succeeded);
        let reserved = PaymentAmounts { authorised: 100, ..m };
        assert_eq!(of(PaymentOutcome::Reserved, reserved).unwrap().status, PaymentStatus::Succeeded);
        let voided = PaymentAmounts { authorised: 100, voided: 100, ..m };
        assert_eq!(of(PaymentOutcome::Unpaid, voided).unwrap().status, PaymentStatus::Cancelled);
        assert_eq!(of(PaymentOutcome::Unpaid, m).unwrap().status, PaymentStatus::Failed);
        let part = PaymentAmounts { authorised: 100, paid: 60, voided: 40, refunded: 0 };
        assert_eq!(of(PaymentOutcome::Paid, part).unwrap().status, PaymentStatus::Succeeded);
    }

    #[test]
    fn a_held_authorisation_expires_and_a_verification_says_so() {
        let t = Utc::now();
        let held = Payment::of(
            &session(PaymentOutcome::Reserved),
            CaptureMethod::Manual,
            PaymentAmounts { authorised: 100, ..Default::default() },
            Some(t),
        );
        assert_eq!(held.unwrap().authorization_expires_at, Some(t + AUTHORIZATION_VALIDITY));
        assert_eq!(
            of(PaymentOutcome::Paid, PaymentAmounts { authorised: 100, paid: 100, ..Default::default() }).unwrap().authorization_expires_at,
            None
        );
        let mut zero = session(PaymentOutcome::PaymentMethodVerified);
        zero.amount = 0;
        let v = Payment::of(&zero, CaptureMethod::Automatic, PaymentAmounts::default(), Some(t)).unwrap();
        assert_eq!((v.intent, v.status), (PaymentIntent::Verification, PaymentStatus::Succeeded));
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
