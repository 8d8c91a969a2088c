//! The fault harness (issue 9): the real service binaries as separate
//! processes, reaching the broker and the database through TCP proxies the
//! harness can cut and slow, a mixed load of all three session types, and the
//! invariants checked at the end against independent records: the
//! processor's ledger (the sandbox's, or Stripe's as localstripe holds it), a
//! webhook receiver counting by `webhook-id`, the DLQs.

use crate::receiver::{Answer, Receiver};
use crate::stripe::{EventsRelay, LocalStripe, StripeProxy};
use crate::{binary_path, free_port, seed_mandate_with_card, seed_schedule, Command, TestEnv};
use ps_runtime::topology;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PAYS: &str = "4242424242424242";
/// How long customers and the invariants wait for the fleet to recover.
pub const PATIENCE: Duration = Duration::from_secs(120);
pub const MERCHANT: &str = "faults";

/// What a proxy does to the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Open,
    /// Every connection dropped, new ones refused: the far side is unreachable.
    Cut,
    /// Each chunk delayed: a congested network.
    Slow(Duration),
}

/// A TCP proxy between the services and the broker or the database.
pub struct Proxy {
    pub addr: SocketAddr,
    link: watch::Sender<Link>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Open);
        let watching = link.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watching.borrow() == Link::Cut {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(forward(inbound, target, watching.subscribe()));
            }
        });
        Proxy { addr, link }
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, mut link: watch::Receiver<Link>) {
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let up = pump(ri, wo, link.clone());
    let down = pump(ro, wi, link.clone());
    let cut = async {
        while link.changed().await.is_ok() {
            if *link.borrow() == Link::Cut {
                return;
            }
        }
    };
    tokio::select! {
        _ = cut => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, link: watch::Receiver<Link>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let slow = match *link.borrow() {
            Link::Slow(d) => Some(d),
            _ => None,
        };
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The services, in the order they start.
pub const SERVICES: &[&str] =
    &["payment-gateway", "session-lifecycle", "checkout", "session-intake", "webhook-dispatch", "charge-scheduler"];

struct Proc {
    name: &'static str,
    env: Vec<(String, String)>,
    health: SocketAddr,
    child: Child,
}

/// The whole fleet as separate processes of the real binaries.
pub struct Fleet {
    pub env: TestEnv,
    pub db: Proxy,
    pub broker: Proxy,
    pub checkout_url: String,
    /// `PROCESSOR=stripe`: localstripe, the proxy before it, its events' relay.
    pub stripe: Option<OnStripe>,
    procs: std::sync::Mutex<Vec<Proc>>,
    logs: std::path::PathBuf,
}

/// Stripe as the fault scenarios meet it: localstripe behind the proxy that
/// injects the API's faults, and a relay that repeats its events.
pub struct OnStripe {
    pub stripe: LocalStripe,
    pub proxy: StripeProxy,
    pub events: EventsRelay,
}

/// Which processor the fleet's gateway calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processor {
    Sandbox,
    Stripe,
}

/// Where scenarios leave their logs and rows: the workspace's `target/faults`.
pub fn results_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/faults")
}

/// The (first) host of a URL.
fn host_port(url: &str) -> SocketAddr {
    let after = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = after.rsplit_once('@').map(|(_, h)| h).unwrap_or(after);
    let hp = host.split(['/', '?', ',']).next().unwrap();
    hp.replace("localhost", "127.0.0.1").parse().unwrap_or_else(|e| panic!("{hp}: {e}"))
}

fn through(url: &str, proxy: SocketAddr) -> String {
    url.replace(&host_port(url).to_string(), &proxy.to_string()).replace("localhost:", "127.0.0.1:")
}

impl Fleet {
    /// Starts every service with `overrides` (service name, or `*`, → variable
    /// and value), its queues declared with `delivery_limit`.
    pub async fn start(delivery_limit: u32, overrides: &[(&str, &str, &str)]) -> Fleet {
        Fleet::start_with(delivery_limit, overrides, true, Processor::Sandbox).await
    }

