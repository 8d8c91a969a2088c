use integration_tests::{assert_schema, seed_mandate, Command, TestEnv};
use ps_contract::routing::header;
use ps_runtime::message::header_str;
use ps_runtime::topology;
use serde_json::{json, Value};

fn one_time() -> Value {
    serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-one_time.json")).unwrap()
}

fn first_in_series() -> Value {
    serde_json::from_str(include_str!("../../../shared/contract/tests/fixtures/create-first_in_series.json")).unwrap()
}

fn on_demand_zar() -> Value {
    json!({"type": "on_demand", "currency": "ZAR"})
}

fn next_in_series(customer: &str, pm: &str, amount: i64) -> Value {
    json!({"type": "next_in_series", "amount": amount, "currency": "ZAR", "customer_id": customer, "payment_method_id": pm,
           "external_reference": "inv-1"})
}

async fn stored_session(env: &TestEnv, id: &str) -> (String, String, String, i64) {
    let c = env.pool.get().await.unwrap();
    let r = c.query_one("SELECT merchant_id, status, payment_outcome, amount FROM payment_sessions WHERE id = $1", &[&id]).await.unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn one_time_session_is_persisted_answered_and_announced() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;

    let reply = env.call(Command::create("shop_1", &one_time())).await;
    let s = &reply.body;
    assert_schema("payment_session", s);
    assert!(!reply.replayed);
    assert_eq!(s["object"], "payment_session");
    assert_eq!(s["type"], "one_time");
    assert_eq!(s["status"], "active");
    assert_eq!(s["payment_outcome"], "not_started");
    assert_eq!(s["amount"], 12550);
    assert_eq!(s["currency"], "ZAR");
    assert_eq!(s["metadata"]["order_id"], "A-1001");
    assert_eq!(s["mode"], "test");
    assert!(s["customer_id"].as_str().unwrap().starts_with("cus_"));
    let id = s["id"].as_str().unwrap();
    let url = s["session_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://127.0.0.1:8080/pay/{id}?t=")), "{url}");
    assert!(url.len() > 60, "token too short to be unguessable: {url}");
    let created = chrono::DateTime::parse_from_rfc3339(s["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 3600);

    assert_eq!(stored_session(&env, id).await, ("shop_1".into(), "active".into(), "not_started".into(), 12550));

    let event = env.next_event().await;
    assert_schema("event", &event);
    assert_eq!(event["type"], "payment_session.created");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(&event["data"], s);
    env.finish().await;
}

#[tokio::test]
async fn first_in_series_keeps_its_mandate_terms() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let reply = env.call(Command::create("gym", &first_in_series())).await;
    assert_eq!(reply.body["type"], "first_in_series", "{}", reply.body);
    assert_eq!(reply.body["payment_outcome"], "not_started");
    let id = reply.body["id"].as_str().unwrap();
    let c = env.pool.get().await.unwrap();
    let terms: Value = c.query_one("SELECT mandate_terms FROM payment_sessions WHERE id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(terms["max_occurrences"], 12);
    assert_eq!(terms["recurrence"]["type"], "monthly");
    assert_eq!(env.next_event().await["data"]["id"], id);

    // Zero amount: a card verification.
    let mut verify = first_in_series();
    verify["amount"] = json!(0);
    verify.as_object_mut().unwrap().remove("mandate_options");
    let reply = env.call(Command::create("gym", &verify)).await;
    assert_eq!(reply.body["amount"], 0, "{}", reply.body);
    env.finish().await;
}

#[tokio::test]
async fn next_in_series_validates_the_mandate_and_asks_the_gateway() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let (cus, pm, md) = seed_mandate(&env.pool, "gym", on_demand_zar(), (12, 2099), true).await;

    let upstream_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{upstream_trace}-00f067aa0ba902b7-01");
    let reply = env.call(Command::create("gym", &next_in_series(&cus, &pm, 19900)).header("traceparent", &traceparent)).await;
    let s = &reply.body;
    assert_eq!(s["type"], "next_in_series", "{s}");
    assert_eq!(s["status"], "active");
    assert_eq!(s["payment_outcome"], "pending");
    assert_eq!(s["mandate_id"], md.as_str());
    assert_eq!(s["payment_method_id"], pm.as_str());
    assert_eq!(s["session_url"], Value::Null);
    assert_eq!(s["expires_at"], Value::Null);

    let (body, headers) = env.next_message(&env.names.queue(&topology::GATEWAY)).await;
    let authorize: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(authorize["session_id"], s["id"]);
    assert_eq!(authorize["amount"], 19900);
    assert_eq!(authorize["customer_present"], false);
    assert_eq!(authorize["mandate_id"], md.as_str());
    let attempt = authorize["attempt_id"].as_str().unwrap();
    assert_eq!(authorize["processor_idempotency_key"], format!("authorize:{attempt}"));
    assert_eq!(header_str(Some(&headers), header::MERCHANT_ID).as_deref(), Some("gym"));
    let carried = header_str(Some(&headers), "traceparent").expect("trace context travels with the message");
    assert!(carried.starts_with(&format!("00-{upstream_trace}-")), "the upstream's trace continues: {carried}");
    assert_ne!(carried, traceparent, "with intake's own span as the parent");
    assert_eq!(env.count(&format!("SELECT count(*) FROM payment_attempts WHERE id = '{attempt}' AND status = 'pending'")).await, 1);

    // By mandate id too.
    let by_mandate = json!({"type": "next_in_series", "amount": 500, "currency": "ZAR", "mandate_id": md});
    assert_eq!(env.call(Command::create("gym", &by_mandate)).await.body["payment_outcome"], "pending");
    env.finish().await;
}

