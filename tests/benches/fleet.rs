//! `make bench`: throughput figures on this machine, printed, not asserted.
//! Runs the real services' code against the local RabbitMQ and PostgreSQL.

use axum::body::Bytes;
use axum::http::HeaderMap;
use integration_tests::{Command, TestEnv};
use ps_contract::routing::exchange;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts deliveries; keeps one in 500 to check its signature afterwards.
#[derive(Clone, Default)]
struct Counter {
    n: Arc<AtomicUsize>,
    samples: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receiver() -> (String, Counter) {
    let c = Counter::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let state = c.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let c = state.clone();
            async move {
                if c.n.fetch_add(1, Ordering::Relaxed) % 500 == 0 {
                    c.samples.lock().unwrap().push((headers, body));
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, c)
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "bench: {what} did not finish within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn endpoints(env: &TestEnv, url: &str, merchants: usize) -> Vec<String> {
    let mut secrets = vec![];
    for m in 0..merchants {
        let r = env
            .call(
                Command::new("webhook_endpoint.create", &json!({"url": url, "enabled_events": ["*"]}))
                    .header("merchant-id", &format!("m{m}")),
            )
            .await;
        secrets.push(r.body["secret"].as_str().expect("endpoint created").to_owned());
    }
    secrets
}

fn check_samples(c: &Counter, secrets: &[String]) -> usize {
    let samples = c.samples.lock().unwrap();
    for (h, body) in samples.iter() {
        let get = |k: &str| h[k].to_str().unwrap().to_owned();
        let ts: i64 = get("webhook-timestamp").parse().unwrap();
        let ok = secrets.iter().any(|s| ps_contract::webhooks::verify(s, &get("webhook-id"), ts, body, &get("webhook-signature")));
        assert!(ok, "a delivery's signature did not verify");
    }
    samples.len()
}

const WEBHOOK_SETTINGS: [(&str, &str); 4] =
    [("WEBHOOK_CONCURRENCY", "256"), ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "64"), ("WEBHOOK_POLL_MS", "10"), ("DATABASE_POOL_SIZE", "32")];

/// Deliveries already queued in PostgreSQL, drained by one dispatcher.
async fn webhook_delivery(n: usize) {
    let mut env = TestEnv::new().await;
    let (url, counter) = receiver().await;
    env.start_webhooks(&[("WEBHOOK_POLL_MS", "60000")]).await;
    let secrets = endpoints(&env, &url, 4).await;
    env.stop_services().await;
    let c = env.pool.get().await.unwrap();
    c.execute(
        "INSERT INTO webhook_events (id, merchant_id, type, payload)
         SELECT 'evt_bench' || lpad(i::text, 22, '0'), 'm' || (i % 4), 'payment_session.created',
                convert_to(json_build_object('id', 'evt_bench' || lpad(i::text, 22, '0'), 'type', 'payment_session.created',
                    'created_at', '2026-11-24T09:00:00Z', 'data', json_build_object('id', 'ps_' || i, 'amount', 12550, 'currency', 'ZAR'))::text, 'UTF8')
         FROM generate_series(1, $1::int) i",
        &[&(n as i32)],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, status)
         SELECT e.id, p.id, 'pending' FROM webhook_events e JOIN webhook_endpoints p ON p.merchant_id = e.merchant_id",
        &[],
    )
    .await
    .unwrap();
    drop(c);
    let started = Instant::now();
    env.start_webhooks(&WEBHOOK_SETTINGS).await;
    until("webhook delivery", Duration::from_secs(600), || counter.n.load(Ordering::Relaxed) >= n).await;
    let secs = started.elapsed().as_secs_f64();
    let checked = check_samples(&counter, &secrets);
    println!(
        "webhooks (queued → delivered): {n} signed deliveries to a local receiver in {secs:.2} s = {:.0} deliveries/s ({checked} sampled signatures verified)",
        n as f64 / secs
    );
    env.finish().await;
}

