//! The `api_keys` table (DESIGN §12): the keys HTTP clients authenticate with,
//! `sk_test_…` for test mode and `sk_…` for live, each naming one merchant. The
//! only module that reads or writes it.
//!
//! A key is `sk_[test_]{id}_{secret}`: the id is public (lists, logs, the
//! lookup); only a SHA-256 of the whole key is kept, compared in constant time.
//! A test key is refused by a live deployment and a live key by a test one.

use deadpool_postgres::GenericClient;
use ps_contract::ids::MerchantId;
use ps_contract::secret::Secret;
use ps_contract::session::Mode;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// A key just made: shown once, never stored.
#[derive(Debug)]
pub struct NewKey {
    pub id: String,
    pub key: Secret,
}

/// Why a presented key does not authenticate. Said to the operator's logs by
/// id; to the client only as "invalid key" (which of these it was helps an attacker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not in the shape of one of our keys.
    Malformed,
    /// No such key, or its secret part is wrong.
    Unknown,
    Revoked,
    /// A test key at a live deployment, or a live key at a test one.
    WrongMode,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Revoked => "revoked",
            Refusal::WrongMode => "wrong_mode",
        }
    }
}

pub enum Authenticated {
    /// The key's merchant, and its id (for logs).
    Merchant {
        merchant: MerchantId,
        key_id: String,
    },
    Refused(Refusal),
}

/// One key as `psctl keys list` shows it: never its secret.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub merchant_id: String,
    pub mode: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn prefix(mode: Mode) -> &'static str {
    match mode {
        Mode::Test => "sk_test_",
        Mode::Live => "sk_",
    }
}

/// The mode and id a key names, if it has the shape of one.
fn parse(key: &str) -> Option<(Mode, &str)> {
    let (mode, rest) = match key.strip_prefix("sk_test_") {
        Some(rest) => (Mode::Test, rest),
        None => (Mode::Live, key.strip_prefix("sk_")?),
    };
    let (id, secret) = rest.split_once('_')?;
    let shaped = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (shaped(id, ID_LEN) && shaped(secret, SECRET_LEN)).then_some((mode, id))
}

fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// A new key for `merchant` in `mode`.
pub async fn create(c: &impl GenericClient, merchant: &MerchantId, mode: Mode) -> Result<NewKey, tokio_postgres::Error> {
    let mut rng = rand::rng();
    let id = Alphanumeric.sample_string(&mut rng, ID_LEN);
    let key = format!("{}{id}_{}", prefix(mode), Alphanumeric.sample_string(&mut rng, SECRET_LEN));
    c.execute(
        "INSERT INTO api_keys (id, merchant_id, mode, key_sha256) VALUES ($1, $2, $3, $4)",
        &[&id, &merchant.as_str(), &mode.as_str(), &digest(&key)],
    )
    .await?;
    Ok(NewKey { id, key: Secret::new(key) })
}

/// Who `presented` (an `Authorization: Bearer` value) is, at a deployment in `mode`.
pub async fn authenticate(c: &impl GenericClient, presented: &Secret, mode: Mode) -> Result<Authenticated, tokio_postgres::Error> {
    let Some((named, id)) = parse(presented.expose()) else { return Ok(Authenticated::Refused(Refusal::Malformed)) };
    let row = c
        .query_opt(
            &c.prepare_cached("SELECT merchant_id, mode, key_sha256, revoked_at IS NOT NULL FROM api_keys WHERE id = $1").await?,
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(Authenticated::Refused(Refusal::Unknown)) };
    let stored: &[u8] = row.get(2);
    if !bool::from(digest(presented.expose()).ct_eq(stored)) {
        return Ok(Authenticated::Refused(Refusal::Unknown));
    }
    let key_mode = Mode::parse(row.get(1));
    if row.get::<_, bool>(3) {
        return Ok(Authenticated::Refused(Refusal::Revoked));
    }
    // The prefix is part of what was hashed, so it cannot disagree with the row; checked anyway.
    if key_mode != Some(mode) || named != mode {
        return Ok(Authenticated::Refused(Refusal::WrongMode));
    }
    match MerchantId::parse(row.get(0)) {
        Ok(merchant) => Ok(Authenticated::Merchant { merchant, key_id: id.to_owned() }),
        Err(_) => Ok(Authenticated::Refused(Refusal::Unknown)),
    }
}

/// Revokes key `id` (from now on it authenticates nobody). False if there is no such key.
pub async fn revoke(c: &impl GenericClient, id: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(c.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", &[&id]).await? == 1)
}

/// Keys, newest first; one merchant's when given.
pub async fn list(c: &impl GenericClient, merchant: Option<&str>) -> Result<Vec<Listed>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT id, merchant_id, mode, created_at, revoked_at FROM api_keys
             WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY created_at DESC, id",
            &[&merchant],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Listed { id: r.get(0), merchant_id: r.get(1), mode: r.get(2), created_at: r.get(3), revoked_at: r.get(4) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_mode_and_id_and_nothing_else_passes() {
        let id = "a".repeat(ID_LEN);
        let secret = "B".repeat(SECRET_LEN);
        assert_eq!(parse(&format!("sk_test_{id}_{secret}")), Some((Mode::Test, id.as_str())));
        assert_eq!(parse(&format!("sk_{id}_{secret}")), Some((Mode::Live, id.as_str())));
        for bad in [
            format!("pk_test_{id}_{secret}"),
            format!("sk_test_{id}{secret}"),
            format!("sk_test_{id}_{}", &secret[1..]),
            format!("sk_test_{id}_{secret}x"),
            format!("sk_test_{}_{secret}", &id[1..]),
            format!("sk_test_{id}_{}!", &secret[1..]),
            String::new(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
