//! Secrets at rest (DESIGN §10): AES-256-GCM under keys from `PS_SECRET_KEYS`,
//! each sealed value carrying the id of the key that sealed it, so keys rotate:
//! add a new key first, run `psctl secrets rewrap`, then drop the old one.
//!
//! A sealed value is `ps1:<key id>:<base64url(nonce ‖ ciphertext)>`. What it is
//! (its context, e.g. `webhook_endpoints.secret`) is bound in as associated
//! data, so a value copied into another column does not open there.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;

const PREFIX: &str = "ps1";

/// What each sealed value is, bound into its ciphertext: one per column.
pub mod context {
    pub const WEBHOOK_SECRET: &str = "webhook_endpoints.secret";
    pub const CARD_NUMBER: &str = "vault_cards.pan";
    /// A stored reply holding a secret (idempotency and dedupe records).
    pub const REPLY: &str = "reply";
    pub const OUTBOX_BODY: &str = "outbox.body";
}
/// How a sealed JSON value (a stored reply holding a secret) is marked.
const SEALED_FIELD: &str = "$sealed";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("sealed with key {0:?}, which PS_SECRET_KEYS does not hold")]
    UnknownKey(String),
    #[error("does not open under key {0:?}: corrupt, or sealed for another use")]
    Corrupt(String),
}

/// Why a service could not seal or open a secret it holds.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("a secret to keep, but this service has no PS_SECRET_KEYS")]
    NoKeys,
    #[error("{context}: {source}")]
    Open { context: &'static str, source: SealError },
}

#[derive(Clone)]
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys of `PS_SECRET_KEYS`: the first seals, all open.
#[derive(Clone)]
pub struct Keyring(Arc<Vec<Key>>);

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|k| k.id.as_str()).collect();
        write!(f, "Keyring {{ keys: {ids:?} }}")
    }
}

