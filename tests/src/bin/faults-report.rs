//! `make faults`' last step: the rows every scenario recorded, as one table,
//! printed and written to `docs/faults.md`.

use integration_tests::faults::{results_dir, table, Row};

fn main() -> std::process::ExitCode {
    let dir = results_dir().join("rows");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect(),
        Err(e) => {
            eprintln!("faults-report: no results in {}: {e} (run `make faults`)", dir.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    files.sort();
    let mut rows: Vec<Row> = vec![];
    for f in &files {
        match std::fs::read(f).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<Vec<Row>>(&b).map_err(|e| e.to_string())) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("faults-report: {}: {e}", f.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let table = table(&rows);
    println!("{table}");
    let clean = rows.iter().all(|r| r.duplicates == 0 && r.lost == 0 && r.unreported == 0 && r.webhooks_missing == 0);
    let doc = format!(
        "# Fault suite results\n\n\
         Written by `make faults` on its last run (this repository's CI machine kind: 2 cores, local\n\
         PostgreSQL and RabbitMQ). Each scenario starts the whole fleet as separate processes of the\n\
         real binaries, reaching the broker and the database through TCP proxies the harness can cut\n\
         and slow; sends half of a mixed load (customers paying `one_time` and `first_in_series`\n\
         sessions through the checkout's HTTP interface, `next_in_series` charges from an upstream,\n\
         due schedules charged by the charge-scheduler); breaks something and sends the other half\n\
         while it is broken; heals it; and checks, against records the fleet does not write for\n\
         itself (the processor's ledger: the sandbox's, or with `PROCESSOR=stripe` Stripe's own record as\n\
         localstripe holds it, read by our keys in its metadata; a webhook receiver counting by\n\
         `webhook-id`; the DLQs). The Stripe scenarios put a proxy between the gateway and Stripe that\n\
         loses answers after Stripe committed, answers 500 after success, delays calls past the gateway's\n\
         timeout, answers 429 with `Retry-After`, or lets Stripe's event overtake the answer, and a relay\n\
         that delivers each of Stripe's events three times:\n\n\
         - **sessions**: sessions of the type; every confirmed command has exactly one (by idempotency key);\n\
         - **charges**: successful charges in the processor's ledger;\n\
         - **duplicates**: sessions charged more than once;\n\
         - **lost**: commands or due schedules without exactly one session, or a session still `active`/`pending` once healthy;\n\
         - **unreported**: a charge the merchant was told did not happen (not paid, not voided), or `paid` without a charge;\n\
         - **webhooks missing**: events published for the merchant that its endpoint never received (all types);\n\
         - **DLQ**: dead letters (distinct messages), which must be exactly the poison injected;\n\
         - **recovery**: seconds from the fault healed to every invariant holding.\n\n\
         The quick scenarios also run in `make test`; the long ones (`#[ignore]`) only here.\n\n\
         {table}\n\
         Every scenario: {}.\n",
        if clean { "0 lost, 0 duplicated, 0 unreported charges, every webhook delivered" } else { "**NOT CLEAN: see the rows above**" }
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/faults.md");
    if let Err(e) = std::fs::write(&out, doc) {
        eprintln!("faults-report: cannot write {}: {e}", out.display());
        return std::process::ExitCode::FAILURE;
    }
    if clean {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
