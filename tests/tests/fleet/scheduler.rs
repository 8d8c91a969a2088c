//! charge-scheduler: schedules from completed first_in_series, charged on a
//! clock the test moves, capped, stopped, retried; billing-scheduler triggers;
//! two replicas with one killed mid-batch charging every cycle exactly once.

use charge_scheduler::clock::{Clock, ManualClock};
use chrono::{DateTime, Duration, Utc};
use integration_tests::{seed_mandate, seed_mandate_with_card, seed_schedule, test_keys, CheckoutClient, Command, TestEnv};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Notify;

struct Fleet {
    env: TestEnv,
    clock: Arc<ManualClock>,
    wake: Arc<Notify>,
}

async fn fleet(scheduler: &[(&'static str, &str)]) -> Fleet {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let wake = env.start_scheduler(scheduler, clock.clone()).await;
    Fleet { env, clock, wake }
}

impl Fleet {
    /// Moves the clock to `at` and lets the scheduler look.
    fn at(&self, at: DateTime<Utc>) {
        self.clock.set(at);
        self.wake.notify_one();
    }

    async fn schedule(&self, id: &str) -> Value {
        let r = self.env.call(Command::new("schedule.retrieve", &json!({"schedule_id": id})).header("merchant-id", "gym")).await;
        assert_eq!(r.body["object"], "schedule", "{}", r.body);
        integration_tests::assert_schema("schedule", &r.body);
        r.body
    }

    /// The next charge the scheduler makes: waits for its session to complete.
    async fn next_charge(&self, schedule: &str) -> Value {
        let s = self.schedule(schedule).await;
        let due = DateTime::parse_from_rfc3339(s["next_charge_at"].as_str().expect("a next charge")).unwrap().with_timezone(&Utc);
        let before = self.env.count("SELECT count(*) FROM schedule_runs WHERE outcome IS NOT NULL").await;
        self.at(due);
        self.env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome IS NOT NULL", before + 1).await;
        self.schedule(schedule).await
    }
}

/// A first_in_series with `extra` (subscription_options, mandate_options), paid at the checkout.
async fn subscribe(f: &Fleet, extra: Value) -> String {
    let mut body = json!({"type": "first_in_series", "amount": 1000, "currency": "ZAR", "customer": {"name": "A", "email": "a@example.com"},
                          "return_url": "https://gym.example/r"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let s = f.env.call(Command::create("gym", &body)).await.body;
    assert_eq!(s["status"], "active", "{s}");
    CheckoutClient::new().pay(s["session_url"].as_str().unwrap(), "4242424242424242", false).await;
    let session = s["id"].as_str().unwrap();
    f.env.wait_for_count(&format!("SELECT count(*) FROM schedules WHERE source_session_id = '{session}'"), 1).await;
    let row = f
        .env
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT id FROM schedules WHERE source_session_id = $1", &[&s["id"].as_str().unwrap()])
        .await
        .unwrap();
    row.get(0)
}

fn monthly() -> Value {
    json!({"type": "monthly", "interval_count": 1})
}

#[tokio::test]
async fn a_subscription_is_charged_each_cycle_until_its_cap_and_never_twice() {
    let f = fleet(&[]).await;
    let id = subscribe(&f, json!({"subscription_options": {"recurrence": monthly(), "amount": 1500, "max_occurrences": 3}})).await;
    let s = f.schedule(&id).await;
    assert_eq!((s["status"].as_str(), s["amount"].as_i64(), s["occurrences"].as_i64()), (Some("active"), Some(1500), Some(0)));
    let first_due = DateTime::parse_from_rfc3339(s["next_charge_at"].as_str().unwrap()).unwrap().with_timezone(&Utc);
    assert!(first_due > Utc::now() + Duration::days(27), "the sign-up pays this month; the first charge is next month: {first_due}");

    for n in 1..=3 {
        let s = f.next_charge(&id).await;
        assert_eq!(s["occurrences"], n, "{s}");
    }
    let done = f.schedule(&id).await;
    assert_eq!((done["status"].as_str(), done["stop_reason"].as_str()), (Some("completed"), Some("max_occurrences")), "{done}");
    assert_eq!(done["amount_charged"], 4500);
    f.env.event_about("schedule.completed", &id).await;
    let shown: serde_json::Value = serde_json::from_str(&f.env.psctl(&["schedules", "--id", &id, "--json"])).unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "paid").count(), 3, "{shown}");
    // A year later nothing more is charged.
    f.at(f.clock.now() + Duration::days(365));
    f.wake.notify_one();
    assert_eq!(f.env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'authorize' AND outcome = 'succeeded'").await, 4);
    assert_eq!(f.env.count("SELECT count(*) FROM payment_sessions WHERE type = 'next_in_series'").await, 3);
    assert_eq!(
        f.env
            .count("SELECT count(*) FROM payment_sessions WHERE type = 'next_in_series' AND amount = 1500 AND payment_outcome = 'paid'")
            .await,
        3
    );
    f.env.finish().await;
}

/// Moment's monthly subscription example: `subscription_options` takes its
/// cadence and amount from the mandate; its own time of day and active period.
#[tokio::test]
async fn a_moment_subscription_takes_its_plan_from_the_mandate_and_ends_with_its_active_period() {
    use chrono::{Datelike, Timelike, Weekday};
    let f = fleet(&[]).await;
    let today = f.clock.now().date_naive();
    let end = today + Duration::days(45);
    let id = subscribe(
        &f,
        json!({"options": {
            "mandate_options": {"type": "scheduled", "amount": 1000,
                "validity_period": {"start_date": today.to_string(), "end_date": (today + Duration::days(400)).to_string()},
                "recurrence": {"type": "monthly", "interval_count": 1,
                               "on": {"type": "day_of_month", "days": [1], "adjustment": "nearest_weekday"}}},
            "subscription_options": {"scheduled_time": "09:30", "active_period": {"end_date": end.to_string()}}}}),
    )
    .await;
    let mut s = f.schedule(&id).await;
    assert_eq!(s["amount"], 1000, "the mandate's fixed amount: {s}");
    let mut charges = 0;
    while s["status"] == "active" {
        let due = DateTime::parse_from_rfc3339(s["next_charge_at"].as_str().unwrap()).unwrap().with_timezone(&Utc);
        assert_eq!((due.hour(), due.minute()), (9, 30), "the subscription's scheduled_time: {due}");
        assert!(!matches!(due.weekday(), Weekday::Sat | Weekday::Sun) && due.day() <= 3, "the 1st or the weekday nearest it: {due}");
        assert!(due.date_naive() <= end, "no charge after the active period: {due}");
        s = f.next_charge(&id).await;
        charges += 1;
        assert!(charges <= 2, "45 days hold at most two firsts of a month: {s}");
    }
    assert_eq!((s["status"].as_str(), s["stop_reason"].as_str()), (Some("completed"), Some("active_period_end")), "{s}");
    assert_eq!(s["occurrences"], charges);
    assert!(charges >= 1, "45 days hold at least one first of a month");
    f.env.finish().await;
}

#[tokio::test]
async fn total_amount_and_the_mandate_end_finish_a_schedule_and_a_revocation_stops_one() {
    let f = fleet(&[]).await;
    let capped = subscribe(
        &f,
        json!({"subscription_options": {"recurrence": monthly(), "amount": 1000},
                                       "mandate_options": {"total_amount": 2500}}),
    )
    .await;
    f.next_charge(&capped).await;
    let s = f.next_charge(&capped).await;
    assert_eq!(
        (s["status"].as_str(), s["stop_reason"].as_str(), s["occurrences"].as_i64()),
        (Some("completed"), Some("total_amount"), Some(2)),
        "{s}"
    );

    let end = (f.clock.now() + Duration::days(40)).date_naive().to_string();
    let ending = subscribe(
        &f,
        json!({"subscription_options": {"recurrence": monthly()},
                                       "mandate_options": {"validity_period": {"end_date": end}}}),
    )
    .await;
    let s = f.next_charge(&ending).await;
    assert_eq!(
        (s["status"].as_str(), s["stop_reason"].as_str(), s["occurrences"].as_i64()),
        (Some("completed"), Some("validity_period_end"), Some(1)),
        "{s}"
    );

    let revoked = subscribe(&f, json!({"subscription_options": {"recurrence": monthly()}})).await;
    let md = f.schedule(&revoked).await["mandate_id"].as_str().unwrap().to_owned();
    f.env.call(Command::new("mandate.revoke", &json!({"mandate_id": md})).header("merchant-id", "gym")).await;
    f.env.event_about("schedule.stopped", &revoked).await;
    let s = f.schedule(&revoked).await;
    assert_eq!(
        (s["status"].as_str(), s["stop_reason"].as_str(), s["next_charge_at"].as_str()),
        (Some("stopped"), Some("mandate_revoked"), None)
    );
    let runs = f.env.count("SELECT count(*) FROM schedule_runs").await;
    f.at(f.clock.now() + Duration::days(400));
    f.wake.notify_one();
    assert_eq!(f.env.count("SELECT count(*) FROM schedule_runs").await, runs);
    f.env.finish().await;
}

#[tokio::test]
async fn pause_resume_cancel_list_and_another_merchants_schedule() {
    let f = fleet(&[]).await;
    let id = subscribe(&f, json!({"subscription_options": {"recurrence": {"type": "weekly", "interval_count": 2, "on": 5}}})).await;
    let cmd = |name: &str, merchant: &str| Command::new(name, &json!({"schedule_id": id})).header("merchant-id", merchant);
    assert_eq!(f.env.call(cmd("schedule.retrieve", "rival")).await.error_code(), Some("schedule_not_found"));
    let paused = f.env.call(cmd("schedule.pause", "gym").header("idempotency-key", "p1")).await.body;
    assert_eq!(paused["status"], "paused");
    assert!(f.env.call(cmd("schedule.pause", "gym").header("idempotency-key", "p1")).await.replayed);
    assert_eq!(f.env.call(cmd("schedule.pause", "gym")).await.error_code(), Some("schedule_not_active"));
    // Paused: its due date passes and nothing is charged.
    f.at(f.clock.now() + Duration::days(30));
    let listed = f.env.call(Command::new("schedule.list", &json!({"status": "paused"})).header("merchant-id", "gym")).await.body;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(f.env.count("SELECT count(*) FROM schedule_runs").await, 0);
    assert_eq!(f.env.call(cmd("schedule.resume", "gym")).await.body["status"], "active");
    f.env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome = 'paid'", 1).await;
    assert_eq!(f.env.call(cmd("schedule.cancel", "gym")).await.body["status"], "cancelled");
    for kind in ["schedule.paused", "schedule.resumed", "schedule.cancelled"] {
        f.env.event_about(kind, &id).await;
    }
    let empty = f.env.call(Command::new("schedule.list", &json!({"status": "active"})).header("merchant-id", "gym")).await.body;
    assert_eq!((empty["data"].as_array().unwrap().len(), empty["has_more"].as_bool()), (0, Some(false)));
    f.env.finish().await;
}

#[tokio::test]
async fn dunning_retries_a_retryable_decline_and_a_final_decline_stops_the_schedule() {
    let f = fleet(&[]).await;
    // A card with insufficient funds until the customer tops up.
    let poor =
        seed_mandate_with_card(&f.env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), "4000000000009995", (12, 2099), true)
            .await;
    let retried = seed_schedule(&f.env.pool, "gym", &poor, 700, f.clock.now()).await;
    f.wake.notify_one();
    f.env.wait_for_count("SELECT count(*) FROM schedule_runs WHERE outcome = 'unpaid'", 1).await;
    let s = f.schedule(&retried).await;
    assert_eq!((s["status"].as_str(), s["retries"].as_i64()), (Some("active"), Some(1)), "{s}");
    let next = DateTime::parse_from_rfc3339(s["next_charge_at"].as_str().unwrap()).unwrap().with_timezone(&Utc);
    let wait = (next - f.clock.now()).num_seconds();
    assert!((86_399..=86_400).contains(&wait), "the first retry a day later (to the second): {wait} s");
    let s = f.next_charge(&retried).await;
    assert_eq!(s["retries"], 2, "{s}");
    // The customer tops up: the vault's card now pays.
    let c = f.env.pool.get().await.unwrap();
    let token: String = c.query_one("SELECT vault_token FROM payment_methods WHERE id = $1", &[&poor.1]).await.unwrap().get(0);
    c.execute(
        "UPDATE vault_cards SET pan_sealed = $1 WHERE token = $2",
        &[&test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), "4242424242424242"), &token],
    )
    .await
    .unwrap();
    drop(c);
    let s = f.next_charge(&retried).await;
    assert_eq!((s["occurrences"].as_i64(), s["retries"].as_i64(), s["retries_total"].as_i64()), (Some(1), Some(0), Some(2)), "{s}");

    // A card that only pays with the customer present: a final decline.
    let refused =
        seed_mandate_with_card(&f.env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), "4000000000000341", (12, 2099), true)
            .await;
    let stopped = seed_schedule(&f.env.pool, "gym", &refused, 700, f.clock.now()).await;
    f.wake.notify_one();
    let ev = f.env.event_about("schedule.stopped", &stopped).await;
    assert_eq!((ev["data"]["status"].as_str(), ev["data"]["stop_reason"].as_str()), (Some("stopped"), Some("generic_decline")));
    f.env.finish().await;
}