impl Keyring {
    /// `id:base64(32 bytes)` pairs, comma-separated; ids are 1–32 of `A-Za-z0-9_-`.
    pub fn parse(spec: &str) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, material) = part.split_once(':').ok_or("each key is id:base64, e.g. k1:<32 bytes in base64>")?;
            if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("key id {id:?} must be 1-32 of A-Z a-z 0-9 _ -"));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            let bytes =
                STANDARD.decode(material).or_else(|_| URL_SAFE_NO_PAD.decode(material)).map_err(|_| format!("key {id}: not base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| format!("key {id}: must be 32 bytes, got {}", bytes.len()))?;
            keys.push(Key { id: id.to_owned(), cipher });
        }
        if keys.is_empty() {
            return Err("no keys".into());
        }
        Ok(Keyring(Arc::new(keys)))
    }

    /// The id new values are sealed under.
    pub fn active_id(&self) -> &str {
        &self.0[0].id
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let key = &self.0[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed =
            key.cipher.encrypt(&nonce, Payload { msg: plaintext, aad: context.as_bytes() }).expect("AES-GCM encrypts any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}:{}:{}", key.id, URL_SAFE_NO_PAD.encode(out))
    }

    pub fn seal_str(&self, context: &str, plaintext: &str) -> String {
        self.seal(context, plaintext.as_bytes())
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let (id, data) = key_id(sealed).ok_or(SealError::NotSealed)?;
        let key = self.0.iter().find(|k| k.id == id).ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD.decode(data).map_err(|_| SealError::Corrupt(id.to_owned()))?;
        if bytes.len() < 12 {
            return Err(SealError::Corrupt(id.to_owned()));
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .map_err(|_| SealError::Corrupt(id.to_owned()))
    }

    pub fn open_str(&self, context: &str, sealed: &str) -> Result<String, SealError> {
        String::from_utf8(self.open(context, sealed)?)
            .map_err(|_| SealError::Corrupt(key_id(sealed).map(|k| k.0).unwrap_or_default().to_owned()))
    }

    /// `sealed` again under the active key, or `None` if it already is (or is not sealed at all and `clear` says to leave it).
    pub fn rewrap(&self, context: &str, stored: &str) -> Result<Option<String>, SealError> {
        match key_id(stored) {
            Some((id, _)) if id == self.active_id() => Ok(None),
            Some(_) => Ok(Some(self.seal(context, &self.open(context, stored)?))),
            // Written before values were sealed: seal it now.
            None => Ok(Some(self.seal(context, stored.as_bytes()))),
        }
    }

    /// A JSON value (a stored reply that holds a secret) sealed into `{"$sealed": …}`.
    pub fn seal_json(&self, context: &str, value: &Value) -> Value {
        json!({ SEALED_FIELD: self.seal(context, value.to_string().as_bytes()) })
    }

    /// A stored JSON value, opened if it was sealed, as it is otherwise.
    pub fn open_json(&self, context: &str, stored: Value) -> Result<Value, SealError> {
        match sealed_json(&stored) {
            Some(s) => serde_json::from_slice(&self.open(context, s)?).map_err(|_| SealError::Corrupt(self.active_id().to_owned())),
            None => Ok(stored),
        }
    }
}

/// The sealed text inside a sealed JSON value, if it is one.
pub fn sealed_json(v: &Value) -> Option<&str> {
    match v.as_object() {
        Some(m) if m.len() == 1 => m.get(SEALED_FIELD)?.as_str(),
        _ => None,
    }
}

/// (key id, data) of a sealed value.
pub fn key_id(sealed: &str) -> Option<(&str, &str)> {
    let rest = sealed.strip_prefix(PREFIX)?.strip_prefix(':')?;
    rest.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    const K1: &str = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const K2: &str = "k2:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn seals_and_opens_binding_the_context() {
        let r = ring(K1);
        let s = r.seal_str("vault_cards.pan", "4242424242424242");
        assert!(s.starts_with("ps1:k1:") && !s.contains("4242424242424242"));
        assert_eq!(r.open_str("vault_cards.pan", &s).unwrap(), "4242424242424242");
        assert_eq!(r.open_str("webhook_endpoints.secret", &s), Err(SealError::Corrupt("k1".into())));
        assert_ne!(r.seal_str("x", "same"), r.seal_str("x", "same"), "a fresh nonce each time");
    }

    #[test]
    fn rotation_opens_old_values_and_rewraps_them() {
        let old = ring(K1).seal_str("c", "secret");
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.open_str("c", &old).unwrap(), "secret");
        let new = rotated.rewrap("c", &old).unwrap().unwrap();
        assert!(new.starts_with("ps1:k2:"));
        assert_eq!(rotated.rewrap("c", &new).unwrap(), None);
        assert_eq!(ring(K2).open_str("c", &new).unwrap(), "secret");
        assert_eq!(ring(K2).open_str("c", &old), Err(SealError::UnknownKey("k1".into())));
        assert!(ring(K2).rewrap("c", "clear").unwrap().unwrap().starts_with("ps1:k2:"));
    }

    #[test]
    fn json_round_trips_and_clear_json_passes() {
        let r = ring(K1);
        let v = json!({"id": "we_1", "secret": "whsec_x"});
        let sealed = r.seal_json("reply", &v);
        assert!(!sealed.to_string().contains("whsec_x"));
        assert_eq!(r.open_json("reply", sealed).unwrap(), v);
        assert_eq!(r.open_json("reply", v.clone()).unwrap(), v);
    }

    #[test]
    fn bad_specs_say_why() {
        for bad in ["", "k1", "k1:notbase64!", "k1:AAAA", &format!("{K1},{K1}"), "bad id:AAAA"] {
            assert!(Keyring::parse(bad).is_err(), "{bad}");
        }
        assert!(format!("{:?}", ring(K1)).contains("k1") && !format!("{:?}", ring(K1)).contains("AAAA"));
    }
}