/// Events published on the broker, through ingest, to the receiver.
async fn webhook_end_to_end(n: usize) {
    let mut env = TestEnv::new().await;
    let (url, counter) = receiver().await;
    env.start_webhooks(&WEBHOOK_SETTINGS).await;
    let secrets = endpoints(&env, &url, 4).await;
    let started = Instant::now();
    let msgs: Vec<_> = (0..n)
        .map(|i| {
            let id = format!("evt_e2e{i:023}");
            let body =
                json!({"id": id, "type": "payment.succeeded", "created_at": "2026-11-24T09:00:00Z", "data": {"id": format!("ps_{i}")}});
            ("payment.succeeded".to_owned(), body.to_string().into_bytes(), id, format!("m{}", i % 4))
        })
        .collect();
    env.publish_many(exchange::EVENTS, &msgs).await;
    let published = started.elapsed().as_secs_f64();
    until("webhook end to end", Duration::from_secs(600), || counter.n.load(Ordering::Relaxed) >= n).await;
    let secs = started.elapsed().as_secs_f64();
    check_samples(&counter, &secrets);
    println!(
        "webhooks (published → delivered): {n} events in {secs:.2} s = {:.0} events/s (publishing with confirms took {published:.2} s)",
        n as f64 / secs
    );
    env.finish().await;
}

/// payment_session.create commands answered by one intake.
async fn intake(n: usize) {
    let mut env = TestEnv::new().await;
    env.start_intake_with(&[("AMQP_PREFETCH", "64"), ("DATABASE_POOL_SIZE", "32")]).await;
    let body = json!({"type": "one_time", "amount": 12550, "currency": "ZAR", "return_url": "https://shop.example/r"});
    let started = Instant::now();
    let sent = env.send_many((0..n).map(|_| Command::create("shop", &body)).collect()).await;
    for corr in &sent {
        assert!(env.reply(corr).await.body["id"].is_string());
    }
    let secs = started.elapsed().as_secs_f64();
    println!("intake: {n} sessions created and answered in {secs:.2} s = {:.0} sessions/s", n as f64 / secs);
    env.finish().await;
}

/// `n` schedules, all due, each over its own mandate, drained by one scheduler
/// into `payment_session.create` commands. Intake is not running: this
/// measures the scheduler's claim path alone (claim, mandate check, run record,
/// outbox), and counts duplicates among the commands it wrote.
async fn scheduler(n: usize) {
    let mut env = TestEnv::new().await;
    let seeding = Instant::now();
    let c = env.pool.get().await.unwrap();
    // Ids in the contract's form: prefix + 26 base32 digits.
    c.batch_execute(&format!(
        "INSERT INTO customers (id, merchant_id) SELECT 'cus_' || lpad(g::text, 26, '0'), 'gym' FROM generate_series(1, {n}) g;
         INSERT INTO payment_methods (id, merchant_id, customer_id, usage, card_brand, card_last4, exp_month, exp_year, vault_token)
           SELECT 'pm_' || lpad(g::text, 26, '0'), 'gym', 'cus_' || lpad(g::text, 26, '0'), 'off_session', 'visa', '4242', 12, 2099, 'tok_bench'
           FROM generate_series(1, {n}) g;
         INSERT INTO mandates (id, merchant_id, customer_id, payment_method_id, status, terms)
           SELECT 'md_' || lpad(g::text, 26, '0'), 'gym', 'cus_' || lpad(g::text, 26, '0'), 'pm_' || lpad(g::text, 26, '0'), 'active',
                  '{{\"type\": \"on_demand\", \"currency\": \"ZAR\"}}'
           FROM generate_series(1, {n}) g;
         INSERT INTO schedules (id, merchant_id, mandate_id, customer_id, payment_method_id, source_session_id, status, amount, currency,
                                recurrence, anchor, next_cycle, next_charge_at)
           SELECT 'sch_' || lpad(g::text, 26, '0'), 'gym', 'md_' || lpad(g::text, 26, '0'), 'cus_' || lpad(g::text, 26, '0'),
                  'pm_' || lpad(g::text, 26, '0'), 'ps_' || lpad(g::text, 26, '0'), 'active', 500, 'ZAR',
                  '{{\"type\": \"monthly\", \"interval_count\": 1}}', current_date, 0, now() - interval '1 minute'
           FROM generate_series(1, {n}) g;
         ANALYZE;"
    ))
    .await
    .unwrap();
    drop(c);
    println!("scheduler: {n} due schedules seeded in {:.1} s", seeding.elapsed().as_secs_f64());
    let clock = Arc::new(charge_scheduler::clock::ManualClock::new(chrono::Utc::now()));
    let started = Instant::now();
    env.start_scheduler(&[("SCHEDULER_BATCH", "1000"), ("SCHEDULER_POLL_MS", "10"), ("DATABASE_POOL_SIZE", "8")], clock).await;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let claimed = env.count("SELECT count(*) FROM schedule_runs").await;
        if claimed >= n as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "bench: the scheduler drained {claimed} of {n} within an hour");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let commands = env.count("SELECT count(*) FROM outbox WHERE routing_key = 'payment_session.create'").await;
    let distinct = env.count("SELECT count(DISTINCT message_id) FROM outbox WHERE routing_key = 'payment_session.create'").await;
    let twice = env.count("SELECT count(*) FROM (SELECT schedule_id FROM schedule_runs GROUP BY schedule_id HAVING count(*) > 1) d").await;
    let published =
        env.count("SELECT count(*) FROM outbox WHERE routing_key = 'payment_session.create' AND published_at IS NOT NULL").await;
    println!(
        "scheduler: {n} due schedules claimed into {commands} commands in {secs:.1} s = {:.0} claims/s; duplicates: {} (commands) + {twice} (runs); {published} already published to the broker meanwhile",
        n as f64 / secs,
        commands - distinct
    );
    // Not a graceful stop: that would wait for the relay to publish every command first.
    drop(env);
}

