//! Moment's documented examples (docs.momentco.io: the quickstarts, the
//! authorisation-capture examples), run as written against `payments-api`
//! through the real services, a customer paying in Chromium where one is there.

use fantoccini::Locator;
use integration_tests::browser::Browser;
use integration_tests::{Command, TestEnv};
use serde_json::{json, Value};

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl Api {
    async fn start(env: &mut TestEnv, merchant: &str) -> Api {
        let base = env.start_api(&[]).await;
        let key = env.psctl(&["keys", "create", "--merchant", merchant, "--mode", "test"]).trim().to_owned();
        Api { base, key, http: reqwest::Client::new() }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let r = req.bearer_auth(&self.key).send().await.unwrap();
        let status = r.status().as_u16();
        let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        Answer { status, body: r.json().await.unwrap_or(Value::Null), replayed }
    }

    async fn post(&self, path: &str, idempotency_key: &str, body: Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).header("idempotency-key", idempotency_key).json(&body)).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// GETs `path` until `done` holds of the answer: the fleet applies what
    /// the processor said after the request that asked for it is answered.
    async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let a = self.get(path).await;
            if a.status == 200 && done(&a.body) {
                return a.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path} never got there: {}", a.body);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The customer pays on the session's checkout and sees its receipt.
async fn customer_pays(session: &Value) {
    let browser = Browser::launch().await;
    browser.c().goto(session["session_url"].as_str().unwrap()).await.unwrap();
    browser.pay("4242424242424242").await;
    let done = ["Payment successful", "Payment authorised"];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = browser.c().find(Locator::Id("state")).await.ok();
        let text = match state {
            Some(e) => e.text().await.unwrap_or_default(),
            None => String::new(),
        };
        if done.iter().any(|d| text.contains(d)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the checkout never finished: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // No return_url (Moment's is optional): the checkout's receipt is where it ends.
    if session["return_url"].is_null() {
        assert!(browser.c().find(Locator::Id("return")).await.is_err(), "no way back to a shop that gave none");
    }
    browser.close().await;
}

fn pay_id(session: &Value) -> String {
    session["id"].as_str().unwrap().replacen("ps_", "pay_", 1)
}

#[tokio::test]
async fn quickstart_one_time_as_moment_documents_it() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let api = Api::start(&mut env, "shop").await;

    // Moment's create example: amount and currency, nothing else.
    let s = api.post("/collect/payment_sessions", "qs-1", json!({"amount": 200, "currency": "ZAR"})).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!((s.body["type"].as_str(), s.body["status"].as_str()), (Some("one_time"), Some("active")));
    assert_eq!((s.body["payment_status"].as_str(), s.body["return_url"].as_str()), (Some("unpaid"), None));
    assert!(s.body["checkout_session_id"].as_str().is_some_and(|c| c.starts_with("ckt_")));
    let id = s.body["id"].as_str().unwrap().to_owned();
    customer_pays(&s.body).await;

    let done = api.get_until(&format!("/collect/payment_sessions/{id}"), |b| b["status"] == "completed").await;
    assert_eq!((done["payment_outcome"].as_str(), done["payment_status"].as_str()), (Some("paid"), Some("paid")));
    let pay = pay_id(&done);
    assert_eq!(done["payment_id"].as_str(), Some(pay.as_str()));
    let p = api.get(&format!("/collect/payments/{pay}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    for (field, want) in [
        ("status", json!("succeeded")),
        ("intent", json!("payment")),
        ("capture_method", json!("automatic")),
        ("currency", json!("ZAR")),
        ("paid_amount", json!(200)),
        ("authorization_expires_at", Value::Null),
        ("mode", json!("test")),
        ("payment_method_details", json!({"type": "card", "card": {"type": "credit", "scheme": "VISA", "bin": "424242", "last4": "4242"}})),
    ] {
        assert_eq!(p.body[field], want, "{field}: {}", p.body);
    }

    // A refund names the payment by its id.
    let r = api.post("/collect/refunds", "rf-1", json!({"payment_id": pay, "amount": 50, "reason": "requested_by_customer"})).await;
    assert_eq!((r.status, r.body["object"].as_str()), (200, Some("refund")), "{}", r.body);
    let rid = r.body["id"].as_str().unwrap().to_owned();
    api.get_until(&format!("/collect/refunds/{rid}"), |b| b["status"] == "succeeded").await;
    let too_much = api.post("/collect/refunds", "rf-2", json!({"payment_id": pay, "amount": 151})).await;
    assert_eq!((too_much.status, too_much.code()), (400, Some("amount_too_large")), "{}", too_much.body);

    // Payments that are not there: another session's that has not paid, and none at all.
    let unpaid = api.post("/collect/payment_sessions", "qs-2", json!({"amount": 300, "currency": "ZAR"})).await.body;
    let none = api.get(&format!("/collect/payments/{}", pay_id(&unpaid))).await;
    assert_eq!((none.status, none.code()), (404, Some("payment_not_found")), "{}", none.body);
    let nothing = api.get(&format!("/collect/payments/pay_{}", "0".repeat(26))).await;
    assert_eq!((nothing.status, nothing.code()), (404, Some("payment_not_found")));
    let malformed = api.get("/collect/payments/ps_nope").await;
    assert_eq!((malformed.status, malformed.code()), (400, Some("id_invalid")));
    env.finish().await;
}

/// Moment's payment method verification on a `one_time`: amount 0, the card
/// checked and saved, nothing charged.
#[tokio::test]
async fn a_one_time_verification_checks_and_saves_the_card_and_charges_nothing() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let api = Api::start(&mut env, "shop").await;
    let s = api
        .post(
            "/collect/payment_sessions",
            "verify-1",
            json!({"amount": 0, "currency": "ZAR",
                   "options": {"customer": {"name": "Lee", "email": "lee@example.com"},
                               "checkout_options": {"save_payment_method": "always"}}}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let browser = Browser::launch().await;
    browser.c().goto(s.body["session_url"].as_str().unwrap()).await.unwrap();
    assert_eq!(browser.text("pay").await, "Verify card");
    browser.pay("4242424242424242").await;
    browser.wait_for_text("state", "Card verified").await;
    browser.close().await;
    let id = s.body["id"].as_str().unwrap();
    let done = api.get_until(&format!("/collect/payment_sessions/{id}"), |b| b["status"] == "completed").await;
    assert_eq!(done["payment_outcome"], "payment_method_verified", "{done}");
    assert!(done["payment_method_id"].as_str().is_some_and(|p| p.starts_with("pm_")), "the card is saved: {done}");
    let p = api.get(&format!("/collect/payments/{}", pay_id(&done))).await.body;
    assert_eq!(
        (p["intent"].as_str(), p["status"].as_str(), p["paid_amount"].as_i64()),
        (Some("verification"), Some("succeeded"), Some(0)),
        "{p}"
    );
    assert_eq!(env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'authorize' AND amount > 0").await, 0, "nothing charged");
    env.finish().await;
}

#[tokio::test]
async fn quickstart_recurring_as_moment_documents_it() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let api = Api::start(&mut env, "gym").await;

    // Part 1: a first_in_series with Moment's nested customer.
    let first = api
        .post(
            "/collect/payment_sessions",
            "sub-1",
            json!({"type": "first_in_series", "amount": 5000, "currency": "ZAR",
                   "options": {"customer": {"name": "Alex", "email": "alex@example.com"}}}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body["customer_id"].as_str().is_some_and(|c| c.starts_with("cus_")));
    customer_pays(&first.body).await;
    let id = first.body["id"].as_str().unwrap();
    let done = api.get_until(&format!("/collect/payment_sessions/{id}"), |b| b["status"] == "completed").await;
    let (customer, method, mandate) =
        (done["customer_id"].as_str().unwrap(), done["payment_method_id"].as_str().unwrap(), done["mandate_id"].as_str().unwrap());

    // Part 2: next_in_series with Moment's options: charged at once, no checkout.
    let next = |key: &'static str| {
        api.post(
            "/collect/payment_sessions",
            key,
            json!({"type": "next_in_series", "amount": 5000, "currency": "ZAR",
                   "options": {"customer_id": customer, "payment_method_id": method}}),
        )
    };
    let charged = next("sub-2").await;
    assert_eq!(charged.status, 200, "{}", charged.body);
    assert!(charged.body["session_url"].is_null());
    assert!(charged.body["payment_id"].as_str().is_some_and(|p| p.starts_with("pay_")), "{}", charged.body);
    let nid = charged.body["id"].as_str().unwrap();
    api.get_until(&format!("/collect/payment_sessions/{nid}"), |b| b["payment_outcome"] == "paid").await;

    let m = api.get(&format!("/collect/mandates/{mandate}")).await;
    assert_eq!((m.status, m.body["status"].as_str()), (200, Some("active")), "{}", m.body);
    let listed = api.get(&format!("/collect/mandates?customer_id={customer}")).await;
    assert_eq!(listed.body["data"][0]["id"].as_str(), Some(mandate), "{}", listed.body);
    let revoked = api.post(&format!("/collect/mandates/{mandate}/revoke"), "rev-1", json!({})).await;
    assert_eq!((revoked.status, revoked.body["status"].as_str()), (200, Some("revoked")), "{}", revoked.body);
    let refused = next("sub-3").await;
    assert_eq!((refused.status, refused.code()), (422, Some("mandate_revoked")), "{}", refused.body);
    let unknown = api.get(&format!("/collect/mandates/md_{}", "0".repeat(26))).await;
    assert_eq!((unknown.status, unknown.code()), (404, Some("mandate_not_found")));
    env.finish().await;
}

/// Moment's authorisation-capture examples that take one capture or one
/// void: capture at shipment, void on a fraud review, and a capture after the
/// authorisation has expired.
#[tokio::test]
async fn authorise_then_capture_or_void_as_moment_documents_it() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let api = Api::start(&mut env, "shop").await;
    let manual = |reference: &str| {
        json!({"amount": 150000, "currency": "ZAR", "type": "one_time",
               "options": {"checkout_options": {"return_url": "https://merchant.example/order/123/status"},
                           "payment_method_options": {"card": {"capture_method": "manual"}}},
               "external_reference": reference})
    };

    // E-commerce: authorise at checkout, capture at shipment.
    let s = api.post("/collect/payment_sessions", "ship-1", manual("order_123")).await.body;
    customer_pays(&s).await;
    let pay = pay_id(&s);
    let held = api.get_until(&format!("/collect/payments/{pay}"), |b| b["authorised_amount"] == 150000).await;
    assert_eq!((held["status"].as_str(), held["paid_amount"].as_i64()), (Some("succeeded"), Some(0)), "{held}");
    assert_eq!(held["capture_method"], "manual");
    assert!(held["authorization_expires_at"].is_string(), "{held}");
    let session = api.get(&format!("/collect/payment_sessions/{}", s["id"].as_str().unwrap())).await.body;
    assert_eq!((session["status"].as_str(), session["payment_outcome"].as_str()), (Some("completed"), Some("reserved")));
    assert_eq!(session["payment_status"], "paid", "Moment keeps the deprecated field populated");
    let captured = api.post(&format!("/collect/payments/{pay}/captures"), "cap-1", json!({})).await;
    assert_eq!((captured.status, captured.body["id"].as_str()), (200, Some(pay.as_str())), "{}", captured.body);
    let paid = api.get_until(&format!("/collect/payments/{pay}"), |b| b["paid_amount"] == 150000).await;
    assert_eq!(paid["status"], "succeeded");
    env.event_about("payment.captured", s["id"].as_str().unwrap()).await;

    // Fraud review: authorise, then void in full.
    let f = api.post("/collect/payment_sessions", "fraud-1", manual("order_124")).await.body;
    customer_pays(&f).await;
    let fpay = pay_id(&f);
    api.get_until(&format!("/collect/payments/{fpay}"), |b| b["authorised_amount"] == 150000).await;
    let voided = api.post(&format!("/collect/payments/{fpay}/voids"), "void-1", json!({})).await;
    assert_eq!(voided.status, 200, "{}", voided.body);
    let gone = api.get_until(&format!("/collect/payments/{fpay}"), |b| b["voided_amount"] == 150000).await;
    assert_eq!(gone["status"], "cancelled", "{gone}");
    let late = api.post(&format!("/collect/payments/{fpay}/captures"), "cap-2", json!({})).await;
    assert_eq!(late.status, 409, "{}", late.body);

    // An authorisation past its expiry cannot be captured (409), as Moment documents.
    let e = api.post("/collect/payment_sessions", "exp-1", manual("order_125")).await.body;
    customer_pays(&e).await;
    let epay = pay_id(&e);
    api.get_until(&format!("/collect/payments/{epay}"), |b| b["authorised_amount"] == 150000).await;
    // Eight days pass for this payment.
    let c = env.pool.get().await.unwrap();
    let shift =
        |days: i32| format!("UPDATE payment_sessions SET payment_created_at = payment_created_at + interval '{days} days' WHERE id = $1");
    c.execute(&shift(-8), &[&e["id"].as_str().unwrap()]).await.unwrap();
    let expired = api.post(&format!("/collect/payments/{epay}/captures"), "cap-3", json!({"amount": 1000})).await;
    assert_eq!((expired.status, expired.code(), expired.replayed), (409, Some("authorization_expired"), false), "{}", expired.body);
    // Moment keeps a refusal as the key's answer: even once a capture would
    // go through, that key answers the same error, marked as a replay.
    c.execute(&shift(8), &[&e["id"].as_str().unwrap()]).await.unwrap();
    let again = api.post(&format!("/collect/payments/{epay}/captures"), "cap-3", json!({"amount": 1000})).await;
    assert_eq!((again.status, again.code(), again.replayed), (409, Some("authorization_expired"), true), "{}", again.body);
    let fresh = api.post(&format!("/collect/payments/{epay}/captures"), "cap-4", json!({"amount": 1000})).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    env.finish().await;
}

/// The same session read over the broker and over HTTP is the same object.
#[tokio::test]
async fn the_broker_and_http_give_the_same_object() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    env.start_lifecycle(&[]).await;
    env.start_webhooks(&[]).await;
    let api = Api::start(&mut env, "shop").await;
    let made = env.call(Command::create("shop", &json!({"amount": 700, "currency": "ZAR", "external_reference": "same-1"}))).await.body;
    let id = made["id"].as_str().unwrap();
    let over_http = api.get(&format!("/collect/payment_sessions/{id}")).await.body;
    let retrieve = Command::new("payment_session.retrieve", &json!({"payment_session_id": id})).header("merchant-id", "shop");
    let over_broker = env.call(retrieve).await.body;
    assert_eq!(over_http, over_broker);
    assert_eq!(over_http, made);

    // Our webhook endpoints over HTTP too: the secret once, then gone.
    let ep = api.post("/webhook_endpoints", "ep-1", json!({"url": "https://hooks.shop.example/moment", "enabled_events": ["*"]})).await;
    assert_eq!(ep.status, 200, "{}", ep.body);
    let ep_id = ep.body["id"].as_str().unwrap();
    let gone = api.send(api.http.delete(format!("{}/webhook_endpoints/{ep_id}", api.base)).header("idempotency-key", "ep-2")).await;
    assert_eq!((gone.status, gone.body["deleted"].as_bool()), (200, Some(true)), "{}", gone.body);
    let no_route = api.get("/collect/nothing_here").await;
    assert_eq!(no_route.status, 404);
    env.finish().await;
}

