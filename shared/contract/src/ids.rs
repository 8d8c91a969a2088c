//! Prefixed, unguessable object ids (`ps_…`, `cus_…`) and the merchant id.

use crate::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BODY_LEN: usize = 26;

/// 128 random-and-time bits (UUIDv7, so ids sort by creation) as 26 Crockford base32 chars.
fn encode(u: u128) -> String {
    (0..BODY_LEN).rev().map(|i| CROCKFORD[((u >> (i * 5)) & 31) as usize] as char).collect()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, encode(uuid::Uuid::now_v7().as_u128())))
            }

            pub fn parse(s: &str) -> Result<Self, ApiError> {
                let ok = s
                    .strip_prefix($prefix)
                    .is_some_and(|b| b.len() == BODY_LEN && b.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
                if ok {
                    Ok($name(s.to_owned()))
                } else {
                    Err(ApiError::new(
                        ErrorCode::IdInvalid,
                        format!("expected an id of the form {}<26 characters>", $prefix),
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "pattern": concat!("^", $prefix, "[0-9A-Z]{26}$")})
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ApiError;
            fn try_from(s: String) -> Result<Self, ApiError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(SessionId, "ps_");
prefixed_id!(CustomerId, "cus_");
prefixed_id!(PaymentMethodId, "pm_");
prefixed_id!(MandateId, "md_");
prefixed_id!(EventId, "evt_");
prefixed_id!(
    /// One try at paying a session; the processor's idempotency key derives from it.
    AttemptId,
    "att_"
);
prefixed_id!(WebhookEndpointId, "we_");
prefixed_id!(
    /// The money side of a session (DESIGN §9): one per session, named after it.
    PaymentId,
    "pay_"
);
prefixed_id!(RefundId, "re_");
prefixed_id!(ScheduleId, "sch_");
prefixed_id!(
    /// A `schedule.trigger` batch.
    TriggerId,
    "trg_"
);

impl PaymentId {
    /// A session has at most one payment, so its id is the session's own body:
    /// nothing to store, and either id leads to the other.
    pub fn of(session: &SessionId) -> PaymentId {
        PaymentId(format!("{}{}", PaymentId::PREFIX, &session.as_str()[SessionId::PREFIX.len()..]))
    }

    /// The session this is the payment of.
    pub fn session(&self) -> SessionId {
        SessionId(format!("{}{}", SessionId::PREFIX, &self.0[PaymentId::PREFIX.len()..]))
    }
}

/// The tenant. Carried in the `merchant-id` header, set by the upstream's broker
/// credentials in production, so it is validated but not trusted to be secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantId(String);

#[cfg(feature = "schema")]
impl schemars::JsonSchema for MerchantId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MerchantId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
    }
}

impl MerchantId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let valid = !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if valid {
            Ok(MerchantId(s.to_owned()))
        } else {
            Err(ApiError::new(
                ErrorCode::MerchantIdInvalid,
                format!("merchant-id must be 1-{} characters of A-Z, a-z, 0-9, '_' or '-'", Self::MAX_LEN),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MerchantId {
    type Error = ApiError;
    fn try_from(s: String) -> Result<Self, ApiError> {
        MerchantId::parse(&s)
    }
}

impl From<MerchantId> for String {
    fn from(id: MerchantId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_are_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.as_str().len(), 3 + 26);
    }

    #[test]
    fn ids_of_another_kind_or_shape_are_refused() {
        let cus = CustomerId::generate();
        assert_eq!(SessionId::parse(cus.as_str()).unwrap_err().code, ErrorCode::IdInvalid);
        for bad in ["ps_", "ps_short", "ps_01jdv3v9qk2h7m4n6p8r0s1t2u", "ps_01JDV3V9QK2H7M4N6P8R0S1T2U!", ""] {
            assert!(SessionId::parse(bad).is_err(), "{bad}");
        }
        assert!(SessionId::parse("ps_01JDV3V9QK2H7M4N6P8R0S1T2U").is_ok());
    }

    #[test]
    fn merchant_ids() {
        assert!(MerchantId::parse("acme_shop-1").is_ok());
        for bad in ["", "has space", "ümlaut", &"m".repeat(65)] {
            assert_eq!(MerchantId::parse(bad).unwrap_err().code, ErrorCode::MerchantIdInvalid);
        }
    }
}
