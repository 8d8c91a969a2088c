//! The fleet's own HTTP listeners (the vault, processor events, the API):
//! over TLS when given a server config, shut down gracefully with the service.

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and serves `app` on it until `stop`; `what` names it in the log.
pub fn serve(
    addr: SocketAddr,
    app: Router,
    tls: Option<rustls::ServerConfig>,
    stop: CancellationToken,
    what: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        stopping.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let service = app.into_make_service();
    let server = match tls {
        Some(config) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            tokio::spawn(async move { axum_server::from_tcp_rustls(listener, config)?.handle(handle).serve(service).await })
        }
        None => tokio::spawn(async move { axum_server::from_tcp(listener)?.handle(handle).serve(service).await }),
    };
    tokio::spawn(async move {
        if let Ok(Err(e)) = server.await {
            tracing::error!(error = %e, server = what, "server stopped");
        }
    });
    Ok(bound)
}