/// Moment's examples that capture more than once or void what captures left:
/// the hotel (capture the stay, void the rest) and partial fulfilment (one
/// capture per shipment, then void the item out of stock).
#[tokio::test]
async fn hotel_and_partial_fulfilment_capture_several_times_then_void_the_rest() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let api = Api::start(&mut env, "shop").await;
    let manual = |amount: i64| {
        json!({"amount": amount, "currency": "ZAR", "type": "one_time",
               "options": {"payment_method_options": {"card": {"capture_method": "manual"}}}})
    };
    let figures = |p: &Value| (p["authorised_amount"].as_i64(), p["paid_amount"].as_i64(), p["voided_amount"].as_i64());

    // Hotel: R1 500.00 authorised for three nights, the guest leaves after two.
    let h = api.post("/collect/payment_sessions", "hotel-1", manual(150000)).await.body;
    customer_pays(&h).await;
    let (hid, hpay) = (h["id"].as_str().unwrap(), pay_id(&h));
    api.get_until(&format!("/collect/payments/{hpay}"), |b| b["authorised_amount"] == 150000).await;
    let stay = api.post(&format!("/collect/payments/{hpay}/captures"), "hotel-cap", json!({"amount": 100000})).await;
    assert_eq!(stay.status, 200, "{}", stay.body);
    let captured = env.event_about("payment.captured", hid).await["data"].clone();
    assert_eq!(figures(&captured), (Some(150000), Some(100000), Some(0)), "the rest stays authorised: {captured}");
    let void = api.post(&format!("/collect/payments/{hpay}/voids"), "hotel-void", json!({})).await;
    assert_eq!(void.status, 200, "{}", void.body);
    let voided = env.event_about("payment.voided", hid).await["data"].clone();
    assert_eq!(figures(&voided), (Some(150000), Some(100000), Some(50000)), "{voided}");
    assert_eq!(voided["status"], "succeeded", "a payment that was captured stays succeeded");
    let more = api.post(&format!("/collect/payments/{hpay}/captures"), "hotel-cap-2", json!({"amount": 1})).await;
    assert_eq!((more.status, more.code()), (409, Some("illegal_transition")), "{}", more.body);
    let twice = api.post(&format!("/collect/payments/{hpay}/voids"), "hotel-void-2", json!({})).await;
    assert_eq!((twice.status, twice.code()), (409, Some("illegal_transition")), "{}", twice.body);

    // Partial fulfilment: R3 000.00 for three items; two ship, the third is out of stock.
    let o = api.post("/collect/payment_sessions", "order-1", manual(300000)).await.body;
    customer_pays(&o).await;
    let (oid, opay) = (o["id"].as_str().unwrap(), pay_id(&o));
    api.get_until(&format!("/collect/payments/{opay}"), |b| b["authorised_amount"] == 300000).await;
    for (key, amount, paid) in [("ship-item-1", 120000, 120000), ("ship-item-2", 80000, 200000)] {
        let shipped = api.post(&format!("/collect/payments/{opay}/captures"), key, json!({"amount": amount})).await;
        assert_eq!(shipped.status, 200, "{}", shipped.body);
        let p = env.event_about("payment.captured", oid).await["data"].clone();
        assert_eq!(figures(&p), (Some(300000), Some(paid), Some(0)), "{p}");
    }
    let too_much = api.post(&format!("/collect/payments/{opay}/captures"), "ship-item-3", json!({"amount": 100001})).await;
    assert_eq!((too_much.status, too_much.code()), (409, Some("amount_exceeds_remaining")), "{}", too_much.body);
    let rest = api.post(&format!("/collect/payments/{opay}/voids"), "order-void", json!({})).await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    let p = env.event_about("payment.voided", oid).await["data"].clone();
    assert_eq!(figures(&p), (Some(300000), Some(200000), Some(100000)), "{p}");
    let types = env.event_types_about(oid);
    let settled: Vec<&str> = types.iter().map(String::as_str).filter(|t| matches!(*t, "payment.captured" | "payment.voided")).collect();
    assert_eq!(settled, ["payment.captured", "payment.captured", "payment.voided"], "{types:?}");
    // Each capture was its own call to the processor, under its own key.
    let c = env.pool.get().await.unwrap();
    let keys: Vec<String> = c
        .query(
            "SELECT idempotency_key FROM sandbox_ledger WHERE operation = 'capture' AND amount IN (120000, 80000) ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1]);
    // What was captured can be refunded; the released part cannot.
    let refund = api.post("/collect/refunds", "order-refund", json!({"payment_id": opay, "amount": 200000})).await;
    assert_eq!(refund.status, 200, "{}", refund.body);
    let over = api.post("/collect/refunds", "order-refund-2", json!({"payment_id": opay, "amount": 1})).await;
    assert_eq!((over.status, over.code()), (422, Some("charge_already_refunded")), "{}", over.body);
    env.finish().await;
}
