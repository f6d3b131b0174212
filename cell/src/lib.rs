//! One replica of a cellkv cell: a member of a 3-replica Raft group (openraft)
//! over its own RocksDB. It serves the cell API to routers on one port and
//! Raft RPC plus administration on another. It knows nothing of other cells.
//!
//! ```text
//!  router ──HTTP──▶ api (cell API, /health, /metrics)
//!                    │ writes: Raft client_write ─▶ log_store (group-commit fsync)
//!                    │                              └▶ network ─▶ peers' raft_rpc
//!                    │ reads: read_barrier (ReadIndex) ─▶ RocksDB
//!                    ▼
//!                  state_machine (objects::decide) ─▶ RocksDB; snapshot files
//! ```

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod health;
pub mod log_cache;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod objects;
pub mod proposer;
pub mod raft_rpc;
pub mod read_barrier;
pub mod replica;
pub mod snapshot;
pub mod state_machine;
pub mod transfer;
pub mod types;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::SnapshotPolicy;
use tokio::net::TcpListener;

use crate::config::CellConfig;
use crate::db::ALL_CFS;
use crate::metrics::CellMetrics;
use crate::replica::Replica;

/// Why a replica stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Open(#[from] db::OpenError),
    #[error("open the state machine: {0}")]
    StateMachine(std::io::Error),
    #[error("start Raft: {0}")]
    Raft(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serve {what}: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("Raft stopped with a fatal error: {0}")]
    Fatal(String),
}

/// The listeners a replica serves on, bound by the caller (tests pass port 0).
pub struct Listeners {
    pub api: TcpListener,
    pub raft: TcpListener,
}

fn raft_config(cfg: &CellConfig) -> Result<openraft::Config, CellError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: format!("cellkv-cell-{}", cfg.cell_id),
        heartbeat_interval: r.heartbeat_interval.as_millis() as u64,
        election_timeout_min: r.election_timeout_min.as_millis() as u64,
        election_timeout_max: r.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: r.snapshot_rpc_timeout.as_millis() as u64,
        max_payload_entries: r.max_payload_entries,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: r.logs_to_keep_after_snapshot,
        snapshot_max_chunk_size: r.snapshot_chunk_bytes,
        // Followers this far behind are sent a snapshot instead of entries.
        replication_lag_threshold: r.snapshot_logs_since_last.max(1000),
        ..Default::default()
    };
    c.validate().map_err(|e| CellError::Raft(e.to_string()))
}

/// Runs one replica until `shutdown` completes (graceful) or Raft fails (error).
///
/// Shutdown order: refuse new API requests → drain in-flight ones (up to
/// `shutdown_grace`) → stop Raft RPC → `Raft::shutdown` → close RocksDB.
pub async fn run(
    cfg: CellConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CellError> {
    cfg.validate()?;
    let db = db::open(
        &cfg.data_dir,
        cfg.cell_id,
        cfg.node_id,
        cfg.min_free_disk_bytes,
    )?;
    let metrics = Arc::new(CellMetrics::new(prometheus::Registry::new())?);
    let committed = Arc::new(AtomicU64::new(0));
    let flush_gate = Arc::new(log_store::FlushGate::default());
    let leader_hint = Arc::new(AtomicBool::new(false));
    let (log_store, syncer) = log_store::LogStore::new(
        db.clone(),
        cfg.durability,
        metrics.clone(),
        committed.clone(),
        flush_gate.clone(),
        leader_hint.clone(),
    );
    let sm_shared = Arc::new(state_machine::SmShared::default());
    let sm = state_machine::StateMachine::open(
        db.clone(),
        &cfg.data_dir,
        cfg.cell_id,
        sm_shared.clone(),
        metrics.clone(),
    )
    .map_err(CellError::StateMachine)?;
    let network = network::Network::new(&cfg, metrics.raft_heartbeats_elided_total.clone());
    let peers = network.clone();
    let raft = types::Raft::new(
        cfg.node_id.0,
        Arc::new(raft_config(&cfg)?),
        network,
        log_store,
        sm,
    )
    .await
    .map_err(|e| CellError::Raft(e.to_string()))?;
    let failpoint = std::env::var("CELLKV_FAILPOINT").is_ok_and(|v| v == "abort_after_ack");
    if failpoint {
        tracing::warn!(
            "failpoint abort_after_ack is armed: this replica aborts after acknowledging a write"
        );
    }
    let writes = Arc::new(proposer::WriteGate::new(metrics.clone()));
    let rep = Arc::new(Replica {
        reads: read_barrier::ReadBarrier::start(raft.clone()),
        proposer: proposer::Proposer::start(
            raft.clone(),
            metrics.clone(),
            flush_gate,
            writes.clone(),
        ),
        writes,
        peers,
        transfer: tokio::sync::Mutex::new(()),
        cfg,
        raft,
        db,
        sm: sm_shared,
        metrics,
        shutting_down: AtomicBool::new(false),
        failpoint_abort_after_ack: failpoint,
        committed,
        leader_hint,
    });
    tracing::info!(
        cell = %rep.cfg.cell_id, node = %rep.cfg.node_id,
        api = %listeners.api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        raft = %listeners.raft.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "replica started"
    );

    let limits = service::Limits::new(
        rep.cfg.client_limits.header_read_timeout,
        rep.cfg.client_limits.max_connections,
    );
    let mut api = service::Server::start_with(listeners.api, api::router(rep.clone()), limits);
    let mut raft =
        service::Server::start_with(listeners.raft, raft_rpc::router(rep.clone()), limits);
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let sampler = tokio::spawn(sample_metrics(rep.clone(), fatal_tx));

    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        Ok(why) = fatal_rx => Err(CellError::Fatal(why)),
        e = api.failed() => Err(CellError::Serve { what: "cell API", source: e }),
        e = raft.failed() => Err(CellError::Serve { what: "Raft RPC", source: e }),
    };
    match &outcome {
        Ok(()) => tracing::info!("shutting down"),
        Err(e) => tracing::error!("failed to keep serving: {e}"),
    }
    rep.shutting_down.store(true, Ordering::Release);
    if !api.drain(rep.cfg.shutdown_grace).await {
        tracing::warn!("in-flight API requests outlived the shutdown grace period; aborting them");
    }
    raft.drain(Duration::from_secs(1)).await;
    sampler.abort();
    let _ = sampler.await;
    if let Err(e) = rep.raft.shutdown().await {
        tracing::warn!("failed to shut Raft down cleanly: {e}");
    }
    // RocksDB closes last, after everything that writes to it has stopped: a DB
    // still open (or compacting) while the process exits can abort in its
    // background threads.
    let db = rep.db.clone();
    drop(rep);
    if !syncer.join(Duration::from_secs(2)).await {
        tracing::warn!("the WAL syncer did not stop in time");
    }
    db.cancel_all_background_work(true);
    if Arc::strong_count(&db) > 1 {
        tracing::warn!(
            refs = Arc::strong_count(&db),
            "RocksDB is still referenced at shutdown"
        );
    }
    drop(db);
    tracing::info!("replica stopped");
    outcome
}

