//! What the binaries say about themselves: `--help`, `--version`, and the
//! configuration table in `docs/configuration.md`, generated from the code.

use integration_tests::binary_path;
use ps_runtime::config::{ConfigError, Env, Manual, Var};

fn listing<C>(manual: &Manual, config: fn(&Env) -> Result<C, ConfigError>) -> (&'static str, &'static str, Vec<Var>) {
    (manual.name, manual.about, manual.variables(config).unwrap())
}

fn table() -> String {
    let binaries = [
        listing(&session_intake::MANUAL, session_intake::IntakeConfig::from_env),
        listing(&checkout::MANUAL, checkout::CheckoutConfig::from_env),
        listing(&payment_gateway::MANUAL, payment_gateway::GatewayConfig::from_env),
        listing(&session_lifecycle::MANUAL, session_lifecycle::LifecycleConfig::from_env),
        listing(&charge_scheduler::MANUAL, charge_scheduler::SchedulerConfig::from_env),
        listing(&webhook_dispatch::MANUAL, webhook_dispatch::WebhookConfig::from_env),
        listing(&payments_api::MANUAL, payments_api::ApiConfig::from_env),
    ];
    let mut out = String::from(
        "# Configuration\n\n\
         Every binary is configured by environment variables only; `BINARY --help` prints\n\
         its own list. This file is generated from the code by the test\n\
         `docs::the_configuration_table_is_current` (`UPDATE_DOCS=1 make test` rewrites it).\n\
         psctl reads the variables every service shares.\n\n\
         ## Every service\n\n| variable | default | meaning |\n|---|---|---|\n",
    );
    let row = |v: &Var| {
        format!(
            "| `{}` | {} | {} |\n",
            v.name,
            v.default.as_deref().filter(|d| !d.is_empty()).map(|d| format!("`{d}`")).unwrap_or_else(|| "—".into()),
            v.about
        )
    };
    let common = |v: &Var| ps_runtime::config::COMMON_VARS.iter().any(|(n, _)| *n == v.name);
    // HEALTH_ADDR's default differs per service, so it is listed with each.
    for v in binaries[0].2.iter().filter(|v| common(v) && v.name != "HEALTH_ADDR") {
        out += &row(v);
    }
    for (name, about, vars) in &binaries {
        out += &format!("\n## `{name}`\n\n{about}\n\n| variable | default | meaning |\n|---|---|---|\n");
        for v in vars.iter().filter(|v| !common(v) || v.name == "HEALTH_ADDR") {
            out += &row(v);
        }
    }
    out
}

#[test]
fn the_configuration_table_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let now = table();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(written == now, "docs/configuration.md is out of date with the code: run UPDATE_DOCS=1 make test (or cargo nextest run -E 'test(the_configuration_table_is_current)') and commit it");
}

#[test]
fn every_variable_a_service_reads_is_described() {
    // `variables` fails naming any variable read but not described; each service must list cleanly.
    for (name, _, vars) in [
        listing(&session_intake::MANUAL, session_intake::IntakeConfig::from_env),
        listing(&webhook_dispatch::MANUAL, webhook_dispatch::WebhookConfig::from_env),
    ] {
        assert!(vars.iter().any(|v| v.name == "AMQP_URL"), "{name}");
    }
    let undocumented = Manual { name: "x", version: "0", about: "", vars: &[] };
    let e = undocumented.variables(|env| env.ranged("SOMETHING_NEW", 1, 0, 2)).unwrap_err();
    assert!(e.contains("SOMETHING_NEW is read but not described"), "{e}");
}

#[test]
fn every_binary_answers_help_and_version_without_starting() {
    // No broker or database is reachable at these addresses: a binary that
    // started anyway would fail or hang, not print and exit 0.
    for bin in [
        "session-intake",
        "checkout",
        "payment-gateway",
        "session-lifecycle",
        "charge-scheduler",
        "webhook-dispatch",
        "payments-api",
        "psctl",
    ] {
        for (arg, expect) in [("--help", "AMQP_URL"), ("--version", "0.1.0")] {
            let out = std::process::Command::new(binary_path(bin))
                .arg(arg)
                .env("AMQP_URL", "amqp://nobody@127.0.0.1:1/")
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{bin} {arg}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
            assert!(text.contains(expect) && text.contains(bin), "{bin} {arg} printed {text}");
        }
    }
    let out = std::process::Command::new(binary_path("session-intake")).arg("--consume").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument \"--consume\""));
}