/// Charges under one mandate, created and answered by intake: a batch with no
/// charge before it, then `prior` more, then the same batch again. A charge's
/// mandate check should cost the same either way (issue 10: it used to count
/// every earlier charge, O(n) per charge).
async fn mandate_series(prior: usize) {
    let mut env = TestEnv::new().await;
    env.start_intake_with(&[("AMQP_PREFETCH", "64"), ("DATABASE_POOL_SIZE", "16")]).await;
    let (_, _, md) = integration_tests::seed_mandate_with_card(
        &env.pool,
        "gym",
        json!({"type": "on_demand", "currency": "ZAR"}),
        "4242424242424242",
        (12, 2099),
        true,
    )
    .await;
    let body = json!({"type": "next_in_series", "amount": 100, "currency": "ZAR", "mandate_id": md});
    let batch = 1_000;
    let run = async |n: usize| {
        let started = Instant::now();
        let sent = env.send_many((0..n).map(|_| Command::create("gym", &body)).collect()).await;
        for corr in &sent {
            assert!(env.reply(corr).await.body["id"].is_string());
        }
        n as f64 / started.elapsed().as_secs_f64()
    };
    let first = run(batch).await;
    run(prior).await;
    let later = run(batch).await;
    println!(
        "mandate series: {batch} charges under one mandate at {first:.0}/s with none before them, at {later:.0}/s after {} before them ({:.2}×)",
        batch + prior,
        later / first
    );
    env.finish().await;
}