#[tokio::test]
async fn idempotent_replay_and_reuse() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let cmd = || Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, "order-A-1001");
    let first = env.call(cmd()).await;
    let again = env.call(cmd()).await;
    assert!(!first.replayed);
    assert!(again.replayed, "a replay carries idempotent-replayed: true");
    assert_eq!(first.body, again.body);

    // Same body, keys reordered and re-spaced: still the same request.
    let reordered = serde_json::to_string_pretty(&one_time()).unwrap().replace("\"amount\": 12550", "\"amount\":12550");
    let replay = env.call(cmd().raw_body(reordered.as_bytes())).await;
    assert_eq!(replay.body["id"], first.body["id"]);

    let mut other = one_time();
    other["amount"] = json!(99);
    let reused = env.call(Command::create("shop_1", &other).header(header::IDEMPOTENCY_KEY, "order-A-1001")).await;
    assert_eq!(reused.error_code(), Some("idempotency_key_reused"));

    // Keys are per merchant: another merchant's same key is a new session.
    let elsewhere = env.call(Command::create("shop_2", &one_time()).header(header::IDEMPOTENCY_KEY, "order-A-1001")).await;
    assert_ne!(elsewhere.body["id"], first.body["id"]);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 2);

    // A refused request binds its key, as Moment's does: the same request is
    // the same error, replayed; a corrected one is another request and needs its own key.
    let mut bad = one_time();
    bad["currency"] = json!("XXX");
    let key = "order-B-7";
    let refused = env.call(Command::create("shop_1", &bad).header(header::IDEMPOTENCY_KEY, key)).await;
    assert_eq!((refused.error_code(), refused.replayed), (Some("currency_invalid"), false));
    let again = env.call(Command::create("shop_1", &bad).header(header::IDEMPOTENCY_KEY, key)).await;
    assert_eq!((again.error_code(), again.replayed), (Some("currency_invalid"), true));
    let same_key = env.call(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, key)).await;
    assert_eq!(same_key.error_code(), Some("idempotency_key_reused"));
    let fixed = env.call(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, "order-B-8")).await;
    assert_eq!(fixed.body["status"], "active");
    env.finish().await;
}

