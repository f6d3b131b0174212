//! The cellkv router: a stateless HTTP front end that authenticates clients,
//! places each (bucket, key) by the cell map's routing table and forwards the
//! request to that cell's Raft leader. Every cell sits behind its own breaker
//! and bulkhead, so a failed or slow cell never hurts the others. With
//! `[control]` the map is watched in the control cell and swapped at run time.
//!
//! ```text
//!  client ─▶ api (auth, limits) ─▶ proxy (topology → cell) ─▶ breaker ─▶ bulkhead ─▶ cell_client ─▶ cell leader
//!                    │                  ▲   ▲ moved / range_moving: re-route     ▲
//!                    │    map_watch ────┘   └ refresh                            └ health: polls every replica's /health
//!                    └ listing: every cell in parallel
//!  S3 client ─▶ s3 (SigV4, operations; its own listener) ─▶ proxy, listing (the same paths)
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
pub mod map_watch;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub mod request;
pub mod s3;
pub mod topology;

use std::future::Future;
use std::sync::Arc;

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
    #[error("build the routing table: {0}")]
    CellMap(#[from] common::CellMapError),
    #[error("register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serve the public API: {0}")]
    Serve(std::io::Error),
}

/// Runs the router on `listener` (and the S3 API on `s3_listener`, when
/// given: `[s3]` with `listen`) until `shutdown` completes.
///
/// Starts from the static `cell_map`, or from the `[control]` cache file when
/// that holds a newer map. Shutdown order: stop accepting → drain in-flight
/// requests (up to `shutdown_grace`, then abort them) → stop the map watcher
/// and the health checkers.
pub async fn run(
    cfg: RouterConfig,
    listener: TcpListener,
    s3_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RouterError> {
    cfg.validate()?;
    let metrics = Arc::new(metrics::RouterMetrics::new(prometheus::Registry::new())?);
    let map = map_watch::initial_map(&cfg.cell_map, cfg.control.as_ref());
    let proxy = Arc::new(proxy::Proxy::new(&cfg, map, metrics.clone())?);
    let watcher = cfg
        .control
        .clone()
        .map(|c| map_watch::MapWatcher::new(c, proxy.clone(), metrics.clone()));
    if let Some(w) = &watcher {
        proxy.set_refresher(w.handle());
    }
    let app = Arc::new(api::App {
        proxy: proxy.clone(),
        auth: auth::Authenticator::new(&cfg.tokens, tokio::time::Instant::now()),
        metrics: metrics.clone(),
        max_object_bytes: cfg.max_object_bytes,
        body_read_timeout: cfg.client_limits.body_read_timeout,
        watcher: watcher.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    proxy.start_health_checks(stop_rx.clone());
    let mut background = JoinSet::new();
    if let Some(w) = watcher {
        background.spawn(w.run(stop_rx.clone()));
    }
    let mut s3_server = None;
    if let Some(l) = s3_listener {
        let registry = Arc::new(s3::buckets::BucketRegistry::new(
            cfg.control.as_ref(),
            proxy.http.clone(),
        ));
        if let Some(c) = &cfg.control {
            background.spawn(registry.clone().run(c.poll_interval, stop_rx.clone()));
        }
        let s3_app = Arc::new(s3::S3App::new(
            &cfg,
            proxy.clone(),
            metrics.clone(),
            registry,
        ));
        tracing::info!(
            listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            region = %cfg.s3.region,
            credentials = cfg.s3.credentials.len(),
            "S3 API started"
        );
        let limits = &cfg.client_limits;
        s3_server = Some(service::Server::start_with(
            l,
            s3::router(s3_app),
            service::Limits::new(limits.header_read_timeout, limits.max_connections),
        ));
    }
    let topo = proxy.topology();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        epoch = topo.epoch(),
        cells = topo.cells().count(),
        watching = cfg.control.is_some(),
        "router started"
    );

    let limits = &cfg.client_limits;
    let mut server = service::Server::start_with(
        listener,
        api::router(app),
        service::Limits::new(limits.header_read_timeout, limits.max_connections),
    );
    let s3_failed = async {
        match &mut s3_server {
            Some(s) => s.failed().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = shutdown => None,
        e = server.failed() => Some(e),
        e = s3_failed => Some(e),
    };
    let _ = stop_tx.send(true);
    let result = match outcome {
        None => {
            tracing::info!("shutting down: draining in-flight requests");
            let s3_drained = async {
                match s3_server {
                    Some(s) => s.drain(cfg.shutdown_grace).await,
                    None => true,
                }
            };
            let (api, s3) = tokio::join!(server.drain(cfg.shutdown_grace), s3_drained);
            if !(api && s3) {
                tracing::warn!(grace = ?cfg.shutdown_grace, "in-flight requests outlived the shutdown grace period; aborting them");
            }
            Ok(())
        }
        Some(e) => {
            tracing::error!("failed to keep serving: {e}");
            Err(RouterError::Serve(e))
        }
    };
    // The watcher and checkers watch `stop` too; abort covers one stuck in I/O.
    background.shutdown().await;
    proxy.stop_health_checks().await;
    tracing::info!("router stopped");
    result
}

#[cfg(test)]
mod tests {
    /// The configured defaults are the `service` defaults that unconfigured
    /// servers (and the docs) use.
    #[test]
    fn client_limit_defaults_agree_with_service() {
        let c = common::config::ClientLimits::default();
        assert_eq!(c.header_read_timeout, service::HEADER_READ_TIMEOUT);
        assert_eq!(c.max_connections, service::MAX_CONNECTIONS);
        assert_eq!(c.body_read_timeout, service::body::BODY_READ_TIMEOUT);
    }
}