#[tokio::test]
async fn a_trigger_of_a_thousand_charges_fans_out_once_and_reports_each_by_index() {
    let f = fleet(&[("SCHEDULER_TRIGGER_RATE", "20000")]).await;
    // Ten customers' mandates, a hundred charges each (intake takes one mandate's charges one at a time).
    let mut mds = vec![];
    for _ in 0..10 {
        mds.push(seed_mandate(&f.env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await.2);
    }
    let mut charges: Vec<Value> = (0..1000)
        .map(|i| json!({"mandate_id": mds[i % 10], "amount": 100 + i, "currency": "ZAR", "external_reference": format!("inv-{i}")}))
        .collect();
    let md = &mds[0];
    let bad = [3, 100, 101, 250, 400, 512, 640, 777, 901, 999];
    for (n, i) in bad.iter().enumerate() {
        charges[*i] = match n % 5 {
            0 => json!({"mandate_id": md, "amount": 0, "currency": "ZAR", "external_reference": "zero"}),
            1 => json!({"mandate_id": md, "amount": 100, "currency": "XXX", "external_reference": "cur"}),
            2 => json!({"amount": 100, "currency": "ZAR", "external_reference": "no-target"}),
            3 => json!({"mandate_id": md, "amount": 100, "currency": "ZAR"}),
            _ => json!({"mandate_id": md, "amount": 100, "currency": "ZAR", "external_reference": "inv-0"}),
        };
    }
    let trigger = || {
        Command::new("schedule.trigger", &json!({ "charges": charges }))
            .header("merchant-id", "gym")
            .header("idempotency-key", "billing-run-1")
    };
    let corr = f.env.send(trigger()).await;
    let reply = f.env.reply_within(&corr, std::time::Duration::from_secs(180)).await.body;
    let items = reply["items"].as_array().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(items.len(), 1000);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
        if bad.contains(&i) {
            assert!(item["error"]["code"].is_string(), "{item}");
        } else {
            assert!(item["payment_session_id"].as_str().is_some_and(|s| s.starts_with("ps_")), "{item}");
        }
    }
    assert_eq!(items[999]["error"]["code"], "duplicate_charge", "inv-0 twice under one mandate");
    f.env.wait_for_count("SELECT count(*) FROM schedule_triggers WHERE completed_at IS NOT NULL", 1).await;
    let done = f.env.event_about("schedule_trigger.completed", reply["id"].as_str().unwrap()).await;
    assert_eq!((done["data"]["outcomes"]["paid"].as_i64(), done["data"]["outcomes"]["refused"].as_i64()), (Some(990), Some(10)), "{done}");

    // The same trigger again: the same answer, nothing charged again.
    let again = f.env.call(trigger()).await;
    assert!(again.replayed);
    assert_eq!(again.body["items"], reply["items"]);
    // The same references in a new trigger within 24 h: refused as duplicates.
    let dup = f
        .env
        .call(
            Command::new("schedule.trigger", &json!({"charges": [charges[5].clone()]}))
                .header("merchant-id", "gym")
                .header("idempotency-key", "billing-run-2"),
        )
        .await
        .body;
    assert_eq!(dup["items"][0]["error"]["code"], "duplicate_charge", "{dup}");
    assert_eq!(f.env.count("SELECT count(*) FROM payment_sessions WHERE type = 'next_in_series'").await, 990);
    assert_eq!(f.env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'authorize'").await, 990);
    f.env.finish().await;
}

#[tokio::test]
async fn two_schedulers_one_killed_mid_batch_charge_every_cycle_exactly_once() {
    let mut env = TestEnv::new().await;
    env.start_fleet().await;
    let n = 200;
    let now = Utc::now();
    for _ in 0..n {
        let ids = seed_mandate(&env.pool, "gym", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
        seed_schedule(&env.pool, "gym", &ids, 500, now - Duration::minutes(1)).await;
    }
    let small = [("SCHEDULER_BATCH", "5"), ("SCHEDULER_POLL_MS", "20")];
    let a = env.spawn_binary("charge-scheduler", &small).id();
    env.spawn_binary("charge-scheduler", &small);
    env.wait_for_count("SELECT count(*) FROM schedule_runs", n / 4).await;
    std::process::Command::new("kill").args(["-KILL", &a.to_string()]).status().unwrap();
    env.wait_child(a).await;
    env.wait_for_count("SELECT count(*) FROM schedules WHERE occurrences = 1", n).await;
    assert_eq!(env.count("SELECT count(*) FROM schedule_runs").await, n);
    assert_eq!(env.count("SELECT count(*) FROM schedules WHERE occurrences <> 1 OR in_flight").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM sandbox_ledger WHERE operation = 'authorize' AND outcome = 'succeeded'").await,
        n,
        "one charge per cycle in the processor's own ledger"
    );
    assert_eq!(env.count("SELECT count(*) FROM payment_sessions").await, n);
    env.finish().await;
}

/// A merchant's large trigger does not keep another merchant's charge waiting
/// behind it: queued charges go out merchant by merchant, in turns.
#[tokio::test]
async fn one_merchants_large_trigger_does_not_hold_up_another_merchants() {
    let f = fleet(&[("SCHEDULER_TRIGGER_RATE", "20")]).await;
    let (_, _, big) = seed_mandate(&f.env.pool, "bulk", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let (_, _, small) = seed_mandate(&f.env.pool, "corner", json!({"type": "on_demand", "currency": "ZAR"}), (12, 2099), true).await;
    let charges: Vec<Value> =
        (0..200).map(|i| json!({"mandate_id": big, "amount": 100, "currency": "ZAR", "external_reference": format!("bulk-{i}")})).collect();
    f.env
        .send(
            Command::new("schedule.trigger", &json!({ "charges": charges }))
                .header("merchant-id", "bulk")
                .header("idempotency-key", "bulk-1"),
        )
        .await;
    f.env.wait_for_count("SELECT count(*) FROM schedule_trigger_items WHERE status <> 'queued'", 1).await;
    let one = json!({"charges": [{"mandate_id": small, "amount": 100, "currency": "ZAR", "external_reference": "corner-1"}]});
    let answered =
        f.env.call(Command::new("schedule.trigger", &one).header("merchant-id", "corner").header("idempotency-key", "corner-1")).await;
    assert!(answered.body["items"][0]["payment_session_id"].is_string(), "{}", answered.body);
    let waiting = f.env.count("SELECT count(*) FROM schedule_trigger_items WHERE merchant_id = 'bulk' AND status = 'queued'").await;
    assert!(waiting > 0, "the corner shop's charge went out while the bulk trigger still had {waiting} charges waiting");
    f.env.finish().await;
}
