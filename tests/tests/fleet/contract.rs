//! The published contract: JSON Schemas and the AsyncAPI document generated
//! from the contract crate's types, checked in, and kept from drifting.

use ps_contract::schema::{asyncapi, standalone, DOCUMENTS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// Writes the files under UPDATE_DOCS=1; otherwise names every one that differs.
fn check(files: Vec<(PathBuf, String)>) {
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let mut stale = vec![];
    for (path, now) in files {
        if update {
            std::fs::write(&path, &now).unwrap();
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(now.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with the contract crate: {stale:?}; run UPDATE_DOCS=1 make test (or this test alone) and commit them"
    );
}

#[test]
fn the_json_schemas_asyncapi_and_openapi_documents_are_current() {
    let dir = root().join("shared/contract/schemas");
    let mut files: Vec<(PathBuf, String)> =
        DOCUMENTS.iter().map(|d| (dir.join(format!("{}.json", d.name)), pretty(&standalone(d)))).collect();
    files.push((root().join("docs/asyncapi.json"), pretty(&asyncapi(env!("CARGO_PKG_VERSION")))));
    files.push((root().join("docs/openapi.json"), pretty(&ps_contract::openapi::openapi(env!("CARGO_PKG_VERSION")))));
    check(files);
    // No schema file is left behind for a document that no longer exists.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let name = name.trim_end_matches(".json");
        assert!(
            DOCUMENTS.iter().any(|d| d.name == name),
            "shared/contract/schemas/{name}.json is not generated from the contract crate: remove it"
        );
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&standalone(DOCUMENTS.iter().find(|d| d.name == name).unwrap())).unwrap()
}

#[test]
fn every_example_matches_its_schema() {
    let examples = root().join("docs/examples");
    for (file, schema) in [
        ("create-one_time.json", "payment_session.create"),
        ("create-first_in_series.json", "payment_session.create"),
        ("create-next_in_series.json", "payment_session.create"),
        ("reply-session.json", "payment_session"),
        ("reply-error.json", "error_reply"),
        ("event-session-completed.json", "event"),
        ("webhook-endpoint-create.json", "webhook_endpoint.create"),
        ("reply-webhook-endpoint.json", "webhook_endpoint"),
    ] {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(examples.join(file)).unwrap()).unwrap();
        let errors: Vec<String> = validator(schema).iter_errors(&v).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{file} against {schema}: {errors:?}");
        if schema == "payment_session.create" {
            ps_contract::create::CreateSession::parse(&v).unwrap_or_else(|e| panic!("{file}: intake would refuse it: {e:?}"));
        }
    }
}

#[test]
fn the_create_schema_refuses_what_intake_refuses() {
    let v = validator("payment_session.create");
    let one_time = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://shop.example/r"});
    assert!(v.is_valid(&one_time));
    let mut refused = vec![];
    let mut with = |patch: Value| {
        let mut b = one_time.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = val.clone();
            }
        }
        refused.push((patch.clone(), v.is_valid(&b), ps_contract::create::CreateSession::parse(&b).is_ok()));
    };
    with(json!({"colour": "red"}));
    with(json!({"mandate_options": {}}));
    with(json!({"amount": -1}));
    with(json!({"currency": "XXX"}));
    with(json!({"external_reference": "a/b"}));
    with(json!({"options": {"checkout_options": {"return_url": "ftp://x"}}}));
    with(json!({"customer": {"name": "A", "email": "a@example.com"}, "customer_id": "cus_01JDV3V9QK2H7M4N6P8R0S1T2U"}));
    with(json!({"type": "next_in_series", "return_url": null}));
    for (patch, schema_ok, intake_ok) in refused {
        assert!(!schema_ok && !intake_ok, "{patch}: schema accepts {schema_ok}, intake accepts {intake_ok}");
    }
    let next = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": "md_01JDV3V9QK2H7M4N6P8R0S1T2U"});
    assert!(v.is_valid(&next) && ps_contract::create::CreateSession::parse(&next).is_ok());
}

#[test]
fn every_route_names_a_document_and_every_command_is_routed() {
    use ps_contract::schema::ROUTES;
    for r in ROUTES {
        for name in std::iter::once(&r.body).chain(r.replies) {
            assert!(DOCUMENTS.iter().any(|d| d.name == *name), "{} names no document {name}", r.routing_key);
        }
    }
    // Every routing key a queue is bound to on the command or internal exchange is in the AsyncAPI document.
    for q in ps_runtime::topology::QUEUES {
        for b in q.bindings {
            if [ps_contract::routing::exchange::COMMANDS, ps_contract::routing::exchange::INTERNAL].contains(&b.exchange) {
                assert!(
                    ROUTES.iter().any(|r| r.routing_key == b.key && r.exchange == b.exchange),
                    "{} on {} is consumed but not published in the contract",
                    b.key,
                    b.exchange
                );
            }
        }
    }
}
