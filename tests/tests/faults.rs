//! The fault suite (issue 9): the whole fleet as real processes under a mixed
//! load while things break, then the invariants. The quick scenarios run in
//! `make test`; the long ones (`#[ignore]`: they restart the machine's broker
//! and database, or take minutes) in `make faults`, one at a time.

use integration_tests::faults::{settle_and_check, Fleet, Link, Load, Mix, Processor, SERVICES};
use integration_tests::stripe::Fault as StripeFault;
use integration_tests::TestEnv;
use std::time::{Duration, Instant};

/// What a scenario does to the fleet while the load runs; returns when healed.
type Fault = for<'a> fn(&'a Fleet, &'a Load) -> futures::future::BoxFuture<'a, ()>;

/// The queues' delivery limit in these scenarios: low, so a fault that burns
/// delivery attempts shows as dead letters within a short outage.
const DELIVERY_LIMIT: u32 = 2;

async fn scenario(name: &str, mix: Mix, copies: usize, poison: usize, overrides: &[(&str, &str, &str)], fault: Fault) {
    scenario_limited(name, DELIVERY_LIMIT, mix, copies, poison, overrides, fault).await
}

async fn scenario_limited(
    name: &str,
    delivery_limit: u32,
    mix: Mix,
    copies: usize,
    poison: usize,
    overrides: &[(&str, &str, &str)],
    fault: Fault,
) {
    let fleet = Fleet::start(delivery_limit, overrides).await;
    run(fleet, name, mix, copies, poison, fault).await
}

async fn run(fleet: Fleet, name: &str, mix: Mix, copies: usize, poison: usize, fault: Fault) {
    let load = Load::prepare(&fleet, mix, copies).await;
    load.send_wave(&fleet, 0, 2).await;
    load.poison(&fleet, poison).await;
    // Customers pay while the fault happens; the fault sends the second wave
    // while the damage is done, and returns once healed.
    let healed = async {
        fault(&fleet, &load).await;
        Instant::now()
    };
    let (unpaid, healed) = tokio::join!(load.pay_all(&fleet), healed);
    if !unpaid.is_empty() {
        eprintln!("{name}: customers could not pay {unpaid:?}");
    }
    fleet.wait_ready().await;
    let verdict = settle_and_check(&fleet, &load, name, healed).await;
    verdict.record();
    eprintln!("{}", integration_tests::faults::table(&verdict.rows));
    verdict.assert_clean(poison);
    fleet.finish();
}

/// Waits until the fleet has taken some of the load: the fault lands mid-batch.
async fn mid_batch(fleet: &Fleet) {
    fleet.env.wait_for_count("SELECT count(*) FROM payment_sessions", 5).await;
}

/// Each service in turn, half a second apart, while the batch is in flight.
fn kill_each<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        for (i, name) in SERVICES.iter().enumerate() {
            fleet.kill_and_restart(name, i as u32 + 1);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        fleet.wait_ready().await;
    })
}

/// Every message the fleet has sent so far, delivered again, twice during the run.
fn redeliver<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        load.redeliver_everything(fleet).await;
        fleet.env.wait_for_count("SELECT count(*) FROM payment_attempts WHERE status = 'succeeded'", 20).await;
        load.redeliver_everything(fleet).await;
    })
}

fn cut_database<'a>(fleet: &'a Fleet, load: &'a Load, outage: Duration) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        fleet.db.set(Link::Cut);
        let (status, why) = readyz_when_unready(fleet, "session-intake", "database not answering").await;
        assert_eq!((status, why.as_str()), (503, "database not answering"));
        load.send_wave(fleet, 1, 2).await;
        tokio::time::sleep(outage).await;
        fleet.db.set(Link::Open);
    })
}

fn cut_broker<'a>(fleet: &'a Fleet, load: &'a Load, outage: Duration) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        fleet.broker.set(Link::Cut);
        let (status, why) = readyz_when_unready(fleet, "payment-gateway", "broker not connected").await;
        assert_eq!((status, why.as_str()), (503, "broker not connected"));
        load.send_wave(fleet, 1, 2).await;
        tokio::time::sleep(outage).await;
        fleet.broker.set(Link::Open);
    })
}

