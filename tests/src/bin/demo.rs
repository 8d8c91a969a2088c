//! `make demo`: the three session types against a running fleet (`make run`),
//! told as a short story. It pays through the checkout's own HTTP interface,
//! as a customer's browser would, and checks each webhook's signature as a
//! merchant's receiver would. Reads AMQP_URL and AMQP_NAME_PREFIX like psctl.

use futures::StreamExt;
use integration_tests::receiver::{Answer, Receiver};
use integration_tests::CheckoutClient;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MERCHANT: &str = "demo";

struct Upstream {
    ch: lapin::Channel,
    replies: lapin::Consumer,
    reply_to: ShortString,
    exchange: String,
    user: Option<String>,
    _conn: lapin::Connection,
}

impl Upstream {
    async fn connect(amqp: &str, prefix: &str) -> Result<Upstream> {
        let conn = ps_runtime::broker::connect(amqp, "demo", &Default::default())
            .await
            .map_err(|e| format!("cannot reach RabbitMQ at {amqp} ({e}); is `make run` up?"))?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let replies = ch
            .basic_consume(q.name().clone(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await?;
        Ok(Upstream {
            reply_to: q.name().clone(),
            ch,
            replies,
            exchange: format!("{prefix}payment_sessions.commands"),
            user: ps_runtime::broker::broker_user(amqp),
            _conn: conn,
        })
    }

    /// A command and its reply; an error reply stops the demo.
    async fn call(&mut self, routing_key: &str, body: Value) -> Result<Value> {
        let mut headers = FieldTable::default();
        headers.insert("merchant-id".into(), AMQPValue::LongString(LongString::from(MERCHANT)));
        headers.insert("idempotency-key".into(), AMQPValue::LongString(LongString::from(uuid::Uuid::new_v4().to_string().as_str())));
        let corr = uuid::Uuid::new_v4().to_string();
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(uuid::Uuid::now_v7().to_string().as_str().into())
            .with_correlation_id(corr.as_str().into())
            .with_reply_to(self.reply_to.clone())
            .with_headers(headers);
        if let Some(u) = &self.user {
            props = props.with_user_id(u.as_str().into());
        }
        let confirm = self
            .ch
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.to_string().as_bytes(),
                props,
            )
            .await?
            .await?;
        if !matches!(confirm, lapin::Confirmation::Ack(None)) {
            return Err(format!("{routing_key} was not routed; is the fleet declared (make run)?").into());
        }
        loop {
            let d = tokio::time::timeout(Duration::from_secs(15), self.replies.next())
                .await
                .map_err(|_| format!("no reply to {routing_key} within 15 s; is `make run` up?"))?
                .ok_or("reply stream closed")??;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(corr.as_str()) {
                let reply: Value = serde_json::from_slice(&d.data)?;
                if let Some(e) = reply.get("error") {
                    return Err(format!("{routing_key} refused: {} ({})", e["message"], e["code"]).into());
                }
                return Ok(reply);
            }
        }
    }

    /// Asks until the session has ended, as an upstream polling would.
    async fn until_done(&mut self, id: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.call("payment_session.retrieve", json!({"payment_session_id": id})).await?;
            if s["status"] != "active" {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("{id} still active after 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn outcome(s: &Value) -> String {
    format!("{} / {}", s["status"].as_str().unwrap_or("?"), s["payment_outcome"].as_str().unwrap_or("?"))
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

async fn pay(up: &mut Upstream, session: &Value, card: &str) -> Result<Value> {
    let url = session["session_url"].as_str().ok_or("no session_url")?;
    say(format!("   the customer opens {url}"));
    let page = CheckoutClient::new().pay(url, card, false).await;
    if page.status != 200 {
        return Err(format!("the checkout answered {}", page.status).into());
    }
    say(format!("   and pays with {card}"));
    up.until_done(session["id"].as_str().unwrap_or_default()).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    ps_runtime::tls::install_default_provider();
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| ps_runtime::config::DEFAULT_AMQP_URL.into());
    let prefix = std::env::var("AMQP_NAME_PREFIX").unwrap_or_default();
    let mut up = Upstream::connect(&amqp, &prefix).await?;
    let receiver = Receiver::start(&[], Answer::Status(200)).await;

    say(format!("Merchant {MERCHANT:?} registers a webhook endpoint at {} (make run allows loopback).", receiver.url));
    let endpoint =
        up.call("webhook_endpoint.create", json!({"url": receiver.url, "enabled_events": ["payment_session.completed"]})).await?;
    let secret = endpoint["secret"].as_str().ok_or("no secret")?.to_owned();
    say(format!("   endpoint {}, signing secret whsec_… (shown once)\n", endpoint["id"].as_str().unwrap_or_default()));

    say("1. one_time: a customer buys a t-shirt.");
    let shirt = up
        .call(
            "payment_session.create",
            json!({"type": "one_time", "amount": 24900, "currency": "ZAR", "customer": {"name": "Thandi", "email": "thandi@example.com"},
                   "return_url": "https://shop.example/thanks", "external_reference": "order-1001"}),
        )
        .await?;
    say(format!("   session {} for R249.00", shirt["id"].as_str().unwrap_or_default()));
    let shirt = pay(&mut up, &shirt, "4242424242424242").await?;
    say(format!("   → {}\n", outcome(&shirt)));

    say("2. first_in_series: a gym member signs up and grants a mandate.");
    let signup = up
        .call(
            "payment_session.create",
            json!({"type": "first_in_series", "amount": 19900, "currency": "ZAR", "customer": {"name": "Bo", "email": "bo@example.com"},
                   "return_url": "https://gym.example/welcome", "mandate_options": {"type": "on_demand", "amount": {"min": 100, "max": 50000}}}),
        )
        .await?;
    let signup = pay(&mut up, &signup, "4242424242424242").await?;
    let mandate_id = signup["mandate_id"].as_str().ok_or("the completed first_in_series carries no mandate")?.to_owned();
    let mandate = up.call("mandate.retrieve", json!({"mandate_id": mandate_id})).await?;
    say(format!(
        "   → {}; mandate {} ({}, {} to {} a charge)\n",
        outcome(&signup),
        mandate_id,
        mandate["status"].as_str().unwrap_or("?"),
        mandate["terms"]["amount"]["min"],
        mandate["terms"]["amount"]["max"]
    ));

    say("3. next_in_series: a month later the gym charges the member, who is not there.");
    let charge = up
        .call("payment_session.create", json!({"type": "next_in_series", "amount": 19900, "currency": "ZAR", "mandate_id": mandate_id}))
        .await?;
    let charge = up.until_done(charge["id"].as_str().unwrap_or_default()).await?;
    say(format!("   session {} → {}\n", charge["id"].as_str().unwrap_or_default(), outcome(&charge)));

    say("4. The merchant's receiver got each payment_session.completed, signed:");
    let got = tokio::time::timeout(Duration::from_secs(30), receiver.wait_for(3))
        .await
        .map_err(|_| "the three webhooks did not arrive within 30 s")?;
    let verifier = standardwebhooks::Webhook::new(&secret)?;
    for r in got.iter().take(3) {
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, r.headers[name].clone());
        }
        verifier.verify(&r.body, &headers).map_err(|e| format!("a webhook's signature does not verify: {e:?}"))?;
        let event: Value = serde_json::from_slice(&r.body)?;
        say(format!(
            "   {} {} for {} — signature verified",
            r.headers["webhook-id"].to_str().unwrap_or("?"),
            event["type"].as_str().unwrap_or("?"),
            event["data"]["id"].as_str().unwrap_or("?")
        ));
    }
    say("\nDone: three sessions, one mandate, three verified webhooks.");
    Ok(())
}
