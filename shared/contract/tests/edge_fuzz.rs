//! Property test over the edge parsers: whatever JSON a publisher sends, the
//! answer is a specific validation error or a parsed request — never a panic,
//! never `internal_error`, and never an error whose text could not be stored
//! or logged (control characters escaped).

use proptest::prelude::*;
use ps_contract::create::CreateSession;
use ps_contract::ErrorCode;
use serde_json::{json, Map, Value};

/// Strings that mix the field names and values the parsers know with
/// control characters, NULs, long runs and non-ASCII text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("line\nbreak\t\u{7f}\u{85}".to_owned()),
        Just("ZAR".to_owned()),
        Just("one_time".to_owned()),
        Just("first_in_series".to_owned()),
        Just("next_in_series".to_owned()),
        Just("https://x.example/r".to_owned()),
        Just("a@example.com".to_owned()),
        Just("md_0000000000000000000000".to_owned()),
        Just("é🙂".repeat(200)),
        "[ -~]{0,20}",
        any::<String>(),
    ]
}

const FIELDS: &[&str] = &[
    "type",
    "amount",
    "currency",
    "customer",
    "customer_id",
    "return_url",
    "save_payment_method",
    "capture_method",
    "mandate_options",
    "subscription_options",
    "payment_method_id",
    "mandate_id",
    "expires_in",
    "metadata",
    "external_reference",
    "name",
    "email",
    "recurrence",
    "interval_count",
    "on",
    "validity_period",
    "start_date",
    "end_date",
    "max_occurrences",
    "total_amount",
    "min",
    "max",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => text()]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0i64..100_000).prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body that is mostly a valid create, with one part replaced: this reaches
/// deep into the parser, where wholly random bodies stop at the first field.
fn near_valid() -> impl Strategy<Value = Value> {
    let base = prop_oneof![
        Just(json!({"type": "one_time", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                    "return_url": "https://x.example/r", "metadata": {"k": "v"}, "external_reference": "r1"})),
        Just(json!({"type": "first_in_series", "amount": 0, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                    "return_url": "https://x.example/r",
                    "mandate_options": {"type": "scheduled", "amount": {"min": 1, "max": 500}, "max_occurrences": 3,
                                        "recurrence": {"type": "monthly", "interval_count": 1, "on": 31},
                                        "validity_period": {"start_date": "2026-01-01", "end_date": "2027-01-01"}}})),
        Just(json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": "md_0000000000000000000000"})),
    ];
    (base, prop::collection::vec((key(), value()), 1..3), any::<bool>()).prop_map(|(mut b, changes, nested)| {
        let inner = ["customer", "mandate_options"].into_iter().find(|k| b.get(k).is_some());
        for (k, v) in changes {
            let target = match inner {
                Some(name) if nested => &mut b[name],
                _ => &mut b,
            };
            if let Some(obj) = target.as_object_mut() {
                obj.insert(k, v);
            }
        }
        b
    })
}

fn check(body: &Value) -> Result<(), TestCaseError> {
    match CreateSession::parse(body) {
        Ok(_) => Ok(()),
        Err(e) => {
            prop_assert_ne!(e.code, ErrorCode::InternalError, "{}", body);
            prop_assert!(!e.message.chars().any(char::is_control), "message {:?}", e.message);
            prop_assert!(!e.param.as_deref().unwrap_or_default().chars().any(char::is_control), "param {:?}", e.param);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_json_body_gets_a_specific_answer(body in value()) {
        check(&body)?;
    }

    #[test]
    fn any_change_to_a_valid_body_gets_a_specific_answer(body in near_valid()) {
        check(&body)?;
    }
}

#[test]
fn control_characters_are_refused_with_their_own_code() {
    let base = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                      "return_url": "https://x.example/r"});
    for (path, v) in [("external_reference", json!("r\u{0}")), ("metadata", json!({"k": "v\u{0}"})), ("metadata", json!({"k\u{1b}": "v"}))]
    {
        let mut b = base.clone();
        b[path] = v;
        let e = CreateSession::parse(&b).unwrap_err();
        assert_eq!(e.code, ErrorCode::StringInvalidCharacters, "{path}: {e}");
    }
    let mut b = base.clone();
    b["customer"]["name"] = json!("Bo\u{0}");
    let e = CreateSession::parse(&b).unwrap_err();
    assert_eq!((e.code, e.param.as_deref()), (ErrorCode::StringInvalidCharacters, Some("customer.name")));
}
