//! A command published as an upstream system would, and its reply.

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use ps_contract::routing::{exchange, header};
use ps_runtime::message::header_str;
use ps_runtime::topology::Names;
use ps_runtime::{broker, Config, Outbound};
use serde_json::Value;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A broker connection with a reply queue, for one or many commands.
pub struct Sender {
    _conn: Connection,
    ch: Channel,
    replies: lapin::Consumer,
    reply_queue: ShortString,
    exchange: String,
    user: Option<String>,
    timeout: Duration,
}

pub struct Reply {
    pub body: Value,
    pub replayed: bool,
}

impl Reply {
    /// The reply's error, if it is one, as a message for the operator.
    pub fn error(&self) -> Option<String> {
        let e = self.body.get("error")?;
        Some(format!("{}: {}", e["code"].as_str().unwrap_or("error"), e["message"].as_str().unwrap_or("")))
    }
}

impl Sender {
    pub async fn connect(config: &Config, names: &Names, timeout: Duration) -> Result<Sender> {
        let conn = broker::connect(config.amqp_url.expose(), "psctl", &config.trust).await?;
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
        Ok(Sender {
            reply_queue: q.name().clone(),
            _conn: conn,
            ch,
            replies,
            exchange: names.exchange(exchange::COMMANDS),
            user: broker::broker_user(config.amqp_url.expose()),
            timeout,
        })
    }

    /// Publishes `body` as `routing_key` for `merchant` and waits for its reply.
    pub async fn send(&mut self, routing_key: &str, merchant: &str, body: &[u8], idempotency_key: Option<&str>) -> Result<Reply> {
        let key = idempotency_key.map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let corr = uuid::Uuid::new_v4().to_string();
        let mut msg = Outbound::command(routing_key, merchant, Some(&key), body.to_vec()).with_message_id(uuid::Uuid::now_v7().to_string());
        msg.correlation_id = Some(corr.clone());
        msg.reply_to = Some(self.reply_queue.to_string());
        let mut props = msg.properties();
        // The fleet trusts a merchant-id only from a user granted it; RabbitMQ vouches for user_id.
        if let Some(user) = &self.user {
            props = props.with_user_id(user.as_str().into());
        }
        let confirm = self
            .ch
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(routing_key),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &msg.body,
                props,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(format!("the broker did not accept the command ({confirm:?}); is the topology declared?").into());
        }
        loop {
            let reply = tokio::time::timeout(self.timeout, self.replies.next())
                .await
                .map_err(|_| format!("no reply within {}s; is the owning service running?", self.timeout.as_secs()))?
                .ok_or("reply stream closed")??;
            if reply.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(corr.as_str()) {
                continue; // a late reply to an earlier command that timed out
            }
            let replayed = header_str(reply.properties.headers().as_ref(), header::IDEMPOTENT_REPLAYED).as_deref() == Some("true");
            return Ok(Reply { body: serde_json::from_slice(&reply.data)?, replayed });
        }
    }
}
