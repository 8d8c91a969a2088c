//! `PROCESSOR=stripe make run` without a Stripe key: localstripe (a fake but
//! stateful Stripe) behind the tests' proxy, which takes out the two
//! parameters real Stripe documents and localstripe refuses
//! (docs/processors.md), so the connector speaks Stripe's own API. Its events go to the gateway's endpoint, signed. Runs until
//! SIGINT/SIGTERM.
//!
//! LOCALSTRIPE_PORT (default 8420): localstripe itself, and its Stripe.js.
//! STRIPE_PROXY_ADDR (default 127.0.0.1:8421): the gateway's STRIPE_API_BASE.
//! PROCESSOR_EVENTS_URL (default http://127.0.0.1:9111/v1/processors/stripe/events).

use integration_tests::stripe::{LocalStripe, StripeProxy};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    ps_runtime::tls::install_default_provider();
    let port = std::env::var("LOCALSTRIPE_PORT").ok().map_or(8420, |p| p.parse().expect("LOCALSTRIPE_PORT is a port number"));
    let addr = std::env::var("STRIPE_PROXY_ADDR").unwrap_or_else(|_| "127.0.0.1:8421".into());
    let events = std::env::var("PROCESSOR_EVENTS_URL").unwrap_or_else(|_| "http://127.0.0.1:9111/v1/processors/stripe/events".into());
    let stripe = LocalStripe::start_on(port).await;
    let proxy = StripeProxy::start_on(&stripe, &addr).await;
    stripe.send_events_to(&events).await;
    eprintln!("local-stripe: localstripe on {}, its API for the gateway at {}, Stripe.js at {}", stripe.url, proxy.url, stripe.js_url());
    eprintln!("local-stripe: its events go to {events}");
    let (mut int, mut term) = (signal(SignalKind::interrupt()).unwrap(), signal(SignalKind::terminate()).unwrap());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    drop(proxy);
    drop(stripe);
}