#[test]
fn the_grafana_dashboard_shows_only_metrics_the_services_export() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/payment-sessions.json")).unwrap()).unwrap();
    // Every metric the code registers, by its name literal in a register_* call.
    let mut registered = std::collections::BTreeSet::new();
    for dir in [
        "shared/runtime/src",
        "services/gateway/src",
        "services/intake/src",
        "services/lifecycle/src",
        "services/scheduler/src",
        "services/webhooks/src",
        "services/checkout/src",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for chunk in text.split("register_").skip(1) {
                if let Some(name) = chunk.split('"').nth(1).filter(|n| n.starts_with("ps_")) {
                    registered.insert(name.to_owned());
                }
            }
        }
    }
    let mut used = vec![];
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("ps_")) {
                let base = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                used.push(base.to_owned());
            }
        }
    }
    assert!(used.len() >= 15, "{used:?}");
    let unknown: Vec<&String> = used.iter().filter(|u| !registered.contains(*u)).collect();
    assert!(unknown.is_empty(), "the dashboard graphs metrics nothing exports: {unknown:?} (registered: {registered:?})");
    for gauge in [
        "ps_outbox_backlog",
        "ps_outbox_oldest_seconds",
        "ps_webhook_deliveries",
        "ps_webhook_endpoints_disabled",
        "ps_webhook_delivery_seconds",
    ] {
        assert!(used.iter().any(|u| u == gauge), "the dashboard shows {gauge}");
    }
}

#[tokio::test]
async fn make_demo_tells_its_story_against_a_running_fleet() {
    // As `make run` runs it: every binary, guest granted every merchant, loopback webhooks allowed.
    let fleet = integration_tests::faults::Fleet::start_with(10, &[], false, integration_tests::faults::Processor::Sandbox).await;
    let out = tokio::process::Command::new(binary_path("demo"))
        .env("AMQP_URL", &fleet.env.amqp_url)
        .env("AMQP_NAME_PREFIX", &fleet.env.prefix)
        .output()
        .await
        .unwrap();
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{story}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(story.contains(&format!("the customer opens {}/pay/", fleet.checkout_url)), "{story}");
    assert!(story.contains("mandate md_") && story.contains("completed / paid"), "{story}");
    assert_eq!(story.matches("signature verified").count(), 3, "{story}");
    fleet.finish();
}

/// The autoscaling rules (KEDA's prometheus triggers in deploy/k8s) ask for
/// the handle-time histogram the consumers export, by a queue label a
/// consumer really carries: a typo there would scale nothing, silently.
#[test]
fn every_autoscaling_query_names_an_exported_metric_and_a_real_queue() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let queues: Vec<&str> = ps_runtime::topology::QUEUES.iter().map(|q| q.name).collect();
    let runtime = std::fs::read_to_string(root.join("shared/runtime/src/metrics.rs")).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("deploy/k8s")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for query in text.lines().filter_map(|l| l.trim().strip_prefix("query: histogram_quantile(")) {
            let metric = query.split("rate(").nth(1).and_then(|r| r.split('{').next()).unwrap();
            let base = metric.strip_suffix("_bucket").unwrap_or_else(|| panic!("{query}: not a histogram's buckets"));
            assert!(runtime.contains(&format!("\"{base}\"")), "{base} is not a metric the consumers export");
            let queue = query.split("queue=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
            assert!(queues.contains(&queue), "{queue} is no consumer's queue label ({queues:?})");
            seen += 1;
        }
    }
    assert_eq!(seen, 5, "one handle-time rule per queue-consuming worker");
}