/// Polls a service's readiness until it gives `reason` (it notices the outage
/// on its next use of the link, and its consumers may stop before it does).
async fn readyz_when_unready(fleet: &Fleet, service: &str, reason: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = fleet.readyz(service).await;
        if r.1 == reason || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each consuming service in turn dies right after a commit, before it has
/// published what the message sends or acked it (DESIGN §5): the redelivery
/// must send the kept set, and nothing may be lost or done twice.
fn crash_after_commit<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        for (i, name) in ["session-intake", "payment-gateway", "session-lifecycle", "webhook-dispatch"].iter().enumerate() {
            fleet.restart_with(name, &[("PS_FAULT_ABORT_AFTER_COMMIT", "true")], 10 + i as u32);
            let status = fleet.exited(name, Duration::from_secs(60)).await;
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(6), "{name} aborted after a commit: {status:?}");
            fleet.kill_and_restart(name, 20 + i as u32);
        }
        fleet.wait_ready().await;
    })
}

/// No fault of the harness's own: the second wave mid-batch (the fault is in the configuration).
fn second_wave<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
    })
}

#[tokio::test]
async fn every_service_killed_mid_batch_and_restarted() {
    scenario("SIGKILL each service", Mix::QUICK.times(3), 1, 0, &[], kill_each).await;
}

#[tokio::test]
async fn each_consumer_dies_between_its_commit_and_its_publish() {
    scenario("crash after commit, before publish", Mix::QUICK.times(2), 1, 0, &[], crash_after_commit).await;
}

#[tokio::test]
async fn every_message_delivered_twice_with_poison_among_them() {
    scenario("duplicates + poison", Mix::QUICK, 2, 3, &[], redeliver).await;
}

#[tokio::test]
async fn database_unreachable_for_10_seconds() {
    // A limit of 1: returning each message to the queue twice during the outage would dead-letter it.
    scenario_limited("database cut 10 s", 1, Mix::QUICK, 1, 0, &[], |f, l| cut_database(f, l, Duration::from_secs(10))).await;
}

#[tokio::test]
async fn broker_connections_cut_for_5_seconds() {
    scenario("broker cut 5 s", Mix::QUICK, 1, 0, &[], |f, l| cut_broker(f, l, Duration::from_secs(5))).await;
}

#[tokio::test]
async fn processor_times_out_and_answers_later() {
    // Every call outlives the gateway's deadline: each outcome is unknown until looked up.
    let slow = [("payment-gateway", "PROCESSOR_TIMEOUT_MS", "200"), ("payment-gateway", "SANDBOX_LATENCY_MS", "1000")];
    scenario("processor timeouts", Mix::QUICK, 1, 0, &slow, second_wave).await;
}

/// The primary and standby `scripts/pg-pair.sh` runs (its default ports).
const PG_PAIR: (u16, u16) = (5441, 5442);

/// `scripts/pg-pair.sh <action>`, which says what failed if it does.
async fn pg_pair(action: &'static str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-pair.sh");
    let out = tokio::process::Command::new(&script).arg(action).output().await.expect("scripts/pg-pair.sh runs");
    assert!(out.status.success(), "pg-pair.sh {action}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The database's primary lost under load, as a crash loses it, and its
/// synchronous standby promoted: the services were given both hosts
/// (`target_session_attrs=read-write`) and find the new primary by
/// themselves; commands are held meanwhile; nothing committed is lost (the
/// standby had every commit before it was acknowledged), nothing is charged
/// twice, every webhook is delivered (issue 22).
#[tokio::test]
async fn postgresql_primary_lost_and_its_standby_promoted() {
    pg_pair("fresh").await;
    let (primary, standby) = PG_PAIR;
    let admin = format!("postgres://postgres@127.0.0.1:{primary},127.0.0.1:{standby}/postgres?target_session_attrs=read-write");
    // A limit of 1, as for any outage: a message returned to its queue twice meanwhile would dead-letter.
    let env = TestEnv::on_postgres(&admin, 1).await;
    let fleet = Fleet::start_in(env, &[], true, Processor::Sandbox).await;
    run(fleet, "PostgreSQL failover", Mix::QUICK, 1, 0, fail_over).await;
    pg_pair("down").await;
}

fn fail_over<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        // The second wave first (the harness seeds its schedules in the
        // database), then the primary lost while the fleet works through it.
        load.send_wave(fleet, 1, 2).await;
        pg_pair("kill-primary").await;
        // The outage: as long as an orchestrator takes to decide on a failover.
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg_pair("promote").await;
        fleet.wait_ready().await;
    })
}

