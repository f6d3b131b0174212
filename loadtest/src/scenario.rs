//! A load-test scenario as written in `config/scenarios/*.toml`: the target
//! cluster, the workload, closed or open loop, an optional preload of one
//! cell, the phases, the faults (process faults, and moves run by the
//! control server: `drain_cell`, `add_cell`) and the SLOs; its validation,
//! the timeline derived from it (phases, fault windows) and the SLO verdicts
//! on an `AnalysisResult`. Running it is the driver's.
//!
//! ```text
//! 0        warmup_s      +steady_s            at_s   at_s+duration_s     +recovery_s
//! |-warmup-|----steady----|--(pre-fault)--|--fault-1--|--recovery-1--|...|--end
//!            (the baseline)
//! ```
//!
//! Times are whole seconds from the start of the load (warm-up included), so
//! `at_s` reads the same as the report's timeline. Faults may not overlap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{names::validate_bucket, CellId};
use serde::{Deserialize, Serialize};

use crate::analysis::{AnalysisInput, FaultWindow, RecoveryTolerance};
use crate::history::HistoryConfig;
use crate::stats::Phase;
use crate::workload::{Workload, WorkloadError};

mod slo;

pub use slo::{Slo, SloResult};

/// Most clients (closed loop) or requests in flight (open loop) we allow.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Largest preloaded object: the router's and the cells' default `max_object_bytes`.
pub const MAX_PRELOAD_VALUE: u32 = 4 << 20;
/// Most objects a preload writes (each is read back at the end).
pub const MAX_PRELOAD_OBJECTS: u64 = 10_000_000;
/// Most writers of a preload.
pub const MAX_PRELOAD_CONCURRENCY: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("read scenario {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse scenario: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("workload: {0}")]
    Workload(#[from] WorkloadError),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

/// Where the cluster under test is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// `[target.router] url = "http://127.0.0.1:8080", token = "..."`; without
    /// `token`, the driver takes it from the environment.
    Router(RouterTarget),
    /// `[target] cluster_file = "DIR/cluster.json"` written by `cellkv-local`
    /// (router URL, token, and the pids the faults need).
    ClusterFile(PathBuf),
    /// `[target] start_local = { cells = 3 }`: the harness starts its own cluster.
    StartLocal(LocalTarget),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterTarget {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTarget {
    /// Cells, ids `1..=cells`, 3 replicas each.
    pub cells: u32,
    /// Raft timing of every replica, where it should differ from the cell's
    /// defaults (50 ms heartbeats, 250–500 ms elections, 256 entries per
    /// AppendEntries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftOverrides>,
}

/// `[target.start_local.raft]`. openraft 0.9 gives every AppendEntries the
/// heartbeat interval as its deadline, so a cell taking large objects (whose
/// log entries batch megabytes) needs longer heartbeats and fewer entries
/// per AppendEntries, or a lagging follower never catches up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_min_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_timeout_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_entries: Option<u64>,
}

impl RaftOverrides {
    /// `base` with these overrides.
    pub fn apply(&self, base: &cluster::cell_proc::RaftOptions) -> cluster::cell_proc::RaftOptions {
        let ms =
            |v: Option<u64>, d: std::time::Duration| v.map_or(d, std::time::Duration::from_millis);
        cluster::cell_proc::RaftOptions {
            heartbeat_interval: ms(self.heartbeat_interval_ms, base.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min_ms, base.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max_ms, base.election_timeout_max),
            max_payload_entries: self.max_payload_entries.unwrap_or(base.max_payload_entries),
            ..base.clone()
        }
    }
}

/// How load is offered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Mode {
    /// `clients` loops, each sending its next request when the last finished.
    /// A stalled cell holds its clients: throughput to healthy cells drops too.
    Closed { clients: u32 },
    /// `rate` requests per second on a fixed schedule, latency counted from
    /// the intended send time; at most `max_in_flight` outstanding (beyond it
    /// the sender waits, and the wait shows in the latency).
    Open {
        rate: f64,
        #[serde(default = "default_max_in_flight")]
        max_in_flight: u32,
    },
}

fn default_max_in_flight() -> u32 {
    1024
}

/// Lengths of the fixed phases, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Phases {
    /// Load before measuring (connections, caches, leader elections settle).
    pub warmup_s: u32,
    /// The baseline every cell is compared with. Faults start after it.
    pub steady_s: u32,
    /// Load after the last fault ended.
    pub recovery_s: u32,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            warmup_s: 5,
            steady_s: 20,
            recovery_s: 20,
        }
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL the current Raft leader of `cell`; restart it after `duration_s`.
    KillLeader,
    /// SIGKILL every replica of `cell`; restart them after `duration_s`.
    KillCell,
    /// SIGSTOP every replica of `cell`; SIGCONT after `duration_s`.
    FreezeCell,
    /// Add `delay_ms` to every round trip between the router and `cell`
    /// (half on the way in, half on the way out) for `duration_s`, through a
    /// latency proxy per replica. Needs a `start_local` target.
    SlowCell,
    /// Stop the router; start it again after `duration_s` (0: at once).
    RestartRouter,
    /// Ask the control server to drain `cell` (move every range it owns to
    /// the other cells) and follow the job; it must be done within
    /// `duration_s`. No cell fails: every key must keep being served.
    DrainCell,
    /// Start a new 3-replica cell (the next free id), register it with the
    /// control server and rebalance onto it; the job must be done within
    /// `duration_s`. Needs a `start_local` target (the harness starts the
    /// cell's processes).
    AddCell,
    /// Cut `cell`'s leader from its followers (both ways) while the routers
    /// still reach it; heal after `duration_s`. Needs a cluster on a real
    /// network (a Compose deployment, `--cluster deployment.json`).
    PartitionLeader,
    /// Cut one follower of `cell` from its cell and the routers; heal after
    /// `duration_s`. Needs a cluster on a real network.
    IsolateFollower,
    /// Cut every router from `cell`; heal after `duration_s`. Needs a
    /// cluster on a real network.
    CutRouter,
    /// Move the wall clock of `cell`'s leader by `skew_ms` (either way; its
    /// monotonic clock keeps its pace, as under a bad NTP step) for
    /// `duration_s`. Must change nothing. Needs a Compose deployment.
    SkewClock,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillCell => "kill_cell",
            FaultKind::FreezeCell => "freeze_cell",
            FaultKind::SlowCell => "slow_cell",
            FaultKind::RestartRouter => "restart_router",
            FaultKind::DrainCell => "drain_cell",
            FaultKind::AddCell => "add_cell",
            FaultKind::PartitionLeader => "partition_leader",
            FaultKind::IsolateFollower => "isolate_follower",
            FaultKind::CutRouter => "cut_router",
            FaultKind::SkewClock => "skew_clock",
        }
    }

    /// Whether the fault names one cell.
    pub fn needs_cell(self) -> bool {
        !matches!(self, FaultKind::RestartRouter | FaultKind::AddCell)
    }

    fn default_duration_s(self) -> u32 {
        match self {
            FaultKind::RestartRouter => 0,
            FaultKind::DrainCell | FaultKind::AddCell => 60,
            _ => 10,
        }
    }

    /// Whether the fault needs a cluster of hosts (containers): cut network
    /// links or a clock of its own, which processes sharing one machine's
    /// loopback and clock cannot have.
    pub fn needs_hosts(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader
                | FaultKind::IsolateFollower
                | FaultKind::CutRouter
                | FaultKind::SkewClock
        )
    }

    /// Whether the fault moves keys through the control server (a job)
    /// rather than acting on processes.
    pub fn is_move(self) -> bool {
        matches!(self, FaultKind::DrainCell | FaultKind::AddCell)
    }

    /// Whether the router should refuse the fault's requests at once (503
    /// `cell_unavailable`) rather than let them wait: the fast-fail SLOs apply.
    pub fn expects_fast_fail(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::KillCell
                | FaultKind::FreezeCell
                | FaultKind::SlowCell
                | FaultKind::CutRouter
        )
    }
}

