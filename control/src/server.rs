//! `run`: wires the control server together — control store, cell client,
//! job lease, job manager, admin API — initialises the map on first start,
//! and shuts down in order (stop accepting, finish the current job step,
//! drain requests).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::http::{Client, ClientConfig};
use common::ownership::OwnershipOp;
use common::{Backoff, CellMap, RoutingTable};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::api::App;
use crate::backend::{ClusterBackend, LeaseState};
use crate::cells::CellClient;
use crate::config::{load_map_file, ConfigError, ControlConfig};
use crate::job::{now_ms, RunnerConfig};
use crate::manager::JobManager;
use crate::metrics::ControlMetrics;
use crate::store::{acquire_lease, ControlStore};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("serve the admin API: {0}")]
    Serve(std::io::Error),
}

/// The HTTP client's per-request timeout, above every call's own deadline.
const CALL_BACKSTOP: Duration = Duration::from_secs(3600);

/// Retries of the map's initialisation and of the cells' first assignment.
const INIT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The map as first stored: explicit owners (the weighted ring of every cell).
pub fn with_explicit_owners(mut map: CellMap) -> CellMap {
    if map.owners.is_empty() {
        if let Ok(t) = map.routing() {
            map.owners = t.to_owners();
        }
    }
    map
}

/// Runs until `shutdown` resolves.
pub async fn run(
    cfg: ControlConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let initial = match &cfg.initial_map {
        Some(p) => Some(load_map_file(p)?),
        None => None,
    };
    let http = Client::new(ClientConfig {
        connect_timeout: cfg.connect_timeout,
        // A backstop only: every call carries its own deadline (a cell
        // call's, up to the two minutes a learner may take to catch up).
        request_timeout: CALL_BACKSTOP,
        ..ClientConfig::default()
    });
    let store = Arc::new(ControlStore::new(
        http.clone(),
        cfg.control_cell.clone(),
        cfg.control_token.clone(),
        cfg.request_timeout,
    ));
    let cells = Arc::new(CellClient::new(
        http,
        cfg.cell_api_token.clone(),
        cfg.cell_admin_token.clone(),
        cfg.request_timeout,
    ));
    let instance = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        now_ms() % 100_000
    );
    let lease = Arc::new(LeaseState::new(instance.clone()));
    let jobs_snapshot = Arc::new(Mutex::new(Default::default()));
    let mut backend =
        ClusterBackend::new(store.clone(), cells.clone(), lease.clone(), jobs_snapshot);
    backend.scan_page_bytes = cfg.scan_page_bytes;
    backend.purge_chunk = cfg.purge_chunk;
    let manager = JobManager::new(
        Arc::new(backend),
        RunnerConfig {
            step_retry_timeout: cfg.step_retry_timeout,
            scan_page_bytes: cfg.scan_page_bytes,
            ingest_max_bytes: cfg.ingest_max_bytes,
        },
    );
    let app = Arc::new(App {
        cfg: cfg.clone(),
        store: store.clone(),
        cells: cells.clone(),
        jobs: manager.clone(),
        metrics: ControlMetrics::new(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Background: map initialisation, then the lease loop (which resumes jobs).
    let bg = {
        let (store, cells, manager, lease) =
            (store.clone(), cells.clone(), manager.clone(), lease.clone());
        let mut stop = stop_rx.clone();
        let ttl = cfg.lease_ttl;
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = async {
                    init_map(&store, &cells, initial).await;
                    lease_loop(&store, &manager, &lease, ttl).await;
                } => {}
            }
        })
    };

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(admin_listen = %addr, instance = %instance, "control server started");
    println!("cellkv-control admin API listening on {addr}");

    let limits = service::Limits::new(
        cfg.client_limits.header_read_timeout,
        cfg.client_limits.max_connections,
    );
    let mut server = service::Server::start_with(listener, crate::api::router(app), limits);
    let outcome = tokio::select! {
        _ = shutdown => None,
        e = server.failed() => Some(e),
    };
    tracing::info!("shutting down: stopping jobs at their next resumable point");
    manager.begin_shutdown();
    let _ = stop_tx.send(true);
    server.stop_accepting();
    let deadline = Instant::now() + cfg.shutdown_grace;
    while manager.running_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if manager.running_count() > 0 {
        tracing::warn!(
            "a job step outlived the shutdown grace period; it resumes on the next start"
        );
    }
    bg.abort();
    match outcome {
        None => {
            server.drain(cfg.shutdown_grace).await;
            Ok(())
        }
        Some(e) => Err(ServerError::Serve(e)),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control".into())
}