// RabbitMQ as a cluster (issue 22): three nodes of the installed RabbitMQ
// (`scripts/rabbit-cluster.sh`), the fleet given all three in AMQP_URL, each
// service connecting to any that answers and to a survivor when its node goes.

/// `scripts/rabbit-cluster.sh <args>`, which says what failed if it does; its output.
async fn rabbit_cluster(args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbit-cluster.sh");
    let out = tokio::process::Command::new(&script).args(args).output().await.expect("scripts/rabbit-cluster.sh runs");
    assert!(out.status.success(), "rabbit-cluster.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The three nodes, as a service's AMQP_URL lists them.
fn cluster_url() -> String {
    (1..=3).map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + n)).collect::<Vec<_>>().join(",")
}

/// The fleet on a fresh three-node cluster, under `fault`; the cluster goes afterwards.
async fn on_cluster(name: &str, fault: Fault) {
    rabbit_cluster(&["up"]).await;
    // Nodes lost and rejoined return what their consumers held: room for a few returns.
    let env = TestEnv::on_broker(&cluster_url(), 10).await;
    let fleet = Fleet::start_in(env, &[], true, Processor::Sandbox).await;
    assert_quorum_queues_span_the_cluster(&fleet).await;
    run(fleet, name, Mix::QUICK.times(2), 1, 0, fault).await;
    rabbit_cluster(&["down"]).await;
}

/// The fleet's work queues, as `rabbitmqctl list_queues name leader members` sees them.
async fn work_queues(fleet: &Fleet) -> Vec<(String, String, String)> {
    let ours: Vec<String> = ps_runtime::topology::QUEUES.iter().map(|q| fleet.env.names.queue(q)).collect();
    let listed = rabbit_cluster(&["ctl", "list_queues", "name", "leader", "members", "--no-table-headers"]).await;
    listed
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let (name, leader, members) = (cols.next()?, cols.next()?, cols.next()?);
            ours.iter().any(|q| q == name).then(|| (name.to_owned(), leader.to_owned(), members.to_owned()))
        })
        .collect()
}

/// Every work queue is a quorum queue with a member on each of the three nodes.
async fn assert_quorum_queues_span_the_cluster(fleet: &Fleet) {
    let queues = work_queues(fleet).await;
    assert!(queues.len() >= 5, "{queues:?}");
    for (name, _, members) in &queues {
        assert!((1..=3).all(|n| members.contains(&format!("ps-rabbit{n}@localhost"))), "{name} is not on every node: {members}");
    }
}

const ENDED: &str = "SELECT count(*) FROM payment_sessions WHERE status <> 'active'";

/// The node that leads most of the busiest queues (intake, gateway, lifecycle, webhooks).
async fn busiest_leader(fleet: &Fleet) -> String {
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for (name, leader, _) in work_queues(fleet).await {
        if ["intake", "gateway", "lifecycle", "webhooks.events"].iter().any(|q| name.ends_with(q)) {
            *count.entry(leader).or_default() += 1;
        }
    }
    let (leader, _) = count.into_iter().max_by_key(|(_, n)| *n).expect("the busiest queues have leaders");
    leader.trim_start_matches("ps-rabbit").trim_end_matches("@localhost").to_owned()
}

