//! The fleet's own HTTP listeners (the vault, processor events, the API):
//! over TLS when given a server config, shut down gracefully with the service.

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Binds `addr`. A service binds before it starts, so a port it cannot have
/// stops it before its health says ready.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `app` on `listener` until `stop`; `what` names it in the log.
pub fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<rustls::ServerConfig>,
    stop: CancellationToken,
    what: &'static str,
) -> std::io::Result<SocketAddr> {
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
