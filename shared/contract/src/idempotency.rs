//! Idempotency keys and the fingerprint that tells a replay from a reuse.

use crate::error::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};
use std::fmt;

/// 1-255 printable ASCII characters, as DESIGN §4 requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(|c| (0x21..=0x7e).contains(&c)) {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyInvalid,
                format!("idempotency-key must be 1-{} printable ASCII characters without spaces", Self::MAX_LEN),
            ));
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 over the command name and the body as parsed JSON, so whitespace and
/// key order do not make a faithful retry look like a different request.
pub fn request_fingerprint(command: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(command.as_bytes());
    h.update([0]);
    // serde_json's map is ordered by key, so this serialisation is canonical.
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        assert!(IdempotencyKey::parse("order-A-1001:try-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "with space", "tab\t", &"k".repeat(256), "é"] {
            assert_eq!(IdempotencyKey::parse(bad).unwrap_err().code, ErrorCode::IdempotencyKeyInvalid);
        }
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":{"y":2,"x":3}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "b": {"x":3,"y":2}, "a": 1 }"#).unwrap();
        assert_eq!(request_fingerprint("c", &a), request_fingerprint("c", &b));
        assert_ne!(request_fingerprint("c", &a), request_fingerprint("c", &json!({"a": 2, "b": {"x":3,"y":2}})));
        assert_ne!(request_fingerprint("c", &a), request_fingerprint("d", &a));
    }
}