    /// As `start`; `proxied: false` connects the services straight to the
    /// broker and the database (the benchmark: no extra hop to measure).
    pub async fn start_with(delivery_limit: u32, overrides: &[(&str, &str, &str)], proxied: bool, processor: Processor) -> Fleet {
        Fleet::start_in(TestEnv::with_delivery_limit(delivery_limit).await, overrides, proxied, processor).await
    }

    /// As `start_with`, in a test environment made beforehand (its database
    /// elsewhere, say). A database URL of several hosts is used as it is: the
    /// services choose among them (`target_session_attrs`), not a proxy.
    pub async fn start_in(env: TestEnv, overrides: &[(&str, &str, &str)], proxied: bool, processor: Processor) -> Fleet {
        let db = Proxy::start(host_port(&env.database_url)).await;
        let broker = Proxy::start(host_port(&env.amqp_url)).await;
        let (vault, checkout, events) = (free_port(), free_port(), free_port());
        let checkout_url = format!("http://127.0.0.1:{checkout}");
        let logs = results_dir().join("logs").join(&env.db_name);
        std::fs::create_dir_all(&logs).unwrap();
        let stripe = match processor {
            Processor::Sandbox => None,
            Processor::Stripe => {
                let stripe = LocalStripe::start().await;
                let proxy = StripeProxy::start(&stripe).await;
                let events = EventsRelay::start(&format!("http://127.0.0.1:{events}/v1/processors/stripe/events")).await;
                stripe.send_events_to(&events.url).await;
                Some(OnStripe { stripe, proxy, events })
            }
        };
        let fleet = Fleet { env, db, broker, checkout_url, stripe, procs: std::sync::Mutex::new(vec![]), logs };
        for name in SERVICES {
            let mut vars: Vec<(String, String)> = fleet.env.service_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut set = |k: &str, v: String| {
                vars.retain(|(n, _)| n != k);
                vars.push((k.to_owned(), v));
            };
            if proxied && !fleet.env.database_url.contains(',') {
                set("DATABASE_URL", through(&fleet.env.database_url, fleet.db.addr));
            }
            if proxied && !fleet.env.amqp_url.contains(',') {
                set("AMQP_URL", through(&fleet.env.amqp_url, fleet.broker.addr));
            }
            set("VAULT_ADDR", format!("127.0.0.1:{vault}"));
            set("VAULT_URL", format!("http://127.0.0.1:{vault}"));
            set("CHECKOUT_ADDR", format!("127.0.0.1:{checkout}"));
            set("CHECKOUT_BASE_URL", fleet.checkout_url.clone());
            set("CHECKOUT_SUBMITS_PER_MINUTE", "10000".into());
            set("WEBHOOK_LOCAL_MODE", "true".into());
            set("WEBHOOK_POLL_MS", "100".into());
            set("EXPIRY_SWEEP_INTERVAL_MS", "200".into());
            set("ATTEMPT_ABANDON_AFTER_SECS", "20".into());
            set("SETTLEMENT_RETRY_AFTER_SECS", "10".into());
            set("SCHEDULER_POLL_MS", "200".into());
            set("DATABASE_POOL_SIZE", "6".into());
            set("RUST_LOG", "info".into());
            if let Some(on) = &fleet.stripe {
                set("PROCESSOR", "stripe".into());
                set("STRIPE_SECRET_KEY", crate::stripe::SECRET_KEY.into());
                set("STRIPE_API_BASE", on.proxy.url.clone());
                set("STRIPE_WEBHOOK_SECRET", crate::stripe::WEBHOOK_SECRET.into());
                set("PROCESSOR_EVENTS_ADDR", format!("127.0.0.1:{events}"));
                set("STRIPE_JS_URL", on.stripe.js_url());
                set("STRIPE_PUBLISHABLE_KEY", crate::stripe::PUBLISHABLE_KEY.into());
            }
            for (svc, k, v) in overrides {
                if svc == name || *svc == "*" {
                    set(k, v.to_string());
                }
            }
            let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            set("HEALTH_ADDR", health.to_string());
            let child = fleet.spawn(name, &vars, 0);
            fleet.procs.lock().unwrap().push(Proc { name, env: vars, health, child });
        }
        fleet.wait_ready().await;
        fleet
    }