/// The node leading the busiest queues SIGKILLed under load, then started
/// again: leaders move to the survivors, services reconnect to them.
#[tokio::test]
async fn rabbitmq_node_leading_the_busiest_queues_killed() {
    on_cluster("RabbitMQ leader node killed", |f, l| node_away(f, l, "kill", "start")).await;
}

/// One node cut off from the other two (its distribution links refused):
/// it pauses as the minority (`pause_minority`), its clients move to the
/// majority; then it is let back in.
#[tokio::test]
#[ignore = "long: make faults"]
async fn rabbitmq_node_partitioned_from_the_others() {
    on_cluster("RabbitMQ node partitioned", |f, l| node_away(f, l, "partition", "heal")).await;
}

/// The node leading the busiest queues taken away (`away`: kill, partition)
/// mid-batch, kept away until the fleet has done work on the others, then
/// brought back (`back`: start, heal).
fn node_away<'a>(fleet: &'a Fleet, load: &'a Load, away: &'static str, back: &'static str) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        let node = busiest_leader(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        let before = fleet.env.count(ENDED).await;
        rabbit_cluster(&[away, &node]).await;
        // Five more sessions ended: the fleet works on without the node.
        fleet.env.wait_for_count(ENDED, before + 5).await;
        rabbit_cluster(&[back, &node]).await;
        fleet.wait_ready().await;
    })
}

/// All three nodes restarted one after the other, as an upgrade does.
#[tokio::test]
#[ignore = "long: make faults"]
async fn rabbitmq_cluster_restarted_node_by_node() {
    on_cluster("RabbitMQ rolling restart", rolling_restart).await;
}

fn rolling_restart<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        for node in ["3", "2", "1"] {
            rabbit_cluster(&["restart", node]).await;
        }
        fleet.wait_ready().await;
    })
}

// Stripe (issue 18): the fleet on PROCESSOR=stripe against localstripe, the
// faults injected by the proxy between the gateway and Stripe and by the
// relay of Stripe's events. The ledger the invariants read is Stripe's.

async fn on_stripe(name: &str, overrides: &[(&str, &str, &str)], fault: Fault) {
    let fleet = Fleet::start_with(DELIVERY_LIMIT, overrides, true, Processor::Stripe).await;
    run(fleet, name, Mix::QUICK, 1, 0, fault).await
}

/// Until every injected fault has met its request: the fault happened.
async fn faults_met(fleet: &Fleet) {
    let proxy = &fleet.stripe.as_ref().unwrap().proxy;
    let deadline = Instant::now() + Duration::from_secs(90);
    while proxy.faults_pending() > 0 {
        assert!(Instant::now() < deadline, "{} injected faults never met a request", proxy.faults_pending());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CONFIRM: &str = "/v1/payment_intents/*/confirm";
const CREATE: &str = "/v1/payment_intents";

/// Stripe commits, and its answer is lost (the gateway gives up waiting) or is
/// a 500; each event arrives three times.
fn stripe_answers_lost<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        let on = fleet.stripe.as_ref().unwrap();
        on.events.deliver_each(3);
        mid_batch(fleet).await;
        on.proxy.inject_n(axum::http::Method::POST, CONFIRM, StripeFault::LoseResponse, 3);
        on.proxy.inject_n(axum::http::Method::POST, CONFIRM, StripeFault::ServerErrorAfter, 3);
        on.proxy.inject_n(axum::http::Method::POST, CREATE, StripeFault::ServerErrorAfter, 2);
        load.send_wave(fleet, 1, 2).await;
        faults_met(fleet).await;
        // Held until the gateway gave up on each: the answers are lost, not late.
        fleet.env.wait_for_count("SELECT count(*) FROM processor_calls WHERE result = 'timeout'", 3).await;
        on.proxy.release();
    })
}

