//! The HTTP API's keys (DESIGN §12, issue 20's first part), made, listed and
//! revoked with the real `psctl`, checked as the API will check them.

use integration_tests::TestEnv;
use ps_contract::secret::Secret;
use ps_contract::session::Mode;
use ps_store::api_keys::{authenticate, Authenticated, Refusal};

async fn who(env: &TestEnv, key: &str, mode: Mode) -> Result<String, Refusal> {
    let c = env.pool.get().await.unwrap();
    match authenticate(&c, &Secret::new(key), mode).await.unwrap() {
        Authenticated::Merchant { merchant, .. } => Ok(merchant.as_str().to_owned()),
        Authenticated::Refused(why) => Err(why),
    }
}

#[tokio::test]
async fn a_key_is_shown_once_kept_as_a_hash_and_names_one_merchant_in_one_mode() {
    let env = TestEnv::new().await;
    let test_key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    let live_key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "live"]).trim().to_owned();
    let other = env.psctl(&["keys", "create", "--merchant", "cafe", "--mode", "test"]).trim().to_owned();
    assert!(test_key.starts_with("sk_test_"), "{test_key}");
    assert!(live_key.starts_with("sk_") && !live_key.starts_with("sk_test_"), "{live_key}");

    // Only an id and a hash are kept: no secret part is anywhere in the table.
    let c = env.pool.get().await.unwrap();
    let table: String = c.query_one("SELECT string_agg(k::text, ' ') FROM api_keys k", &[]).await.unwrap().get(0);
    for key in [&test_key, &live_key, &other] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!table.contains(secret), "a key's secret is stored");
    }

    assert_eq!(who(&env, &test_key, Mode::Test).await, Ok("shop".into()));
    assert_eq!(who(&env, &live_key, Mode::Live).await, Ok("shop".into()));
    assert_eq!(who(&env, &other, Mode::Test).await, Ok("cafe".into()));
    // A test key never reaches live mode, nor a live key test mode.
    assert_eq!(who(&env, &test_key, Mode::Live).await, Err(Refusal::WrongMode));
    assert_eq!(who(&env, &live_key, Mode::Test).await, Err(Refusal::WrongMode));
    // One character of the secret changed, another key's id with this secret, or no key's shape at all.
    let mut altered = test_key.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(who(&env, &altered, Mode::Test).await, Err(Refusal::Unknown));
    let other_id = other.split('_').nth(2).unwrap();
    let (head, secret) = test_key.rsplit_once('_').unwrap();
    let own_id = head.rsplit('_').next().unwrap();
    assert_eq!(who(&env, &format!("sk_test_{other_id}_{secret}"), Mode::Test).await, Err(Refusal::Unknown));
    for malformed in ["", "Bearer", "sk_test_", "pk_test_abc", "sk_test_abc_def"] {
        assert_eq!(who(&env, malformed, Mode::Test).await, Err(Refusal::Malformed), "{malformed:?}");
    }

    // Listed by id, never with a secret.
    let listed = env.psctl(&["keys", "list", "--merchant", "shop", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r["id"] == own_id && r["mode"] == "test" && r["revoked_at"].is_null()));
    assert!(!listed.contains(secret));

    // Revoked: it authenticates nobody from then on; the others still work.
    env.psctl(&["keys", "revoke", own_id]);
    assert_eq!(who(&env, &test_key, Mode::Test).await, Err(Refusal::Revoked));
    assert_eq!(who(&env, &other, Mode::Test).await, Ok("cafe".into()));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&env.psctl(&["keys", "list", "--json"])).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().any(|r| r["id"] == own_id && r["revoked_at"].is_string()));

    // Bad input gets a specific answer.
    let bad_mode = env.psctl_output(&["keys", "create", "--merchant", "shop", "--mode", "prod"]).await;
    assert!(!bad_mode.status.success());
    assert!(String::from_utf8_lossy(&bad_mode.stderr).contains("neither test nor live"));
    let unknown = env.psctl_output(&["keys", "revoke", "nosuchkey000"]).await;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no key nosuchkey000"));
    env.finish().await;
}