    fn spawn(&self, name: &str, vars: &[(String, String)], generation: u32) -> Child {
        let log = std::fs::File::create(self.logs.join(format!("{name}.{generation}.log"))).unwrap();
        std::process::Command::new(binary_path(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
    }

    /// An active mandate on a saved card; on Stripe, the card saved there too
    /// (a PaymentMethod attached to a Customer), as a first_in_series leaves it.
    async fn seed_mandate(&self, terms: Value) -> (String, String, String) {
        let seeded = seed_mandate_with_card(&self.env.pool, MERCHANT, terms, PAYS, (12, 2099), true).await;
        if let Some(on) = &self.stripe {
            let (method, customer) = on.stripe.save_card(PAYS).await;
            self.env
                .pool
                .get()
                .await
                .unwrap()
                .execute(
                    "UPDATE vault_cards SET processor_method = $1, processor_customer = $2
                     WHERE token = (SELECT vault_token FROM payment_methods WHERE id = $3)",
                    &[&method, &customer, &seeded.1],
                )
                .await
                .unwrap();
        }
        seeded
    }

    /// The processor's record of the money, as a table the invariants join:
    /// the sandbox's own ledger, or Stripe's copied into `stripe_ledger`.
    async fn ledger_table(&self) -> &'static str {
        let Some(on) = &self.stripe else { return "sandbox_ledger" };
        let c = self.env.pool.get().await.unwrap();
        c.batch_execute(
            "DROP TABLE IF EXISTS stripe_ledger;
             CREATE TABLE stripe_ledger (operation text NOT NULL, idempotency_key text NOT NULL, outcome text NOT NULL)",
        )
        .await
        .unwrap();
        for line in on.stripe.ledger().await {
            c.execute(
                "INSERT INTO stripe_ledger (operation, idempotency_key, outcome) VALUES ($1, $2, $3)",
                &[&line.operation, &line.idempotency_key, &line.outcome],
            )
            .await
            .unwrap();
        }
        "stripe_ledger"
    }

    /// Another replica of `name`, as an SRE scales a worker: the same
    /// settings, its own health port (and its own vault port, for a gateway:
    /// the checkout keeps using the first). Ready when this returns.
    pub async fn add_replica(&self, name: &'static str) {
        let (vars, replica) = {
            let procs = self.procs.lock().unwrap();
            let first = procs.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name} in the fleet"));
            (first.env.clone(), procs.iter().filter(|p| p.name == name).count())
        };
        let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k != "HEALTH_ADDR" && k != "VAULT_ADDR").collect();
        vars.push(("HEALTH_ADDR".into(), health.to_string()));
        vars.push(("VAULT_ADDR".into(), format!("127.0.0.1:{}", free_port())));
        let child = self.spawn(name, &vars, 100 + replica as u32);
        self.procs.lock().unwrap().push(Proc { name, env: vars, health, child });
        self.wait_ready().await;
    }

    /// SIGKILL, as the OOM killer or a node failure does it, then start it again.
    pub fn kill_and_restart(&self, name: &str, generation: u32) {
        let mut procs = self.procs.lock().unwrap();
        let p = procs.iter_mut().find(|p| p.name == name).unwrap();
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.child = self.spawn(name, &p.env, generation);
    }

    /// Restarts `name` with `extra` in its environment for this generation only.
    pub fn restart_with(&self, name: &str, extra: &[(&str, &str)], generation: u32) {
        let mut procs = self.procs.lock().unwrap();
        let p = procs.iter_mut().find(|p| p.name == name).unwrap();
        let _ = p.child.kill();
        let _ = p.child.wait();
        let mut vars = p.env.clone();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p.child = self.spawn(name, &vars, generation);
    }

    /// Until `name`'s process has ended by itself; how it ended.
    pub async fn exited(&self, name: &str, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.procs.lock().unwrap().iter_mut().find(|p| p.name == name).unwrap().child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{name} did not end within {within:?} (logs in {})", self.logs.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until every service answers `/readyz` 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let health: Vec<(&str, SocketAddr)> = self.procs.lock().unwrap().iter().map(|p| (p.name, p.health)).collect();
        for (name, addr) in health {
            loop {
                let ready = tokio::time::timeout(Duration::from_secs(2), crate::try_http_get(addr, "/readyz")).await;
                if matches!(ready, Ok(Ok((200, _)))) {
                    break;
                }
                let ended = self.procs.lock().unwrap().iter_mut().find(|p| p.name == name).and_then(|p| p.child.try_wait().ok().flatten());
                assert!(ended.is_none(), "{name} ended before it was ready ({ended:?}):\n{}", self.log_tail(name));
                assert!(Instant::now() < deadline, "{name} never became ready:\n{}", self.log_tail(name));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The last lines `name` logged, for a failure's message: CI keeps the
    /// output, not the files.
    fn log_tail(&self, name: &str) -> String {
        let mut lines = vec![];
        for generation in 0..10 {
            if let Ok(text) = std::fs::read_to_string(self.logs.join(format!("{name}.{generation}.log"))) {
                lines = text.lines().map(str::to_owned).collect();
            }
        }
        let from = lines.len().saturating_sub(15);
        format!("{} (last lines of {}):\n{}", name, self.logs.display(), lines[from..].join("\n"))
    }

    /// Each running service's name and process id.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs.lock().unwrap().iter().map(|p| (p.name, p.child.id())).collect()
    }

    /// A service's `/readyz` answer now.
    pub async fn readyz(&self, name: &str) -> (u16, String) {
        let addr = self.procs.lock().unwrap().iter().find(|p| p.name == name).unwrap().health;
        crate::try_http_get(addr, "/readyz").await.unwrap_or((0, String::new()))
    }

    fn kill_all(&self) {
        for p in self.procs.lock().unwrap().iter_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Stops every process; dropping the test environment then removes its
    /// database and broker objects.
    pub fn finish(self) {
        self.kill_all();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// How much of each session type a scenario drives.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub one_time: usize,
    pub first_in_series: usize,
    /// Sent by an upstream system under a mandate.
    pub next_in_series: usize,
    /// Charged by the charge-scheduler from due schedules.
    pub scheduled: usize,
}

impl Mix {
    pub const QUICK: Mix = Mix { one_time: 12, first_in_series: 6, next_in_series: 12, scheduled: 10 };
    pub const LONG: Mix = Mix { one_time: 60, first_in_series: 30, next_in_series: 60, scheduled: 50 };

    pub fn times(self, n: usize) -> Mix {
        Mix {
            one_time: self.one_time * n,
            first_in_series: self.first_in_series * n,
            next_in_series: self.next_in_series * n,
            scheduled: self.scheduled * n,
        }
    }
}

/// What the load put in, for the invariants to hold it to.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    /// Idempotency key → session type, of every command the broker confirmed.
    pub commands: BTreeMap<String, &'static str>,
    pub schedules: usize,
    pub poison: usize,
}

/// One create command of the plan.
struct Planned {
    key: String,
    ty: &'static str,
    body: Value,
}

/// The load: every command planned up front, sent in waves so a fault can
/// land while part of it is in flight; the merchant's webhook endpoint; due
/// schedules for the charge-scheduler, seeded wave by wave too.
pub struct Load {
    pub receiver: Receiver,
    planned: Vec<Planned>,
    schedules: Vec<(String, String, String)>,
    copies: usize,
    sent: std::sync::Mutex<Sent>,
}

impl Load {
    /// `copies`: how many times each command is published (a retrying upstream, a redelivery).
    pub async fn prepare(fleet: &Fleet, mix: Mix, copies: usize) -> Load {
        let receiver = Receiver::start(&[], Answer::Status(200)).await;
        let ep = fleet
            .env
            .call(
                Command::new("webhook_endpoint.create", &json!({"url": receiver.url, "enabled_events": ["*"]}))
                    .header("merchant-id", MERCHANT),
            )
            .await;
        assert_eq!(ep.body["object"], "webhook_endpoint", "{}", ep.body);
        let terms = || json!({"type": "on_demand", "currency": "ZAR"});
        let mut planned = vec![];
        for i in 0..mix.one_time {
            let body = json!({"type": "one_time", "amount": 1000 + i as i64, "currency": "ZAR", "return_url": "https://shop.example/r"});
            planned.push(Planned { key: format!("ot-{i}"), ty: "one_time", body });
        }
        for i in 0..mix.first_in_series {
            let body = json!({"type": "first_in_series", "amount": 2000 + i as i64, "currency": "ZAR",
                "customer": {"name": "Ada", "email": "ada@example.com"}, "return_url": "https://shop.example/r",
                "mandate_options": {"type": "on_demand", "amount": {"min": 100, "max": 50000}}});
            planned.push(Planned { key: format!("fis-{i}"), ty: "first_in_series", body });
        }
        for i in 0..mix.next_in_series {
            let md = fleet.seed_mandate(terms()).await.2;
            let body = json!({"type": "next_in_series", "amount": 700 + i as i64, "currency": "ZAR", "mandate_id": md});
            planned.push(Planned { key: format!("nis-{i}"), ty: "next_in_series", body });
        }
        let mut schedules = vec![];
        for _ in 0..mix.scheduled {
            schedules.push(fleet.seed_mandate(terms()).await);
        }
        // Interleaved, so every wave carries every type.
        planned.sort_by_key(|p| p.key.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0));
        Load { receiver, planned, schedules, copies, sent: Default::default() }
    }

    /// Sends wave `k` of `n`: its share of the commands (each confirmed by the
    /// broker, `copies` times) and of the due schedules.
    pub async fn send_wave(&self, fleet: &Fleet, k: usize, n: usize) {
        let part = |len: usize| (len * k / n)..(len * (k + 1) / n);
        let mut cmds = vec![];
        for p in &self.planned[part(self.planned.len())] {
            for copy in 0..self.copies {
                cmds.push(
                    Command::create(MERCHANT, &p.body)
                        .header("idempotency-key", &p.key)
                        .message_id(&format!("{}-{copy}", p.key))
                        .no_reply(),
                );
            }
        }
        fleet.env.send_many(cmds).await;
        for ids in &self.schedules[part(self.schedules.len())] {
            seed_schedule(&fleet.env.pool, MERCHANT, ids, 1500, chrono::Utc::now()).await;
        }
        let mut sent = self.sent.lock().unwrap();
        for p in &self.planned[part(self.planned.len())] {
            sent.commands.insert(p.key.clone(), p.ty);
        }
        sent.schedules += part(self.schedules.len()).len();
    }

    /// Messages no service can use, each of which must end in a DLQ with its reason.
    pub async fn poison(&self, fleet: &Fleet, n: usize) {
        for i in 0..n {
            fleet
                .env
                .send(Command::create(MERCHANT, &json!({})).raw_body(b"{not json").message_id(&format!("poison-{i}")).no_reply())
                .await;
        }
        self.sent.lock().unwrap().poison += n;
    }

    /// Customers paying every customer-present session of the plan at its
    /// `session_url`, through the checkout's HTTP interface, as each appears;
    /// they retry what fails to load. Returns the keys of sessions that never
    /// appeared or could not be paid (the invariants count them as lost).
    pub async fn pay_all(&self, fleet: &Fleet) -> Vec<String> {
        let payers = self.planned.iter().filter(|p| p.ty != "next_in_series").map(|p| async move {
            let deadline = Instant::now() + PATIENCE;
            let url = loop {
                if let Some(url) = session_url(fleet, &p.key).await {
                    break url;
                }
                if Instant::now() > deadline {
                    return Some(p.key.clone());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let client = CustomerClient::new();
            while !matches!(client.pay(&url).await, Ok(true)) {
                if Instant::now() > deadline {
                    return Some(p.key.clone());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            None
        });
        futures::future::join_all(payers).await.into_iter().flatten().collect()
    }

    /// Publishes again every message the fleet has sent so far (by either
    /// path: commands to the gateway, results, events), each with its own
    /// message id, headers, correlation id and reply_to: a duplicate delivery
    /// of every message, which may overtake the original.
    pub async fn redeliver_everything(&self, fleet: &Fleet) -> usize {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
        let c = fleet.env.pool.get().await.unwrap();
        let rows = c
            .query(
                "SELECT exchange, routing_key, message_id, headers, body_base64, correlation_id, reply_to
                 FROM sent_messages WHERE kind = 'durable' AND NOT sealed ORDER BY created_at",
                &[],
            )
            .await
            .unwrap();
        let conn = ps_runtime::broker::connect(&fleet.env.amqp_url, "faults-redeliver", &Default::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let mut confirms = vec![];
        for r in &rows {
            let exchange = fleet.env.names.exchange(r.get::<_, &str>(0));
            let mut headers = FieldTable::default();
            if let Some(map) = r.get::<_, Value>(3).as_object() {
                for (k, v) in map {
                    if let Some(v) = v.as_str() {
                        headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v)));
                    }
                }
            }
            let mut props = lapin::BasicProperties::default().with_delivery_mode(2).with_headers(headers).with_user_id("guest".into());
            if let Some(id) = r.get::<_, Option<&str>>(2) {
                props = props.with_message_id(id.into());
            }
            // A redelivery is the same message: where to answer, and under which correlation, too.
            if let Some(c) = r.get::<_, Option<&str>>(5) {
                props = props.with_correlation_id(c.into());
            }
            if let Some(to) = r.get::<_, Option<&str>>(6) {
                props = props.with_reply_to(to.into());
            }
            use base64::Engine;
            let body = base64::engine::general_purpose::STANDARD.decode(r.get::<_, &str>(4)).unwrap();
            let body: &[u8] = &body;
            let opts = BasicPublishOptions { mandatory: false, ..Default::default() };
            confirms.push(ch.basic_publish(exchange.as_str().into(), r.get::<_, &str>(1).into(), opts, body, props).await.unwrap());
        }
        for confirm in confirms {
            confirm.await.unwrap();
        }
        let _ = conn.close(200, "done".into()).await;
        rows.len()
    }

    /// Ok once every session sent for has its outcome and every event
    /// published for the merchant reached its receiver; otherwise what is missing.
    pub async fn settled(&self, fleet: &Fleet) -> Result<(), String> {
        let sent = self.sent();
        let expected = sent.commands.len() + sent.schedules;
        let c = fleet.env.pool.get().await.map_err(|e| e.to_string())?;
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE status = 'active' OR payment_outcome = 'pending')
                 FROM payment_sessions WHERE merchant_id = $1",
                &[&MERCHANT],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (total, open): (i64, i64) = (r.get(0), r.get(1));
        // A due schedule's run learns its session from intake's reply, which may come after the session settled.
        let linked: i64 = c
            .query_one("SELECT count(DISTINCT payment_session_id) FROM schedule_runs WHERE payment_session_id IS NOT NULL", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let undelivered = undelivered_events(fleet, self).await.len();
        if open == 0 && total as usize >= expected && linked as usize >= sent.schedules && undelivered == 0 {
            Ok(())
        } else {
            Err(format!(
                "{open} sessions open, {total}/{expected} sessions, {linked}/{} runs answered, {undelivered} events undelivered",
                sent.schedules
            ))
        }
    }

    pub fn sent(&self) -> Sent {
        self.sent.lock().unwrap().clone()
    }
}

async fn session_url(fleet: &Fleet, key: &str) -> Option<String> {
    let c = fleet.env.pool.get().await.ok()?;
    let row = c.query_opt("SELECT reply FROM idempotency_keys WHERE merchant_id = $1 AND key = $2", &[&MERCHANT, &key]).await.ok()??;
    let stored: Value = row.get::<_, Option<Value>>(0)?;
    let reply = if ps_runtime::sealing::sealed_json(&stored).is_some() {
        crate::test_keys().open_json(&ps_runtime::sealing::At::idempotency_reply(MERCHANT, key), stored).ok()?
    } else {
        stored
    };
    reply["session_url"].as_str().map(str::to_owned)
}

/// A customer's browser, as far as the fault suite needs one: it may meet a
/// checkout that is down, and then it tries again.
struct CustomerClient(reqwest::Client);

impl CustomerClient {
    fn new() -> CustomerClient {
        CustomerClient(
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build().unwrap(),
        )
    }

    /// True once the page says the payment went through or is being processed.
    async fn pay(&self, url: &str) -> Result<bool, reqwest::Error> {
        let r = self.0.get(url).send().await?;
        let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(str::to_owned);
        let body = r.text().await?;
        let Some(at) = body.find("name=\"csrf\" value=\"") else {
            // No form: the session already has its payment (or an attempt in flight).
            return Ok(body.contains("id=\"state\""));
        };
        let csrf = body[at + 19..].split('"').next().unwrap_or_default().to_owned();
        let form = [("csrf", csrf.as_str()), ("card_number", PAYS), ("expiry", "12/34"), ("cvc", "123")];
        let r = self.0.post(url).header("cookie", cookie.unwrap_or_default()).form(&form).send().await?;
        Ok(r.status().as_u16() == 303)
    }
}

/// One row of the table: what a scenario did to one session type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub session_type: String,
    pub sessions: i64,
    pub charges: i64,
    pub duplicates: i64,
    pub lost: i64,
    pub unreported: i64,
    pub webhooks_missing: i64,
    pub dlq: i64,
    pub recovery_secs: f64,
}

/// What the invariants found, per session type.
#[derive(Debug)]
pub struct Verdict {
    pub rows: Vec<Row>,
    pub dlq_reasons: Vec<String>,
}

impl Verdict {
    pub fn assert_clean(&self, poison: usize) {
        for r in &self.rows {
            assert_eq!((r.duplicates, r.lost, r.unreported, r.webhooks_missing), (0, 0, 0, 0), "{r:?}");
        }
        assert_eq!(self.dlq_reasons.len(), poison, "the DLQs hold exactly the poison injected: {:?}", self.dlq_reasons);
        assert!(self.dlq_reasons.iter().all(|r| r.starts_with("invalid_json")), "{:?}", self.dlq_reasons);
    }

    /// Writes the rows where `make faults` collects them.
    pub fn record(&self) {
        let dir = results_dir().join("rows");
        std::fs::create_dir_all(&dir).unwrap();
        let name: String = self
            .rows
            .first()
            .map(|r| r.scenario.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect())
            .unwrap_or_default();
        std::fs::write(dir.join(format!("{name}.json")), serde_json::to_vec_pretty(&self.rows).unwrap()).unwrap();
    }
}

const TYPES: &[&str] = &["one_time", "first_in_series", "next_in_series", "scheduled"];

/// Waits (from `healed`) until every session has its outcome and every event
/// its delivery, then checks the invariants against the independent records.
pub async fn settle_and_check(fleet: &Fleet, load: &Load, scenario: &str, healed: Instant) -> Verdict {
    let sent = load.sent();
    let deadline = Instant::now() + PATIENCE;
    let c = fleet.env.pool.get().await.unwrap();
    while let Err(why) = load.settled(fleet).await {
        if Instant::now() > deadline {
            eprintln!("{scenario}: gave up waiting: {why}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let recovery = healed.elapsed().as_secs_f64();
    let missing_events = undelivered_events(fleet, load).await;
    let ledger = fleet.ledger_table().await;

    let mut rows = vec![];
    for ty in TYPES {
        // The scheduler's sessions are next_in_series without an upstream idempotency key of ours.
        let keys: Vec<String> = sent.commands.iter().filter(|(_, t)| *t == ty).map(|(k, _)| k.clone()).collect();
        let r = c
            .query_one(
                &format!("WITH s AS (
                     SELECT s.id, s.status, s.payment_outcome FROM payment_sessions s
                     WHERE s.merchant_id = $1 AND CASE WHEN $2 = 'scheduled' THEN s.id IN (SELECT payment_session_id FROM schedule_runs)
                                                       WHEN $2 = 'next_in_series' THEN s.type = 'next_in_series'
                                                            AND s.id NOT IN (SELECT payment_session_id FROM schedule_runs WHERE payment_session_id IS NOT NULL)
                                                       ELSE s.type = $2 END
                 ), charged AS (
                     SELECT a.session_id, count(*) AS n,
                            count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {ledger} v WHERE v.operation = 'void'
                                AND v.outcome = 'succeeded' AND v.idempotency_key LIKE 'void:' || a.id || ':%')) AS voided
                     FROM payment_attempts a JOIN {ledger} l ON l.idempotency_key = a.processor_idempotency_key
                     WHERE l.outcome = 'succeeded' AND a.session_id IN (SELECT id FROM s) GROUP BY a.session_id
                 )
                 SELECT (SELECT count(*) FROM s),
                        coalesce((SELECT sum(n) FROM charged), 0)::bigint,
                        (SELECT count(*) FROM charged WHERE n > 1),
                        (SELECT count(*) FROM s WHERE payment_outcome = 'paid' AND id NOT IN (SELECT session_id FROM charged)),
                        (SELECT count(*) FROM s JOIN charged ON charged.session_id = s.id
                         WHERE s.payment_outcome <> 'paid' AND charged.n > charged.voided)"),
                &[&MERCHANT, ty],
            )
            .await
            .unwrap();
        let sessions: i64 = r.get(0);
        let expected = if *ty == "scheduled" { sent.schedules } else { keys.len() };
        // Lost: a confirmed command (or due schedule) without exactly one session, or one that never got its outcome.
        let mut lost = (expected as i64 - sessions).max(0);
        for k in &keys {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND reply IS NOT NULL",
                    &[&MERCHANT, k],
                )
                .await
                .unwrap()
                .get(0);
            lost += (n != 1) as i64;
        }
        let unpaid: i64 = c
            .query_one(
                "SELECT count(*) FROM payment_sessions WHERE merchant_id = $1 AND (status = 'active' OR payment_outcome = 'pending')
                 AND CASE WHEN $2 = 'scheduled' THEN id IN (SELECT payment_session_id FROM schedule_runs) ELSE type = $2 END",
                &[&MERCHANT, ty],
            )
            .await
            .unwrap()
            .get(0);
        lost += unpaid;
        rows.push(Row {
            scenario: scenario.to_owned(),
            session_type: ty.to_string(),
            sessions,
            charges: r.get(1),
            duplicates: r.get(2),
            lost,
            unreported: r.get::<_, i64>(3) + r.get::<_, i64>(4),
            webhooks_missing: 0,
            dlq: 0,
            recovery_secs: (recovery * 10.0).round() / 10.0,
        });
    }
    let dlq_reasons = dead_letters(fleet).await;
    if let Some(first) = rows.first_mut() {
        first.webhooks_missing = missing_events.len() as i64;
        first.dlq = dlq_reasons.len() as i64;
    }
    Verdict { rows, dlq_reasons }
}

/// Events the fleet published for the merchant that the receiver never got.
async fn undelivered_events(fleet: &Fleet, load: &Load) -> Vec<String> {
    let c = fleet.env.pool.get().await.unwrap();
    let published: Vec<String> = c
        .query(
            "SELECT DISTINCT message_id FROM sent_messages WHERE exchange = 'payment_sessions.events' AND headers ->> 'merchant-id' = $1",
            &[&MERCHANT],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let got: HashSet<String> =
        load.receiver.received().iter().filter_map(|r| r.headers.get("webhook-id")?.to_str().ok().map(str::to_owned)).collect();
    published.into_iter().filter(|id| !got.contains(id)).collect()
}

/// Every dead letter in every DLQ, as `code: reason (queue)`, one per message
/// id: dead-lettering is at least once, like every publish from the outbox.
async fn dead_letters(fleet: &Fleet) -> Vec<String> {
    let conn = ps_runtime::broker::connect(&fleet.env.amqp_url, "faults-dlq", &Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut found = BTreeMap::new();
    for spec in topology::QUEUES {
        let q = fleet.env.names.dead_letter_queue(spec);
        while let Ok(Some(msg)) = ch.basic_get(q.as_str().into(), lapin::options::BasicGetOptions { no_ack: false }).await {
            let h = msg.delivery.properties.headers().clone();
            let code = ps_runtime::message::header_str(h.as_ref(), "x-dead-letter-code").unwrap_or_default();
            let reason = ps_runtime::message::header_str(h.as_ref(), "x-dead-letter-reason").unwrap_or_default();
            let id = msg.delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
            found.insert(id, format!("{code}: {} ({})", reason.chars().take(80).collect::<String>(), spec.name));
        }
    }
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    found.into_values().collect()
}

/// Markdown for a set of rows, as `make faults` prints and writes it.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | session type | sessions | charges | duplicates | lost | unreported | webhooks missing | DLQ | recovery (s) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.session_type,
            r.sessions,
            r.charges,
            r.duplicates,
            r.lost,
            r.unreported,
            r.webhooks_missing,
            r.dlq,
            r.recovery_secs
        ));
    }
    out
}