/// Stripe slower than the gateway waits (it commits after the gateway gave
/// up), and 429s asking to come back later.
fn stripe_slow_and_throttling<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        let proxy = &fleet.stripe.as_ref().unwrap().proxy;
        mid_batch(fleet).await;
        proxy.inject_n(axum::http::Method::POST, CONFIRM, StripeFault::Delay(Duration::from_secs(3)), 3);
        proxy.inject_n(axum::http::Method::POST, CREATE, StripeFault::Delay(Duration::from_secs(3)), 2);
        proxy.inject_n(axum::http::Method::POST, CREATE, StripeFault::TooMany(2), 3);
        proxy.inject_n(axum::http::Method::POST, CONFIRM, StripeFault::TooMany(1), 2);
        load.send_wave(fleet, 1, 2).await;
        faults_met(fleet).await;
        fleet.env.wait_for_count("SELECT count(*) FROM processor_calls WHERE result = 'timeout'", 5).await;
    })
}

/// Stripe's event overtakes its answer, and arrives three times.
fn stripe_events_early_and_repeated<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        let on = fleet.stripe.as_ref().unwrap();
        on.events.deliver_each(3);
        mid_batch(fleet).await;
        on.proxy.inject_n(axum::http::Method::POST, CONFIRM, StripeFault::AnswerAfter(Duration::from_millis(1500)), 8);
        load.send_wave(fleet, 1, 2).await;
        faults_met(fleet).await;
    })
}

#[tokio::test]
async fn stripe_answers_lost_after_commit_or_a_500_events_three_times() {
    on_stripe(
        "Stripe: answers lost or 500 after commit, events ×3",
        &[("payment-gateway", "PROCESSOR_TIMEOUT_MS", "2000")],
        stripe_answers_lost,
    )
    .await;
}

#[tokio::test]
async fn stripe_slower_than_the_gateway_waits_and_429s() {
    on_stripe("Stripe: timeouts, 429 + Retry-After", &[("payment-gateway", "PROCESSOR_TIMEOUT_MS", "1000")], stripe_slow_and_throttling)
        .await;
}

#[tokio::test]
async fn stripe_events_before_the_answer_and_repeated() {
    on_stripe("Stripe: events early and ×3", &[], stripe_events_early_and_repeated).await;
}

// The long scenarios: `make faults` runs them one at a time (they restart the
// machine's broker and database, or take minutes), with the quick ones, and
// prints the table.

fn kill_repeatedly<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        // The gateway and lifecycle (where money moves) thrice each, the rest once, 300 ms apart.
        let order = [
            "payment-gateway",
            "session-lifecycle",
            "payment-gateway",
            "session-intake",
            "session-lifecycle",
            "checkout",
            "payment-gateway",
            "charge-scheduler",
            "session-lifecycle",
            "webhook-dispatch",
        ];
        for (i, name) in order.iter().enumerate() {
            fleet.kill_and_restart(name, 100 + i as u32);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        fleet.wait_ready().await;
    })
}

fn restart_broker<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        // Sent before: the harness's own connection does not survive the restart.
        load.send_wave(fleet, 1, 2).await;
        tokio::task::spawn_blocking(|| {
            integration_tests::rabbitmqctl(&["stop_app"]);
            integration_tests::rabbitmqctl(&["start_app"]);
            integration_tests::rabbitmqctl(&["await_startup"]);
        })
        .await
        .unwrap();
        fleet.wait_ready().await;
    })
}

fn restart_database<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        load.send_wave(fleet, 1, 2).await;
        tokio::task::spawn_blocking(|| {
            let clusters = std::process::Command::new("pg_lsclusters").arg("--no-header").output().expect("pg_lsclusters runs");
            let line = String::from_utf8_lossy(&clusters.stdout).lines().next().expect("a PostgreSQL cluster").to_owned();
            let mut cols = line.split_whitespace();
            let (version, cluster) = (cols.next().unwrap().to_owned(), cols.next().unwrap().to_owned());
            let restarted =
                std::process::Command::new("pg_ctlcluster").args([&version, &cluster, "restart", "-m", "fast"]).status().unwrap();
            assert!(restarted.success(), "pg_ctlcluster {version} {cluster} restart");
        })
        .await
        .unwrap();
        fleet.wait_ready().await;
    })
}

