//! `CellMetrics`: every Prometheus metric of a replica, registered into a
//! registry passed in (never the global one, so several replicas can share a
//! test process). Names follow `cellkv_cell_<thing>_<unit>`; labels stay bounded.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use service::register as reg;

/// Request latencies from 100 µs (a local read) to 10 s (past every timeout).
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// fsync on these disks takes ~40 µs to tens of ms; finer at the low end where group commit lives.
const FSYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
/// Appends covered by one fsync: 1 means no batching happened.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// A transfer's write pause: a few ms when the target keeps up, capped at
/// `transfer::MAX_WRITE_PAUSE` (2 s); the top buckets show a cap being hit.
const WRITE_PAUSE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0,
];
/// Snapshot builds range from milliseconds (empty) to minutes (gigabytes).
const SNAPSHOT_BUCKETS: &[f64] = &[0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0];

pub struct CellMetrics {
    /// Served on `/metrics`.
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub raft_term: IntGauge,
    pub raft_is_leader: IntGauge,
    pub raft_leader_changes_total: IntCounter,
    pub raft_proposals_total: IntCounterVec,
    pub proposal_batch_ops: Histogram,
    pub last_log_index: IntGauge,
    pub committed_index: IntGauge,
    pub applied_index: IntGauge,
    pub apply_lag_entries: IntGauge,
    pub replication_lag_entries: IntGaugeVec,
    pub wal_fsync_seconds: Histogram,
    pub wal_fsync_batch_size: Histogram,
    pub snapshot_build_seconds: Histogram,
    pub snapshots_installed_total: IntCounter,
    pub raft_rpc_total: IntCounterVec,
    pub raft_heartbeats_elided_total: IntCounter,
    pub raft_rpc_rejected_total: IntCounterVec,
    pub rocksdb_sst_bytes: IntGaugeVec,
    pub rocksdb_memtable_bytes: IntGaugeVec,
    pub rocksdb_estimated_keys: IntGaugeVec,
    pub disk_free_bytes: Gauge,
    pub refusals_total: IntCounterVec,
    pub ingested_objects_total: IntCounter,
    pub purged_objects_total: IntCounter,
    pub leader_transfers_total: IntCounterVec,
    pub leader_transfer_write_pause_seconds: Histogram,
}

