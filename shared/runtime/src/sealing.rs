//! Secrets at rest (DESIGN §10): AES-256-GCM under keys from `PS_SECRET_KEYS`,
//! each sealed value carrying the id of the key that sealed it, so keys rotate:
//! add a new key first, run `psctl secrets rewrap`, then drop the old one.
//!
//! A sealed value is `ps2:<key id>:<base64url(nonce ‖ ciphertext)>`. Where it
//! rests (its column and its row's key, an [`At`]) is bound in as associated
//! data, so a value copied into another column, or into another row of the
//! same column, does not open there. `ps1:` values (earlier versions bound only
//! the column) open only in `psctl secrets rewrap`, which re-seals them bound.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;

const PREFIX: &str = "ps2";
const LEGACY_PREFIX: &str = "ps1";

/// The columns that hold sealed values.
pub mod context {
    pub const WEBHOOK_SECRET: &str = "webhook_endpoints.secret";
    pub const CARD_NUMBER: &str = "vault_cards.pan";
    /// A stored reply holding a secret, in the idempotency record.
    pub const IDEMPOTENCY_REPLY: &str = "idempotency_keys.reply";
    /// A stored reply holding a secret, in the dedupe record.
    pub const DEDUPE_REPLY: &str = "processed_messages.reply";
    pub const OUTBOX_BODY: &str = "outbox.body";
    /// A body a consumed message sent, kept in its record.
    pub const DEDUPE_OUTGOING: &str = "processed_messages.outgoing";
    /// What `ps1:` replies (either table) were bound to before rows were.
    pub const LEGACY_REPLY: &str = "reply";
}

/// Where a sealed value rests: its column and the key of its row, bound into
/// the ciphertext. Each part is length-prefixed, so no two rows share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    column: &'static str,
    aad: String,
}

impl At {
    pub fn new(column: &'static str, row: &[&str]) -> At {
        let mut aad = format!("{PREFIX}|{column}");
        for part in row {
            aad.push_str(&format!("|{}:{part}", part.len()));
        }
        At { column, aad }
    }

    pub fn column(&self) -> &'static str {
        self.column
    }

    /// A vaulted card's number, by its token.
    pub fn card_number(token: &str) -> At {
        At::new(context::CARD_NUMBER, &[token])
    }

    /// An endpoint's signing secret (current or previous), by the endpoint's id.
    pub fn webhook_secret(endpoint_id: &str) -> At {
        At::new(context::WEBHOOK_SECRET, &[endpoint_id])
    }

    /// A reply kept with an idempotency key.
    pub fn idempotency_reply(merchant: &str, key: &str) -> At {
        At::new(context::IDEMPOTENCY_REPLY, &[merchant, key])
    }

    /// A reply kept with a consumer's record of a message.
    pub fn dedupe_reply(consumer: &str, message_key: &str) -> At {
        At::new(context::DEDUPE_REPLY, &[consumer, message_key])
    }

    /// An outbox body, bound to its producer and destination: copied into a
    /// row routed elsewhere, it does not open.
    pub fn outbox_body(producer: &str, exchange: &str, routing_key: &str, message_id: Option<&str>) -> At {
        At::new(context::OUTBOX_BODY, &[producer, exchange, routing_key, message_id.unwrap_or("")])
    }

    /// A body among what a consumed message sent, kept in its record: bound to
    /// the record and to the message's place and destination in it.
    pub fn dedupe_outgoing(consumer: &str, message_key: &str, index: usize, exchange: &str, routing_key: &str) -> At {
        At::new(context::DEDUPE_OUTGOING, &[consumer, message_key, &index.to_string(), exchange, routing_key])
    }
}
/// How a sealed JSON value (a stored reply holding a secret) is marked.
const SEALED_FIELD: &str = "$sealed";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("sealed with key {0:?}, which PS_SECRET_KEYS does not hold")]
    UnknownKey(String),
    #[error("does not open under key {0:?}: corrupt, or sealed for another column or row")]
    Corrupt(String),
    #[error("sealed by an earlier version without its row bound in: run `psctl secrets rewrap`")]
    Legacy,
}