/// Lifecycle's write path (cancels, each locking and saving its session) alone,
/// then while readers run the read module it answers reads with
/// (`ps_store::sessions::get` and `::list`) as fast as they can on their own
/// connections. Reads take no row locks, so what they cost writes is CPU and
/// I/O on this shared 2-core machine, not waiting.
async fn reads(n: usize) {
    let mut env = TestEnv::new().await;
    let tuning = [("AMQP_PREFETCH", "64"), ("DATABASE_POOL_SIZE", "16")];
    env.start_intake_with(&tuning).await;
    env.start_lifecycle(&tuning).await;
    let body = json!({"type": "one_time", "amount": 100, "currency": "ZAR", "return_url": "https://shop.example/r"});
    let sent = env.send_many((0..2 * n).map(|_| Command::create("shop", &body)).collect()).await;
    let mut ids = Vec::with_capacity(2 * n);
    for corr in &sent {
        ids.push(env.reply(corr).await.body["id"].as_str().unwrap().to_owned());
    }
    let cancel = async |ids: &[String]| {
        let started = Instant::now();
        let cmds = ids
            .iter()
            .map(|id| Command::new("payment_session.cancel", &json!({"payment_session_id": id})).header("merchant-id", "shop"))
            .collect();
        for corr in &env.send_many(cmds).await {
            assert_eq!(env.reply(corr).await.body["status"], "cancelled");
        }
        ids.len() as f64 / started.elapsed().as_secs_f64()
    };
    // Backends of this database seen waiting on a lock, sampled every 5 ms: (samples, waits seen).
    let lock_waits = |pool: deadpool_postgres::Pool, stop: Arc<std::sync::atomic::AtomicBool>| {
        tokio::spawn(async move {
            let c = pool.get().await.unwrap();
            let (mut samples, mut waits) = (0u64, 0i64);
            while !stop.load(Ordering::Relaxed) {
                let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
                waits += c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (samples, waits)
        })
    };
    let quiet = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = lock_waits(env.pool.clone(), quiet.clone());
    let alone = cancel(&ids[..n]).await;
    quiet.store(true, Ordering::Relaxed);
    let (samples_alone, waits_alone) = sampling.await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = lock_waits(env.pool.clone(), stop.clone());
    let done = Arc::new(AtomicUsize::new(0));
    let merchant = ps_contract::ids::MerchantId::parse("shop").unwrap();
    let mut readers = vec![];
    for r in 0..2 {
        let (pool, stop, done, merchant, ids) = (env.pool.clone(), stop.clone(), done.clone(), merchant.clone(), ids.clone());
        readers.push(tokio::spawn(async move {
            let c = pool.get().await.unwrap();
            let page = ps_contract::commands::SessionList::parse(&json!({"limit": 20})).unwrap();
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                ps_store::sessions::get(&c, &ids[i % ids.len()]).await.unwrap();
                ps_store::sessions::list(&c, &merchant, &page).await.unwrap();
                done.fetch_add(2, Ordering::Relaxed);
                i += 7;
            }
        }));
    }
    let started = Instant::now();
    let with_reads = cancel(&ids[n..]).await;
    let read_rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let (samples_read, waits_read) = sampling.await.unwrap();
    println!(
        "reads: {n} cancels at {alone:.0}/s alone, {with_reads:.0}/s ({:.2}×) while 2 readers did {read_rate:.0} reads/s (get and list of the same sessions); \
         backends waiting on a lock: {waits_alone} in {samples_alone} samples alone, {waits_read} in {samples_read} with reads",
        with_reads / alone
    );
    env.finish().await;
}

