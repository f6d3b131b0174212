//! The control server's admin API (`cellkv-control`; read by `cellkvctl` and
//! the load harness): every request and response body, including the job
//! record the job endpoints answer. Plain serde types; the logic is in `control`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CellId, CellSpec, CellState, HashRange, NodeId, ReplicaSpec};

// ---------- jobs ----------

/// `status` of a migration job: what the control server stores and its
/// admin API answers, and what the load harness and `cellkvctl` read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Paused,
    Done,
    Cancelled,
    Failed,
}

impl JobStatus {
    /// Running or paused: the one job a control server may have at a time.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Running | JobStatus::Paused)
    }
}

impl fmt::Display for JobStatus {
    /// The JSON name (`running`, `paused`, …).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Done => "done",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Failed => "failed",
        })
    }
}

/// `progress` of a migration job (stored with the job, answered by the
/// admin API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobProgress {
    pub ranges_total: u64,
    pub ranges_done: u64,
    pub batches_done: u64,
    pub keys_copied: u64,
    pub bytes_copied: u64,
    pub keys_deleted: u64,
    /// Bytes the whole job should copy, from range stats when it was planned.
    pub bytes_estimated: u64,
    /// Milliseconds the job ran (not paused), for the rate.
    pub active_ms: u64,
}

/// What a job does; flattened into the job as `kind` (and `cell`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// A new cell takes its share of the target ring.
    Add { cell: CellId },
    /// A draining cell hands everything away, then becomes `empty`.
    Drain { cell: CellId },
    /// Whatever the target ring asks for.
    Rebalance,
}

impl JobKind {
    /// The JSON `kind`: `add`, `drain` or `rebalance`.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Add { .. } => "add",
            JobKind::Drain { .. } => "drain",
            JobKind::Rebalance => "rebalance",
        }
    }

    /// The cell added or drained.
    pub fn cell(self) -> Option<CellId> {
        match self {
            JobKind::Add { cell } | JobKind::Drain { cell } => Some(cell),
            JobKind::Rebalance => None,
        }
    }
}

/// The step a job is at (docs/control-plane.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Select,
    Prepare,
    Copy,
    Fence,
    Delta,
    Seal,
    Own,
    Release,
    Commit,
    Finish,
    Unfence,
    Abort,
    PurgeDest,
}

impl fmt::Display for Phase {
    /// The JSON name (`select`, …, `purge_dest`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Select => "select",
            Phase::Prepare => "prepare",
            Phase::Copy => "copy",
            Phase::Fence => "fence",
            Phase::Delta => "delta",
            Phase::Seal => "seal",
            Phase::Own => "own",
            Phase::Release => "release",
            Phase::Commit => "commit",
            Phase::Finish => "finish",
            Phase::Unfence => "unfence",
            Phase::Abort => "abort",
            Phase::PurgeDest => "purge_dest",
        })
    }
}

/// What the operator asked of a job, honoured at the next safe point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRequest {
    Pause,
    Cancel,
}

/// Where the bulk copy of the current batch is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCursor {
    /// Index into the batch's ranges.
    pub range: usize,
    /// Hex scan cursor within that range.
    pub after: Option<String>,
}

/// A set of ranges moved together through the nine steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    pub from: CellId,
    pub to: CellId,
    pub ranges: Vec<HashRange>,
    /// Keys per range at the source when planned (same order as `ranges`).
    pub range_keys: Vec<u64>,
    pub keys: u64,
    pub bytes: u64,
}

/// The batch in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub index: u64,
    #[serde(flatten)]
    pub plan: BatchPlan,
    /// Ownership epoch of `Own`/`Release`, chosen once at `Own`.
    pub epoch: Option<u64>,
    /// Wall clock (ms) when `Fence` was applied: the write pause started.
    pub fence_ms: Option<u64>,
    pub cursor: CopyCursor,
}

/// A source copy left to purge (background).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeTask {
    pub cell: CellId,
    pub range: HashRange,
}

/// A migration job as the control server stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(flatten)]
    pub kind: JobKind,
    pub status: JobStatus,
    /// Why the job is paused or failed, or the last transient error.
    pub message: Option<String>,
    pub requested: Option<JobRequest>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    pub bandwidth_bytes_per_sec: u64,
    pub batch_max_bytes: u64,
    pub batch_max_ranges: usize,
    pub phase: Phase,
    pub batch: Option<Batch>,
    pub progress: JobProgress,
    /// Write pause (Fence → Release) of every completed batch, in ms.
    pub pauses_ms: Vec<u64>,
    pub purges: Vec<PurgeTask>,
}

/// `GET /v1/jobs/{id}` (and every answer naming a job): the record plus
/// derived numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub rate_bytes_per_sec: f64,
    pub eta_secs: Option<f64>,
    pub pause_max_ms: Option<u64>,
    pub pause_p99_ms: Option<u64>,
}