impl CellMetrics {
    pub fn new(registry: Registry) -> prometheus::Result<CellMetrics> {
        let r = &registry;
        let m = CellMetrics {
            requests_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_requests_total",
                        "Cell API requests by operation and status code",
                    ),
                    &["op", "status"],
                )?,
            )?,
            request_duration_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cellkv_cell_request_duration_seconds",
                        "Cell API request latency",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["op"],
                )?,
            )?,
            raft_term: reg(
                r,
                IntGauge::new("cellkv_cell_raft_term", "Current Raft term")?,
            )?,
            raft_is_leader: reg(
                r,
                IntGauge::new(
                    "cellkv_cell_raft_is_leader",
                    "1 if this replica leads its cell",
                )?,
            )?,
            raft_leader_changes_total: reg(
                r,
                IntCounter::new(
                    "cellkv_cell_raft_leader_changes_total",
                    "Times this replica saw the cell's leader change",
                )?,
            )?,
            raft_proposals_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_raft_proposals_total",
                        "Writes proposed to Raft by outcome",
                    ),
                    &["outcome"],
                )?,
            )?,
            proposal_batch_ops: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cellkv_cell_proposal_batch_ops",
                        "Client writes carried by one Raft entry",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ]),
                )?,
            )?,
            last_log_index: reg(
                r,
                IntGauge::new(
                    "cellkv_cell_raft_last_log_index",
                    "Last index in the local log",
                )?,
            )?,
            committed_index: reg(
                r,
                IntGauge::new(
                    "cellkv_cell_raft_committed_index",
                    "Highest index known committed (leader: quorum-acknowledged)",
                )?,
            )?,
            applied_index: reg(
                r,
                IntGauge::new(
                    "cellkv_cell_raft_applied_index",
                    "Last index applied to the state machine",
                )?,
            )?,
            apply_lag_entries: reg(
                r,
                IntGauge::new(
                    "cellkv_cell_raft_apply_lag_entries",
                    "Entries in the local log not yet applied",
                )?,
            )?,
            replication_lag_entries: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_cell_raft_replication_lag_entries",
                        "Leader only: entries each follower is behind",
                    ),
                    &["follower"],
                )?,
            )?,
            wal_fsync_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cellkv_cell_wal_fsync_seconds",
                        "Duration of one fsync of the Raft log's WAL (by the syncer thread on the leader, inline elsewhere)",
                    )
                    .buckets(FSYNC_BUCKETS.to_vec()),
                )?,
            )?,
            wal_fsync_batch_size: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cellkv_cell_wal_fsync_batch_size",
                        "Log appends made durable by one fsync",
                    )
                    .buckets(BATCH_BUCKETS.to_vec()),
                )?,
            )?,
            snapshot_build_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cellkv_cell_snapshot_build_seconds",
                        "Time to build a snapshot file",
                    )
                    .buckets(SNAPSHOT_BUCKETS.to_vec()),
                )?,
            )?,
            snapshots_installed_total: reg(
                r,
                IntCounter::new(
                    "cellkv_cell_snapshots_installed_total",
                    "Snapshots received from a leader and installed",
                )?,
            )?,
            raft_rpc_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_raft_rpc_received_total",
                        "Authenticated Raft RPCs received",
                    ),
                    &["rpc"],
                )?,
            )?,
            raft_heartbeats_elided_total: reg(
                r,
                IntCounter::new(
                    "cellkv_cell_raft_heartbeats_elided_total",
                    "AppendEntries without entries that the leader answered from its follower's last acknowledgement instead of sending (ADR 0016)",
                )?,
            )?,
            raft_rpc_rejected_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_raft_rpc_rejected_total",
                        "Raft or admin RPCs refused, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            rocksdb_sst_bytes: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_cell_rocksdb_sst_bytes",
                        "Total SST file size per column family",
                    ),
                    &["cf"],
                )?,
            )?,
            rocksdb_memtable_bytes: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_cell_rocksdb_memtable_bytes",
                        "Memtable size per column family",
                    ),
                    &["cf"],
                )?,
            )?,
            rocksdb_estimated_keys: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_cell_rocksdb_estimated_keys",
                        "Estimated keys per column family",
                    ),
                    &["cf"],
                )?,
            )?,
            disk_free_bytes: reg(
                r,
                Gauge::new(
                    "cellkv_cell_disk_free_bytes",
                    "Free bytes on the data dir's disk",
                )?,
            )?,
            refusals_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_ownership_refusals_total",
                        "Client requests refused because of range ownership, by reason (range_moving, moved)",
                    ),
                    &["reason"],
                )?,
            )?,
            ingested_objects_total: reg(
                r,
                IntCounter::new(
                    "cellkv_cell_ingested_objects_total",
                    "Objects stored by ingest entries applied on this replica",
                )?,
            )?,
            purged_objects_total: reg(
                r,
                IntCounter::new(
                    "cellkv_cell_purged_objects_total",
                    "Objects deleted by purge entries applied on this replica",
                )?,
            )?,
            leader_transfers_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_cell_leader_transfers_total",
                        "Leadership transfers this replica ran as leader, by outcome (moved, timeout, failed)",
                    ),
                    &["outcome"],
                )?,
            )?,
            leader_transfer_write_pause_seconds: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cellkv_cell_leader_transfer_write_pause_seconds",
                        "How long a leadership transfer held new writes on the leader",
                    )
                    .buckets(WRITE_PAUSE_BUCKETS.to_vec()),
                )?,
            )?,
            registry: registry.clone(),
        };
        service::register_build_info(&registry, "cellkv_cell")?;
        Ok(m)
    }
}