/// A message's record is written last (DESIGN §5): a second delivery of a
/// message id is applied, finds the record and is rolled back. So a second
/// body under the same message id, even one that would make another session
/// (its own idempotency key), changes nothing and gets the first reply.
#[tokio::test]
async fn a_message_id_seen_before_is_answered_from_its_record_and_its_work_undone() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let first = env.call(Command::create("shop_1", &one_time()).message_id("msg-once")).await;
    let mut other = one_time();
    other["amount"] = json!(777);
    let again = env.call(Command::create("shop_1", &other).message_id("msg-once")).await;
    assert!(again.replayed, "answered from the record");
    assert_eq!(again.body, first.body);
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "the second delivery's session was rolled back");
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys").await, 1, "and its idempotency key with it");
    env.finish().await;
}

#[tokio::test]
async fn twenty_concurrent_duplicates_make_one_session() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let mut sent = vec![];
    for _ in 0..20 {
        sent.push(env.send(Command::create("shop_1", &one_time()).header(header::IDEMPOTENCY_KEY, "same-key")).await);
    }
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for corr in &sent {
        let r = env.reply(corr).await;
        ids.insert(r.body["id"].as_str().expect("every duplicate gets the session").to_owned());
        fresh += usize::from(!r.replayed);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(fresh, 1, "exactly one reply is the original; the rest are replays");
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM customers").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM sent_messages WHERE routing_key = 'payment_session.created'").await, 1);
    env.finish().await;
}

