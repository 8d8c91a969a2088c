//! A merchant's webhook receiver for tests: records every request and answers
//! as scripted (a status, a `Retry-After`, or hanging until released).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    /// Holds the request open until `release`.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Answer>>>,
    default: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

pub struct Receiver {
    pub url: String,
    shared: Shared,
}

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = s.script.lock().unwrap().pop_front().unwrap_or(*s.default.lock().unwrap());
    s.received.lock().unwrap().push(Received { headers, body });
    s.arrived.notify_waiters();
    match answer {
        Answer::Status(code) => (StatusCode::from_u16(code).unwrap(), "ok").into_response(),
        Answer::RetryAfter(code, secs) => {
            (StatusCode::from_u16(code).unwrap(), [("retry-after", secs.to_string())], "later").into_response()
        }
        Answer::Hang => {
            s.release.notified().await;
            (StatusCode::OK, "late").into_response()
        }
    }
}

impl Receiver {
    /// Answers `script` in order, then `default` for ever.
    pub async fn start(script: &[Answer], default: Answer) -> Receiver {
        Receiver::serve(script, default, None).await
    }

    /// As `start`, over HTTPS with `tls` (a certificate for `localhost`); the URL names `localhost`.
    pub async fn start_https(script: &[Answer], default: Answer, tls: rustls::ServerConfig) -> Receiver {
        Receiver::serve(script, default, Some(tls)).await
    }

    async fn serve(script: &[Answer], default: Answer, tls: Option<rustls::ServerConfig>) -> Receiver {
        let shared = Shared {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            default: Arc::new(Mutex::new(default)),
            received: Arc::default(),
            arrived: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        };
        let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(shared.clone());
        let url = match tls {
            None => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}/hooks", listener.local_addr().unwrap());
                tokio::spawn(async move { axum::serve(listener, app).await });
                url
            }
            Some(config) => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let url = format!("https://localhost:{}/hooks", listener.local_addr().unwrap().port());
                let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
                let server = axum_server::from_tcp_rustls(listener, config).unwrap();
                tokio::spawn(async move { server.serve(app.into_make_service()).await });
                url
            }
        };
        Receiver { url, shared }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn set_default(&self, answer: Answer) {
        *self.shared.default.lock().unwrap() = answer;
    }

    /// Lets every hanging request (and any later one) answer 200.
    pub fn release(&self) {
        self.set_default(Answer::Status(200));
        self.shared.release.notify_waiters();
    }

    /// Waits until at least `n` requests have arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let got = self.received();
                if got.len() >= n {
                    return got;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(crate::WAIT, wait).await.unwrap_or_else(|_| panic!("receiver got {} of {n} requests", self.received().len()))
    }
}
