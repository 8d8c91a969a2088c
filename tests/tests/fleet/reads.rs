//! Asking as well as telling (DESIGN §9): sessions and mandates retrieved and
//! listed over the broker, scoped to their merchant, paged stably while new
//! sessions arrive.

use integration_tests::{CheckoutClient, Command, TestEnv};
use serde_json::{json, Value};
use std::collections::HashSet;

fn one_time(reference: &str) -> Value {
    json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://shop.example/r", "external_reference": reference})
}

fn read(name: &str, merchant: &str, body: Value) -> Command {
    Command::new(name, &body).header("merchant-id", merchant)
}

#[tokio::test]
async fn sessions_and_mandates_are_retrieved_in_each_state_and_only_by_their_merchant() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let active = env.call(Command::create("gym", &one_time("a"))).await.body;
    let paid = env.call(Command::create("gym", &one_time("b"))).await.body;
    CheckoutClient::new().pay(paid["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    env.event_about("payment_session.completed", paid["id"].as_str().unwrap()).await;
    let fis = json!({"type": "first_in_series", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                     "return_url": "https://x.example/r"});
    let f = env.call(Command::create("gym", &fis)).await.body;
    CheckoutClient::new().pay(f["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let md =
        env.event_about("payment_session.completed", f["id"].as_str().unwrap()).await["data"]["mandate_id"].as_str().unwrap().to_owned();
    let next =
        env.call(Command::create("gym", &json!({"type": "next_in_series", "amount": 250, "currency": "ZAR", "mandate_id": md}))).await.body;
    env.event_about("payment_session.completed", next["id"].as_str().unwrap()).await;

    for (s, status, outcome) in
        [(&active, "active", "not_started"), (&paid, "completed", "paid"), (&f, "completed", "paid"), (&next, "completed", "paid")]
    {
        let got = env.call(read("payment_session.retrieve", "gym", json!({"payment_session_id": s["id"]}))).await.body;
        assert_eq!((got["status"].as_str(), got["payment_outcome"].as_str()), (Some(status), Some(outcome)), "{got}");
        integration_tests::assert_schema("payment_session", &got);
    }
    let rival = env.call(read("payment_session.retrieve", "rival", json!({"payment_session_id": paid["id"]}))).await;
    assert_eq!(rival.error_code(), Some("session_not_found"), "another merchant's session reads as missing");
    let m = env.call(read("mandate.retrieve", "gym", json!({"mandate_id": md}))).await.body;
    assert_eq!(
        (m["status"].as_str(), m["occurrences_used"].as_i64(), m["amount_used"].as_i64()),
        (Some("active"), Some(1), Some(250)),
        "{m}"
    );
    assert_eq!(env.call(read("mandate.retrieve", "rival", json!({"mandate_id": md}))).await.error_code(), Some("mandate_not_found"));
    let mandates = env.call(read("mandate.list", "gym", json!({"status": "active"}))).await.body;
    assert_eq!(mandates["data"].as_array().unwrap().len(), 1, "{mandates}");
    assert_eq!(env.call(read("mandate.list", "rival", json!({}))).await.body["data"], json!([]));
    for bad in
        [json!({"limit": 0}), json!({"limit": 101}), json!({"status": "paid"}), json!({"created_after": "yesterday"}), json!({"nope": 1})]
    {
        let r = env.call(read("payment_session.list", "gym", bad.clone())).await;
        assert!(r.error_code().is_some(), "{bad}: {}", r.body);
    }
    let filtered = env.call(read("payment_session.list", "gym", json!({"external_reference": "b", "status": "completed"}))).await.body;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1, "{filtered}");
    assert_eq!(filtered["data"][0]["id"], paid["id"]);
    let by_customer = env.call(read("payment_session.list", "gym", json!({"customer_id": f["customer_id"]}))).await.body;
    assert_eq!(by_customer["data"].as_array().unwrap().len(), 2, "the first_in_series and its next_in_series: {by_customer}");
    let count_after = |t: &str| {
        let body = json!({"created_after": t});
        let env = &env;
        async move { env.call(read("payment_session.list", "gym", body)).await.body["data"].as_array().unwrap().len() }
    };
    assert_eq!(count_after("2000-01-01T00:00:00Z").await, 4);
    assert_eq!(count_after("2999-01-01T00:00:00Z").await, 0);
    env.finish().await;
}

#[tokio::test]
async fn paging_through_250_sessions_stays_correct_while_new_ones_arrive() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    let created: Vec<String> = {
        let corrs = env.send_many((0..250).map(|i| Command::create("shop", &one_time(&format!("r{i}")))).collect()).await;
        let mut ids = vec![];
        for c in corrs {
            ids.push(env.reply(&c).await.body["id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let mut seen: Vec<String> = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        // New sessions keep arriving between pages.
        env.send_many((0..20).map(|i| Command::create("shop", &one_time(&format!("new{pages}-{i}")))).collect()).await;
        let mut body = json!({"limit": 100});
        if let Some(c) = &cursor {
            body["starting_after"] = json!(c);
        }
        let page = env.call(read("payment_session.list", "shop", body)).await.body;
        let data = page["data"].as_array().unwrap_or_else(|| panic!("{page}"));
        seen.extend(data.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        pages += 1;
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = seen.last().cloned();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no session twice across pages");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, strictly");
    for id in &created {
        assert!(unique.contains(id), "{id} missed by paging");
    }
    assert!(pages >= 3, "{pages} pages");
    env.finish().await;
}

#[tokio::test]
async fn reads_are_answered_while_a_write_holds_the_row_so_they_take_no_lock_of_their_own() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    let s = env.call(Command::create("shop", &one_time("held"))).await.body;
    let id = s["id"].as_str().unwrap();
    // A writer mid-change: the session's row locked, as lifecycle and checkout lock it.
    let mut c = env.pool.get().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.query_one("SELECT id FROM payment_sessions WHERE id = $1 FOR UPDATE", &[&id]).await.unwrap();
    // A read that locked (FOR SHARE or FOR UPDATE) would wait behind it and never be answered.
    let got = env.call(read("payment_session.retrieve", "shop", json!({"payment_session_id": id}))).await.body;
    assert_eq!(got["id"], id, "{got}");
    let listed = env.call(read("payment_session.list", "shop", json!({"external_reference": "held"}))).await.body;
    assert_eq!(listed["data"][0]["id"], id, "{listed}");
    // And the write goes on as if nothing had read.
    tx.execute("UPDATE payment_sessions SET updated_at = now() WHERE id = $1", &[&id]).await.unwrap();
    tx.commit().await.unwrap();
    env.finish().await;
}