#[tokio::test]
async fn every_bad_command_gets_its_specific_error_and_the_worker_survives() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    let (cus, pm, _) = seed_mandate(
        &env.pool,
        "gym",
        json!({"type": "on_demand", "currency": "ZAR", "amount": {"min": 100, "max": 50000}}),
        (12, 2099),
        true,
    )
    .await;
    let (other_cus, other_pm, other_md) = seed_mandate(&env.pool, "rival", on_demand_zar(), (12, 2099), true).await;
    let (rev_cus, rev_pm, rev_md) = seed_mandate(&env.pool, "gym", on_demand_zar(), (12, 2099), true).await;
    env.pool.get().await.unwrap().execute("UPDATE mandates SET status = 'revoked' WHERE id = $1", &[&rev_md]).await.unwrap();
    let (saved_cus, saved_pm, _) = seed_mandate(&env.pool, "gym", Value::Null, (12, 2099), false).await;
    let (exp_cus, exp_pm, _) = seed_mandate(&env.pool, "gym", on_demand_zar(), (1, 2020), true).await;
    let (fut_cus, fut_pm, _) = seed_mandate(
        &env.pool,
        "gym",
        json!({"type": "on_demand", "currency": "ZAR", "validity_period": {"start_date": "2099-01-01"}}),
        (12, 2099),
        true,
    )
    .await;
    let (cap_cus, cap_pm, _) =
        seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR", "max_occurrences": 1}), (12, 2099), true).await;
    let _ = (&rev_cus, &other_cus, &other_pm);

    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let without = |mut v: Value, k: &str| {
        v.as_object_mut().unwrap().remove(k);
        v
    };
    let ok = one_time();
    let create = |body: &Value| Command::create("shop_1", body);
    let gym = |body: &Value| Command::create("gym", body);

    let cases: Vec<(&str, Command, &str)> = vec![
        ("malformed JSON", create(&ok).raw_body(b"{\"type\": \"one_time\","), "invalid_json"),
        ("not UTF-8", create(&ok).raw_body(&[0xff, 0xfe, 0x00]), "invalid_json"),
        ("array body", create(&json!([1, 2, 3])), "body_not_object"),
        (
            "return_url both flat and under options",
            create(&with(ok.clone(), "options", json!({"checkout_options": {"return_url": "https://x.example/"}}))),
            "parameter_conflict",
        ),
        ("an unknown field under options", create(&with(ok.clone(), "options", json!({"colour": "red"}))), "parameter_unknown"),
        ("a slash in external_reference", create(&with(ok.clone(), "external_reference", json!("inv/1"))), "string_invalid_characters"),
        ("unknown type", create(&with(ok.clone(), "type", json!("subscription"))), "session_type_invalid"),
        ("unknown field", create(&with(ok.clone(), "colour", json!("red"))), "parameter_unknown"),
        ("field of another type", create(&with(ok.clone(), "mandate_options", json!({}))), "parameter_not_allowed_for_type"),
        ("missing amount", create(&without(ok.clone(), "amount")), "parameter_missing"),
        ("amount as string", create(&with(ok.clone(), "amount", json!("125.50"))), "parameter_invalid_type"),
        ("fractional amount", create(&with(ok.clone(), "amount", json!(125.5))), "parameter_invalid_integer"),
        ("negative amount", create(&with(ok.clone(), "amount", json!(-100))), "amount_too_small"),
        ("negative amount on one_time", create(&with(ok.clone(), "amount", json!(-5))), "amount_too_small"),
        ("overflowing amount", create(&with(ok.clone(), "amount", json!(18446744073709551615u64))), "amount_too_large"),
        ("unknown currency", create(&with(ok.clone(), "currency", json!("ZZZ"))), "currency_invalid"),
        ("lower-case currency", create(&with(ok.clone(), "currency", json!("zar"))), "currency_invalid"),
        ("too-long reference", create(&with(ok.clone(), "external_reference", json!("x".repeat(256)))), "string_too_long"),
        ("bad return_url", create(&with(ok.clone(), "return_url", json!("javascript:alert(1)"))), "url_invalid"),
        ("a relative return_url", create(&with(ok.clone(), "return_url", json!("/orders/1"))), "url_invalid"),
        ("bad email", create(&with(ok.clone(), "customer", json!({"name": "Ada", "email": "ada@"}))), "email_invalid"),
        ("expires_in too short", create(&with(ok.clone(), "expires_in", json!(5))), "expires_in_out_of_range"),
        ("metadata not strings", create(&with(ok.clone(), "metadata", json!({"n": 5}))), "metadata_invalid"),
        ("bad save_payment_method", create(&with(ok.clone(), "save_payment_method", json!("sometimes"))), "parameter_invalid_value"),
        ("missing idempotency key", create(&ok).without_header(header::IDEMPOTENCY_KEY), "idempotency_key_missing"),
        ("idempotency key too long", create(&ok).header(header::IDEMPOTENCY_KEY, &"k".repeat(256)), "idempotency_key_invalid"),
        ("missing merchant", create(&ok).without_header(header::MERCHANT_ID), "merchant_id_missing"),
        ("bad merchant", create(&ok).header(header::MERCHANT_ID, "a b"), "merchant_id_invalid"),
        (
            "another merchant's customer",
            create(&with(without(ok.clone(), "customer"), "customer_id", json!(other_cus))),
            "customer_not_found",
        ),
        (
            "mandate range inverted",
            gym(&with(first_in_series(), "mandate_options", json!({"amount": {"min": 9, "max": 1}}))),
            "mandate_amount_range_invalid",
        ),
        (
            "mandate in another currency",
            gym(&with(first_in_series(), "mandate_options", json!({"currency": "USD"}))),
            "mandate_currency_mismatch",
        ),
        ("next_in_series without target", gym(&json!({"type": "next_in_series", "amount": 100, "currency": "ZAR"})), "parameter_missing"),
        (
            "another merchant's mandate",
            gym(&json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": other_md})),
            "mandate_not_found",
        ),
        ("another merchant's payment method", gym(&next_in_series(&cus, &other_pm, 100)), "payment_method_not_found"),
        ("another customer's payment method", gym(&next_in_series(&rev_cus, &pm, 100)), "mandate_customer_mismatch"),
        ("revoked mandate", gym(&next_in_series(&rev_cus, &rev_pm, 100)), "mandate_revoked"),
        ("one_time saved method", gym(&next_in_series(&saved_cus, &saved_pm, 100)), "payment_method_has_no_mandate"),
        ("amount above mandate max", gym(&next_in_series(&cus, &pm, 60000)), "amount_out_of_mandate_range"),
        (
            "currency other than mandate's",
            gym(&with(next_in_series(&cus, &pm, 1000), "currency", json!("USD"))),
            "mandate_currency_mismatch",
        ),
        ("expired card", gym(&next_in_series(&exp_cus, &exp_pm, 100)), "payment_method_expired"),
        ("mandate not yet valid", gym(&next_in_series(&fut_cus, &fut_pm, 100)), "mandate_not_yet_valid"),
        ("wrong command on this queue", Command::new("payment_session.create", &ok), "merchant_id_missing"),
        // NUL and other control characters: a validation error, never internal_error (jsonb refuses \u0000).
        ("NUL in metadata", create(&with(ok.clone(), "metadata", json!({"k": "v\u{0}"}))), "string_invalid_characters"),
        ("NUL in a metadata key", create(&with(ok.clone(), "metadata", json!({"k\u{0}": "v"}))), "string_invalid_characters"),
        ("escape in external_reference", create(&with(ok.clone(), "external_reference", json!("r\u{1b}[2J"))), "string_invalid_characters"),
        (
            "NUL in a name",
            create(&with(ok.clone(), "customer", json!({"name": "Bo\u{0}", "email": "bo@example.com"}))),
            "string_invalid_characters",
        ),
        ("NUL in an unknown field's name", create(&with(ok.clone(), "x\u{0}y", json!(1))), "parameter_unknown"),
    ];
    assert!(cases.len() >= 25);
    let n = cases.len();
    for (what, cmd, code) in cases {
        let reply = env.call(cmd).await;
        assert_eq!(reply.error_code(), Some(code), "{what}: {}", reply.body);
        assert_schema("error_reply", &reply.body);
        let err = &reply.body["error"];
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: message");
        assert!(err["type"].is_string(), "{what}: type");
    }

    // The cap counts charges in flight: the first passes, the second is refused.
    assert_eq!(env.call(gym(&next_in_series(&cap_cus, &cap_pm, 100))).await.body["payment_outcome"], "pending");
    assert_eq!(env.call(gym(&next_in_series(&cap_cus, &cap_pm, 100))).await.error_code(), Some("mandate_max_occurrences_reached"));

    // Nothing above stopped the worker or created anything; each key a refusal
    // claimed answers that refusal from now on (Moment's), none is left half-done.
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, 1, "only the capped mandate's first charge");
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys WHERE NOT reply ? 'error'").await, 1);
    assert!(env.count("SELECT count(*) FROM idempotency_keys WHERE reply ? 'error'").await > 20);
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys WHERE reply IS NULL").await, 0);
    assert_eq!(env.call(create(&ok)).await.body["status"], "active", "worker still serves after {n} bad commands");
    env.finish().await;
}