/// `GET /v1/jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

// ---------- status ----------

/// One replica in `GET /v1/status`, from its `/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node_id: NodeId,
    pub api_addr: String,
    pub control_addr: Option<String>,
    pub reachable: bool,
    pub ready: bool,
    pub role: Option<String>,
    pub applied_index: Option<u64>,
    pub lag_entries: Option<u64>,
}

/// One cell in `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellStatus {
    pub id: CellId,
    pub state: CellState,
    pub weight: u32,
    pub share_pct: f64,
    pub target_share_pct: f64,
    pub ranges: usize,
    pub leader: Option<NodeId>,
    pub ownership_epoch: Option<u64>,
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
    pub replicas: Vec<ReplicaStatus>,
}

/// The job lease as `GET /v1/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    pub lease_held: bool,
    /// This control server's instance name.
    pub instance: String,
    /// The other instance last seen holding the lease.
    pub lease_holder: Option<String>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub epoch: u64,
    pub moving_ranges: usize,
    pub pending_moves: usize,
    pub control: ControlStatus,
    pub cells: Vec<CellStatus>,
    pub active_job: Option<JobView>,
}

// ---------- cells ----------

/// `POST /v1/cells`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCellRequest {
    pub id: CellId,
    #[serde(default = "crate::cell_map::default_weight")]
    pub weight: u32,
    pub replicas: Vec<ReplicaSpec>,
    /// Start a job that moves the cell's share onto it (default true).
    #[serde(default = "yes")]
    pub rebalance: bool,
    pub bandwidth: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The answer to `POST /v1/cells`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellAdded {
    pub cell: CellSpec,
    pub epoch: u64,
    /// The rebalance job, unless `rebalance: false`.
    pub job: Option<JobView>,
}

/// Body of `POST /v1/cells/{id}/drain` and `POST /v1/rebalance` (may be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Copy rate limit in bytes per second (default: the server's).
    pub bandwidth: Option<u64>,
}

/// The answer to a drain or rebalance: the started job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStarted {
    pub epoch: u64,
    pub job: JobView,
}

/// Query of `DELETE /v1/cells/{id}` (`?force=true`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveCellQuery {
    pub force: Option<bool>,
}

/// The answer to `DELETE /v1/cells/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRemoved {
    pub removed: CellId,
    pub forced: bool,
    pub lost: Lost,
}

/// What a forced removal lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub ranges: usize,
    pub keys: Amount,
    pub bytes: Amount,
}

/// A count, or (when forced) its decimal text or why it is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    Count(u64),
    Text(String),
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Text(t) => f.write_str(t),
        }
    }
}

/// The answer to isolate and restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellStateChanged {
    pub cell: CellId,
    pub state: CellState,
    pub epoch: u64,
}

// ---------- plan ----------

/// `POST /v1/plan`: what a change would move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// `add`, `drain` or `rebalance`.
    pub kind: String,
    pub cell: Option<CellId>,
    pub weight: Option<u32>,
    pub bandwidth: Option<u64>,
}

/// Totals of one (from, to) pair of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairPlan {
    pub from: CellId,
    pub to: CellId,
    pub ranges: usize,
    /// Fraction of the hash space, in percent.
    pub share_pct: f64,
    pub keys: u64,
    pub bytes: u64,
}

/// The answer to `POST /v1/plan`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanResponse {
    pub kind: String,
    pub epoch: u64,
    pub pairs: Vec<PairPlan>,
    pub ranges: usize,
    pub keys: u64,
    pub bytes: u64,
    /// False when some source did not report its range stats.
    pub stats_complete: bool,
    pub batches_estimate: usize,
    pub bandwidth_bytes_per_sec: u64,
    pub estimated_secs: f64,
}

// ---------- replicas ----------

/// The answer to adding, removing or replacing a replica (the bodies of
/// add and replace are a [`ReplicaSpec`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasChanged {
    pub cell: CellId,
    /// The node replaced (replace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<NodeId>,
    pub voters: Vec<NodeId>,
    pub epoch: u64,
}

/// `POST /v1/cells/{id}/transfer-leader` (body may be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    /// The new leader (default: another replica).
    pub to: Option<NodeId>,
    /// The cell's budget for the transfer (default 10 s, at most 60 s).
    pub timeout_ms: Option<u64>,
}

/// The answer to a leadership transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderResponse {
    pub cell: CellId,
    pub leader: Option<NodeId>,
    pub changed: bool,
    /// What the cell reported, when it did the transfer itself.
    #[serde(flatten)]
    pub transfer: Option<TransferFigures>,
}

/// A cell's account of a leadership transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFigures {
    pub term: Option<u64>,
    pub attempts: Option<u64>,
    pub write_pause_ms: Option<u64>,
}

#[cfg(test)]
mod tests;