fn slow_links<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        mid_batch(fleet).await;
        fleet.db.set(Link::Slow(Duration::from_millis(50)));
        fleet.broker.set(Link::Slow(Duration::from_millis(50)));
        load.send_wave(fleet, 1, 2).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        fleet.db.set(Link::Open);
        fleet.broker.set(Link::Open);
    })
}

/// Another merchant's endpoint hangs with a 10,000-delivery backlog, older than
/// anything of ours: our merchant's deliveries must keep flowing meanwhile.
fn hanging_neighbour<'a>(fleet: &'a Fleet, load: &'a Load) -> futures::future::BoxFuture<'a, ()> {
    Box::pin(async move {
        let stuck = integration_tests::receiver::Receiver::start(&[], integration_tests::receiver::Answer::Hang).await;
        let ep = fleet
            .env
            .call(
                integration_tests::Command::new("webhook_endpoint.create", &serde_json::json!({"url": stuck.url, "enabled_events": ["*"]}))
                    .header("merchant-id", "slowpoke"),
            )
            .await;
        integration_tests::seed_webhook_backlog(&fleet.env.pool, "slowpoke", ep.body["id"].as_str().unwrap(), 10_000).await;
        load.send_wave(fleet, 1, 2).await;
        // Our merchant's sessions all finish and their events all arrive while the neighbour's receiver still hangs.
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Err(why) = load.settled(fleet).await {
            assert!(Instant::now() < deadline, "our merchant stalled behind the neighbour's backlog: {why}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(stuck.received().len() <= 8, "the neighbour holds only its own in-flight slots");
        stuck.release();
    })
}

#[tokio::test]
#[ignore = "long: make faults"]
async fn several_services_killed_in_a_row() {
    scenario_limited("SIGKILL ×10 in a row", 10, Mix::LONG, 1, 0, &[], kill_repeatedly).await;
}

#[tokio::test]
#[ignore = "long, restarts the machine's RabbitMQ: make faults"]
async fn rabbitmq_restarted() {
    scenario_limited("RabbitMQ restarted", 10, Mix::LONG, 1, 0, &[], restart_broker).await;
}

#[tokio::test]
#[ignore = "long, restarts the machine's PostgreSQL: make faults"]
async fn postgresql_restarted() {
    scenario_limited("PostgreSQL restarted", 10, Mix::LONG, 1, 0, &[], restart_database).await;
}

#[tokio::test]
#[ignore = "long: make faults"]
async fn database_unreachable_for_60_seconds() {
    scenario_limited("database cut 60 s", 1, Mix::LONG, 1, 0, &[], |f, l| cut_database(f, l, Duration::from_secs(60))).await;
}

#[tokio::test]
#[ignore = "long: make faults"]
async fn connections_slowed() {
    scenario("links slowed 50 ms/chunk", Mix::LONG, 1, 0, &[], slow_links).await;
}

#[tokio::test]
#[ignore = "long: make faults"]
async fn a_neighbours_endpoint_hangs_with_a_10000_delivery_backlog() {
    let limits = [("webhook-dispatch", "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "8"), ("webhook-dispatch", "WEBHOOK_TIMEOUT_MS", "120000")];
    scenario("neighbour's endpoint hangs, 10,000 backlog", Mix::LONG, 1, 0, &limits, hanging_neighbour).await;
}

#[tokio::test]
#[ignore = "long: make faults"]
async fn long_mix_duplicates_poison_and_processor_timeouts() {
    let slow = [("payment-gateway", "PROCESSOR_TIMEOUT_MS", "200"), ("payment-gateway", "SANDBOX_LATENCY_MS", "1000")];
    scenario("duplicates + poison + timeouts", Mix::LONG, 2, 10, &slow, redeliver).await;
}
