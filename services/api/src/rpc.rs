//! Commands published as an upstream system publishes them, and their replies
//! over RabbitMQ's direct reply-to: one channel, many requests in flight, each
//! reply matched to its request by correlation id.

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use ps_contract::ids::MerchantId;
use ps_contract::routing::{exchange, header};
use ps_contract::secret::SecretUrl;
use ps_runtime::message::header_str;
use ps_runtime::tls::Trust;
use ps_runtime::topology::Names;
use ps_runtime::Outbound;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A command's reply as the owning service sent it.
#[derive(Debug)]
pub struct Reply {
    pub body: Value,
    /// Answered from the idempotency key's first request.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("the broker is unavailable")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not take the command ({0})")]
    NotAccepted(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the reply channel closed before the reply came")]
    Lost,
    #[error("the reply is not JSON")]
    BadReply(#[source] serde_json::Error),
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Reply, RpcError>>>>>;

/// One connection and channel, replaced when it fails.
struct Link {
    _conn: Connection,
    ch: Channel,
    waiting: Waiting,
    alive: Arc<AtomicBool>,
}

pub struct Rpc {
    url: SecretUrl,
    trust: Trust,
    exchange: String,
    user: Option<String>,
    timeout: Duration,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
}

impl Rpc {
    pub fn new(url: SecretUrl, trust: Trust, names: &Names, timeout: Duration) -> Rpc {
        let user = ps_runtime::broker::broker_user(url.expose());
        Rpc { url, trust, exchange: names.exchange(exchange::COMMANDS), user, timeout, link: Default::default() }
    }

    async fn link(&self) -> Result<Arc<Link>, RpcError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref().filter(|l| l.alive.load(Ordering::SeqCst)) {
            return Ok(link.clone());
        }
        let conn = ps_runtime::broker::connect(self.url.expose(), "payments-api", &self.trust).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut replies = ch
            .basic_consume(
                ShortString::from(DIRECT_REPLY_TO),
                ShortString::from(""),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let (waiting, alive): (Waiting, _) = (Arc::default(), Arc::new(AtomicBool::new(true)));
        let (w, a) = (waiting.clone(), alive.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let corr = d.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default();
                let Some(to) = w.lock().unwrap_or_else(|e| e.into_inner()).remove(&corr) else {
                    // A reply for a request that already timed out: its client has its 504.
                    continue;
                };
                let replayed = header_str(d.properties.headers().as_ref(), header::IDEMPOTENT_REPLAYED).as_deref() == Some("true");
                let _ = to.send(serde_json::from_slice(&d.data).map(|body| Reply { body, replayed }).map_err(RpcError::BadReply));
            }
            // The connection is gone: whoever still waits learns it at once.
            a.store(false, Ordering::SeqCst);
            w.lock().unwrap_or_else(|e| e.into_inner()).clear();
            tracing::warn!("reply channel closed; the next request reconnects");
        });
        let link = Arc::new(Link { _conn: conn, ch, waiting, alive });
        *current = Some(link.clone());
        Ok(link)
    }

    /// Publishes `body` as `routing_key` for `merchant` and waits for its reply.
    /// `request_id` becomes the message's id and correlation id, so a request
    /// can be followed from the HTTP log through every service.
    pub async fn call(
        &self,
        routing_key: &str,
        merchant: &MerchantId,
        idempotency_key: Option<&str>,
        body: &[u8],
        request_id: &str,
    ) -> Result<Reply, RpcError> {
        let link = self.link().await?;
        let mut msg = Outbound::command(routing_key, merchant.as_str(), idempotency_key, body.to_vec()).with_message_id(request_id);
        msg.correlation_id = Some(request_id.to_owned());
        msg.reply_to = Some(DIRECT_REPLY_TO.to_owned());
        ps_runtime::telemetry::inject_current(&mut msg.headers);
        let mut props = msg.properties();
        // The fleet trusts a merchant-id only from a broker user granted it; RabbitMQ vouches for user_id.
        if let Some(user) = &self.user {
            props = props.with_user_id(user.as_str().into());
        }
        let (to, reply) = oneshot::channel();
        link.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.to_owned(), to);
        let forget = || {
            link.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(request_id);
        };
        let published = async {
            link.ch
                .basic_publish(
                    ShortString::from(self.exchange.as_str()),
                    ShortString::from(routing_key),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &msg.body,
                    props,
                )
                .await?
                .await
        }
        .await;
        match published {
            Ok(Confirmation::Ack(None)) => {}
            Ok(other) => {
                forget();
                return Err(RpcError::NotAccepted(format!("{other:?}")));
            }
            Err(e) => {
                forget();
                link.alive.store(false, Ordering::SeqCst);
                return Err(e.into());
            }
        }
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RpcError::Lost),
            Err(_) => {
                forget();
                Err(RpcError::Timeout(self.timeout))
            }
        }
    }
}