/// The fleet as production runs it (release binaries, separate processes),
/// charged as fast as possible and then at half that rate, beside a raw
/// pipeline with the same four durable hops in the same run.
async fn fleet(n: usize) {
    use integration_tests::bench::{self, Upstream};
    let settings = [("*", "RUST_LOG", "warn"), ("*", "AMQP_PREFETCH", "64"), ("*", "DATABASE_POOL_SIZE", "16")];
    let fleet = integration_tests::faults::Fleet::start_with(10, &settings, false, integration_tests::faults::Processor::Sandbox).await;
    // BENCH_REPLICAS=session-intake:2,payment-gateway:2 runs that many of each, as an SRE scales a worker.
    let replicas = std::env::var("BENCH_REPLICAS").unwrap_or_default();
    for spec in replicas.split(',').filter(|s| !s.is_empty()) {
        let (name, n) = spec.split_once(':').unwrap_or_else(|| panic!("BENCH_REPLICAS takes service:count, not {spec:?}"));
        let name = integration_tests::faults::SERVICES
            .iter()
            .find(|s| **s == name)
            .unwrap_or_else(|| panic!("BENCH_REPLICAS: {name:?} is not one of {:?}", integration_tests::faults::SERVICES));
        let n: usize = n.parse().unwrap_or_else(|_| panic!("BENCH_REPLICAS: {n:?} is not a count"));
        for _ in 1..n {
            fleet.add_replica(name).await;
        }
    }
    let mandates = bench::mandates(&fleet, 100).await;
    let upstream = Upstream::connect(&fleet).await;
    let pids = fleet.pids();
    let idle: Vec<(&str, f64, f64)> = pids
        .iter()
        .map(|(name, pid)| {
            let (rss, cpu) = bench::usage(*pid);
            (*name, rss, cpu)
        })
        .collect();
    let peak = Arc::new(Mutex::new(vec![0.0f64; pids.len()]));
    let sampling = {
        let (peak, pids) = (peak.clone(), pids.clone());
        tokio::spawn(async move {
            loop {
                for (i, (_, pid)) in pids.iter().enumerate() {
                    let rss = bench::usage(*pid).0;
                    let mut p = peak.lock().unwrap();
                    p[i] = p[i].max(rss);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    // BENCH_PERF=path records every CPU on the machine (perf, 20 s from the
    // start of the max-rate run) for `make profile` to draw as a flame graph.
    let perf = std::env::var("BENCH_PERF").ok().map(|out| {
        std::process::Command::new("perf")
            .args(["record", "-a", "-g", "-F", "199", "-o", &out, "--", "sleep", "20"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("BENCH_PERF is set but perf could not be started")
    });
    let started = Instant::now();
    let max = upstream.run(&fleet, &mandates, n, None, "max").await;
    if let Some(mut p) = perf {
        assert!(p.wait().expect("perf").success(), "perf record failed");
    }
    let busy = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids.iter().zip(&idle).map(|((_, pid), (_, _, before))| (bench::usage(*pid).1 - before) / busy * 100.0).collect();
    let rate = max.per_second / 2.0;
    let paced = upstream.run(&fleet, &mandates, (rate * 20.0) as usize, Some(rate), "paced").await;
    sampling.abort();
    upstream.close().await;
    let raw = bench::raw_pipeline(&fleet, 20_000, 4, 64, 1).await;
    // The raw pipeline at the fleet's own batch size (CONSUMER_BATCH's default).
    let raw_batched = bench::raw_pipeline(&fleet, 20_000, 4, 64, 16).await;

    println!(
        "fleet{}: {} next_in_series sessions, command → completed, as fast as possible: {:.0} sessions/s over {:.0} s (slowest 10 s: {:.0}/s)",
        if replicas.is_empty() { String::new() } else { format!(" (replicas {replicas})") },
        max.sessions,
        max.per_second,
        max.seconds,
        max.sustained_per_second
    );
    println!("  raw pipeline, 4 durable hops, one message per transaction: {raw:.0} messages/s; fleet ÷ raw = {:.3}", max.per_second / raw);
    println!(
        "  raw pipeline, up to 16 messages per transaction: {raw_batched:.0} messages/s; fleet ÷ raw batched = {:.3}",
        max.per_second / raw_batched
    );
    println!("  per session: {:.1} commits, {:.1} WAL syncs", max.commits_per_session, max.wal_syncs_per_session);
    println!(
        "  per session: {:.1} messages published by the fleet (+1, the upstream's command), {:.0} bytes a body on average",
        max.messages_per_session, max.bytes_per_message
    );
    match max.statements_per_session {
        Some(n) => {
            println!("  per session: {n:.1} statements (pg_stat_statements); the busiest:");
            for (per, q) in max.top_statements.iter().take(25) {
                println!("    {per:6.2}  {}", q.chars().take(150).collect::<String>());
            }
        }
        None => println!("  statements per session: not measured (pg_stat_statements is not in shared_preload_libraries)"),
    }
    for (label, r) in [("max rate", &max), ("paced", &paced)] {
        println!(
            "  {label} ({:.0}/s): reply p50 {:.1} / p90 {:.1} / p99 {:.1} / p99.9 {:.1} ms; completed p50 {:.1} / p90 {:.1} / p99 {:.1} / p99.9 {:.1} ms",
            r.per_second, r.reply_ms.p50, r.reply_ms.p90, r.reply_ms.p99, r.reply_ms.p999,
            r.completed_ms.p50, r.completed_ms.p90, r.completed_ms.p99, r.completed_ms.p999
        );
    }
    let peak = peak.lock().unwrap().clone();
    for (i, (name, rss, _)) in idle.iter().enumerate() {
        println!("  {name}: RSS {rss:.0} MiB idle, {:.0} MiB peak; CPU {:.0} % of a core at max rate", peak[i], cpu[i]);
    }
    if !replicas.is_empty() {
        // A scaling run is compared by hand with the plain one; it does not replace its record.
        println!("  (BENCH_REPLICAS set: docs/bench not written)");
        fleet.finish();
        return;
    }
    let summary = json!({"max": max, "paced": paced, "raw_per_second": raw, "ratio": max.per_second / raw,
        "raw_batched_per_second": raw_batched, "ratio_batched": max.per_second / raw_batched,
        "workers": idle.iter().enumerate().map(|(i, (name, rss, _))| json!({"service": name, "rss_idle_mib": rss, "rss_peak_mib": peak[i], "cpu_percent": cpu[i]})).collect::<Vec<_>>()});
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fleet.json"), serde_json::to_vec_pretty(&summary).unwrap()).unwrap();
    let drawn = bench::plot_throughput(&dir.join("throughput.svg"), "next_in_series as fast as possible", &max.timeline)
        .and_then(|()| bench::plot_latency(&dir.join("latency.svg"), &format!("paced at {rate:.0}/s"), &paced.completed_samples));
    if let Err(e) = drawn {
        println!("  (figures not drawn: {e})");
    }
    let scale = n / 5_000;
    let workers: String =
        idle.iter().enumerate().map(|(i, (name, rss, _))| format!("| {name} | {rss:.0} | {:.0} | {:.0} |\n", peak[i], cpu[i])).collect();
    let md = format!(
        "# Fleet benchmark: the last run\n\n\
         Written by `BENCH_SCALE={scale} BENCH_ONLY=fleet make bench` (release binaries as separate processes, this 2-core machine,\n\
         PostgreSQL and RabbitMQ on it too). {} `next_in_series` charges over 100 mandates set up at the checkout;\n\
         the merchant has a webhook endpoint, so every event is also delivered.\n\n\
         | | figure |\n|---|---|\n\
         | sessions/s, command → completed, as fast as possible | {:.0} over {:.0} s |\n\
         | the run's slowest 10 s | {:.0} sessions/s |\n\
         | raw pipeline, 4 durable hops, one message per transaction (same run) | {raw:.0} messages/s |\n\
         | fleet ÷ raw | {:.3} |\n\
         | raw pipeline, up to 16 messages per transaction (same run) | {raw_batched:.0} messages/s |\n\
         | fleet ÷ raw batched | {:.3} |\n\
         | commits per session | {:.1} |\n\
         | WAL syncs per session | {:.1} |\n\
         | statements per session | {} |\n\
         | messages the fleet published per session (the upstream's command is one more) | {:.1} |\n\
         | mean message body | {:.0} bytes |\n\
         | paced at {rate:.0}/s: command → reply p50 / p90 / p99 / p99.9 | {:.1} / {:.1} / {:.1} / {:.1} ms |\n\
         | paced at {rate:.0}/s: command → completed p50 / p90 / p99 / p99.9 | {:.1} / {:.1} / {:.1} / {:.1} ms |\n\n\
         | worker | RSS idle (MiB) | RSS peak (MiB) | CPU at max rate (% of a core) |\n|---|---:|---:|---:|\n{workers}\n\
         ![throughput](throughput.svg)\n\n![latency](latency.svg)\n",
        max.sessions,
        max.per_second,
        max.seconds,
        max.sustained_per_second,
        max.per_second / raw,
        max.per_second / raw_batched,
        max.commits_per_session,
        max.wal_syncs_per_session,
        max.statements_per_session.map_or("not measured (needs pg_stat_statements)".to_owned(), |n| format!("{n:.1}")),
        max.messages_per_session,
        max.bytes_per_message,
        paced.reply_ms.p50,
        paced.reply_ms.p90,
        paced.reply_ms.p99,
        paced.reply_ms.p999,
        paced.completed_ms.p50,
        paced.completed_ms.p90,
        paced.completed_ms.p99,
        paced.completed_ms.p999,
    );
    std::fs::write(dir.join("fleet.md"), md).unwrap();
    println!("  written to {}", dir.join("fleet.md").display());
    fleet.finish();
}

#[tokio::main]
async fn main() {
    let scale: usize = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    println!("bench on {} cores (BENCH_SCALE={scale})", std::thread::available_parallelism().map_or(1, |n| n.get()));
    // BENCH_ONLY=scheduler,intake runs just those cases.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let runs = |case: &str| only.is_empty() || only.split(',').any(|c| c == case);
    if runs("webhooks") {
        webhook_delivery(20_000 * scale).await;
        webhook_end_to_end(5_000 * scale).await;
    }
    if runs("intake") {
        intake(2_000 * scale).await;
    }
    if runs("fleet") {
        fleet(5_000 * scale).await;
    }
    if runs("reads") {
        reads(2_000 * scale).await;
    }
    if runs("mandate") {
        mandate_series(20_000 * scale).await;
    }
    if runs("scheduler") {
        let schedules = std::env::var("BENCH_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
        scheduler(schedules).await;
    }
    println!("peak memory of the bench process (all services in it): {:.0} MiB", peak_rss_mib());
}
