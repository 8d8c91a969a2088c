//! The `payment_session` object as replies and events carry it (DESIGN §4).

use crate::ids::{CustomerId, MandateId, PaymentId, PaymentMethodId, SessionId};
use crate::lifecycle::{wire_enum, PaymentOutcome, SessionType, Status};
use crate::money::Currency;
use crate::payment::{CardSummary, Payment, PaymentAmounts, PaymentIntent, PaymentMethodDetails, PaymentStatus, AUTHORIZATION_VALIDITY};
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::payment::{CaptureMethod, LastPaymentError, Mode};

wire_enum!(SavePaymentMethod { Always => "always", Never => "never", Prompt => "prompt" });
wire_enum!(
    /// Moment's deprecated `payment_status`, kept for integrations written against it.
    LegacyPaymentStatus { Paid => "paid", Unpaid => "unpaid" }
);

/// What a successful customer-present payment leaves behind (DESIGN §1): a
/// card saved for merchant-initiated use under a mandate (`Some(true)`), one
/// saved for customer-present use (`Some(false)`), or nothing. `ticked`: the
/// customer accepted a `prompt`.
pub fn saved_card_usage(session_type: SessionType, save: SavePaymentMethod, ticked: bool) -> Option<bool> {
    match session_type {
        SessionType::FirstInSeries => Some(true),
        SessionType::OneTime if save == SavePaymentMethod::Always => Some(false),
        SessionType::OneTime if save == SavePaymentMethod::Prompt && ticked => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PaymentSession {
    pub id: SessionId,
    /// Always `"payment_session"`.
    pub object: String,
    #[serde(rename = "type")]
    pub session_type: SessionType,
    pub status: Status,
    pub payment_outcome: PaymentOutcome,
    pub amount: i64,
    pub currency: Currency,
    pub customer_id: Option<CustomerId>,
    pub payment_method_id: Option<PaymentMethodId>,
    pub mandate_id: Option<MandateId>,
    /// Set once paying starts (DESIGN §9).
    pub payment_id: Option<PaymentId>,
    pub payment: Option<crate::payment::Payment>,
    pub session_url: Option<String>,
    pub return_url: Option<String>,
    #[serde(with = "timestamp::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Timestamp>"))]
    pub expires_at: Option<DateTime<Utc>>,
    pub last_payment_error: Option<LastPaymentError>,
    pub metadata: BTreeMap<String, String>,
    pub external_reference: Option<String>,
    pub mode: Mode,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Timestamp"))]
    pub updated_at: DateTime<Utc>,
    /// Deprecated (Moment's): `paid` once money is paid or reserved; read `payment_outcome`.
    #[serde(default = "LegacyPaymentStatus::unpaid")]
    pub payment_status: LegacyPaymentStatus,
    /// Deprecated (Moment's): the hosted checkout's id, `ckt_…`; `null` without a checkout.
    #[serde(default)]
    pub checkout_session_id: Option<String>,
}

impl LegacyPaymentStatus {
    fn unpaid() -> Self {
        LegacyPaymentStatus::Unpaid
    }
}

impl PaymentSession {
    pub const OBJECT: &'static str = "payment_session";

    /// The fields Moment keeps for old integrations, from the session's own
    /// state: set wherever the session is shown.
    pub fn derive_legacy_fields(&mut self) {
        self.payment_status = match self.payment_outcome {
            PaymentOutcome::Paid | PaymentOutcome::Reserved => LegacyPaymentStatus::Paid,
            _ => LegacyPaymentStatus::Unpaid,
        };
        self.checkout_session_id =
            self.session_type.customer_present().then(|| format!("ckt_{}", &self.id.as_str()[SessionId::PREFIX.len()..]));
    }
}

impl PaymentSession {
    /// The session's payment, or `None` before its first attempt.
    /// `pending` covers an attempt in flight; a customer-present session whose
    /// last attempt failed is `failed` until the customer tries again; a
    /// reservation is `succeeded` (funds held, as Moment shows it) until it is
    /// released in full (`cancelled`).
    pub fn derive_payment(
        &self,
        capture_method: CaptureMethod,
        m: PaymentAmounts,
        started: Option<DateTime<Utc>>,
        card: Option<&CardSummary>,
    ) -> Option<Payment> {
        let s = self;
        let status = match s.payment_outcome {
            PaymentOutcome::NotStarted => return None,
            PaymentOutcome::Pending => PaymentStatus::Pending,
            // A reservation released in full, nothing captured: cancelled.
            PaymentOutcome::Reserved | PaymentOutcome::Unpaid if m.voided > 0 && m.paid == 0 => PaymentStatus::Cancelled,
            PaymentOutcome::Reserved | PaymentOutcome::Paid | PaymentOutcome::PaymentMethodVerified => PaymentStatus::Succeeded,
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
            payment_method_details: card.map(PaymentMethodDetails::of),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{CardSummary, PaymentIntent, PaymentStatus, AUTHORIZATION_VALIDITY};

    #[test]
    fn the_contract_examples_parse_and_serialise_back_identically() {
        for text in
            [include_str!("../tests/fixtures/reply-session.json"), include_str!("../tests/fixtures/event-session-completed-data.json")]
        {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let s: PaymentSession = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&s).unwrap(), v);
        }
    }

    fn session(outcome: PaymentOutcome) -> PaymentSession {
        let mut v: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/reply-session.json")).unwrap();
        v["id"] = "ps_01JDV3V9QK2H7M4N6P8R0S1T2U".into();
        v["amount"] = 100.into();
        let mut s: PaymentSession = serde_json::from_value(v).unwrap();
        s.payment_outcome = outcome;
        s
    }

    fn of(outcome: PaymentOutcome, m: PaymentAmounts) -> Option<Payment> {
        session(outcome).derive_payment(CaptureMethod::Automatic, m, Some(Utc::now()), None)
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
        let held = session(PaymentOutcome::Reserved).derive_payment(
            CaptureMethod::Manual,
            PaymentAmounts { authorised: 100, ..Default::default() },
            Some(t),
            None,
        );
        assert_eq!(held.unwrap().authorization_expires_at, Some(t + AUTHORIZATION_VALIDITY));
        assert_eq!(
            of(PaymentOutcome::Paid, PaymentAmounts { authorised: 100, paid: 100, ..Default::default() }).unwrap().authorization_expires_at,
            None
        );
        let mut zero = session(PaymentOutcome::PaymentMethodVerified);
        zero.amount = 0;
        let card = CardSummary {
            brand: "mastercard".into(),
            last4: "3333".into(),
            exp_month: 12,
            exp_year: 2030,
            bin: Some("527346".into()),
            funding: Some("debit".into()),
        };
        let v = zero.derive_payment(CaptureMethod::Automatic, PaymentAmounts::default(), Some(t), Some(&card)).unwrap();
        assert_eq!((v.intent, v.status), (PaymentIntent::Verification, PaymentStatus::Succeeded));
        let shown = serde_json::to_value(&v.payment_method_details).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"type": "card", "card": {"type": "debit", "scheme": "MASTERCARD", "bin": "527346", "last4": "3333"}})
        );
    }
}