/// One `[[faults]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Start, in seconds from the start of the load (warm-up included).
    pub at_s: u32,
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellId>,
    /// How long the fault lasts; defaults by kind (10 s; 0 for a router restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u32>,
    /// `slow_cell` only: the round trip added to every exchange between the
    /// router and the cell (its requests, its health checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u32>,
    /// `skew_clock` only: how far the leader's wall clock moves (negative: back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_ms: Option<i64>,
    /// `drain_cell` and `add_cell` only: the job's copy rate limit (bytes of
    /// values per second); default: the control server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bytes_per_sec: Option<u64>,
}

impl Fault {
    pub fn duration_s(&self) -> u32 {
        self.duration_s
            .unwrap_or_else(|| self.kind.default_duration_s())
    }

    /// End of the analysed window: at least one second, so an instant fault
    /// (a router restart) still has a window to measure.
    pub fn end_s(&self) -> u32 {
        self.at_s.saturating_add(self.duration_s().max(1))
    }

    pub fn label(&self) -> String {
        match self.cell {
            Some(c) => format!("{} cell {c}", self.kind.as_str()),
            None => self.kind.as_str().to_owned(),
        }
    }

    /// The cells whose keys may fail: the named one, every cell for a router
    /// restart, none for moves (drain, add), a lost follower or a skewed
    /// clock, which must cost no availability.
    pub fn affected_cells(&self, all: &[CellId]) -> Vec<CellId> {
        match self.kind {
            FaultKind::RestartRouter => all.to_vec(),
            FaultKind::DrainCell
            | FaultKind::AddCell
            | FaultKind::IsolateFollower
            | FaultKind::SkewClock => Vec::new(),
            _ => self.cell.into_iter().collect(),
        }
    }
}

