//! `payments-api` (DESIGN §12): Moment's REST surface over the fleet's
//! commands, through the real intake and lifecycle, with keys from `psctl`.

use integration_tests::TestEnv;
use serde_json::{json, Value};

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.json().await.unwrap_or(Value::Null);
    Answer { status, body, headers }
}

fn one_time(amount: i64) -> Value {
    json!({"type": "one_time", "amount": amount, "currency": "ZAR", "return_url": "https://shop.example/back"})
}

#[tokio::test]
async fn a_client_creates_retrieves_lists_and_cancels_a_session_over_http() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    let api = env.start_api(&[]).await;
    let key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    let http = reqwest::Client::new();
    let sessions = format!("{api}/collect/payment_sessions");

    let created = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", "order-1").json(&one_time(2500))).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!((created.body["object"].as_str(), created.body["amount"].as_i64()), (Some("payment_session"), Some(2500)));
    assert!(created.header("request-id").is_some_and(|r| r.starts_with("req_")));
    assert!(created.header("idempotent-replayed").is_none());
    let id = created.body["id"].as_str().unwrap().to_owned();

    // The same request again: the first answer, marked as a replay, and no second session.
    let again = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", "order-1").json(&one_time(2500))).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (200, Some("true")));
    assert_eq!(again.body["id"], created.body["id"]);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    // The key with another body: a conflict.
    let reused = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", "order-1").json(&one_time(99))).await;
    assert_eq!((reused.status, reused.code()), (409, Some("idempotency_key_reused")));

    let got = send(http.get(format!("{sessions}/{id}")).bearer_auth(&key)).await;
    assert_eq!((got.status, got.body["id"].as_str()), (200, Some(id.as_str())));
    let listed = send(http.get(format!("{sessions}?limit=10")).bearer_auth(&key)).await;
    assert_eq!((listed.status, listed.body["object"].as_str()), (200, Some("list")), "{}", listed.body);
    assert_eq!(listed.body["data"][0]["id"], created.body["id"]);
    let bad_limit = send(http.get(format!("{sessions}?limit=1000")).bearer_auth(&key)).await;
    assert_eq!(bad_limit.status, 400, "{}", bad_limit.body);

    let cancelled = send(http.post(format!("{sessions}/{id}/cancel")).bearer_auth(&key).header("idempotency-key", "cancel-1")).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (200, Some("cancelled")), "{}", cancelled.body);
    let twice = send(http.post(format!("{sessions}/{id}/cancel")).bearer_auth(&key).header("idempotency-key", "cancel-2")).await;
    assert_eq!(twice.status, 409, "{}", twice.body);

    // Each fault its own status and code.
    let missing = send(http.get(format!("{sessions}/ps_{}", "0".repeat(26))).bearer_auth(&key)).await;
    assert_eq!((missing.status, missing.code()), (404, Some("session_not_found")), "{}", missing.body);
    let malformed = send(http.get(format!("{sessions}/nonsense")).bearer_auth(&key)).await;
    assert_eq!((malformed.status, malformed.code()), (400, Some("id_invalid")), "{}", malformed.body);
    let no_key = send(http.post(&sessions).bearer_auth(&key).json(&one_time(100))).await;
    assert_eq!((no_key.status, no_key.code()), (400, Some("idempotency_key_missing")));
    let invalid = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", "bad-1").json(&json!({"type": "one_time"}))).await;
    assert_eq!((invalid.status, invalid.code()), (400, Some("parameter_missing")), "{}", invalid.body);
    let not_json = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", "bad-2").body("{")).await;
    assert_eq!((not_json.status, not_json.code()), (400, Some("invalid_json")), "{}", not_json.body);

    // Another merchant's key sees nothing of this one's.
    let cafe = env.psctl(&["keys", "create", "--merchant", "cafe", "--mode", "test"]).trim().to_owned();
    let theirs = send(http.get(format!("{sessions}/{id}")).bearer_auth(&cafe)).await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    env.finish().await;
}

#[tokio::test]
async fn only_a_valid_key_of_this_mode_gets_in_and_each_key_has_its_rate() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let api = env.start_api(&[("API_REQUESTS_PER_SECOND", "1")]).await;
    let key = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    let live = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "live"]).trim().to_owned();
    let revoked = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    env.psctl(&["keys", "revoke", revoked.split('_').nth(2).unwrap()]);
    let http = reqwest::Client::new();
    let sessions = format!("{api}/collect/payment_sessions");
    // The key with its last character changed (to one it is not: a key may end in '0').
    let mut wrong = key.clone();
    let last = wrong.pop();
    wrong.push(if last == Some('0') { '1' } else { '0' });
    for (what, req) in [
        ("no key", http.post(&sessions)),
        ("not bearer", http.post(&sessions).basic_auth("shop", Some("x"))),
        ("a live key in test mode", http.post(&sessions).bearer_auth(&live)),
        ("a revoked key", http.post(&sessions).bearer_auth(&revoked)),
        ("a wrong secret", http.post(&sessions).bearer_auth(&wrong)),
    ] {
        let a = send(req.header("idempotency-key", "k").json(&one_time(100))).await;
        assert_eq!((a.status, a.code()), (401, Some("invalid_api_key")), "{what}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{what}");
        assert_eq!(a.body["error"]["type"], "authentication_error");
    }
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 0, "nothing refused reached intake");

    // One a second for this key: those past it are 429 with a Retry-After; another key is not slowed.
    let mut statuses = vec![];
    for n in 0..5 {
        let a = send(http.post(&sessions).bearer_auth(&key).header("idempotency-key", format!("r{n}")).json(&one_time(100))).await;
        if a.status == 429 {
            assert!(a.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
            assert_eq!(a.code(), Some("rate_limited"));
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let other = env.psctl(&["keys", "create", "--merchant", "shop", "--mode", "test"]).trim().to_owned();
    let a = send(http.post(&sessions).bearer_auth(&other).header("idempotency-key", "o1").json(&one_time(100))).await;
    assert_eq!(a.status, 200);
    env.finish().await;
}

/// The API serves exactly the routes docs/openapi.json describes: each one is
/// routed (a request without a key is 401, not 404), and a path it does not
/// describe is 404.
#[tokio::test]
async fn every_route_in_the_openapi_document_is_served() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let http = reqwest::Client::new();
    for r in ps_contract::openapi::HTTP_ROUTES {
        let path = r.path.replace("{id}", "x");
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
        let a = send(http.request(method, format!("{api}{path}"))).await;
        assert_eq!((a.status, a.code()), (401, Some("invalid_api_key")), "{} {}", r.method, r.path);
    }
    for (method, path) in [("GET", "/collect/nothing"), ("POST", "/collect/schedules/x/explode"), ("POST", "/webhook_endpoints/x/explode")]
    {
        let a = send(http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{api}{path}"))).await;
        assert_eq!(a.status, 404, "{method} {path}");
    }
    env.finish().await;
}
