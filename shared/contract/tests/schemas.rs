//! The published JSON Schemas (`schemas/`, generated from this crate's types
//! with the `schema` feature) against the contract's examples and against this
//! crate's own parser and enums, so neither can drift alone.

use ps_contract::create::CreateSession;
use ps_contract::events::EventType;
use ps_contract::money::Currency;
use ps_contract::ErrorCode;
use serde_json::{json, Value};

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::validator_for(&s).unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}");
}

#[test]
fn the_contract_examples_validate() {
    let create = schema("payment_session.create");
    for f in ["create-one_time.json", "create-first_in_series.json", "create-next_in_series.json"] {
        assert_valid(&create, &fixture(f), f);
    }
    assert_valid(&schema("payment_session"), &fixture("reply-session.json"), "reply-session");
    assert_valid(&schema("error_reply"), &fixture("reply-error.json"), "reply-error");
    assert_valid(&schema("event"), &fixture("event-session-completed.json"), "event");
    assert_valid(&schema("payment_session"), &fixture("event-session-completed.json")["data"], "event data");
    assert_valid(&schema("webhook_endpoint.create"), &fixture("webhook-endpoint-create.json"), "webhook create");
    assert_valid(&schema("webhook_endpoint"), &fixture("reply-webhook-endpoint.json"), "webhook endpoint");
}

#[test]
fn the_schema_and_the_parser_refuse_the_same_bodies() {
    let create = schema("payment_session.create");
    let ok = fixture("create-one_time.json");
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let bad = [
        with("colour", json!("red")),
        with("mandate_id", json!("md_01JDV4A7A1B2C3D4E5F6G7H8J9")),
        with("amount", json!(-1)),
        with("amount", json!(12.5)),
        with("amount", json!("100")),
        with("amount", json!(1_000_000_000_000i64)),
        with("currency", json!("XYZ")),
        with("currency", json!("zar")),
        with("type", json!("subscription")),
        with("external_reference", json!("x".repeat(256))),
        with("metadata", json!({"n": 1})),
        with("expires_in", json!(59)),
        with("save_payment_method", json!("sometimes")),
        with("customer_id", json!("cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3")),
        without("amount"),
        with("external_reference", json!("inv 1")),
        with("options", json!({"colour": 1})),
        with("options", json!({"checkout_options": {"return_url": "ftp://x"}})),
        with("options", json!({"payment_method_options": {"card": {"capture_method": "later"}}})),
        json!({"type": "next_in_series", "amount": 100, "currency": "ZAR"}),
        json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": "md_01JDV4A7A1B2C3D4E5F6G7H8J9", "customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3"}),
    ];
    for body in &bad {
        assert!(CreateSession::parse(body).is_err(), "the parser accepts {body}");
        assert!(!create.is_valid(body), "the schema accepts {body}");
    }
    // Moment's documented bodies: both accept them.
    let good = [
        json!({"amount": 200, "currency": "ZAR"}),
        without("return_url"),
        with("amount", json!(0)),
        json!({"amount": 100000, "currency": "ZAR", "type": "one_time",
            "options": {"checkout_options": {"return_url": "https://merchant.example/order/123/status"},
                        "payment_method_options": {"card": {"capture_method": "manual"}}},
            "external_reference": "order_123"}),
        json!({"type": "first_in_series", "amount": 5000, "currency": "ZAR", "options": {"customer": {"name": "Alex", "email": "alex@example.com"}}}),
        json!({"type": "first_in_series", "amount": 2000, "currency": "ZAR", "options": {"customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3",
            "mandate_options": {"type": "scheduled", "amount": {"max": 5000},
                "validity_period": {"start_date": "2026-01-01", "end_date": "2026-12-31"},
                "recurrence": {"type": "weekly", "interval_count": 1, "on": {"days": ["mon"]}}},
            "subscription_options": {"amount": 2000, "scheduled_time": "09:00"}}}),
        json!({"type": "next_in_series", "amount": 5000, "currency": "ZAR",
            "options": {"customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3", "payment_method_id": "pm_01JDV3W2M8K5F4Q7Z9X0A1B2C3"}}),
    ];
    for body in &good {
        assert!(CreateSession::parse(body).is_ok(), "the parser refuses {body}: {:?}", CreateSession::parse(body).err());
        assert_valid(&create, body, &body.to_string());
    }
}

#[test]
fn the_schemas_list_exactly_the_codes_currencies_and_events_of_the_code() {
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{}/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap()).unwrap()
    };
    let strings = |v: &Value| -> Vec<String> { v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect() };

    let codes = strings(&read("error_reply")["$defs"]["ErrorCode"]["enum"]);
    let ours: Vec<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(codes, ours, "error_reply.json's codes");

    let currencies = strings(&read("payment_session.create")["$defs"]["Currency"]["enum"]);
    assert!(currencies.iter().all(|c| Currency::parse(c).is_ok()));
    for c in ["ZAR", "USD", "EUR", "GBP", "JPY", "KWD"] {
        assert!(currencies.contains(&c.to_owned()), "{c}");
    }

    let events = strings(&read("event")["$defs"]["EventType"]["enum"]);
    let ours: Vec<String> = EventType::ALL.iter().map(|e| e.as_str().to_owned()).collect();
    assert_eq!(events, ours, "event.json's types");
}

#[test]
fn objects_we_produce_validate() {
    let s: ps_contract::session::PaymentSession = serde_json::from_value(fixture("reply-session.json")).unwrap();
    assert_valid(&schema("payment_session"), &serde_json::to_value(&s).unwrap(), "serialised session");
    for code in ErrorCode::ALL {
        let reply = ps_contract::ApiError::new(*code, "why").to_reply();
        assert_valid(&schema("error_reply"), &reply, code.as_str());
    }
}