/// `[preload]`: objects written before the warm-up, every one to one cell
/// (keys chosen by the live map's ownership), so a drain of that cell has
/// something to move. Each is read back at the end (HEAD: version and etag)
/// as part of the lost-write check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preload {
    pub cell: CellId,
    /// Value bytes in all; rounded up to whole objects of `value_size`.
    pub bytes: u64,
    #[serde(default = "default_preload_value_size")]
    pub value_size: u32,
    /// Writes in flight.
    #[serde(default = "default_preload_concurrency")]
    pub concurrency: u32,
    /// The bucket of the objects (not one of the workload's).
    #[serde(default = "default_preload_bucket")]
    pub bucket: String,
}

fn default_preload_value_size() -> u32 {
    256 << 10
}

fn default_preload_concurrency() -> u32 {
    16
}

fn default_preload_bucket() -> String {
    "preload".to_owned()
}

impl Preload {
    /// How many objects it writes.
    pub fn objects(&self) -> u64 {
        self.bytes.div_ceil(u64::from(self.value_size.max(1)))
    }
}

/// A whole scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds the workload generators: the same seed offers the same operations.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The client's deadline per request; longer than the router's own
    /// `cell_request_timeout` (5 s) so the router's answer is what we see.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    pub target: Target,
    #[serde(default)]
    pub workload: Workload,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<Preload>,
    #[serde(default)]
    pub phases: Phases,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub slo: Slo,
    /// When a faulted cell counts as recovered.
    #[serde(default)]
    pub recovery: RecoveryTolerance,
    /// How much of the history the linearizability check keeps and searches.
    #[serde(default)]
    pub history: HistoryConfig,
}

fn default_seed() -> u64 {
    1
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn fraction(field: &str, v: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be in [0, 1], got {v}")))
    }
}

