//! `Replica`: the handles one running replica shares between its servers and
//! background tasks (config, Raft, RocksDB, metrics, the read barrier, the
//! write gate and the outbound peer client).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rocksdb::DB;

use crate::config::CellConfig;
use crate::metrics::CellMetrics;
use crate::network::Network;
use crate::proposer::{Proposer, WriteGate};
use crate::read_barrier::ReadBarrier;
use crate::state_machine::SmShared;
use crate::types::Raft;

pub struct Replica {
    pub cfg: CellConfig,
    pub raft: Raft,
    pub db: Arc<DB>,
    pub sm: Arc<SmShared>,
    pub metrics: Arc<CellMetrics>,
    pub reads: ReadBarrier,
    pub proposer: Proposer,
    /// Every write's way into Raft; a leadership transfer closes it briefly.
    pub writes: Arc<WriteGate>,
    /// Calls to this cell's other replicas outside openraft (the transfer's
    /// election request), with the cluster secret and the cell id.
    pub peers: Network,
    /// One leadership transfer at a time (a tokio mutex: held across awaits).
    pub transfer: tokio::sync::Mutex<()>,
    /// Set when shutdown begins: new requests get 503 `shutting_down`.
    pub shutting_down: AtomicBool,
    /// Test hook `CELLKV_FAILPOINT=abort_after_ack`: abort right after acknowledging a write.
    pub failpoint_abort_after_ack: bool,
    /// Highest log index known committed (from the log store's `save_committed`).
    pub committed: Arc<std::sync::atomic::AtomicU64>,
    /// Whether this replica leads, as of Raft's latest metrics; the log store
    /// reads it to choose where to fsync (`log_store`). Set by `sample_metrics`.
    pub leader_hint: Arc<AtomicBool>,
}
