//! Test harness: each test gets its own database and its own broker name
//! prefix on the real PostgreSQL and RabbitMQ, runs the real services' code,
//! and removes everything it made when it ends, even if it panics.

pub mod bench;
pub mod browser;
pub mod faults;
pub mod peers;
pub mod receiver;
pub mod stripe;
pub mod tls;

use deadpool_postgres::Pool;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection};
use ps_contract::routing::{exchange, header};
use ps_runtime::message::header_str;
use ps_runtime::service::Running;
use ps_runtime::topology::{self, Names, QueueSpec};
use ps_runtime::{Config, Env};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);
/// The key every test fleet seals its secrets with (`PS_SECRET_KEYS`).
pub const SECRET_KEYS: &str = "test1:dGVzdC1rZXktMzItYnl0ZXMtbG9uZy0wMTIzNDU2Nzg=";

pub fn test_keys() -> ps_runtime::sealing::Keyring {
    ps_runtime::sealing::Keyring::parse(SECRET_KEYS).unwrap()
}

/// The checkout↔vault token every test fleet shares.
pub const VAULT_TOKEN: &str = "test-vault-token-0123456789abcdef0123456789";
const DELIVERY_LIMIT: u32 = 10;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| ps_runtime::config::DEFAULT_AMQP_URL.to_owned())
}

/// Where test databases are created from.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` naming database `db` instead, its parameters kept
/// (`?target_session_attrs=read-write` on a URL of several hosts).
fn with_database(url: &str, db: &str) -> String {
    let (url, query) = url.split_once('?').map_or((url, None), |(u, q)| (u, Some(q)));
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A reply as the upstream sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Value,
    pub replayed: bool,
}

impl Reply {
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

/// A command to publish on the commands exchange.
pub struct Command {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub message_id: Option<String>,
    pub reply: bool,
    /// The AMQP user_id: the harness's broker user unless changed.
    pub user_id: Option<String>,
    /// Another `reply_to` than the harness's reply queue.
    pub reply_to: Option<String>,
    /// Another correlation id than a fresh one.
    pub correlation_id: Option<String>,
}

impl Command {
    pub fn new(routing_key: &str, body: &Value) -> Command {
        Command {
            routing_key: routing_key.to_owned(),
            body: serde_json::to_vec(body).unwrap(),
            headers: vec![],
            message_id: Some(uuid::Uuid::new_v4().to_string()),
            reply: true,
            user_id: ps_runtime::broker::broker_user(&amqp_url()),
            reply_to: None,
            correlation_id: None,
        }
    }

    /// A `payment_session.create` from `merchant` with a fresh idempotency key.
    pub fn create(merchant: &str, body: &Value) -> Command {
        Command::new("payment_session.create", body)
            .header(header::MERCHANT_ID, merchant)
            .header(header::IDEMPOTENCY_KEY, &uuid::Uuid::new_v4().to_string())
    }

    pub fn raw_body(mut self, body: &[u8]) -> Command {
        self.body = body.to_vec();
        self
    }

    /// Sets (or replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Command {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Command {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    pub fn message_id(mut self, id: &str) -> Command {
        self.message_id = Some(id.to_owned());
        self
    }

    pub fn user_id(mut self, user: Option<&str>) -> Command {
        self.user_id = user.map(str::to_owned);
        self
    }

    /// Replies go to `queue` (which may not exist: a client that went away).
    pub fn reply_to(mut self, queue: &str) -> Command {
        self.reply_to = Some(queue.to_owned());
        self
    }

    pub fn no_reply(mut self) -> Command {
        self.reply = false;
        self
    }

    pub fn without_message_id(mut self) -> Command {
        self.message_id = None;
        self
    }

    /// A correlation id of the sender's choosing (a forger's, say).
    pub fn correlation_id(mut self, id: &str) -> Command {
        self.correlation_id = Some(id.to_owned());
        self
    }

    /// Its AMQP properties, correlated by `corr`; replies to `reply_queue` unless told otherwise.
    pub fn properties(&self, corr: &str, reply_queue: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in &self.headers {
            headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(LongString::from(v.as_str())));
        }
        let mut props = BasicProperties::default().with_delivery_mode(2).with_headers(headers).with_correlation_id(corr.into());
        if let Some(user) = &self.user_id {
            props = props.with_user_id(user.as_str().into());
        }
        if let Some(id) = &self.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        if let Some(q) = &self.reply_to {
            props = props.with_reply_to(q.as_str().into());
        } else if self.reply {
            props = props.with_reply_to(reply_queue.into());
        }
        props
    }
}