fn positive(field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

impl Scenario {
    /// Parses and validates.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        Scenario::from_toml(&text)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be > 0"));
        }
        self.validate_target()?;
        self.workload.validate()?;
        match self.mode {
            Mode::Closed { clients } => {
                if clients == 0 || clients > MAX_CONCURRENCY {
                    return Err(invalid(
                        "mode.closed.clients",
                        format!("must be 1..={MAX_CONCURRENCY}, got {clients}"),
                    ));
                }
            }
            Mode::Open {
                rate,
                max_in_flight,
            } => {
                positive("mode.open.rate", rate)?;
                if max_in_flight == 0 || max_in_flight > MAX_CONCURRENCY {
                    return Err(invalid(
                        "mode.open.max_in_flight",
                        format!("must be 1..={MAX_CONCURRENCY}, got {max_in_flight}"),
                    ));
                }
            }
        }
        if self.phases.steady_s == 0 {
            return Err(invalid(
                "phases.steady_s",
                "must be > 0: it is the baseline",
            ));
        }
        let r = &self.recovery;
        fraction("recovery.availability_min", r.availability_min)?;
        positive("recovery.p99_ratio_max", r.p99_ratio_max)?;
        if r.sustain_s == 0 {
            return Err(invalid("recovery.sustain_s", "must be > 0"));
        }
        if !self.faults.is_empty() && self.phases.recovery_s < r.sustain_s {
            return Err(invalid(
                "phases.recovery_s",
                format!(
                    "must be at least recovery.sustain_s ({}) to see a recovery",
                    r.sustain_s
                ),
            ));
        }
        self.validate_preload()?;
        self.validate_faults()?;
        self.validate_slo()
    }

    fn validate_preload(&self) -> Result<(), ScenarioError> {
        let Some(p) = &self.preload else {
            return Ok(());
        };
        if let Target::StartLocal(l) = &self.target {
            if p.cell.0 == 0 || p.cell.0 > l.cells {
                return Err(invalid(
                    "preload.cell",
                    format!("cell {} is not in 1..={}", p.cell, l.cells),
                ));
            }
        }
        if p.value_size == 0 || p.value_size > MAX_PRELOAD_VALUE {
            return Err(invalid(
                "preload.value_size",
                format!("must be 1..={MAX_PRELOAD_VALUE}, got {}", p.value_size),
            ));
        }
        if p.bytes == 0 || p.objects() > MAX_PRELOAD_OBJECTS {
            return Err(invalid(
                "preload.bytes",
                format!(
                    "must be > 0 and at most {MAX_PRELOAD_OBJECTS} objects of value_size, got {}",
                    p.bytes
                ),
            ));
        }
        if p.concurrency == 0 || p.concurrency > MAX_PRELOAD_CONCURRENCY {
            return Err(invalid(
                "preload.concurrency",
                format!(
                    "must be 1..={MAX_PRELOAD_CONCURRENCY}, got {}",
                    p.concurrency
                ),
            ));
        }
        validate_bucket(&p.bucket).map_err(|e| invalid("preload.bucket", e.to_string()))?;
        if self.workload.buckets.contains(&p.bucket) {
            return Err(invalid(
                "preload.bucket",
                format!("{:?} is a workload bucket; pick another", p.bucket),
            ));
        }
        Ok(())
    }

    fn validate_target(&self) -> Result<(), ScenarioError> {
        match &self.target {
            Target::Router(r) => {
                if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                    return Err(invalid(
                        "target.router.url",
                        "must start with http:// or https://",
                    ));
                }
                if r.token.as_deref() == Some("") {
                    return Err(invalid(
                        "target.router.token",
                        "must not be empty (omit it to use the environment)",
                    ));
                }
            }
            Target::ClusterFile(p) => {
                if p.as_os_str().is_empty() {
                    return Err(invalid("target.cluster_file", "must not be empty"));
                }
            }
            Target::StartLocal(l) => {
                if l.cells == 0 || l.cells > 64 {
                    return Err(invalid(
                        "target.start_local.cells",
                        format!("must be 1..=64, got {}", l.cells),
                    ));
                }
                if let Some(o) = &l.raft {
                    let r = o.apply(&cluster::cell_proc::RaftOptions::default());
                    if r.heartbeat_interval.is_zero()
                        || r.election_timeout_min <= r.heartbeat_interval
                        || r.election_timeout_max <= r.election_timeout_min
                    {
                        return Err(invalid(
                            "target.start_local.raft",
                            format!(
                                "need 0 < heartbeat_interval ({:?}) < election_timeout_min ({:?}) < election_timeout_max ({:?})",
                                r.heartbeat_interval, r.election_timeout_min, r.election_timeout_max
                            ),
                        ));
                    }
                    if r.max_payload_entries == 0 {
                        return Err(invalid(
                            "target.start_local.raft.max_payload_entries",
                            "must be > 0",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_faults(&self) -> Result<(), ScenarioError> {
        let steady_end = self.phases.warmup_s + self.phases.steady_s;
        let known_cells = match &self.target {
            Target::StartLocal(l) => Some(l.cells),
            _ => None,
        };
        let mut prev_end: Option<u32> = None;
        for (i, f) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{i}].{name}");
            if f.at_s < steady_end {
                return Err(invalid(
                    field("at_s"),
                    format!(
                        "{} is before the end of the steady phase ({steady_end} s)",
                        f.at_s
                    ),
                ));
            }
            if let Some(end) = prev_end {
                if f.at_s < end {
                    return Err(invalid(
                        field("at_s"),
                        format!("{} starts before the previous fault ends ({end} s); faults must be in order and not overlap", f.at_s),
                    ));
                }
            }
            prev_end = Some(f.end_s());
            match (f.kind.needs_cell(), f.cell) {
                (true, None) => {
                    return Err(invalid(
                        field("cell"),
                        format!("{} needs a cell", f.kind.as_str()),
                    ));
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        field("cell"),
                        format!("{} takes no cell", f.kind.as_str()),
                    ));
                }
                (true, Some(c)) => {
                    if let Some(n) = known_cells {
                        if c.0 == 0 || c.0 > n {
                            return Err(invalid(
                                field("cell"),
                                format!("cell {c} is not in 1..={n}"),
                            ));
                        }
                    }
                }
                (false, None) => {}
            }
            match (f.kind, f.delay_ms) {
                (FaultKind::SlowCell, None | Some(0)) => {
                    return Err(invalid(field("delay_ms"), "slow_cell needs delay_ms > 0"));
                }
                (FaultKind::SlowCell, Some(_)) | (_, None) => {}
                (k, Some(_)) => {
                    return Err(invalid(
                        field("delay_ms"),
                        format!("only slow_cell takes delay_ms, not {}", k.as_str()),
                    ));
                }
            }
            match (f.kind, f.skew_ms) {
                (FaultKind::SkewClock, None | Some(0)) => {
                    return Err(invalid(field("skew_ms"), "skew_clock needs skew_ms != 0"));
                }
                (FaultKind::SkewClock, Some(_)) | (_, None) => {}
                (k, Some(_)) => {
                    return Err(invalid(
                        field("skew_ms"),
                        format!("only skew_clock takes skew_ms, not {}", k.as_str()),
                    ));
                }
            }
            match (f.kind.is_move(), f.bandwidth_bytes_per_sec) {
                (true, Some(0)) => {
                    return Err(invalid(field("bandwidth_bytes_per_sec"), "must be > 0"));
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        field("bandwidth_bytes_per_sec"),
                        format!(
                            "only drain_cell and add_cell take a bandwidth, not {}",
                            f.kind.as_str()
                        ),
                    ));
                }
                _ => {}
            }
            if f.kind != FaultKind::RestartRouter && f.duration_s() == 0 {
                return Err(invalid(field("duration_s"), "must be > 0"));
            }
        }
        Ok(())
    }

    fn validate_slo(&self) -> Result<(), ScenarioError> {
        let s = &self.slo;
        fraction("slo.healthy_availability_min", s.healthy_availability_min)?;
        positive("slo.healthy_p99_ratio_max", s.healthy_p99_ratio_max)?;
        positive("slo.fast_fail_p99_ms_max", s.fast_fail_p99_ms_max)?;
        if let Some(v) = s.time_to_detect_ms_max {
            positive("slo.time_to_detect_ms_max", v)?;
        }
        if let Some(v) = s.error_key_share_ratio_max {
            positive("slo.error_key_share_ratio_max", v)?;
        }
        let h = &self.history;
        for (field, v) in [
            ("history.max_ops", h.max_ops),
            ("history.steps_per_key", h.steps_per_key),
            ("history.check_time_s", h.check_time_s),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        Ok(())
    }

    /// Which cell's writes of a key are the later ones once the key moved,
    /// given the ids the `add_cell` faults will give their cells (in fault
    /// order): a generation per cell. A drained cell's writes all happened
    /// before its keys reached their new owners, and an added cell's after
    /// it took them, so each move puts its source below its destination.
    /// Exact while each key moves at most once, or always the same way;
    /// cells not listed are generation 0.
    pub fn cell_generations(&self, added: &[CellId]) -> BTreeMap<CellId, i64> {
        let mut gens = BTreeMap::new();
        let mut added = added.iter();
        for (k, f) in self.faults.iter().enumerate() {
            let k = k as i64 + 1;
            match f.kind {
                FaultKind::DrainCell => {
                    if let Some(c) = f.cell {
                        gens.insert(c, -k);
                    }
                }
                FaultKind::AddCell => {
                    if let Some(&c) = added.next() {
                        gens.insert(c, k);
                    }
                }
                _ => {}
            }
        }
        gens
    }

    /// How many cells the `add_cell` faults start.
    pub fn added_cells(&self) -> usize {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::AddCell)
            .count()
    }

    /// The steady phase: every cell's baseline.
    pub fn baseline(&self) -> Phase {
        let w = self.phases.warmup_s;
        Phase::new("steady", w, w + self.phases.steady_s)
    }

    /// Every phase in order; they tile `[0, duration_s())`.
    pub fn phases(&self) -> Vec<Phase> {
        let base = self.baseline();
        let mut out = vec![Phase::new("warmup", 0, base.start_s), base.clone()];
        let mut t = base.end_s;
        for (i, f) in self.faults.iter().enumerate() {
            if f.at_s > t {
                let name = if i == 0 {
                    "pre-fault".to_owned()
                } else {
                    format!("recovery-{i}")
                };
                out.push(Phase::new(name, t, f.at_s));
            }
            out.push(Phase::new(
                format!("fault-{} {}", i + 1, f.label()),
                f.at_s,
                f.end_s(),
            ));
            t = f.end_s();
        }
        let name = if self.faults.is_empty() {
            "tail".to_owned()
        } else {
            format!("recovery-{}", self.faults.len())
        };
        out.push(Phase::new(name, t, t + self.phases.recovery_s));
        out.retain(|p| p.duration_s() > 0);
        out
    }

    /// Length of the load, warm-up to the end of the recovery.
    pub fn duration_s(&self) -> u32 {
        self.phases().last().map_or(0, |p| p.end_s)
    }

    /// The fault windows for the analysis, given the cluster's cells.
    pub fn fault_windows(&self, cells: &[CellId]) -> Vec<FaultWindow> {
        self.faults
            .iter()
            .map(|f| FaultWindow {
                label: f.label(),
                start_s: f.at_s,
                end_s: f.end_s(),
                cells: f.affected_cells(cells),
                expect_fast_fail: f.kind.expects_fast_fail(),
                added_latency_ms: (f.kind == FaultKind::SlowCell)
                    .then(|| f.delay_ms.map(f64::from))
                    .flatten(),
            })
            .collect()
    }

    /// Everything the analysis needs, given the cluster's cells and their ring shares.
    pub fn analysis_input(&self, cells: &[CellId], shares: BTreeMap<CellId, f64>) -> AnalysisInput {
        AnalysisInput {
            baseline: self.baseline(),
            faults: self.fault_windows(cells),
            cells: cells.to_vec(),
            shares,
            recovery: self.recovery.clone(),
            end_s: self.duration_s(),
        }
    }

    /// A copy safe to print or store in a report: no token.
    pub fn redacted(&self) -> Scenario {
        let mut s = self.clone();
        if let Target::Router(r) = &mut s.target {
            if r.token.is_some() {
                r.token = Some("<redacted>".to_owned());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: [(&str, &str); 17] = [
        (
            "smoke-kill-cell",
            include_str!("../../config/scenarios/smoke-kill-cell.toml"),
        ),
        (
            "smoke-slow-cell",
            include_str!("../../config/scenarios/smoke-slow-cell.toml"),
        ),
        (
            "kill-leader",
            include_str!("../../config/scenarios/kill-leader.toml"),
        ),
        (
            "kill-cell",
            include_str!("../../config/scenarios/kill-cell.toml"),
        ),
        (
            "freeze-cell",
            include_str!("../../config/scenarios/freeze-cell.toml"),
        ),
        (
            "slow-cell",
            include_str!("../../config/scenarios/slow-cell.toml"),
        ),
        (
            "restart-router",
            include_str!("../../config/scenarios/restart-router.toml"),
        ),
        (
            "drain-cell",
            include_str!("../../config/scenarios/drain-cell.toml"),
        ),
        (
            "smoke-drain-cell",
            include_str!("../../config/scenarios/smoke-drain-cell.toml"),
        ),
        (
            "bench-drain-1gib",
            include_str!("../../config/scenarios/bench-drain-1gib.toml"),
        ),
        (
            "add-cell",
            include_str!("../../config/scenarios/add-cell.toml"),
        ),
        (
            "smoke-add-cell",
            include_str!("../../config/scenarios/smoke-add-cell.toml"),
        ),
        (
            "compose-partition",
            include_str!("../../config/scenarios/compose-partition.toml"),
        ),
        (
            "partition-leader",
            include_str!("../../config/scenarios/partition-leader.toml"),
        ),
        (
            "isolate-follower",
            include_str!("../../config/scenarios/isolate-follower.toml"),
        ),
        (
            "cut-router",
            include_str!("../../config/scenarios/cut-router.toml"),
        ),
        (
            "skew-clock",
            include_str!("../../config/scenarios/skew-clock.toml"),
        ),
    ];

    #[test]
    fn example_scenarios_parse_and_validate() {
        for (name, text) in EXAMPLES {
            let s = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, name);
            assert!(!s.description.is_empty(), "{name} has no description");
            // Phases tile the run without gaps.
            let phases = s.phases();
            assert_eq!(phases[0].start_s, 0);
            for w in phases.windows(2) {
                assert_eq!(w[0].end_s, w[1].start_s, "{name}: {phases:?}");
            }
            assert_eq!(s.duration_s(), phases.last().unwrap().end_s);
            // The move scenarios preload the drained cell, or add one.
            if name.contains("drain") {
                let p = s
                    .preload
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: no preload"));
                assert_eq!(Some(p.cell), s.faults[0].cell, "{name}");
                assert_eq!(s.faults[0].kind, FaultKind::DrainCell, "{name}");
            }
            if name.contains("add-cell") {
                assert_eq!(s.added_cells(), 1, "{name}");
            }
            if name == "bench-drain-1gib" {
                let p = s.preload.as_ref().unwrap();
                assert!(p.bytes >= 1 << 30, "{name}: preload {} bytes", p.bytes);
                assert!(matches!(s.mode, Mode::Open { .. }), "{name}: open loop");
            }
            // A report can carry it: it serializes back to a valid scenario.
            let again = toml::to_string(&s).unwrap();
            assert_eq!(Scenario::from_toml(&again).unwrap(), s, "{name}");
        }
    }

    fn minimal() -> String {
        "name = \"t\"\n[target]\nstart_local = { cells = 3 }\n[mode]\nclosed = { clients = 4 }\n"
            .to_owned()
    }

    #[test]
    fn defaults_and_targets() {
        let s = Scenario::from_toml(&minimal()).unwrap();
        assert_eq!(s.seed, 1);
        assert_eq!(s.phases, Phases::default());
        assert_eq!(s.slo, Slo::default());
        assert_eq!(s.workload, Workload::default());
        assert_eq!(
            s.target,
            Target::StartLocal(LocalTarget {
                cells: 3,
                raft: None
            })
        );
        let s = Scenario::from_toml(
            "name = \"t\"\n[target]\ncluster_file = \"/tmp/c/cluster.json\"\n\
             [mode]\nopen = { rate = 250.5 }\n",
        )
        .unwrap();
        assert_eq!(s.target, Target::ClusterFile("/tmp/c/cluster.json".into()));
        assert_eq!(
            s.mode,
            Mode::Open {
                rate: 250.5,
                max_in_flight: 1024
            }
        );
        let s = Scenario::from_toml(
            "name = \"t\"\n[target.router]\nurl = \"http://127.0.0.1:9\"\ntoken = \"sekrit\"\n\
             [mode.closed]\nclients = 1\n",
        )
        .unwrap();
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(!shown.contains("sekrit") && shown.contains("<redacted>"));
    }

    #[test]
    fn parse_errors_and_unknown_fields() {
        for bad in [
            format!("{}colour = \"red\"\n", minimal()),
            minimal().replace("clients = 4", "clients = 4, think_ms = 3"),
            minimal().replace("cells = 3", "cells = 3, replicas = 5"),
            format!("{}[[faults]]\nat_s = 30\nkind = \"nuke_cell\"\ncell = 1\n", minimal()),
            format!("{}[slo]\navailability = 0.5\n", minimal()),
            "name = \"t\"\n[target]\nstart_local = { cells = 3 }\ncluster_file = \"x\"\n[mode]\nclosed = { clients = 4 }\n".to_owned(),
        ] {
            assert!(
                matches!(Scenario::from_toml(&bad), Err(ScenarioError::Parse(_))),
                "accepted:\n{bad}"
            );
        }
    }

    fn with_fault(fault: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(&format!(
            "{}[phases]\nwarmup_s = 5\nsteady_s = 20\nrecovery_s = 10\n{fault}",
            minimal()
        ))
    }

    fn invalid_field(r: Result<Scenario, ScenarioError>) -> String {
        match r {
            Err(ScenarioError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn validate_rejects_bad_faults() {
        let f = |s: &str| format!("[[faults]]\n{s}\n");
        with_fault(&f("at_s = 25\nkind = \"kill_cell\"\ncell = 2")).unwrap();
        let cases = [
            (
                f("at_s = 24\nkind = \"kill_cell\"\ncell = 2"),
                "faults[0].at_s",
            ),
            (f("at_s = 25\nkind = \"kill_cell\""), "faults[0].cell"),
            (
                f("at_s = 25\nkind = \"kill_cell\"\ncell = 4"),
                "faults[0].cell",
            ),
            (
                f("at_s = 25\nkind = \"restart_router\"\ncell = 1"),
                "faults[0].cell",
            ),
            (
                f("at_s = 25\nkind = \"slow_cell\"\ncell = 1"),
                "faults[0].delay_ms",
            ),
            (
                f("at_s = 25\nkind = \"kill_cell\"\ncell = 1\ndelay_ms = 5"),
                "faults[0].delay_ms",
            ),
            (
                f("at_s = 25\nkind = \"freeze_cell\"\ncell = 1\nduration_s = 0"),
                "faults[0].duration_s",
            ),
            (
                f("at_s = 25\nkind = \"kill_cell\"\ncell = 1\nduration_s = 10")
                    + &f("at_s = 30\nkind = \"kill_cell\"\ncell = 2"),
                "faults[1].at_s",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(invalid_field(with_fault(&text)), field, "{text}");
        }
        let mut s = Scenario::from_toml(&minimal()).unwrap();
        s.slo.healthy_availability_min = 1.5;
        assert_eq!(
            invalid_field(s.validate().map(|_| s.clone())),
            "slo.healthy_availability_min"
        );
        s.slo = Slo::default();
        s.mode = Mode::Open {
            rate: 0.0,
            max_in_flight: 1,
        };
        assert_eq!(
            invalid_field(s.validate().map(|_| s.clone())),
            "mode.open.rate"
        );
        s.mode = Mode::Closed { clients: 1 };
        s.workload.key_count = 0;
        assert!(matches!(s.validate(), Err(ScenarioError::Workload(_))));
    }

    #[test]
    fn preload_and_move_faults_are_checked() {
        let s = Scenario::from_toml(&format!(
            "{}[preload]\ncell = 3\nbytes = 1000\nvalue_size = 300\n",
            minimal()
        ))
        .unwrap();
        let p = s.preload.as_ref().unwrap();
        assert_eq!(
            (p.objects(), p.concurrency, p.bucket.as_str()),
            (4, 16, "preload")
        );
        for (extra, field) in [
            ("[preload]\ncell = 4\nbytes = 1\n", "preload.cell"),
            ("[preload]\ncell = 1\nbytes = 0\n", "preload.bytes"),
            (
                "[preload]\ncell = 1\nbytes = 1\nvalue_size = 4194305\n",
                "preload.value_size",
            ),
            (
                "[preload]\ncell = 1\nbytes = 1\nconcurrency = 0\n",
                "preload.concurrency",
            ),
            (
                "[preload]\ncell = 1\nbytes = 1\nbucket = \"loadtest\"\n",
                "preload.bucket",
            ),
            (
                "[preload]\ncell = 1\nbytes = 1\nbucket = \"A B\"\n",
                "preload.bucket",
            ),
        ] {
            let r = Scenario::from_toml(&format!("{}{extra}", minimal()));
            assert_eq!(invalid_field(r), field, "{extra}");
        }

        let f = |s: &str| format!("[[faults]]\n{s}\n");
        let s = with_fault(
            &(f("at_s = 25\nkind = \"drain_cell\"\ncell = 3\nbandwidth_bytes_per_sec = 1048576")
                + &f("at_s = 90\nkind = \"add_cell\"")),
        )
        .unwrap();
        assert_eq!(s.faults[0].duration_s(), 60);
        assert_eq!(s.faults[0].bandwidth_bytes_per_sec, Some(1 << 20));
        assert!(s
            .faults
            .iter()
            .all(|f| f.kind.is_move() && !f.kind.expects_fast_fail()));
        // Moves cost no availability: no cell is faulted, every cell is judged healthy.
        let cells = [CellId(1), CellId(2), CellId(3)];
        assert!(s.fault_windows(&cells).iter().all(|w| w.cells.is_empty()));
        // The drained cell's writes come before everyone's, the added cell's after.
        let g = s.cell_generations(&[CellId(4)]);
        assert_eq!(g.get(&CellId(3)), Some(&-1));
        assert_eq!(g.get(&CellId(4)), Some(&2));
        assert_eq!(g.get(&CellId(1)), None);
        for (text, field) in [
            (
                f("at_s = 25\nkind = \"drain_cell\"\ncell = 3\nbandwidth_bytes_per_sec = 0"),
                "faults[0].bandwidth_bytes_per_sec",
            ),
            (
                f("at_s = 25\nkind = \"kill_cell\"\ncell = 3\nbandwidth_bytes_per_sec = 5"),
                "faults[0].bandwidth_bytes_per_sec",
            ),
            (f("at_s = 25\nkind = \"drain_cell\""), "faults[0].cell"),
            (
                f("at_s = 25\nkind = \"add_cell\"\ncell = 4"),
                "faults[0].cell",
            ),
        ] {
            assert_eq!(invalid_field(with_fault(&text)), field, "{text}");
        }
    }

    #[test]
    fn local_raft_timing_can_be_overridden() {
        let text = "name = \"t\"\n[target.start_local]\ncells = 3\n\
                    [target.start_local.raft]\nheartbeat_interval_ms = 200\n\
                    election_timeout_min_ms = 1000\nelection_timeout_max_ms = 2000\n\
                    max_payload_entries = 8\n[mode]\nclosed = { clients = 4 }\n";
        let s = Scenario::from_toml(text).unwrap();
        let Target::StartLocal(l) = &s.target else {
            panic!("{:?}", s.target)
        };
        let base = cluster::cell_proc::RaftOptions::default();
        let r = l.raft.as_ref().unwrap().apply(&base);
        assert_eq!(r.heartbeat_interval, std::time::Duration::from_millis(200));
        assert_eq!(r.election_timeout_max, std::time::Duration::from_secs(2));
        assert_eq!(r.max_payload_entries, 8);
        assert_eq!(r.snapshot_chunk_bytes, base.snapshot_chunk_bytes);
        // Elections must outlast heartbeats.
        let bad = text.replace(
            "election_timeout_min_ms = 1000",
            "election_timeout_min_ms = 150",
        );
        assert_eq!(
            invalid_field(Scenario::from_toml(&bad)),
            "target.start_local.raft"
        );
        let bad = text.replace("max_payload_entries = 8", "max_payload_entries = 0");
        assert_eq!(
            invalid_field(Scenario::from_toml(&bad)),
            "target.start_local.raft.max_payload_entries"
        );
    }

    #[test]
    fn timeline_of_two_faults() {
        let s = with_fault(
            "[[faults]]\nat_s = 30\nkind = \"kill_cell\"\ncell = 2\nduration_s = 10\n\
             [[faults]]\nat_s = 50\nkind = \"restart_router\"\n",
        )
        .unwrap();
        let names: Vec<(String, u32, u32)> = s
            .phases()
            .into_iter()
            .map(|p| (p.name, p.start_s, p.end_s))
            .collect();
        assert_eq!(
            names,
            vec![
                ("warmup".to_owned(), 0, 5),
                ("steady".to_owned(), 5, 25),
                ("pre-fault".to_owned(), 25, 30),
                ("fault-1 kill_cell cell 2".to_owned(), 30, 40),
                ("recovery-1".to_owned(), 40, 50),
                ("fault-2 restart_router".to_owned(), 50, 51),
                ("recovery-2".to_owned(), 51, 61),
            ]
        );
        let cells = [CellId(1), CellId(2), CellId(3)];
        let w = s.fault_windows(&cells);
        assert_eq!(w[0].cells, vec![CellId(2)]);
        assert_eq!(w[1].cells, cells.to_vec());
        assert!(w[0].expect_fast_fail && !w[1].expect_fast_fail);
        let input = s.analysis_input(&cells, BTreeMap::new());
        assert_eq!((input.baseline.start_s, input.end_s), (5, 61));
    }
}