/// Why a service could not seal or open a secret it holds.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("a secret to keep, but this service has no PS_SECRET_KEYS")]
    NoKeys,
    #[error("{context}: {source}")]
    Open {
        context: &'static str,
        #[source]
        source: SealError,
    },
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

    pub fn seal(&self, at: &At, plaintext: &[u8]) -> String {
        let key = &self.0[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed =
            key.cipher.encrypt(&nonce, Payload { msg: plaintext, aad: at.aad.as_bytes() }).expect("AES-GCM encrypts any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}:{}:{}", key.id, URL_SAFE_NO_PAD.encode(out))
    }

    pub fn seal_str(&self, at: &At, plaintext: &str) -> String {
        self.seal(at, plaintext.as_bytes())
    }

    pub fn open(&self, at: &At, sealed: &str) -> Result<Vec<u8>, SealError> {
        match parts(sealed) {
            Some((PREFIX, id, data)) => self.decrypt(id, data, at.aad.as_bytes()),
            Some(_) => Err(SealError::Legacy),
            None => Err(SealError::NotSealed),
        }
    }

    fn decrypt(&self, id: &str, data: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.0.iter().find(|k| k.id == id).ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD.decode(data).map_err(|_| SealError::Corrupt(id.to_owned()))?;
        if bytes.len() < 12 {
            return Err(SealError::Corrupt(id.to_owned()));
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        key.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad }).map_err(|_| SealError::Corrupt(id.to_owned()))
    }

    pub fn open_str(&self, at: &At, sealed: &str) -> Result<String, SealError> {
        String::from_utf8(self.open(at, sealed)?)
            .map_err(|_| SealError::Corrupt(key_id(sealed).map(|k| k.0).unwrap_or_default().to_owned()))
    }

    /// `stored` sealed again under the active key and bound to `at`, or `None`
    /// if it already is. A `ps1:` value opens under `legacy` (the context it was
    /// sealed with: its column); a value in clear (written before sealing) is sealed.
    pub fn rewrap(&self, at: &At, legacy: &str, stored: &str) -> Result<Option<String>, SealError> {
        match parts(stored) {
            Some((PREFIX, id, _)) if id == self.active_id() => Ok(None),
            Some((PREFIX, _, _)) => Ok(Some(self.seal(at, &self.open(at, stored)?))),
            Some((_, id, data)) => Ok(Some(self.seal(at, &self.decrypt(id, data, legacy.as_bytes())?))),
            None => Ok(Some(self.seal(at, stored.as_bytes()))),
        }
    }

    /// A JSON value (a stored reply that holds a secret) sealed into `{"$sealed": …}`.
    pub fn seal_json(&self, at: &At, value: &Value) -> Value {
        json!({ SEALED_FIELD: self.seal(at, value.to_string().as_bytes()) })
    }

    /// A stored JSON value, opened if it was sealed, as it is otherwise.
    pub fn open_json(&self, at: &At, stored: Value) -> Result<Value, SealError> {
        match sealed_json(&stored) {
            Some(s) => serde_json::from_slice(&self.open(at, s)?).map_err(|_| SealError::Corrupt(self.active_id().to_owned())),
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

/// (version, key id, data) of a sealed value, either version.
fn parts(sealed: &str) -> Option<(&'static str, &str, &str)> {
    let (version, rest) = [PREFIX, LEGACY_PREFIX].into_iter().find_map(|v| Some((v, sealed.strip_prefix(v)?.strip_prefix(':')?)))?;
    let (id, data) = rest.split_once(':')?;
    Some((version, id, data))
}

/// (key id, data) of a sealed value.
pub fn key_id(sealed: &str) -> Option<(&str, &str)> {
    parts(sealed).map(|(_, id, data)| (id, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    const K1: &str = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const K2: &str = "k2:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn at(row: &str) -> At {
        At::new(context::CARD_NUMBER, &[row])
    }

    #[test]
    fn seals_and_opens_binding_the_column_and_the_row() {
        let r = ring(K1);
        let s = r.seal_str(&at("tok_1"), "4242424242424242");
        assert!(s.starts_with("ps2:k1:") && !s.contains("4242424242424242"));
        assert_eq!(r.open_str(&at("tok_1"), &s).unwrap(), "4242424242424242");
        assert_eq!(r.open_str(&at("tok_2"), &s), Err(SealError::Corrupt("k1".into())), "another row");
        assert_eq!(r.open_str(&At::new(context::WEBHOOK_SECRET, &["tok_1"]), &s), Err(SealError::Corrupt("k1".into())), "another column");
        // Length prefixes: no row key can be split to look like another.
        assert_ne!(At::new(context::OUTBOX_BODY, &["a|1:b"]), At::new(context::OUTBOX_BODY, &["a", "b"]));
        assert_ne!(r.seal_str(&at("x"), "same"), r.seal_str(&at("x"), "same"), "a fresh nonce each time");
    }

    #[test]
    fn rotation_opens_old_values_and_rewraps_them() {
        let old = ring(K1).seal_str(&at("t"), "secret");
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.open_str(&at("t"), &old).unwrap(), "secret");
        let new = rotated.rewrap(&at("t"), context::CARD_NUMBER, &old).unwrap().unwrap();
        assert!(new.starts_with("ps2:k2:"));
        assert_eq!(rotated.rewrap(&at("t"), context::CARD_NUMBER, &new).unwrap(), None);
        assert_eq!(ring(K2).open_str(&at("t"), &new).unwrap(), "secret");
        assert_eq!(ring(K2).open_str(&at("t"), &old), Err(SealError::UnknownKey("k1".into())));
        assert!(ring(K2).rewrap(&at("t"), context::CARD_NUMBER, "clear").unwrap().unwrap().starts_with("ps2:k2:"));
    }

    #[test]
    fn legacy_values_open_only_to_be_rewrapped() {
        // As an earlier version sealed: the column alone as associated data.
        let r = ring(K1);
        let key = &r.0[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut data = nonce.to_vec();
        data.extend(key.cipher.encrypt(&nonce, Payload { msg: b"4242".as_slice(), aad: context::CARD_NUMBER.as_bytes() }).unwrap());
        let legacy = format!("ps1:k1:{}", URL_SAFE_NO_PAD.encode(data));
        assert_eq!(r.open_str(&at("t"), &legacy), Err(SealError::Legacy));
        let bound = r.rewrap(&at("t"), context::CARD_NUMBER, &legacy).unwrap().unwrap();
        assert_eq!(r.open_str(&at("t"), &bound).unwrap(), "4242");
    }

    #[test]
    fn json_round_trips_and_clear_json_passes() {
        let r = ring(K1);
        let v = json!({"id": "we_1", "secret": "whsec_x"});
        let at = At::new(context::DEDUPE_REPLY, &["consumer", "key"]);
        let sealed = r.seal_json(&at, &v);
        assert!(!sealed.to_string().contains("whsec_x"));
        assert_eq!(r.open_json(&at, sealed.clone()).unwrap(), v);
        assert!(r.open_json(&At::new(context::DEDUPE_REPLY, &["consumer", "other"]), sealed).is_err());
        assert_eq!(r.open_json(&at, v.clone()).unwrap(), v);
    }

    #[test]
    fn bad_specs_say_why() {
        for bad in ["", "k1", "k1:notbase64!", "k1:AAAA", &format!("{K1},{K1}"), "bad id:AAAA"] {
            assert!(Keyring::parse(bad).is_err(), "{bad}");
        }
        assert!(format!("{:?}", ring(K1)).contains("k1") && !format!("{:?}", ring(K1)).contains("AAAA"));
    }
}
