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
        with("amount", json!(0)),
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
        without("return_url"),
        json!({"type": "next_in_series", "amount": 100, "currency": "ZAR"}),
        json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": "md_01JDV4A7A1B2C3D4E5F6G7H8J9", "customer_id": "cus_01JDV3W2M8K5F4Q7Z9X0A1B2C3"}),
    ];
    for body in &bad {
        assert!(CreateSession::parse(body).is_err(), "the parser accepts {body}");
        assert!(!create.is_valid(body), "the schema accepts {body}");
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
