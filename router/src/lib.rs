//! The cellkv router: a stateless HTTP front end that authenticates clients,
//! places each (bucket, key) on the consistent-hash ring of the cell map and
//! forwards the request to that cell's Raft leader. Every cell sits behind its
//! own breaker and bulkhead, so a failed or slow cell never hurts the others.
//!
//! ```text
//!  client ─▶ api (auth, limits) ─▶ proxy (ring → cell) ─▶ breaker ─▶ bulkhead ─▶ cell_client ─▶ cell leader
//!                    │                                        ▲
//!                    └ listing: every cell in parallel        └ health: polls every replica's /health
//! ```

pub mod api;
pub mod auth;
pub mod breaker;
pub mod bulkhead;
pub mod cell_client;
pub mod config;
pub mod error;
pub mod health;
pub mod listing;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod request;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use crate::config::RouterConfig;
pub use crate::error::{ApiError, RouteError};

/// Why the router could not start or stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("build the ring: {0}")]
    Ring(#[from] common::RingError),
    #[error("register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serve the public API: {0}")]
    Serve(std::io::Error),
}

/// Runs the router on `listener` until `shutdown` completes.
///
/// Shutdown order: stop accepting → drain in-flight requests (up to
/// `shutdown_grace`, then abort them) → stop the health checkers.
pub async fn run(
    cfg: RouterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RouterError> {
    cfg.validate()?;
    let metrics = Arc::new(metrics::RouterMetrics::new(prometheus::Registry::new())?);
    let proxy = Arc::new(proxy::Proxy::new(&cfg, metrics.clone())?);
    let app = Arc::new(api::App {
        proxy: proxy.clone(),
        auth: auth::Authenticator::new(&cfg.tokens, tokio::time::Instant::now()),
        metrics: metrics.clone(),
        max_object_bytes: cfg.max_object_bytes,
        epoch: cfg.cell_map.epoch,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut checkers = JoinSet::new();
    for cell in proxy.cells() {
        checkers.spawn(health::run_checker(
            cell.clone(),
            proxy.http.clone(),
            metrics.clone(),
            cfg.breaker.health_interval,
            cfg.breaker.health_timeout,
            stop_rx.clone(),
        ));
    }
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        epoch = cfg.cell_map.epoch,
        cells = cfg.cell_map.cells.len(),
        "router started"
    );

    let nodelay = |io: &mut tokio::net::TcpStream| {
        if let Err(e) = io.set_nodelay(true) {
            tracing::warn!("failed to set TCP_NODELAY: {e}");
        }
    };
    let mut stop_serving = stop_rx.clone();
    let server = axum::serve(listener.tap_io(nodelay), api::router(app)).with_graceful_shutdown(
        async move {
            let _ = stop_serving.wait_for(|s| *s).await;
        },
    );
    let mut server = tokio::spawn(async move { server.await });

    let outcome = tokio::select! {
        _ = shutdown => None,
        r = &mut server => Some(r),
    };
    let _ = stop_tx.send(true);
    let result = match outcome {
        None => {
            tracing::info!("shutting down: draining in-flight requests");
            match tokio::time::timeout(cfg.shutdown_grace, &mut server).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(grace = ?cfg.shutdown_grace, "in-flight requests outlived the shutdown grace period; aborting them");
                    server.abort();
                }
            }
            Ok(())
        }
        Some(r) => {
            let e = match r {
                Ok(Ok(())) => std::io::Error::other("server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => std::io::Error::other(e),
            };
            tracing::error!("failed to keep serving: {e}");
            Err(RouterError::Serve(e))
        }
    };
    // The checkers watch `stop` too; abort covers one stuck in a probe.
    checkers.shutdown().await;
    tracing::info!("router stopped");
    result
}
