//! `psctl`: the operator's tool. It reads the database directly, and changes
//! nothing there itself (beyond `migrate`, grants and re-sealing): every change
//! to a session, mandate or endpoint is a command to the service that owns it,
//! sent as an upstream would, so its rules, events and audit trail apply.
//! Tables by default, `--json` for scripts.

use clap::{Parser, Subcommand};
use lapin::types::ShortString;
use ps_runtime::topology::{self, Names, QueueSpec};
use ps_runtime::{broker, db, Config, Env};
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

mod checkout;
mod dlq;
mod keys;
mod out;
mod reads;
mod secrets;
mod send;

use out::Out;
use reads::Owned;

#[derive(Parser)]
#[command(
    name = "psctl",
    version,
    about = "Payment Sessions operator CLI. Reads AMQP_URL, DATABASE_URL and AMQP_NAME_PREFIX like the services (see docs/configuration.md)."
)]
struct Cli {
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a command's reply.
    #[arg(long, global = true, default_value_t = 10)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum MerchantsCmd {
    /// Let broker user USER send commands for MERCHANT ('*': every merchant).
    Grant { user: String, merchant: String },
    /// Take that back; commands already applied stand.
    Revoke { user: String, merchant: String },
    /// Every grant: user, merchant, since.
    List,
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-seal every secret at rest under the first key of PS_SECRET_KEYS (and
    /// seal any an older version kept in clear). Then keys no longer listed first may be dropped.
    Rewrap,
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// A payment session as the API shows it, with its attempts.
    Show { id: String },
    /// Sessions, newest first.
    List {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        /// The merchant's external_reference.
        #[arg(long)]
        reference: Option<String>,
        /// active, completed, expired or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum MandatesCmd {
    /// Mandates, newest first, with what each has been used for.
    List {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        /// active, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    Show {
        id: String,
    },
    /// Revoke it (mandate.revoke, as its merchant): no more merchant-initiated charges.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum RefundsCmd {
    /// Refund a paid session (refund.create, as its merchant): all that is left, or --amount.
    Create {
        /// The payment session to refund.
        session: String,
        /// Minor units; all that is left when absent.
        #[arg(long)]
        amount: Option<i64>,
        /// duplicate, fraudulent or requested_by_customer.
        #[arg(long)]
        reason: Option<String>,
        /// Sending again with the same key makes no second refund; a new one is made up (and printed) when absent.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A refund with what the processor answered.
    Show { id: String },
}

#[derive(Subcommand)]
enum EndpointsCmd {
    /// Webhook endpoints (never their secrets), with pending deliveries.
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Register one (webhook_endpoint.create); prints its signing secret, once.
    Create {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        url: String,
        /// Comma-separated event types, or '*'.
        #[arg(long, default_value = "*")]
        events: String,
    },
    /// Turn a disabled endpoint back on (webhook_endpoint.enable).
    Enable { id: String },
    /// Turn it off (webhook_endpoint.disable): pending deliveries fail.
    Disable { id: String },
    /// A new signing secret (webhook_endpoint.rotate_secret); the old one still signs for 24 h.
    Rotate { id: String },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Every dead letter in a queue's DLQ, with its reason (no bodies). Nothing is removed.
    List {
        /// The queue's name without prefix, e.g. payment_sessions.intake
        queue: String,
    },
    /// One dead letter in full, body and headers. Nothing is removed.
    Show { queue: String, message_id: String },
    /// Send dead letters back where they were first published, once their cause
    /// is fixed. Each gets a new message id (the old one is recorded as
    /// applied); idempotency keys still stop a second effect.
    Replay {
        queue: String,
        /// One message; or --all.
        #[arg(long, required_unless_present = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters for good.
    Discard {
        queue: String,
        #[arg(long, required_unless_present = "all")]
        id: Option<String>,
        /// Every one; needs --yes.
        #[arg(long, requires = "yes")]
        all: bool,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the database schema up to date.
    Migrate,
    /// Declare every exchange and queue (idempotent).
    Declare,
    /// Publish a command and print the reply.
    Send {
        /// Routing key, e.g. payment_session.create
        routing_key: String,
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// JSON body file; standard input when absent.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Which broker users may act for which merchants (DESIGN §10).
    Merchants {
        #[command(subcommand)]
        action: MerchantsCmd,
    },
    /// How a merchant's checkout looks (checkout_settings.update / .retrieve, as the merchant).
    CheckoutSettings {
        #[command(subcommand)]
        action: checkout::CheckoutCmd,
    },
    /// The HTTP API's keys: create (printed once), revoke, list.
    Keys {
        #[command(subcommand)]
        action: keys::KeysCmd,
    },
    /// Secrets at rest: webhook signing secrets, card numbers, replies that carry a secret.
    Secrets {
        #[command(subcommand)]
        action: SecretsCmd,
    },
    /// Payment sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionsCmd,
    },
    /// Mandates.
    Mandates {
        #[command(subcommand)]
        action: MandatesCmd,
    },
    /// Refunds of paid sessions.
    Refunds {
        #[command(subcommand)]
        action: RefundsCmd,
    },
    /// Webhook endpoints.
    Endpoints {
        #[command(subcommand)]
        action: EndpointsCmd,
    },
    /// Charge schedules (newest first) with their next charge and counts; `--id` for one with its runs.
    Schedules {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Every delivery of an event to webhook endpoints, with each attempt.
    Deliveries { event_id: String },
    /// Webhook deliveries that exhausted their retries (the dead-letter view).
    WebhookDeadLetters {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Deliver an event again (webhook_event.redeliver), or every delivery that
    /// failed since a time (--failed-since 2026-11-24T00:00:00Z).
    Redeliver {
        #[arg(required_unless_present = "failed_since")]
        event_id: Option<String>,
        /// Only to this endpoint (with an event id).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, conflicts_with = "event_id")]
        failed_since: Option<String>,
        /// With --failed-since: only this merchant's.
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Dead-letter queues: list, show, replay, discard. Looking never removes or loses a message.
    Dlq {
        #[command(subcommand)]
        action: DlqCmd,
    },
    /// The fleet at a glance: queue depths and consumers, outbox backlog, oldest pending work.
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    ps_runtime::tls::install_default_provider();
    let config = match Config::from_env(&Env::from_process(), 0) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("psctl: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = Ctx {
        names: Names::new(config.name_prefix.clone()),
        out: Out { json: cli.json },
        timeout: Duration::from_secs(cli.timeout_secs),
        config,
    };
    match run(cli.command, &ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psctl: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Ctx {
    config: Config,
    names: Names,
    out: Out,
    timeout: Duration,
}

impl Ctx {
    async fn db(&self) -> Result<deadpool_postgres::Client> {
        let pool = db::pool(self.config.database_url.expose(), 1, &self.config.trust)?;
        Ok(pool.get().await?)
    }

    async fn sender(&self) -> Result<send::Sender> {
        send::Sender::connect(&self.config, &self.names, self.timeout).await
    }

    /// Sends a command for `merchant`; prints its reply, or fails with its error.
    async fn command(&self, routing_key: &str, merchant: &str, body: Value) -> Result<Value> {
        let reply = self.sender().await?.send(routing_key, merchant, body.to_string().as_bytes(), None).await?;
        if let Some(e) = reply.error() {
            return Err(format!("{routing_key} refused: {e}").into());
        }
        self.out.object(&reply.body);
        Ok(reply.body)
    }

    fn queue(&self, name: &str) -> Result<&'static QueueSpec> {
        topology::QUEUES.iter().find(|q| q.name == name).ok_or_else(|| {
            format!("unknown queue {name}; one of: {}", topology::QUEUES.iter().map(|q| q.name).collect::<Vec<_>>().join(", ")).into()
        })
    }
}

async fn run(cmd: Cmd, ctx: &Ctx) -> Result<()> {
    let (config, out) = (&ctx.config, &ctx.out);
    match cmd {
        Cmd::Migrate => {
            let pool = db::pool(config.database_url.expose(), 1, &config.trust)?;
            let applied = db::migrate(&pool).await?;
            eprintln!("psctl: schema up to date ({} applied now)", applied.len());
        }
        Cmd::Declare => {
            let conn = broker::connect(config.amqp_url.expose(), "psctl", &config.trust).await?;
            topology::declare(&conn.create_channel().await?, &ctx.names, config.delivery_limit).await?;
            eprintln!("psctl: topology declared");
        }
        Cmd::Send { routing_key, merchant, idempotency_key, file } => {
            let mut body = Vec::new();
            match file {
                Some(path) => body = std::fs::read(path)?,
                None => {
                    std::io::stdin().read_to_end(&mut body)?;
                }
            }
            let reply = ctx.sender().await?.send(&routing_key, &merchant, &body, idempotency_key.as_deref()).await?;
            if reply.replayed {
                eprintln!("psctl: idempotent replay");
            }
            println!("{}", serde_json::to_string_pretty(&reply.body)?);
        }
        Cmd::Merchants { action } => {
            let c = ctx.db().await?;
            match action {
                MerchantsCmd::Grant { user, merchant } => {
                    if merchant != ps_store::grants::EVERY_MERCHANT {
                        ps_contract::ids::MerchantId::parse(&merchant).map_err(|e| e.message)?;
                    }
                    let new = ps_store::grants::grant(&c, &user, &merchant).await?;
                    eprintln!("psctl: {user} may act for {merchant}{}", if new { "" } else { " (already granted)" });
                }
                MerchantsCmd::Revoke { user, merchant } => {
                    if !ps_store::grants::revoke(&c, &user, &merchant).await? {
                        return Err(format!("{user} had no grant for {merchant}").into());
                    }
                    eprintln!("psctl: {user} may no longer act for {merchant}");
                }
                MerchantsCmd::List => {
                    let rows: Vec<Value> = ps_store::grants::list(&c)
                        .await?
                        .into_iter()
                        .map(|(user, merchant, at)| json!({"broker_user": user, "merchant_id": merchant, "granted_at": at.to_rfc3339()}))
                        .collect();
                    out.rows(&["broker_user", "merchant_id", "granted_at"], &rows);
                }
            }
        }
        Cmd::Keys { action } => keys::run(action, &ctx.db().await?, &ctx.out).await?,
        Cmd::CheckoutSettings { action } => {
            let (key, merchant, body) = checkout::command(action)?;
            ctx.command(key, &merchant, body).await?;
        }
        Cmd::Secrets { action: SecretsCmd::Rewrap } => {
            let keys = config.require_secret_keys()?;
            let pool = db::pool(config.database_url.expose(), 1, &config.trust)?;
            let mut c = pool.get().await?;
            let rows: Vec<Value> =
                secrets::rewrap(&mut c, &keys).await?.into_iter().map(|(what, n)| json!({"secrets": what, "resealed": n})).collect();
            out.rows(&["secrets", "resealed"], &rows);
            eprintln!("psctl: every secret at rest is sealed under key {}", keys.active_id());
        }
        Cmd::Sessions { action: SessionsCmd::Show { id } } => out.object(&reads::session(&ctx.db().await?, &id).await?),
        Cmd::Sessions { action: SessionsCmd::List { merchant, customer, reference, status, limit } } => {
            let f = reads::SessionFilter { merchant, customer, reference, status, limit };
            let rows = reads::sessions(&ctx.db().await?, &f).await?;
            out.rows(
                &[
                    "id",
                    "merchant_id",
                    "type",
                    "status",
                    "payment_outcome",
                    "amount",
                    "currency",
                    "customer_id",
                    "external_reference",
                    "created_at",
                ],
                &rows,
            );
        }
        Cmd::Mandates { action: MandatesCmd::List { merchant, customer, status, limit } } => {
            let rows = reads::mandates(&ctx.db().await?, merchant.as_deref(), customer.as_deref(), status.as_deref(), limit).await?;
            out.rows(
                &["id", "merchant_id", "customer_id", "status", "used_occurrences", "used_amount", "last_charge_at", "created_at"],
                &rows,
            );
        }
        Cmd::Refunds { action: RefundsCmd::Show { id } } => out.object(&reads::refund(&ctx.db().await?, &id).await?),
        Cmd::Refunds { action: RefundsCmd::Create { session, amount, reason, idempotency_key } } => {
            let merchant = reads::merchant_of(&ctx.db().await?, Owned::Session, &session).await?;
            let mut body = json!({"payment_session_id": session});
            if let Some(a) = amount {
                body["amount"] = a.into();
            }
            if let Some(r) = reason {
                body["reason"] = r.into();
            }
            let key = idempotency_key.unwrap_or_else(|| {
                let k = uuid::Uuid::new_v4().to_string();
                eprintln!("psctl: idempotency key {k} (send again with --idempotency-key {k} to retry safely)");
                k
            });
            let reply = ctx
                .sender()
                .await?
                .send(ps_contract::routing::command::REFUND_CREATE, &merchant, body.to_string().as_bytes(), Some(&key))
                .await?;
            if let Some(e) = reply.error() {
                return Err(format!("refund.create refused: {e}").into());
            }
            if reply.replayed {
                eprintln!("psctl: idempotent replay: the refund made under this key");
            }
            out.object(&reply.body);
        }
        Cmd::Mandates { action: MandatesCmd::Show { id } } => out.object(&reads::mandate(&ctx.db().await?, &id).await?),
        Cmd::Mandates { action: MandatesCmd::Revoke { id } } => {
            let merchant = reads::merchant_of(&ctx.db().await?, Owned::Mandate, &id).await?;
            ctx.command(ps_contract::routing::command::MANDATE_REVOKE, &merchant, json!({"mandate_id": id})).await?;
        }
        Cmd::Endpoints { action } => endpoints(ctx, action).await?,
        Cmd::Schedules { merchant, id, limit } => {
            let c = ctx.db().await?;
            let rows: Vec<Value> = c
                .query(
                    "SELECT to_jsonb(r) FROM (SELECT id, merchant_id, mandate_id, status, amount, currency, next_charge_at, occurrences,
                            amount_charged, retries, retries_total, stop_reason
                     FROM schedules WHERE ($1::text IS NULL OR merchant_id = $1) AND ($2::text IS NULL OR id = $2)
                     ORDER BY id DESC LIMIT $3) r",
                    &[&merchant, &id, &limit],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let columns = [
                "id",
                "merchant_id",
                "mandate_id",
                "status",
                "amount",
                "currency",
                "next_charge_at",
                "occurrences",
                "amount_charged",
                "retries",
                "stop_reason",
            ];
            match (&id, rows.first()) {
                (Some(id), Some(schedule)) => {
                    let runs: Vec<Value> = c
                        .query(
                            "SELECT to_jsonb(r) FROM (SELECT cycle, retry, payment_session_id, coalesce(outcome, 'in flight') AS outcome, error_code
                             FROM schedule_runs WHERE schedule_id = $1 ORDER BY cycle, retry) r",
                            &[id],
                        )
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let mut shown = schedule.clone();
                    shown["runs"] = Value::Array(runs.clone());
                    if out.json {
                        out.object(&shown);
                    } else {
                        out.rows(&columns, &rows);
                        out.rows(&["cycle", "retry", "payment_session_id", "outcome", "error_code"], &runs);
                    }
                }
                (Some(id), None) => return Err(format!("no schedule {id}").into()),
                (None, _) => out.rows(&columns, &rows),
            }
        }
        Cmd::Deliveries { event_id } => {
            let rows = reads::deliveries(&ctx.db().await?, &event_id).await?;
            if rows.is_empty() {
                return Err(format!("no deliveries of {event_id}").into());
            }
            out.rows(&["id", "endpoint_id", "status", "attempts", "next_attempt_at", "last_status", "last_error", "tries"], &rows);
        }
        Cmd::WebhookDeadLetters { merchant, limit } => {
            let c = ctx.db().await?;
            let rows: Vec<Value> = c
                .query(
                    "SELECT to_jsonb(r) FROM (SELECT delivery_id, merchant_id, event_id, event_type, endpoint_id, url, attempts, last_status, last_error, finished_at
                     FROM webhook_dead_letters WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY finished_at DESC LIMIT $2) r",
                    &[&merchant, &limit],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            out.rows(
                &[
                    "delivery_id",
                    "merchant_id",
                    "event_id",
                    "event_type",
                    "endpoint_id",
                    "attempts",
                    "last_status",
                    "last_error",
                    "finished_at",
                ],
                &rows,
            );
            if !out.json && !rows.is_empty() {
                eprintln!(
                    "psctl: redeliver one with `psctl redeliver EVENT_ID`, or all since a time with `psctl redeliver --failed-since TIME`"
                );
            }
        }
        Cmd::Redeliver { event_id, endpoint, failed_since, merchant } => redeliver(ctx, event_id, endpoint, failed_since, merchant).await?,
        Cmd::Dlq { action } => dead_letters(ctx, action).await?,
        Cmd::Status => status(ctx).await?,
    }
    Ok(())
}

async fn endpoints(ctx: &Ctx, action: EndpointsCmd) -> Result<()> {
    use ps_contract::routing::command;
    let by_id = |id: String, key: &'static str| async move {
        let merchant = reads::merchant_of(&ctx.db().await?, Owned::Endpoint, &id).await?;
        ctx.command(key, &merchant, json!({"webhook_endpoint_id": id})).await
    };
    match action {
        EndpointsCmd::List { merchant } => {
            let rows = reads::endpoints(&ctx.db().await?, merchant.as_deref()).await?;
            ctx.out.rows(&["id", "merchant_id", "url", "status", "enabled_events", "pending", "disabled_reason", "failing_since"], &rows);
        }
        EndpointsCmd::Create { merchant, url, events } => {
            let events: Vec<&str> = events.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
            ctx.command(command::WEBHOOK_ENDPOINT_CREATE, &merchant, json!({"url": url, "enabled_events": events})).await?;
            if !ctx.out.json {
                eprintln!("psctl: give the merchant its secret now: it is not shown again (rotate makes a new one)");
            }
        }
        EndpointsCmd::Enable { id } => {
            by_id(id, command::WEBHOOK_ENDPOINT_ENABLE).await?;
        }
        EndpointsCmd::Disable { id } => {
            by_id(id, command::WEBHOOK_ENDPOINT_DISABLE).await?;
        }
        EndpointsCmd::Rotate { id } => {
            by_id(id, command::WEBHOOK_ENDPOINT_ROTATE_SECRET).await?;
        }
    }
    Ok(())
}

async fn redeliver(
    ctx: &Ctx,
    event_id: Option<String>,
    endpoint: Option<String>,
    failed_since: Option<String>,
    merchant: Option<String>,
) -> Result<()> {
    let key = ps_contract::routing::command::WEBHOOK_EVENT_REDELIVER;
    let c = ctx.db().await?;
    if let Some(event) = event_id {
        let merchant = reads::merchant_of(&c, Owned::Event, &event).await?;
        let mut body = json!({"event_id": event});
        if let Some(e) = endpoint {
            body["webhook_endpoint_id"] = e.into();
        }
        ctx.command(key, &merchant, body).await?;
        return Ok(());
    }
    let since = failed_since.expect("clap requires an event id or --failed-since");
    let failed = reads::failed_since(&c, &since, merchant.as_deref()).await?;
    let mut sender = ctx.sender().await?;
    let bar = ctx.out.progress(failed.len() as u64, "redelivering");
    let mut results = vec![];
    for (merchant, event, endpoint) in &failed {
        let body = json!({"event_id": event, "webhook_endpoint_id": endpoint});
        let reply = sender.send(key, merchant, body.to_string().as_bytes(), None).await?;
        results
            .push(json!({"event_id": event, "webhook_endpoint_id": endpoint, "result": reply.error().unwrap_or_else(|| "queued".into())}));
        bar.inc(1);
    }
    bar.finish_and_clear();
    ctx.out.rows(&["event_id", "webhook_endpoint_id", "result"], &results);
    eprintln!("psctl: {} failed deliveries since {since} queued again", results.iter().filter(|r| r["result"] == "queued").count());
    Ok(())
}

async fn dead_letters(ctx: &Ctx, action: DlqCmd) -> Result<()> {
    use dlq::Verdict;
    let conn = broker::connect(ctx.config.amqp_url.expose(), "psctl", &ctx.config.trust).await?;
    let ch = conn.create_channel().await?;
    let queue = match &action {
        DlqCmd::List { queue } | DlqCmd::Show { queue, .. } | DlqCmd::Replay { queue, .. } | DlqCmd::Discard { queue, .. } => queue.clone(),
    };
    let spec = ctx.queue(&queue)?;
    let dlq_name = ctx.names.dead_letter_queue(spec);
    let db = match &action {
        DlqCmd::Replay { .. } | DlqCmd::Discard { .. } => Some(ctx.db().await?),
        _ => None,
    };
    let replayer = db.as_ref().map(|db| dlq::Replayer { db, names: &ctx.names, spec, members: Default::default() });
    let is = |id: &Option<String>, m: &lapin::message::BasicGetMessage| {
        id.is_none() || m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == id.as_deref()
    };
    let mut seen = vec![];
    let walked = match &action {
        DlqCmd::List { .. } => dlq::walk(&ch, &dlq_name, |_| Verdict::Keep, None, |m| seen.push(dlq::summary(m))).await?,
        DlqCmd::Show { message_id, .. } => {
            let id = Some(message_id.clone());
            dlq::walk(
                &ch,
                &dlq_name,
                |_| Verdict::Keep,
                None,
                |m| {
                    if is(&id, m) {
                        seen.push(dlq::detail(m))
                    }
                },
            )
            .await?
        }
        DlqCmd::Replay { id, .. } => {
            let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let total = ch.queue_declare(dlq_name.as_str().into(), passive, Default::default()).await?.message_count();
            let bar = ctx.out.progress(total.into(), "replaying");
            let w =
                dlq::walk(&ch, &dlq_name, |m| if is(id, m) { Verdict::Replay } else { Verdict::Keep }, replayer.as_ref(), |_| bar.inc(1))
                    .await?;
            bar.finish_and_clear();
            w
        }
        DlqCmd::Discard { id, .. } => {
            dlq::walk(&ch, &dlq_name, |m| if is(id, m) { Verdict::Discard } else { Verdict::Keep }, replayer.as_ref(), |_| {}).await?
        }
    };
    conn.close(0, ShortString::from("done")).await?;
    match action {
        DlqCmd::List { .. } => ctx.out.rows(&["message_id", "routing_key", "code", "reason", "merchant_id", "bytes"], &seen),
        DlqCmd::Show { message_id, .. } => {
            ctx.out.object(seen.first().ok_or_else(|| format!("no dead letter {message_id} in {dlq_name}"))?)
        }
        DlqCmd::Replay { id, .. } | DlqCmd::Discard { id, .. } => {
            for (message_id, why) in &walked.refused {
                eprintln!("psctl: dead letter {message_id} kept, not replayed: it {why}");
            }
            if let (Some(id), 0, 0, true) = (&id, walked.replayed, walked.discarded, walked.refused.is_empty()) {
                return Err(format!("no dead letter {id} in {dlq_name}").into());
            }
            let refused: Vec<Value> = walked.refused.iter().map(|(id, why)| json!({"message_id": id, "reason": why})).collect();
            ctx.out.object(
                &json!({"queue": dlq_name, "replayed": walked.replayed, "discarded": walked.discarded, "kept": walked.kept, "refused": refused}),
            );
            if !walked.refused.is_empty() && walked.replayed == 0 {
                return Err(format!("{} dead letter(s) may not be replayed", walked.refused.len()).into());
            }
        }
    }
    Ok(())
}

async fn status(ctx: &Ctx) -> Result<()> {
    let conn = broker::connect(ctx.config.amqp_url.expose(), "psctl", &ctx.config.trust).await?;
    let mut queues = vec![];
    for spec in topology::QUEUES {
        for name in [ctx.names.queue(spec), ctx.names.dead_letter_queue(spec)] {
            // A passive declare reads depth and consumers; a missing queue closes its channel, so one each.
            let ch = conn.create_channel().await?;
            let opts = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let row = match ch.queue_declare(name.as_str().into(), opts, Default::default()).await {
                Ok(q) => json!({"queue": name, "messages": q.message_count(), "consumers": q.consumer_count()}),
                Err(e) => json!({"queue": name, "messages": null, "consumers": null, "problem": e.to_string()}),
            };
            queues.push(row);
            let _ = ch.close(0, ShortString::from("done")).await;
        }
    }
    let backlog = reads::backlog(&ctx.db().await?).await?;
    if ctx.out.json {
        ctx.out.object(&json!({"queues": queues, "backlog": backlog}));
    } else {
        ctx.out.rows(&["queue", "messages", "consumers", "problem"], &queues);
        ctx.out.rows(&["what", "count", "oldest_secs"], &backlog);
    }
    Ok(())
}
