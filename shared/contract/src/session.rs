//! The `payment_session` object as replies and events carry it (DESIGN §4).

use crate::ids::{CustomerId, MandateId, PaymentId, PaymentMethodId, SessionId};
use crate::lifecycle::{wire_enum, PaymentOutcome, SessionType, Status};
use crate::money::Currency;
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

wire_enum!(CaptureMethod { Automatic => "automatic", Manual => "manual" });
wire_enum!(SavePaymentMethod { Always => "always", Never => "never", Prompt => "prompt" });
wire_enum!(Mode { Test => "test", Live => "live" });
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

impl CaptureMethod {
    pub(crate) fn automatic() -> Self {
        CaptureMethod::Automatic
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