pub struct TestEnv {
    pub prefix: String,
    /// The broker URL services of this test use (guest, on its vhost).
    pub amqp_url: String,
    /// Set when the test runs in a vhost of its own (no name prefix then).
    pub vhost: Option<String>,
    pub names: Names,
    pub db_name: String,
    pub database_url: String,
    /// Where its database was created, and is dropped from.
    admin_url: String,
    pub pool: Pool,
    conn: Connection,
    channel: Channel,
    reply_queue: String,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    reply_arrived: Arc<Notify>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    stops: Vec<CancellationToken>,
    running: Vec<Running>,
    vault_url: Option<String>,
    /// Where the gateway takes the processor's events (PROCESSOR=stripe).
    pub processor_events: Option<std::net::SocketAddr>,
    delivery_limit: Option<u32>,
    seen_events: Mutex<Vec<Value>>,
    held_events: Mutex<Vec<Value>>,
    children: Vec<Child>,
    cleaned: bool,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::create(false, Some(DELIVERY_LIMIT)).await
    }

    /// Queues declared without a delivery limit, as `AMQP_DELIVERY_LIMIT=policy`
    /// runs them: a RabbitMQ policy sets it.
    pub async fn with_limits_from_policy() -> TestEnv {
        TestEnv::create(false, None).await
    }

    /// With another `x-delivery-limit` on the queues (it is fixed when a queue is declared).
    pub async fn with_delivery_limit(limit: u32) -> TestEnv {
        TestEnv::create(false, Some(limit)).await
    }

    /// A test in a RabbitMQ vhost of its own, with the real, unprefixed names
    /// (for checking permissions written against them). Needs `rabbitmqctl`.
    pub async fn in_vhost() -> TestEnv {
        TestEnv::create(true, Some(DELIVERY_LIMIT)).await
    }

    /// In a vhost of its own, queues declared as `AMQP_DELIVERY_LIMIT=policy` runs them.
    pub async fn in_vhost_limits_from_policy() -> TestEnv {
        TestEnv::create(true, None).await
    }

    /// A test whose database lives on another PostgreSQL (`admin_url`, which
    /// may list several hosts): the failover scenario's primary and standby.
    pub async fn on_postgres(admin_url: &str, delivery_limit: u32) -> TestEnv {
        TestEnv::create_on(admin_url.to_owned(), amqp_url(), false, Some(delivery_limit)).await
    }

    /// A test on another broker (`amqp`, which may list a cluster's nodes):
    /// the cluster scenarios' three nodes.
    pub async fn on_broker(amqp: &str, delivery_limit: u32) -> TestEnv {
        TestEnv::create_on(admin_database_url(), amqp.to_owned(), false, Some(delivery_limit)).await
    }

    async fn create(own_vhost: bool, delivery_limit: Option<u32>) -> TestEnv {
        TestEnv::create_on(admin_database_url(), amqp_url(), own_vhost, delivery_limit).await
    }

    async fn create_on(admin: String, broker: String, own_vhost: bool, delivery_limit: Option<u32>) -> TestEnv {
        // Service logs go to the test's captured output; RUST_LOG widens them.
        ps_runtime::telemetry::init_for_tests();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let (prefix, vhost, amqp) = if own_vhost {
            let vhost = format!("t{id}");
            rabbitmqctl(&["add_vhost", &vhost]);
            rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
            (String::new(), Some(vhost.clone()), vhost_url(&broker, &vhost))
        } else {
            (format!("t{id}."), None, broker)
        };
        let names = Names::new(prefix.clone());
        let db_name = format!("ps_test_{id}");

        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e} (run `make services`)"));
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {db_name}")).await.expect("create test database");
        let database_url = with_database(&admin, &db_name);
        let pool = ps_runtime::db::pool(&database_url, 8, &Default::default()).unwrap();
        ps_runtime::db::migrate(&pool).await.expect("migrate test database");
        // As `make run` does in local mode: the broker user tests publish as may act for every merchant.
        let c = pool.get().await.unwrap();
        ps_store::grants::grant(&c, "guest", ps_store::grants::EVERY_MERCHANT).await.unwrap();
        drop(c);
        // As a whole local fleet leaves it: every service publishes as guest, so
        // a test may stand in for a service it does not start.
        for service in ps_contract::routing::service::ALL {
            ps_runtime::members::register(&pool, service, "guest").await.unwrap();
        }

        let conn = ps_runtime::broker::connect(&amqp, "test-client", &Default::default())
            .await
            .unwrap_or_else(|e| panic!("cannot reach RabbitMQ at {amqp}: {e} (run `make services`)"));
        let channel = conn.create_channel().await.unwrap();
        topology::declare(&channel, &names, delivery_limit).await.expect("declare topology");
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

        // Replies: an exclusive, server-named queue (the fleet answers only into
        // RabbitMQ's own reply queues) that vanishes with this connection.
        let replies = Arc::new(Mutex::new(HashMap::new()));
        let reply_arrived = Arc::new(Notify::new());
        let reply_queue;
        {
            let ch = conn.create_channel().await.unwrap();
            let q = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            reply_queue = ch.queue_declare(ShortString::from(""), q, FieldTable::default()).await.unwrap().name().as_str().to_owned();
            let mut consumer = ch
                .basic_consume(
                    ShortString::from(reply_queue.as_str()),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let (replies, arrived) = (replies.clone(), reply_arrived.clone());
            tokio::spawn(async move {
                let _keep = ch;
                while let Some(Ok(d)) = consumer.next().await {
                    let corr = d.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default();
                    let replayed = header_str(d.properties.headers().as_ref(), header::IDEMPOTENT_REPLAYED).as_deref() == Some("true");
                    let body = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                    replies.lock().unwrap().insert(corr, Reply { body, replayed });
                    arrived.notify_waiters();
                }
            });
        }

        // Events: every event the fleet publishes, in order.
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let ch = conn.create_channel().await.unwrap();
            let q = format!("{prefix}test.events");
            let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            ch.queue_declare(ShortString::from(q.as_str()), opts, FieldTable::default()).await.unwrap();
            ch.queue_bind(
                ShortString::from(q.as_str()),
                ShortString::from(names.exchange(exchange::EVENTS).as_str()),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let mut consumer = ch
                .basic_consume(
                    ShortString::from(q.as_str()),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            tokio::spawn(async move {
                let _keep = ch;
                while let Some(Ok(d)) = consumer.next().await {
                    if tx.send(serde_json::from_slice(&d.data).unwrap_or(Value::Null)).is_err() {
                        break;
                    }
                }
            });
        }

        TestEnv {
            prefix,
            amqp_url: amqp,
            vhost,
            names,
            db_name,
            admin_url: admin,
            database_url,
            pool,
            conn,
            channel,
            reply_queue,
            replies,
            reply_arrived,
            events: tokio::sync::Mutex::new(rx),
            stops: vec![],
            running: vec![],
            vault_url: None,
            processor_events: None,
            delivery_limit,
            seen_events: Mutex::new(vec![]),
            held_events: Mutex::new(vec![]),
            children: vec![],
            cleaned: false,
        }
    }

    /// The environment a service of this test runs with.
    pub fn service_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AMQP_URL", self.amqp_url.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_NAME_PREFIX", self.prefix.clone()),
            ("HEALTH_ADDR", "127.0.0.1:0".to_owned()),
            ("AMQP_PREFETCH", "16".to_owned()),
            ("DATABASE_POOL_SIZE", "8".to_owned()),
            ("CHECKOUT_BASE_URL", "http://127.0.0.1:8080".to_owned()),
            ("AMQP_DELIVERY_LIMIT", self.delivery_limit.map_or_else(|| "policy".to_owned(), |l| l.to_string())),
            ("VAULT_TOKEN", VAULT_TOKEN.to_owned()),
            ("PS_SECRET_KEYS", SECRET_KEYS.to_owned()),
        ]
    }

    pub fn env(&self) -> Env {
        self.env_with(&[])
    }

    /// The service environment with some variables replaced.
    pub fn env_with(&self, overrides: &[(&'static str, &str)]) -> Env {
        let mut pairs = self.service_env();
        for (k, v) in overrides {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v.to_string()));
        }
        Env::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
    }

    pub fn config(&self) -> Config {
        Config::from_env(&self.env(), 0).unwrap()
    }

    /// Starts session-intake in this process; returns its health address.
    pub async fn start_intake(&mut self) -> std::net::SocketAddr {
        self.start_intake_with(&[]).await
    }

    pub async fn start_intake_with(&mut self, overrides: &[(&'static str, &str)]) -> std::net::SocketAddr {
        let stop = CancellationToken::new();
        let config = session_intake::IntakeConfig::from_env(&self.env_with(overrides)).unwrap();
        let running = session_intake::start(config, stop.clone()).await.expect("intake starts");
        let addr = running.health_addr;
        self.stops.push(stop);
        self.running.push(running);
        addr
    }

    /// Starts payment-gateway (with its vault on a free port); returns the vault's URL.
    pub async fn start_gateway(&mut self, overrides: &[(&'static str, &str)]) -> String {
        let stop = CancellationToken::new();
        let mut all = vec![("VAULT_ADDR", "127.0.0.1:0")];
        all.extend_from_slice(overrides);
        let config = payment_gateway::GatewayConfig::from_env(&self.env_with(&all)).unwrap();
        let running = payment_gateway::start(config, stop.clone()).await.expect("gateway starts");
        let url = format!("http://{}", running.vault_addr);
        self.processor_events = running.events_addr;
        self.stops.push(stop);
        self.running.push(running.service);
        self.vault_url = Some(url.clone());
        url
    }

    pub async fn start_lifecycle(&mut self, overrides: &[(&'static str, &str)]) {
        let stop = CancellationToken::new();
        let mut all = vec![("EXPIRY_SWEEP_INTERVAL_MS", "50")];
        all.extend_from_slice(overrides);
        let config = session_lifecycle::LifecycleConfig::from_env(&self.env_with(&all)).unwrap();
        let running = session_lifecycle::start(config, stop.clone()).await.expect("lifecycle starts");
        self.stops.push(stop);
        self.running.push(running);
    }

    /// Starts the checkout against the running gateway's vault. Returns its base URL,
    /// which is also what intake must put in `session_url`s.
    pub async fn start_checkout(&mut self) -> String {
        self.start_checkout_with(&[]).await
    }

    pub async fn start_checkout_with(&mut self, overrides: &[(&'static str, &str)]) -> String {
        let stop = CancellationToken::new();
        let vault = self.vault_url.clone().expect("start the gateway before the checkout");
        let mut all = vec![("CHECKOUT_ADDR", "127.0.0.1:0"), ("VAULT_URL", vault.as_str())];
        all.extend_from_slice(overrides);
        let config = checkout::CheckoutConfig::from_env(&self.env_with(&all)).unwrap();
        let running = checkout::start(config, stop.clone()).await.expect("checkout starts");
        let url = format!("http://{}", running.addr);
        self.stops.push(stop);
        self.running.push(running.service);
        url
    }

    /// Starts payments-api (the HTTP API); returns its base URL.
    pub async fn start_api(&mut self, overrides: &[(&'static str, &str)]) -> String {
        let stop = CancellationToken::new();
        let mut all = vec![("API_ADDR", "127.0.0.1:0")];
        all.extend_from_slice(overrides);
        let config = payments_api::ApiConfig::from_env(&self.env_with(&all)).unwrap();
        let running = payments_api::start(config, stop.clone()).await.expect("payments-api starts");
        let url = format!("http://{}", running.addr);
        self.stops.push(stop);
        self.running.push(running.service);
        url
    }

    /// Starts webhook-dispatch in local mode (plain http, loopback receivers) unless `overrides` says otherwise.
    pub async fn start_webhooks(&mut self, overrides: &[(&'static str, &str)]) {
        let stop = CancellationToken::new();
        // Local mode: the tests' receivers are plain http on loopback.
        let mut all = vec![("WEBHOOK_LOCAL_MODE", "true"), ("WEBHOOK_POLL_MS", "50"), ("WEBHOOK_TIMEOUT_MS", "5000")];
        all.extend_from_slice(overrides);
        let config = webhook_dispatch::WebhookConfig::from_env(&self.env_with(&all)).unwrap();
        let running = webhook_dispatch::start(config, stop.clone()).await.expect("webhook-dispatch starts");
        self.stops.push(stop);
        self.running.push(running);
    }

    /// Starts the charge-scheduler on `clock`; returns what wakes its clock loop
    /// (call it after moving the clock).
    pub async fn start_scheduler(
        &mut self,
        overrides: &[(&'static str, &str)],
        clock: std::sync::Arc<charge_scheduler::clock::ManualClock>,
    ) -> std::sync::Arc<Notify> {
        let stop = CancellationToken::new();
        let mut all = vec![("SCHEDULER_POLL_MS", "50")];
        all.extend_from_slice(overrides);
        let config = charge_scheduler::SchedulerConfig::from_env(&self.env_with(&all)).unwrap();
        let running = charge_scheduler::start(config, clock, stop.clone()).await.expect("charge-scheduler starts");
        self.stops.push(stop);
        self.running.push(running.service);
        running.wake
    }

    /// The whole paying fleet in this process: gateway, lifecycle, checkout, and an
    /// intake whose `session_url`s point at that checkout.
    pub async fn start_fleet(&mut self) -> String {
        self.start_gateway(&[]).await;
        self.start_lifecycle(&[]).await;
        let checkout = self.start_checkout().await;
        self.start_intake_with(&[("CHECKOUT_BASE_URL", &checkout)]).await;
        checkout
    }

    /// The next event of `event_type` about `object_id`. Events about other
    /// things are kept for later calls, so waits may come in any order.
    pub async fn event_about(&self, event_type: &str, object_id: &str) -> Value {
        let matches = |e: &Value| {
            e["type"] == event_type
                && (e["data"]["id"] == object_id || e["data"]["session_id"] == object_id || e["data"]["payment_session_id"] == object_id)
        };
        {
            let mut held = self.held_events.lock().unwrap();
            if let Some(i) = held.iter().position(matches) {
                return held.remove(i);
            }
        }
        let mut rx = self.events.lock().await;
        let wait = async {
            loop {
                let e = rx.recv().await.expect("event stream open");
                self.seen_events.lock().unwrap().push(e.clone());
                if matches(&e) {
                    return e;
                }
                self.held_events.lock().unwrap().push(e);
            }
        };
        tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no {event_type} about {object_id} within {WAIT:?}"))
    }

    /// Types of every event seen so far (by `event_about`) whose data is `object_id`, in order.
    pub fn event_types_about(&self, object_id: &str) -> Vec<String> {
        self.seen_events
            .lock()
            .unwrap()
            .iter()
            // A payment's events name its session (refunds' too, but they are not the session's own).
            .filter(|e| {
                e["data"]["id"] == object_id
                    || (e["data"]["payment_session_id"] == object_id && e["type"].as_str().is_some_and(|t| t.starts_with("payment.")))
            })
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Stops every in-process service gracefully and waits for them.
    pub async fn stop_services(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
        for r in self.running.drain(..) {
            tokio::time::timeout(WAIT, r.stopped()).await.expect("service stops within the deadline");
        }
        self.stops.clear();
    }

    /// Runs a service binary of the workspace as a child process.
    pub fn spawn_binary(&mut self, name: &str, extra_env: &[(&str, &str)]) -> &mut Child {
        self.spawn_binary_logging(name, extra_env, None)
    }

    /// As `spawn_binary`, its stdout and stderr (the JSON logs) written to `log`.
    pub fn spawn_binary_logging(&mut self, name: &str, extra_env: &[(&str, &str)], log: Option<&std::path::Path>) -> &mut Child {
        let path = binary_path(name);
        let mut cmd = std::process::Command::new(&path);
        cmd.env_clear().env("RUST_LOG", "warn").env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in self.service_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        if let Some(log) = log {
            let file = std::fs::File::create(log).unwrap();
            cmd.stdout(file.try_clone().unwrap()).stderr(file);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// Sends SIGTERM to a spawned child and waits (without blocking the runtime) for it to exit.
    pub async fn terminate_child(&mut self, pid: u32) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.wait_child(pid).await
    }

    /// Waits for a spawned child to exit.
    pub async fn wait_child(&mut self, pid: u32) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.try_wait_child(pid) {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "process {pid} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status of a spawned child, if it has exited.
    pub fn try_wait_child(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.children.iter_mut().find(|c| c.id() == pid)?.try_wait().ok().flatten()
    }

    /// Runs the real `psctl` against this test's broker and database; returns its output.
    pub fn psctl(&self, args: &[&str]) -> String {
        self.psctl_with(&[], args)
    }

    /// `psctl` without blocking the runtime, for commands the in-process services must answer.
    pub async fn psctl_async(&self, args: &[&str]) -> String {
        let out = self.psctl_output(args).await;
        assert!(out.status.success(), "psctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `psctl`'s whole result, for a command expected to fail.
    pub async fn psctl_output(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(binary_path("psctl"))
            .args(args)
            .env("AMQP_URL", &self.amqp_url)
            .env("AMQP_NAME_PREFIX", &self.prefix)
            .env("DATABASE_URL", &self.database_url)
            .env("PS_SECRET_KEYS", SECRET_KEYS)
            .output()
            .await
            .unwrap()
    }

    /// `psctl`'s whole result with some variables replaced (another broker user, say), without blocking the runtime.
    pub async fn psctl_with_output(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(binary_path("psctl"));
        cmd.args(args)
            .env("AMQP_URL", &self.amqp_url)
            .env("AMQP_NAME_PREFIX", &self.prefix)
            .env("DATABASE_URL", &self.database_url)
            .env("PS_SECRET_KEYS", SECRET_KEYS);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.unwrap()
    }

    /// A durable queue of the test's own, removed with the test's broker objects only if prefixed.
    pub async fn declare_queue(&self, name: &str) {
        let ch = self.conn.create_channel().await.unwrap();
        let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        ch.queue_declare(ShortString::from(name), opts, FieldTable::default()).await.unwrap();
        // Exclusive to the harness's connection: the channel may close, the queue stays with it.
        let _ = ch.close(200, "done".into()).await;
    }

    /// `psctl` with some variables replaced (another `PS_SECRET_KEYS`, say).
    pub fn psctl_with(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let mut cmd = std::process::Command::new(binary_path("psctl"));
        cmd.args(args)
            .env("AMQP_URL", &self.amqp_url)
            .env("AMQP_NAME_PREFIX", &self.prefix)
            .env("DATABASE_URL", &self.database_url)
            .env("PS_SECRET_KEYS", SECRET_KEYS);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "psctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Publishes on the commands exchange; returns the correlation id.
    pub async fn send(&self, cmd: Command) -> String {
        self.send_many(vec![cmd]).await.remove(0)
    }

    /// Publishes all, then waits for all confirms (one round trip, not one each).
    pub async fn send_many(&self, cmds: Vec<Command>) -> Vec<String> {
        let mut corrs = Vec::with_capacity(cmds.len());
        let mut confirms = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let (corr, confirm) = self.publish_command(cmd).await;
            corrs.push(corr);
            confirms.push(confirm);
        }
        for c in confirms {
            let confirm = c.await.unwrap();
            assert!(matches!(confirm, Confirmation::Ack(None)), "command was not routed: {confirm:?}");
        }
        corrs
    }

    async fn publish_command(&self, cmd: Command) -> (String, lapin::PublisherConfirm) {
        let corr = cmd.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let props = cmd.properties(&corr, &self.reply_queue);
        let exchange = self.names.exchange(exchange::COMMANDS);
        let confirm = self
            .channel
            .basic_publish(
                exchange.as_str().into(),
                cmd.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &cmd.body,
                props,
            )
            .await
            .unwrap();
        (corr, confirm)
    }

    /// Publishes raw messages on one exchange, pipelined: (routing key, body, message id, merchant).
    pub async fn publish_many(&self, logical_exchange: &str, msgs: &[(String, Vec<u8>, String, String)]) {
        let ex = self.names.exchange(logical_exchange);
        let mut confirms = Vec::with_capacity(msgs.len());
        for (rk, body, id, merchant) in msgs {
            let mut headers = FieldTable::default();
            headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString(LongString::from(merchant.as_str())));
            let mut props = BasicProperties::default().with_delivery_mode(2).with_message_id(id.as_str().into()).with_headers(headers);
            if let Some(user) = ps_runtime::broker::broker_user(&self.amqp_url) {
                props = props.with_user_id(user.as_str().into());
            }
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            confirms.push(self.channel.basic_publish(ex.as_str().into(), rk.as_str().into(), opts, body, props).await.unwrap());
        }
        for c in confirms {
            assert!(matches!(c.await.unwrap(), Confirmation::Ack(None)), "not routed");
        }
    }

    /// Publishes a raw message on one of the fleet's exchanges, as a service would.
    pub async fn publish(&self, logical_exchange: &str, routing_key: &str, body: &[u8], message_id: &str, merchant: &str) {
        let mut headers = FieldTable::default();
        headers.insert(header::MERCHANT_ID.into(), AMQPValue::LongString(LongString::from(merchant)));
        let props = BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into()).with_headers(headers);
        // As the service it stands in for: every fleet service publishes as the harness's broker user.
        let props = match ps_runtime::broker::broker_user(&self.amqp_url) {
            Some(user) => props.with_user_id(user.as_str().into()),
            None => props,
        };
        let ex = self.names.exchange(logical_exchange);
        let confirm = self
            .channel
            .basic_publish(
                ex.as_str().into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(None)), "not routed: {confirm:?}");
    }

    /// A session as stored, as the wire object.
    pub async fn session(&self, id: &str) -> Value {
        let c = self.pool.get().await.unwrap();
        let s = ps_store::sessions::get(&c, id).await.unwrap().expect("session exists");
        serde_json::to_value(&s.session).unwrap()
    }

    pub async fn reply(&self, correlation_id: &str) -> Reply {
        self.reply_within(correlation_id, WAIT).await
    }

    /// As `reply`, for an answer that takes longer (a large batch).
    pub async fn reply_within(&self, correlation_id: &str, limit: Duration) -> Reply {
        let wait = async {
            loop {
                let arrived = self.reply_arrived.notified();
                if let Some(r) = self.replies.lock().unwrap().get(correlation_id) {
                    return r.clone();
                }
                arrived.await;
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| panic!("no reply for {correlation_id} within {limit:?}"))
    }

    /// Sends and waits for the reply.
    pub async fn call(&self, cmd: Command) -> Reply {
        let corr = self.send(cmd).await;
        self.reply(&corr).await
    }

    /// The next event published, in order.
    pub async fn next_event(&self) -> Value {
        let mut rx = self.events.lock().await;
        tokio::time::timeout(WAIT, rx.recv()).await.expect("an event within the deadline").expect("event stream open")
    }

    /// The next message to land in `spec`'s dead-letter queue.
    pub async fn next_dead_letter(&self, spec: &QueueSpec) -> (Vec<u8>, FieldTable) {
        self.next_message(&self.names.dead_letter_queue(spec)).await
    }

    /// Waits for the next dead letter of `spec` and leaves it in place.
    pub async fn peek_dead_letter(&self, spec: &QueueSpec) -> (Vec<u8>, FieldTable) {
        let ch = self.conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                ShortString::from(self.names.dead_letter_queue(spec).as_str()),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let d = tokio::time::timeout(WAIT, consumer.next()).await.expect("a dead letter within the deadline").unwrap().unwrap();
        d.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
        let _ = ch.close(200, "done".into()).await;
        (d.data, d.properties.headers().clone().unwrap_or_default())
    }

    /// Takes the next message from `queue` (waiting for one), acking it.
    pub async fn next_message(&self, queue: &str) -> (Vec<u8>, FieldTable) {
        let ch = self.conn.create_channel().await.unwrap();
        let mut consumer =
            ch.basic_consume(ShortString::from(queue), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
        let d = tokio::time::timeout(WAIT, consumer.next()).await.expect("a message within the deadline").unwrap().unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        let _ = ch.close(200, "done".into()).await;
        (d.data, d.properties.headers().clone().unwrap_or_default())
    }

    /// Empties a queue: messages lost, as a broker failure or an operator's mistake would lose them.
    pub async fn purge(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let n = ch.queue_purge(ShortString::from(queue), lapin::options::QueuePurgeOptions::default()).await.unwrap();
        let _ = ch.close(200, "done".into()).await;
        n
    }

    /// Messages ready in a queue (not counting ones a consumer holds).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(ShortString::from(queue), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        let _ = ch.close(200, "done".into()).await;
        q.message_count()
    }

    /// The bodies of the messages sent with `routing_key` (by either path:
    /// straight after a consumer's commit, or through the outbox), oldest first.
    /// Sealed ones are left out.
    pub async fn sent_bodies(&self, routing_key: &str) -> Vec<Vec<u8>> {
        use base64::Engine;
        let rows = self
            .pool
            .get()
            .await
            .unwrap()
            .query("SELECT body_base64 FROM sent_messages WHERE routing_key = $1 AND NOT sealed ORDER BY created_at", &[&routing_key])
            .await
            .unwrap();
        rows.iter().map(|r| base64::engine::general_purpose::STANDARD.decode(r.get::<_, &str>(0)).unwrap()).collect()
    }

    /// Waits until `queue` holds `n` ready messages (a dead letter is
    /// published after the error reply that announces it).
    pub async fn wait_for_ready(&self, queue: &str, n: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.ready_count(queue).await != n {
            assert!(tokio::time::Instant::now() < deadline, "{queue} never held {n} messages");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `sql` (a count) reaches at least `n`; returns it.
    pub async fn wait_for_count(&self, sql: &str, n: i64) -> i64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.count(sql).await;
            if c >= n {
                return c;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sql} stayed at {c}, below {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Stops services and removes the database and every broker object of this test.
    pub async fn finish(mut self) {
        self.stop_services().await;
        self.cleanup_blocking();
    }

    fn cleanup_blocking(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        for s in &self.stops {
            s.cancel();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Closed before the database is dropped under them, which would log each as a connection error.
        self.pool.close();
        let (names, db, vhost, admin) = (self.names.clone(), self.db_name.clone(), self.vhost.clone(), self.admin_url.clone());
        // A runtime of its own: this also runs from Drop, inside the test's runtime.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(remove_everything(names, db, vhost, admin))
        })
        .join();
        if let Err(e) = done {
            eprintln!("test cleanup failed: {e:?}");
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup_blocking();
    }
}

async fn remove_everything(names: Names, db: String, vhost: Option<String>, admin: String) {
    if let Some(v) = vhost {
        rabbitmqctl(&["delete_vhost", &v]);
    } else if let Ok(conn) = ps_runtime::broker::connect(&amqp_url(), "test-cleanup", &Default::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            for q in names.all_queues() {
                let _ = ch.queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default()).await;
            }
            for e in names.all_exchanges() {
                let _ = ch.exchange_delete(ShortString::from(e.as_str()), ExchangeDeleteOptions::default()).await;
            }
            let _ = ch.close(200, "done".into()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    if let Ok((client, connection)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

/// Fails unless `instance` is valid under the published schema `name`
/// (`shared/contract/schemas/{name}.json`).
pub fn assert_schema(name: &str, instance: &Value) {
    let path = format!("{}/../shared/contract/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not a valid {name}: {errors:?}\n{instance}");
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).await.unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// As `http_get`, for a server that may not be listening (yet, or any more).
pub async fn try_http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A loopback port free right now, for a child process to listen on.
///
/// Chosen below Linux's ephemeral range (32768–60999): a port the kernel
/// hands out for `bind(0)` is also one it may give the next outgoing
/// connection, and with a suite's worth of connections to PostgreSQL and
/// RabbitMQ one did take a checkout's port before the checkout bound it.
/// Each test process walks the range from a random start, so concurrent
/// tests rarely try the same port, and the bind proves it free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % SPAN));
    for _ in 0..SPAN {
        let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free in {LOW}..{}", LOW + SPAN)
}

/// Waits, checking `cond` between short pauses, until it holds or `WAIT` passes.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes, from the broker's side, every connection whose name contains `needle`,
/// as a broker restart or a network cut would. Returns how many were closed.
pub fn close_broker_connections(needle: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "--no-table-headers", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs (the resilience tests need the local broker's CLI)");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(needle)) {
        let pid = line.split('\t').next().unwrap_or_default();
        let ok = std::process::Command::new("rabbitmqctl").args(["-q", "close_connection", pid, "test: connection cut"]).status().unwrap();
        assert!(ok.success(), "close_connection {pid}");
        closed += 1;
    }
    closed
}

/// Runs `rabbitmqctl` on the local broker (the tests that need it run as root, like CI).
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `url` pointed at `vhost`, with other credentials if given.
pub fn vhost_url(url: &str, vhost: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("AMQP URL with a vhost path");
    format!("{base}/{vhost}")
}

/// A workspace binary, built by `cargo build --bins` beside the test executable.
pub fn binary_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)", path.display());
    path
}

/// Inserts a customer with a saved card (4242…) and a mandate over it, as a
/// completed first_in_series leaves them. Returns (customer_id, payment_method_id, mandate_id).
pub async fn seed_mandate(pool: &Pool, merchant: &str, terms: Value, card_exp: (i32, i32), off_session: bool) -> (String, String, String) {
    seed_mandate_with_card(pool, merchant, terms, "4242424242424242", card_exp, off_session).await
}

/// As `seed_mandate`, with the vault holding `pan` for the saved method.
pub async fn seed_mandate_with_card(
    pool: &Pool,
    merchant: &str,
    terms: Value,
    pan: &str,
    card_exp: (i32, i32),
    off_session: bool,
) -> (String, String, String) {
    let token = format!("tok_seed_{}", uuid::Uuid::new_v4().simple());
    use ps_contract::ids::{CustomerId, MandateId, PaymentMethodId};
    let (cus, pm, md) = (CustomerId::generate(), PaymentMethodId::generate(), MandateId::generate());
    let c = pool.get().await.unwrap();
    c.execute("INSERT INTO customers (id, merchant_id, name, email) VALUES ($1, $2, 'Bo', 'bo@example.com')", &[&cus.as_str(), &merchant])
        .await
        .unwrap();
    let usage = if off_session { "off_session" } else { "on_session" };
    c.execute(
        "INSERT INTO payment_methods (id, merchant_id, customer_id, usage, card_brand, card_last4, exp_month, exp_year, vault_token)
         VALUES ($1, $2, $3, $4, 'visa', $7, $5, $6, $8)",
        &[&pm.as_str(), &merchant, &cus.as_str(), &usage, &card_exp.0, &card_exp.1, &&pan[pan.len() - 4..], &token],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO vault_cards (token, pan_sealed, brand, last4, exp_month, exp_year) VALUES ($1, $2, 'visa', $3, $4, $5)",
        &[
            &token,
            &test_keys().seal_str(&ps_runtime::sealing::At::card_number(&token), pan),
            &&pan[pan.len() - 4..],
            &card_exp.0,
            &card_exp.1,
        ],
    )
    .await
    .unwrap();
    if off_session {
        c.execute(
            "INSERT INTO mandates (id, merchant_id, customer_id, payment_method_id, status, terms) VALUES ($1, $2, $3, $4, 'active', $5)",
            &[&md.as_str(), &merchant, &cus.as_str(), &pm.as_str(), &terms],
        )
        .await
        .unwrap();
    }
    (cus.to_string(), pm.to_string(), md.to_string())
}

/// Seeds `n` pending deliveries for `endpoint` of `merchant`, all due and older
/// than anything else: a backlog that endpoint has not worked off.
pub async fn seed_webhook_backlog(pool: &Pool, merchant: &str, endpoint: &str, n: usize) {
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO webhook_events (id, merchant_id, type, payload, created_at)
                 SELECT 'evt_backlog_' || g, '{merchant}', 'payment_session.updated', '{{}}'::bytea, now() - interval '1 hour'
                 FROM generate_series(1, {n}) g;
             INSERT INTO webhook_deliveries (event_id, endpoint_id, status, next_attempt_at)
                 SELECT 'evt_backlog_' || g, '{endpoint}', 'pending', now() - interval '1 hour' + g * interval '1 millisecond'
                 FROM generate_series(1, {n}) g;"
        ))
        .await
        .unwrap();
}

/// Inserts an active schedule of `mandate` due at `due` (as a completed
/// first_in_series leaves one), monthly on the anchor's day. Returns its id.
pub async fn seed_schedule(
    pool: &Pool,
    merchant: &str,
    ids: &(String, String, String),
    amount: i64,
    due: chrono::DateTime<chrono::Utc>,
) -> String {
    let id = ps_contract::ids::ScheduleId::generate().to_string();
    let (customer, method, mandate) = ids;
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO schedules (id, merchant_id, mandate_id, customer_id, payment_method_id, source_session_id, status, amount, currency,
                 recurrence, anchor, next_cycle, next_charge_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, 'ZAR', '{\"type\": \"monthly\", \"interval_count\": 1}', $8, 0, $9)",
            &[&id, &merchant, mandate, customer, method, &ps_contract::ids::SessionId::generate().to_string(), &amount, &due.date_naive(), &due],
        )
        .await
        .unwrap();
    id
}

/// What a browser does at the checkout, over plain HTTP: load the page (taking
/// its CSRF cookie and field), submit the card form, follow the redirect.
pub struct CheckoutClient {
    http: reqwest::Client,
}

impl Default for CheckoutClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A page as the customer sees it.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub body: String,
}

impl Page {
    /// The text of the element with this id, tags stripped.
    pub fn text_of(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!("id=\"{id}\""))?;
        let open_end = start + self.body[start..].find('>')? + 1;
        let tag_start = self.body[..start].rfind('<')?;
        let tag: String = self.body[tag_start + 1..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let close = open_end + self.body[open_end..].find(&format!("</{tag}>"))?;
        let mut text = String::new();
        let mut in_tag = false;
        for c in self.body[open_end..close].chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    pub fn has(&self, id: &str) -> bool {
        self.body.contains(&format!("id=\"{id}\""))
    }

    fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        Some(self.body[at..].split('"').next()?.to_owned())
    }
}

impl CheckoutClient {
    pub fn new() -> CheckoutClient {
        CheckoutClient { http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
    }

    pub async fn get(&self, url: &str) -> (Page, Option<String>) {
        let r = self.http.get(url).send().await.unwrap();
        let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(str::to_owned);
        let status = r.status().as_u16();
        (Page { status, body: r.text().await.unwrap() }, cookie)
    }

    /// Submits the card form with the given CSRF field and cookie (which may be wrong).
    pub async fn submit(&self, url: &str, csrf: &str, cookie: Option<&str>, card: &str) -> u16 {
        let form = [("csrf", csrf), ("card_number", card), ("expiry", "12/34"), ("cvc", "123")];
        let mut req = self.http.post(url).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// The page's CSRF field and cookie, as a browser holds them.
    pub async fn form_tokens(&self, url: &str) -> (String, String) {
        let (page, cookie) = self.get(url).await;
        (page.csrf().expect("a card form"), cookie.expect("a CSRF cookie"))
    }

    /// Loads the page and pays with `card`; returns the page the form leads to.
    pub async fn pay(&self, url: &str, card: &str, save_card: bool) -> Page {
        let (page, cookie) = self.get(url).await;
        assert_eq!(page.status, 200, "checkout page: {}", page.body);
        let csrf = page.csrf().expect("the page has a card form");
        let mut form = vec![("csrf", csrf), ("card_number", card.to_owned()), ("expiry", "12/34".into()), ("cvc", "123".into())];
        if save_card {
            form.push(("save_card", "on".into()));
        }
        let r = self.http.post(url).header("cookie", cookie.unwrap_or_default()).form(&form).send().await.unwrap();
        self.followed(url, r).await
    }

    /// A 303's target, loaded; any other answer as it is.
    async fn followed(&self, url: &str, r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        if status == 303 {
            let base = url.split("/pay/").next().unwrap();
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            return self.get(&format!("{base}{location}")).await.0;
        }
        Page { status, body: r.text().await.unwrap() }
    }

    /// On a page showing the sandbox's 3-D Secure challenge, presses the
    /// button with this id (`authenticate` or `fail_authentication`; `other_card`
    /// on any challenge); returns the page that follows.
    pub async fn answer_challenge(&self, url: &str, button: &str) -> Page {
        let (page, cookie) = self.get(url).await;
        assert!(page.has(button), "no {button} on the page: {}", page.body);
        let at = page.body.find(&format!("id=\"{button}\"")).unwrap();
        let form_start = page.body[..at].rfind("<form").expect("the button is in a form");
        let form = &page.body[form_start..at];
        let attr = |name: &str| {
            let from = form.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            form[from..].split('"').next().unwrap().replace("&amp;", "&")
        };
        let (action, csrf, result) =
            (attr("action"), attr("value"), form.rsplit("name=\"result\" value=\"").next().unwrap().split('"').next().unwrap().to_owned());
        let base = url.split("/pay/").next().unwrap();
        let fields = [("csrf", csrf), ("result", result)];
        let r = self.http.post(format!("{base}{action}")).header("cookie", cookie.unwrap_or_default()).form(&fields).send().await.unwrap();
        self.followed(url, r).await
    }
}