/// Stores the initial map if the control cell has none, makes its owners
/// explicit, and tells every unmanaged data cell what it owns. Retries until
/// the control cell answers.
async fn init_map(store: &ControlStore, cells: &CellClient, initial: Option<CellMap>) {
    let mut backoff = INIT_BACKOFF;
    let map = loop {
        match store.load_map().await {
            Ok(Some((m, _))) if !m.owners.is_empty() => break Some(m),
            Ok(Some(_)) => {
                // A static map: pin today's ownership before anything moves.
                match store
                    .update_map(|m| {
                        if !m.owners.is_empty() {
                            return Ok::<bool, ()>(false);
                        }
                        *m = with_explicit_owners(m.clone());
                        Ok(true)
                    })
                    .await
                {
                    Ok(Ok(m)) => break Some(m),
                    Ok(Err(())) => {}
                    Err(e) => tracing::warn!("failed to make the map's owners explicit: {e}"),
                }
            }
            Ok(None) => match &initial {
                Some(m) => {
                    let m = with_explicit_owners(m.clone());
                    match store.init_map(&m).await {
                        Ok(true) => {
                            tracing::info!(
                                epoch = m.epoch,
                                cells = m.cells.len(),
                                "stored the initial cell map"
                            );
                            continue;
                        }
                        Ok(false) => continue,
                        Err(e) => tracing::warn!("failed to store the initial map: {e}"),
                    }
                }
                None => {
                    tracing::warn!("the control store has no cell map and no initial_map is configured; waiting");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            },
            Err(e) => tracing::warn!("failed to read the cell map, retrying: {e}"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    };
    let Some(map) = map else { return };
    let Ok(routing) = map.routing() else { return };
    assign_unmanaged(cells, &map, &routing).await;
}

/// Gives every data cell that never received an ownership op its ranges
/// (`Assign`), so it refuses what it does not own. Cells that are managed
/// already are left alone: their record is newer than anything derived here.
async fn assign_unmanaged(cells: &CellClient, map: &CellMap, routing: &RoutingTable) {
    for spec in &map.cells {
        if spec.replicas.iter().all(|r| r.control_addr.is_none()) {
            tracing::warn!(cell = %spec.id, "cell has no control_addr in the map; it stays unmanaged");
            continue;
        }
        let mut backoff = INIT_BACKOFF;
        for _ in 0..20 {
            match cells.get_ownership(spec).await {
                Ok(t) if t.managed => break,
                Ok(_) => {
                    let op = OwnershipOp::Assign {
                        epoch: map.epoch,
                        owned: routing.ranges_of(spec.id),
                    };
                    match cells.ownership(spec, &op).await {
                        Ok(_) => {
                            tracing::info!(cell = %spec.id, "assigned the cell its ranges");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(cell = %spec.id, "failed to assign ownership: {e}")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(cell = %spec.id, "failed to read the cell's ownership: {e}")
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Takes and renews the job lease; resumes jobs when it is taken and stops
/// them when it is lost.
async fn lease_loop(
    store: &ControlStore,
    manager: &Arc<JobManager>,
    lease: &LeaseState,
    ttl: Duration,
) {
    let mut loaded = false;
    loop {
        let asked = Instant::now();
        let was = lease.held();
        match acquire_lease(store, &lease.holder, ttl, now_ms()).await {
            Ok(Ok(())) => {
                lease.renewed(asked, ttl);
                if !was {
                    tracing::info!(holder = %lease.holder, "took the job lease");
                    match manager.load_all().await {
                        Ok(()) => {
                            loaded = true;
                            manager.resume_running();
                        }
                        Err(e) => {
                            tracing::warn!("failed to load jobs: {e}");
                            lease.lost(None);
                        }
                    }
                }
            }
            Ok(Err(other)) => {
                if was {
                    tracing::warn!(holder = %other.holder, "lost the job lease; stopping jobs");
                    manager.stop_all();
                }
                lease.lost(Some(other));
                if !loaded && manager.load_all().await.is_ok() {
                    loaded = true;
                }
            }
            Err(e) => {
                tracing::warn!("failed to renew the job lease: {e}");
                if !lease.held() && was {
                    manager.stop_all();
                }
            }
        }
        tokio::time::sleep(ttl / 3).await;
    }
}
