//! Runs a service: database, health server, and a broker session that is
//! re-established whenever the connection drops, until shutdown.

use crate::broker::{self, Publisher};
use crate::config::Config;
use crate::consumer::{consume, ConsumerContext, Handler};
use crate::health::{self, Health};
use crate::members::{self, Members};
use crate::outbox::{Outbox, Relay};
use crate::topology::{self, Names, QueueSpec};
use crate::{db, metrics, outbox};
use backon::{ExponentialBuilder, Retryable};
use deadpool_postgres::Pool;
use futures::future::try_join_all;
use futures::FutureExt;
use lapin::Connection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One queue this service consumes and what handles it.
pub struct Consumes {
    pub queue: QueueSpec,
    pub handler: Arc<dyn Handler>,
    /// Woken after each commit, for a worker that acts on what the handler wrote.
    pub after_commit: Option<Arc<tokio::sync::Notify>>,
}

impl Consumes {
    pub fn new(queue: QueueSpec, handler: Arc<dyn Handler>) -> Consumes {
        Consumes { queue, handler, after_commit: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot serve health on {addr}: {source}")]
    Health { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("AMQP_URL names no broker user to register this service under")]
    NoBrokerUser,
    #[error("cannot register this service's broker user in fleet_members: {}", db::causes(.0))]
    Register(#[source] db::DbError),
}

pub struct Running {
    pub health_addr: SocketAddr,
    pub pool: Pool,
    /// The service's outbox, for work it commits outside its consumers.
    pub outbox: Outbox,
    task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// A task of the service's own (a sweeper, a delivery loop) that a graceful
    /// stop must wait for, like the consumers.
    pub fn with_task(mut self, task: JoinHandle<()>) -> Running {
        self.background.push(task);
        self
    }

    /// Resolves when the service has stopped after its stop token fired: the
    /// consumers and relay, then its own tasks.
    pub async fn stopped(self) {
        let _ = self.task.await;
        for t in self.background {
            let _ = t.await;
        }
    }
}

/// Connects to the database (waiting for it, within reason), migrates if
/// configured, binds the health port, then runs the broker side in the background.
pub async fn start(name: &'static str, config: Config, consumes: Vec<Consumes>, stop: CancellationToken) -> Result<Running, StartError> {
    let pool = db::pool(config.database_url.expose(), config.database_pool_size, &config.trust)?;
    if config.mode == ps_contract::session::Mode::Live {
        let backoff = ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(12);
        (|| db::refuse_superuser(&pool))
            .retry(backoff)
            .when(|e| matches!(e, db::DbError::Unavailable(_)))
            .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "database not ready"))
            .await?;
    }
    if config.database_migrate {
        let backoff = ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(12);
        let applied = (|| db::migrate(&pool))
            .retry(backoff)
            .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "database not ready for migrations"))
            .await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
    }
    // Who this service publishes as, for the consumers of what it sends (DESIGN §10).
    let user = broker::broker_user(config.amqp_url.expose()).ok_or(StartError::NoBrokerUser)?;
    let backoff = ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(12);
    (|| members::register(&pool, name, &user))
        .retry(backoff)
        .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "database not ready to register this service's broker user"))
        .await
        .map_err(StartError::Register)?;
    let health = Health::new(pool.clone());
    let health_addr = health::serve(config.health_addr, health.clone(), stop.clone())
        .await
        .map_err(|source| StartError::Health { addr: config.health_addr, source })?;
    tracing::info!(service = name, %health_addr, "started");

    let sweeper_pool = pool.clone();
    let sweeper_stop = stop.clone();
    let consumes_any = !consumes.is_empty();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sweeper_stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            }
            match outbox::sweep(&sweeper_pool, consumes_any).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "retention sweep"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
        }
    });

    let outbox = Outbox::new(name, config.secret_keys.clone());
    let task = tokio::spawn(supervise(name, config, consumes, pool.clone(), health, outbox.clone(), stop));
    Ok(Running { health_addr, pool, outbox, task, background: vec![] })
}