/// How often the log and replication gauges are refreshed (and a fatal Raft
/// error noticed). openraft publishes its metrics several times per entry;
/// following each publication cost a task wake-up and a copy of the metrics
/// per change, thousands per second under load.
const RAFT_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Mirrors Raft and RocksDB state into the metrics, counts leader changes, and
/// reports a fatal Raft error (a replica that cannot persist must stop).
///
/// Role and leader follow openraft's server metrics, which change only with
/// the vote, the role, the leader or the membership, so the leader hint
/// (`Replica::leader_hint`) and the leader-change count are up to date at
/// once; the rest is sampled every `RAFT_SAMPLE_INTERVAL`.
async fn sample_metrics(rep: Arc<Replica>, fatal: tokio::sync::oneshot::Sender<String>) {
    let mut server = rep.raft.server_metrics();
    server.mark_changed(); // the role it has now, before any change
    let mut leader = None;
    let mut raft_tick = tokio::time::interval(RAFT_SAMPLE_INTERVAL);
    raft_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut disk_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = server.changed() => {
                if r.is_err() {
                    return;
                }
                let s = server.borrow_and_update().clone();
                let m = &rep.metrics;
                let term = s.vote.leader_id().get_term();
                if s.current_leader != leader {
                    if leader.is_some() || s.current_leader.is_some() {
                        m.raft_leader_changes_total.inc();
                        tracing::info!(term, leader = ?s.current_leader, "leader changed");
                    }
                    leader = s.current_leader;
                }
                let leads = s.state == openraft::ServerState::Leader;
                rep.leader_hint.store(leads, Ordering::Release);
                m.raft_is_leader.set(leads as i64);
                m.raft_term.set(term as i64);
            }
            _ = raft_tick.tick() => {
                let snap = rep.raft.metrics().borrow().clone();
                if let Err(e) = &snap.running_state {
                    let _ = fatal.send(e.to_string());
                    return;
                }
                let m = &rep.metrics;
                let last = snap.last_log_index.unwrap_or(0);
                let applied = snap.last_applied.map(|l| l.index).unwrap_or(0);
                m.last_log_index.set(last as i64);
                m.committed_index
                    .set(rep.committed.load(Ordering::Acquire) as i64);
                m.apply_lag_entries.set(last.saturating_sub(applied) as i64);
                m.replication_lag_entries.reset();
                if let Some(r) = &snap.replication {
                    for (id, matched) in r.iter().filter(|(id, _)| **id != snap.id) {
                        let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                        m.replication_lag_entries
                            .with_label_values(&[&id.to_string()])
                            .set(lag as i64);
                    }
                }
            }
            _ = disk_tick.tick() => {
                let m = &rep.metrics;
                for cf in ALL_CFS {
                    let h = db::cf(&rep.db, cf);
                    let prop = |p: &str| rep.db.property_int_value_cf(h, p).ok().flatten().unwrap_or(0) as i64;
                    m.rocksdb_sst_bytes.with_label_values(&[cf]).set(prop("rocksdb.total-sst-files-size"));
                    m.rocksdb_memtable_bytes.with_label_values(&[cf]).set(prop("rocksdb.cur-size-all-mem-tables"));
                    m.rocksdb_estimated_keys.with_label_values(&[cf]).set(prop("rocksdb.estimate-num-keys"));
                }
                if let Ok(free) = db::free_disk_bytes(&rep.cfg.data_dir) {
                    m.disk_free_bytes.set(free as f64);
                }
            }
        }
    }
}

#[cfg(test)]
mod storage_test;