#[tokio::test]
async fn unparseable_message_is_dead_lettered_with_its_reason() {
    let mut env = TestEnv::new().await;
    env.start_intake().await;
    // No reply_to: the DLQ is the only place this can be reported.
    env.send(Command::create("shop_1", &one_time()).raw_body(b"<xml>not json</xml>").no_reply()).await;
    let (body, headers) = env.next_dead_letter(&topology::INTAKE).await;
    assert_eq!(body, b"<xml>not json</xml>");
    assert_eq!(header_str(Some(&headers), header::DEAD_LETTER_CODE).as_deref(), Some("invalid_json"));
    let reason = header_str(Some(&headers), header::DEAD_LETTER_REASON).unwrap();
    assert!(reason.contains("not JSON"), "{reason}");
    assert_eq!(header_str(Some(&headers), header::ORIGINAL_ROUTING_KEY).as_deref(), Some("payment_session.create"));
    assert_eq!(header_str(Some(&headers), header::MERCHANT_ID).as_deref(), Some("shop_1"));

    // A valid but refused command with nowhere to reply also lands there, not in silence.
    let mut bad = one_time();
    bad["amount"] = json!(-5);
    env.send(Command::create("shop_1", &bad).no_reply()).await;
    let (_, headers) = env.next_dead_letter(&topology::INTAKE).await;
    assert_eq!(header_str(Some(&headers), header::DEAD_LETTER_CODE).as_deref(), Some("amount_too_small"));
    env.finish().await;
}