async fn supervise(
    name: &'static str,
    config: Config,
    consumes: Vec<Consumes>,
    pool: Pool,
    health: Health,
    outbox: Outbox,
    stop: CancellationToken,
) {
    let names = Names::new(config.name_prefix.clone());
    let members = Arc::new(Members::default());
    let contexts: Vec<Arc<ConsumerContext>> = consumes
        .into_iter()
        .map(|c| {
            Arc::new(ConsumerContext {
                consumer: c.queue.name,
                spec: c.queue,
                names: names.clone(),
                queue: names.queue(&c.queue),
                members: members.clone(),
                max_message_bytes: config.max_message_bytes,
                pool: pool.clone(),
                outbox: outbox.clone(),
                handler: c.handler,
                after_commit: c.after_commit,
                fault_abort_after_commit: config.fault_abort_after_commit,
                fault_abort_after_batch_commit: config.fault_abort_after_batch_commit,
                fault_panic_on: config.fault_panic_on.clone(),
                health: health.clone(),
                stop: stop.clone(),
            })
        })
        .collect();
    health.expect_consumers(contexts.len());
    let relay = Relay::new(pool, outbox);
    let mut connected_before = false;
    // The prefix in the connection name lets an operator (or a test) find this instance's connection.
    let connection_name = format!("{name} {}", config.name_prefix).trim_end().to_owned();
    while let Some(conn) = broker::connect_with_backoff(config.amqp_url.expose(), &connection_name, &config.trust, &stop).await {
        if connected_before {
            metrics::BROKER_RECONNECTS.inc();
        }
        connected_before = true;
        health.set_broker_up(true);
        // A panic outside any one message's handling ends this session, not the service.
        let result = std::panic::AssertUnwindSafe(session(&conn, &config, &names, &contexts, &relay, &health, &stop))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(SessionError::Panicked(crate::consumer::panic_text(panic.as_ref()))));
        health.set_broker_up(false);
        let _ = conn.close(200, "bye".into()).await;
        match result {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "broker session ended; reconnecting"),
        }
        if stop.is_cancelled() {
            break;
        }
    }
    tracing::info!(service = name, "stopped");
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("declaring the topology: {0}")]
    Declare(lapin::Error),
    #[error(transparent)]
    Consume(#[from] crate::consumer::ConsumeError),
    #[error(transparent)]
    Relay(#[from] crate::outbox::RelayError),
    #[error("the broker session panicked: {0}")]
    Panicked(String),
    #[error("the broker connection is no longer open ({0})")]
    Lost(String),
}

/// How often a session checks that its broker connection is still open.
const CONNECTION_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// One broker connection's worth of work. Ok only after a graceful stop:
/// consumers finish what is in flight, then the relay publishes what they wrote.
async fn session(
    conn: &Connection,
    config: &Config,
    names: &Names,
    contexts: &[Arc<ConsumerContext>],
    relay: &Relay,
    health: &Health,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let setup = conn.create_channel().await.map_err(SessionError::Declare)?;
    topology::declare(&setup, names, config.delivery_limit).await.map_err(SessionError::Declare)?;
    let _ = setup.close(200, "declared".into()).await;
    let user = broker::broker_user(config.amqp_url.expose());
    let publisher = Publisher::new(conn, names.clone(), config.publish_timeout, user.clone()).await.map_err(SessionError::Declare)?;
    // The consumers' own channel: their publishes after commit and the relay's do not queue behind each other.
    let direct = Arc::new(Publisher::new(conn, names.clone(), config.publish_timeout, user).await.map_err(SessionError::Declare)?);

    let consumers_stop = stop.child_token();
    let relay_stop = CancellationToken::new();
    let consumers = async {
        if contexts.is_empty() {
            // A service with nothing to consume (the checkout) still relays until stopped.
            consumers_stop.cancelled().await;
            return Ok(vec![]);
        }
        try_join_all(
            contexts.iter().map(|ctx| consume(conn, ctx.clone(), direct.clone(), config.prefetch, config.batch, consumers_stop.clone())),
        )
        .await
    };
    let relaying = async {
        let _running = health.relay_running();
        relay.run(&publisher, &relay_stop).await
    };
    // A broken connection does not always end the consumers' streams; the
    // consumers' publishes after commit no longer pass through the relay to
    // notice it either. Its state is watched, and the session ends with it.
    let lost = async {
        loop {
            tokio::time::sleep(CONNECTION_CHECK).await;
            let status = conn.status();
            if !status.connected() {
                let state = if status.reconnecting() {
                    "reconnecting"
                } else if status.closing() {
                    "closing"
                } else {
                    "closed or failed"
                };
                return SessionError::Lost(state.to_owned());
            }
        }
    };
    tokio::pin!(relaying);
    let consumed = tokio::select! {
        r = consumers => r,
        r = &mut relaying => {
            consumers_stop.cancel();
            r?;
            return Ok(());
        }
        e = lost => {
            consumers_stop.cancel();
            relay_stop.cancel();
            return Err(e);
        }
    };
    relay_stop.cancel();
    let drained = relaying.await;
    publisher.close().await;
    direct.close().await;
    consumed?;
    drained?;
    Ok(())
}

/// A token that fires on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested: finishing in-flight messages");
        t.cancel();
    });
    token
}

/// A service binary's whole `main`: configuration (one line and exit 2 if
/// bad), telemetry, start, run until SIGTERM/SIGINT, stop gracefully.
pub async fn run_main<C, F, Fut>(
    manual: &crate::config::Manual,
    config: fn(&crate::Env) -> Result<C, crate::ConfigError>,
    start: F,
) -> std::process::ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<Running, StartError>>,
{
    let name = manual.name;
    // Arguments are only ever asking about the binary: it must not start consuming.
    if let Some(arg) = std::env::args().nth(1) {
        return match arg.as_str() {
            "--help" | "-h" => match manual.help(config) {
                Ok(text) => {
                    print!("{text}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::ExitCode::FAILURE
                }
            },
            "--version" | "-V" => {
                println!("{name} {}", manual.version);
                std::process::ExitCode::SUCCESS
            }
            other => {
                eprintln!("{name}: unexpected argument {other:?}: it takes none (configuration is environment only; see --help)");
                std::process::ExitCode::from(2)
            }
        };
    }
    let config = match config(&crate::Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = crate::telemetry::init(name);
    match start(config, shutdown_on_signal()).await {
        Ok(running) => {
            running.stopped().await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            std::process::ExitCode::FAILURE
        }
    }
}
