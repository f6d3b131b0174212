//! The load harness's driver: runs one [`Scenario`] end to end against a
//! cluster (one it starts, one `cellkv-local` runs, or any router), injects
//! its faults, reads every acknowledged write back and builds the [`Report`].
//!
//! Faults need processes: a cluster the harness starts (`start_local`; for
//! `slow_cell` it puts latency proxies between the router and that cell), or
//! one described by a `cluster.json` (`--cluster`, faulted by pid, see
//! `external`; `slow_cell` and starting an added cell are asked of the
//! `cellkv-local` running it). Moves (`drain_cell`, `add_cell`) go through
//! the cluster's control server and are followed to their end
//! (`migration`). A bare router takes load only.
//!
//! ```text
//! [preload] (one cell's keys) ─▶ workload preload ─▶ load:
//! clients / open-loop dispatcher ──samples──▶ aggregator (Recorder, WriteLedger, progress)
//! fault task (inject at at_s, undo at at_s + duration_s; a move follows its job)
//! ─▶ read every acknowledged write back ─▶ check every key's history ─▶ report
//! ```
//! Everything is bounded by the scenario's duration plus [`GRACE`].
//!
//! Every keyed request (preload, load, read-back) also goes into the run's
//! `History` with its call and return times on one clock, and every value
//! written carries its write's identity (`ValueCodec`), so the history can
//! be checked for linearizability at the end (`cellkv-lincheck`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use common::{Backoff, CellId, RoutingTable};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::history::{outcome_of, History, Linearizability, ValueCodec, IDENTITY_LEN};
use crate::ledger::{ReadBack, Verification, WriteLedger};
use crate::migration::{self, MoveRecord};
use crate::report::{render_html, render_progress, render_table, Report};
use crate::scenario::{FaultKind, Mode, Preload, Scenario, Target};
use crate::stats::{OpenLoopSchedule, Outcome, Recorder, Sample};
use crate::workload::{Op, OpGenerator, OpKind};
use client::http::{Client, ClientConfig, HttpError, Resp};
use cluster::attach::AttachedCluster;
use cluster::compose::ComposeCluster;
use cluster::local::{next_free_id, LocalCluster, LocalClusterOptions};
use cluster::Cluster;
use cluster::Cut;
use lincheck::{Init, Input, Operation, Precondition, ValueId};

/// Environment variable holding the client token of a `[target.router]` without `token`.
pub const TOKEN_ENV: &str = "CELLKV_TOKEN";
/// Time the load gets beyond the scenario's duration (requests in flight finish).
pub const GRACE: Duration = Duration::from_secs(15);
/// Capacity of the sample channel between the clients and the aggregator.
const SAMPLE_CHANNEL: usize = 4096;
/// Requests in flight while preloading and verifying.
const SETUP_CONCURRENCY: usize = 16;
/// Who sent the preload's and the read-back's requests, in the history
/// (the load's clients are numbered from 0).
const PRELOAD_CLIENT: u64 = u64::MAX - 1;
const READ_BACK_CLIENT: u64 = u64::MAX;
/// Attempts per key while preloading and verifying (a fault may just have ended).
const SETUP_ATTEMPTS: u32 = 5;
const SETUP_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often a `[preload]` prints its progress.
const PRELOAD_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long a `[preload]` keeps retrying one object after 5xx, 429 or
/// transport errors: a cell taking large writes on a busy machine can lose
/// its leader for seconds, and the router's breaker then refuses it a while
/// longer; the preload waits that out rather than fail the run.
const PRELOAD_RETRY_FOR: Duration = Duration::from_secs(60);
const PRELOAD_RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Why a run could not produce a verdict: a usage or setup problem (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct SetupError(#[from] anyhow::Error);

/// Command-line options of `cellkv-loadtest run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Where the report (and a started cluster) go; default: a new temp dir.
    pub out: Option<PathBuf>,
    /// Replaces the scenario's seed.
    pub seed: Option<u64>,
    /// Replaces the scenario's target with the cluster this `cluster.json`
    /// (or directory holding one) describes, e.g. one `cellkv-local` runs.
    pub cluster: Option<PathBuf>,
}

/// A finished run: the report and where it was written.
pub struct RunOutcome {
    pub report: Report,
    pub out: PathBuf,
    /// Faults that could not be injected or undone (the run is then not what
    /// the scenario describes).
    pub fault_errors: Vec<String>,
}

/// Runs the scenario: setup, load with faults, verification, report files.
pub async fn run(opts: RunOptions) -> Result<RunOutcome, SetupError> {
    // The error names the file and its cause already.
    let mut scenario = Scenario::load(&opts.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(seed) = opts.seed {
        scenario.seed = seed;
    }
    if let Some(c) = &opts.cluster {
        scenario.target = Target::ClusterFile(if ComposeCluster::is_deployment(c) {
            c.clone()
        } else {
            AttachedCluster::resolve(c)
        });
    }
    check_supported(&scenario)?;
    let out = match &opts.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => tempfile::Builder::new()
            .prefix("cellkv-loadtest-")
            .tempdir()
            .context("create a temporary directory")?
            .keep(),
    };
    eprintln!(
        "cellkv-loadtest: scenario {:?}, output in {}",
        scenario.name,
        out.display()
    );

    let mut target = TargetCluster::open(&scenario, &out).await?;
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_millis(scenario.request_timeout_ms),
        pool_max_idle_per_host: concurrency(&scenario.mode).max(SETUP_CONCURRENCY).max(
            scenario
                .preload
                .as_ref()
                .map_or(0, |p| p.concurrency as usize),
        ),
        ..ClientConfig::default()
    });
    let api = Arc::new(Api {
        client,
        base: target.url.clone(),
        auth: target.auth.clone(),
        routing: target.routing.clone(),
        codec: ValueCodec::for_run(scenario.seed),
        next_write: AtomicU64::new(1),
        origin: Instant::now(),
        workload: scenario.workload.clone(),
    });
    let mut history = History::new(scenario.history.max_ops, api.origin);
    // The ids the add_cell faults will give their cells, so the ledger can
    // order a moved key's writes from the start.
    let mut added = Vec::new();
    let mut next = target.next_cell_id;
    for _ in 0..scenario.added_cells() {
        added.push(next);
        next = next_free_id(next.0);
    }
    let generations = scenario.cell_generations(&added);
    let mut ledger = WriteLedger::with_generations(generations.clone());
    if let Some(p) = &scenario.preload {
        preload_cell(&api, p, &mut ledger).await?;
    }
    if scenario.workload.preload {
        preload(&api, &scenario, &mut ledger, &mut history).await?;
    }

    let run = load(&scenario, &api, &mut target, &added, generations, history).await?;
    ledger.merge(&run.ledger);
    let mut history = run.history;
    let head_buckets: Vec<String> = scenario.preload.iter().map(|p| p.bucket.clone()).collect();
    let verification = verify(&api, &ledger, &head_buckets, &mut history).await;
    let lin = check_history(&scenario, &api, history, &out).await?;

    let mut cells = if target.cells.is_empty() {
        run.rec.cells().into_iter().collect()
    } else {
        target.cells.clone()
    };
    // Cells added by the run are judged like the others from when they serve.
    for m in &run.moves {
        if let (FaultKind::AddCell, Some(c), true) = (m.kind, m.cell, m.job.is_some()) {
            if !cells.contains(&c) {
                cells.push(c);
            }
        }
    }
    let shares = if target.shares.is_empty() {
        // No ring known (a bare router): each cell's share of the distinct
        // keys it answered for estimates its share of the ring.
        observed_shares(&run.key_cells)
    } else {
        target.shares.clone()
    };
    let fault_errors = run.fault_errors;
    let report = Report::build(
        &scenario,
        &run.rec,
        &cells,
        shares,
        Some(&verification),
        &run.moves,
        Some(&lin),
    );
    write_reports(&report, &out)?;
    println!("{}", render_table(&report));
    println!("report: {}", out.join("report.html").display());
    if let Some(control) = &target.control {
        match control.warnings().await {
            Ok(ws) => ws
                .iter()
                .for_each(|w| eprintln!("cellkv-loadtest: warning: {w}")),
            Err(e) => eprintln!("cellkv-loadtest: warning: could not ask for warnings: {e:#}"),
        }
    }
    Ok(RunOutcome {
        report,
        out,
        fault_errors,
    })
}

/// Refuses what the harness cannot do, before starting anything.
fn check_supported(s: &Scenario) -> Result<()> {
    let mut why: Vec<String> = Vec::new();
    match &s.target {
        Target::Router(_) if !s.faults.is_empty() => why.push(
            "faults need the cluster's processes: use `start_local`, or a cluster file \
             (`cluster_file`, `--cluster DIR`) written by cellkv-local; a bare router takes load only"
                .to_owned(),
        ),
        Target::Router(_) if s.preload.is_some() => why.push(
            "[preload] needs the cell map to pick its cell's keys: use `start_local`, or a \
             cluster file (`cluster_file`, `--cluster DIR`) written by cellkv-local"
                .to_owned(),
        ),
        _ => {}
    }
    if let Target::StartLocal(l) = &s.target {
        for (i, f) in s.faults.iter().enumerate() {
            if f.kind.needs_hosts() {
                why.push(format!(
                    "fault {}: {} needs hosts of their own (network links, clocks), which \
                     processes sharing one machine cannot have: run it on a Compose \
                     deployment (deploy/up.sh, then --cluster deploy/run/deployment.json)",
                    i + 1,
                    f.kind.as_str()
                ));
            }
            if let Some(c) = f.cell {
                if c.0 == 0 || c.0 > l.cells {
                    why.push(format!(
                        "fault {}: no cell {c} among 1..={}",
                        i + 1,
                        l.cells
                    ));
                }
            }
        }
    }
    if !why.is_empty() {
        bail!("unsupported scenario:\n  {}", why.join("\n  "));
    }
    Ok(())
}

/// File of the operations of every key found not linearizable (JSON lines).
pub const VIOLATIONS_FILE: &str = "lin-violations.jsonl";

/// Checks every key's history (off the async workers: it is CPU work), and
/// writes the violating keys' operations to [`VIOLATIONS_FILE`].
async fn check_history(
    s: &Scenario,
    api: &Arc<Api>,
    history: History,
    out: &Path,
) -> Result<Linearizability> {
    if !s.slo.linearizable {
        return Ok(Linearizability::skipped(
            "the scenario turned the check off",
        ));
    }
    if (s.workload.min_value_bytes() as usize) < IDENTITY_LEN {
        return Ok(Linearizability::skipped(format!(
            "values under {IDENTITY_LEN} bytes carry no write identity"
        )));
    }
    // A cluster the harness started is empty; any other may hold values
    // from earlier runs.
    let init = match s.target {
        Target::StartLocal(_) => Init::Absent,
        _ => Init::Unknown,
    };
    let cfg = s.history.clone();
    let workload = api.workload.clone();
    eprintln!(
        "cellkv-loadtest: checking the histories of {} operations for linearizability",
        history.len()
    );
    let (lin, evidence) = tokio::task::spawn_blocking(move || {
        history.check(&cfg, init, |id| {
            let (b, k) = workload.key_of(id);
            format!("{b}/{k}")
        })
    })
    .await
    .context("the linearizability check panicked")?;
    eprintln!("cellkv-loadtest: linearizability: {}", lin.summary());
    if !evidence.is_empty() {
        let mut text = String::new();
        for op in &evidence {
            text.push_str(&serde_json::to_string(op).context("serialize an operation")?);
            text.push('\n');
        }
        let path = out.join(VIOLATIONS_FILE);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!(
            "cellkv-loadtest: the violating keys' operations are in {}",
            path.display()
        );
    }
    Ok(lin)
}

fn concurrency(mode: &Mode) -> usize {
    match mode {
        Mode::Closed { clients } => *clients as usize,
        Mode::Open { max_in_flight, .. } => *max_in_flight as usize,
    }
}

// ---------------------------------------------------------------------------
// Target

/// The cluster under test.
struct TargetCluster {
    url: String,
    auth: String,
    /// Where each key lives at the start (the live map's ownership when
    /// there is a control server): preload keys are picked, and failed
    /// requests attributed, by it.
    routing: Option<RoutingTable>,
    /// Empty when unknown (a bare router): the cells seen in answers are used.
    cells: Vec<CellId>,
    shares: BTreeMap<CellId, f64>,
    /// The id the first added cell gets.
    next_cell_id: CellId,
    /// The processes, when the harness can fault them (faults need it).
    control: Option<Box<dyn Cluster>>,
}

/// Every cell's share of the hash space under `routing`.
fn shares_of(routing: &RoutingTable, cells: &[CellId]) -> BTreeMap<CellId, f64> {
    cells.iter().map(|&c| (c, routing.share(c))).collect()
}

/// The cells `faults` name that are not in `cells`, for a refusal message.
fn fault_cells_outside<'a>(
    faults: impl Iterator<Item = &'a crate::scenario::Fault>,
    cells: &[CellId],
) -> Vec<String> {
    faults
        .filter_map(|f| f.cell)
        .filter(|c| !cells.contains(c))
        .map(|c| c.to_string())
        .collect()
}

impl TargetCluster {
    /// A target whose processes the harness can fault: where its router
    /// is, and where each key lives in its live map.
    async fn of_cluster(cluster: Box<dyn Cluster>) -> Result<TargetCluster> {
        let e = cluster.endpoints();
        let routing = cluster
            .admin()?
            .map()
            .await
            .context("read the live map from the control server")?
            .routing()
            .context("the cluster's live map")?;
        Ok(TargetCluster {
            url: e.router_url,
            auth: e.auth,
            shares: shares_of(&routing, &e.cells),
            cells: e.cells,
            routing: Some(routing),
            next_cell_id: e.next_cell_id,
            control: Some(cluster),
        })
    }

    async fn open(s: &Scenario, out: &Path) -> Result<TargetCluster> {
        match &s.target {
            Target::StartLocal(l) => {
                let dir = out.join("cluster");
                if dir.join(cluster::local::LAYOUT_FILE).exists() {
                    bail!(
                        "{} holds a cluster from an earlier run: use a fresh --out",
                        dir.display()
                    );
                }
                eprintln!(
                    "cellkv-loadtest: starting {} cell(s) × 3 replicas and a router in {}",
                    l.cells,
                    dir.display()
                );
                let mut proxied_cells: Vec<CellId> = s
                    .faults
                    .iter()
                    .filter(|f| f.kind == FaultKind::SlowCell)
                    .filter_map(|f| f.cell)
                    .collect();
                proxied_cells.sort_unstable();
                proxied_cells.dedup();
                if !proxied_cells.is_empty() {
                    eprintln!(
                        "cellkv-loadtest: the router reaches cell(s) {} through latency proxies",
                        proxied_cells
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                let mut opts = LocalClusterOptions {
                    cells: l.cells as usize,
                    proxied_cells,
                    ..LocalClusterOptions::default()
                };
                if let Some(o) = &l.raft {
                    opts.cell.config.raft = o.apply(&opts.cell.config.raft);
                    eprintln!(
                        "cellkv-loadtest: Raft timing of every replica: heartbeat {:?}, elections {:?}..{:?}, {} entries per AppendEntries",
                        opts.cell.config.raft.heartbeat_interval,
                        opts.cell.config.raft.election_timeout_min,
                        opts.cell.config.raft.election_timeout_max,
                        opts.cell.config.raft.max_payload_entries
                    );
                }
                let cluster = LocalCluster::start(opts, &dir)
                    .await
                    .context("start the local cluster")?;
                eprintln!(
                    "cellkv-loadtest: control server at {} (cluster.json: {})",
                    cluster.control_url(),
                    cluster.cluster_json_path().display()
                );
                Self::of_cluster(Box::new(cluster)).await
            }
            Target::ClusterFile(path) => {
                let cluster = cluster::open(path)?;
                let e = cluster.endpoints();
                let missing = fault_cells_outside(s.faults.iter(), &e.cells);
                if !missing.is_empty() {
                    bail!(
                        "the scenario faults cell(s) {} but {} describes cells {}",
                        missing.join(", "),
                        path.display(),
                        e.cells
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if !s.faults.is_empty() {
                    let warnings = cluster.warnings().await?;
                    if !warnings.is_empty() {
                        bail!(
                            "the cluster of {} is not fully running:\n  {}",
                            path.display(),
                            warnings.join("\n  ")
                        );
                    }
                }
                let slow_unproxied = fault_cells_outside(
                    s.faults.iter().filter(|f| f.kind == FaultKind::SlowCell),
                    &e.proxied_cells,
                );
                if !slow_unproxied.is_empty() {
                    bail!(
                        "slow_cell on cell(s) {}: the router of the cluster in {} reaches them \
                         directly; start that cluster with `cellkv-local --latency-proxies` (a \
                         zero-delay proxy in front of every replica, which the harness then \
                         slows), or run this scenario without --cluster (target `start_local`)",
                        slow_unproxied.join(", "),
                        path.display()
                    );
                }
                eprintln!(
                    "cellkv-loadtest: using the running cluster of {} ({} cell(s), router {})",
                    path.display(),
                    e.cells.len(),
                    e.router_url
                );
                Self::of_cluster(cluster).await
            }
            Target::Router(r) => {
                let token = match &r.token {
                    Some(t) => t.clone(),
                    None => std::env::var(TOKEN_ENV).with_context(|| {
                        format!("[target.router] has no token and ${TOKEN_ENV} is not set")
                    })?,
                };
                Ok(TargetCluster {
                    url: r.url.trim_end_matches('/').to_owned(),
                    auth: format!("Bearer {token}"),
                    routing: None,
                    cells: Vec::new(),
                    shares: BTreeMap::new(),
                    next_cell_id: CellId(1),
                    control: None,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// The public API as the load sees it.
struct Api {
    client: Client,
    base: String,
    auth: String,
    routing: Option<RoutingTable>,
    /// Puts each write's identity in its value.
    codec: ValueCodec,
    /// The next write's id: unique in the run.
    next_write: AtomicU64,
    /// Zero of the history's clock.
    origin: Instant,
    /// Names keys by id (and ids by key, for the read-back).
    workload: crate::workload::Workload,
}

/// An acknowledged write, for the ledger.
struct Ack {
    bucket: String,
    key: String,
    version: u64,
    etag: String,
}

/// One finished operation, sent to the aggregator.
struct Done {
    sample: Sample,
    ack: Option<Ack>,
    /// Its requests for the history (two for a read-modify-write).
    hist: Vec<Operation<u64>>,
}

/// What one timed request leaves in the history.
fn hist_op(
    key: u64,
    client: u64,
    call: u64,
    api: &Api,
    input: Input,
    res: &Result<Resp, HttpError>,
) -> Operation<u64> {
    let ret = History::now(api.origin);
    let read = match res {
        Ok(r) if input == Input::Get && r.is_success() => {
            api.codec.identity(&r.body, r.header("etag"))
        }
        _ => 0,
    };
    Operation {
        key,
        client,
        call,
        ret,
        input,
        outcome: outcome_of(&input, res, read),
    }
}

impl Api {
    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/v1/buckets/{bucket}/objects/{key}", self.base)
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Resp, HttpError> {
        let auth = [("authorization", self.auth.as_str())];
        self.client.get(&self.object_url(bucket, key), &auth).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Resp, HttpError> {
        let auth = [("authorization", self.auth.as_str())];
        self.client.head(&self.object_url(bucket, key), &auth).await
    }

    /// A new write's id and its `len`-byte value carrying it.
    fn new_value(&self, len: u32) -> (ValueId, Bytes) {
        let id = self.next_write.fetch_add(1, Ordering::Relaxed);
        (id, self.codec.value(id, len))
    }

    async fn put_value(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        cond: Option<(&str, &str)>,
    ) -> Result<Resp, HttpError> {
        let mut headers = vec![("authorization", self.auth.as_str())];
        headers.extend(cond);
        self.client
            .put(&self.object_url(bucket, key), &headers, body)
            .await
    }

    async fn scan(&self, bucket: &str, start_after: &str, limit: u32) -> Result<Resp, HttpError> {
        let url = format!(
            "{}/v1/buckets/{bucket}/objects?start_after={start_after}&limit={limit}",
            self.base
        );
        let auth = [("authorization", self.auth.as_str())];
        self.client.get(&url, &auth).await
    }

    /// `GET`, timed for the history.
    async fn timed_get(
        &self,
        op: &Op,
        client: u64,
        hist: &mut Vec<Operation<u64>>,
    ) -> Result<Resp, HttpError> {
        let call = History::now(self.origin);
        let res = self.get(&op.bucket, &op.key).await;
        hist.push(hist_op(op.key_id, client, call, self, Input::Get, &res));
        res
    }

    /// `PUT` of a new value under `precondition` (`header` says it on the
    /// wire), timed for the history.
    async fn timed_put(
        &self,
        op: &Op,
        client: u64,
        precondition: Precondition,
        header: Option<(&str, &str)>,
        hist: &mut Vec<Operation<u64>>,
    ) -> Result<Resp, HttpError> {
        let (value, body) = self.new_value(op.value_len);
        let input = Input::Put {
            value,
            precondition,
        };
        let call = History::now(self.origin);
        let res = self.put_value(&op.bucket, &op.key, body, header).await;
        hist.push(hist_op(op.key_id, client, call, self, input, &res));
        res
    }

    /// Runs one operation; the result's last answer decides the outcome.
    /// Its keyed requests go to `hist`.
    async fn execute(
        &self,
        op: &Op,
        client: u64,
        hist: &mut Vec<Operation<u64>>,
    ) -> (Result<Resp, HttpError>, bool) {
        let (b, k) = (op.bucket.as_str(), op.key.as_str());
        let always = Precondition::None;
        match op.kind {
            OpKind::Read => (self.timed_get(op, client, hist).await, false),
            OpKind::Update => (self.timed_put(op, client, always, None, hist).await, true),
            OpKind::Insert => {
                let cond = Some(("if-none-match", "*"));
                let p = Precondition::IfAbsent;
                (self.timed_put(op, client, p, cond, hist).await, true)
            }
            OpKind::Scan { limit } => (self.scan(b, k, limit).await, false),
            OpKind::ReadModifyWrite => match self.timed_get(op, client, hist).await {
                Ok(r) if r.is_success() => {
                    let Some(etag) = r.header("etag").map(str::to_owned) else {
                        return (Ok(r), false);
                    };
                    // The etag names the value the GET read.
                    let read = self.codec.identity(&r.body, Some(&etag));
                    let cond = Some(("if-match", etag.as_str()));
                    let p = Precondition::IfMatch(read);
                    (self.timed_put(op, client, p, cond, hist).await, true)
                }
                other => (other, false),
            },
        }
    }

    /// Runs `op` (intended to start at `start`, an offset from `t0`) and
    /// classifies it; `client` names who sent it in the history.
    async fn run_op(&self, op: &Op, t0: Instant, start: Duration, client: u64) -> Done {
        let mut hist = Vec::with_capacity(1);
        let (res, write) = self.execute(op, client, &mut hist).await;
        let end = t0.elapsed();
        let cell = match (op.kind, &res) {
            (OpKind::Scan { .. }, _) => None,
            (_, Ok(r)) => cell_header(r).or_else(|| self.ring_cell(op)),
            _ => self.ring_cell(op),
        };
        let (outcome, ack) = match &res {
            Ok(r) => {
                let ack = (write && r.is_success())
                    .then(|| ack_of(r, &op.bucket, &op.key))
                    .flatten();
                (
                    Outcome::from_status(r.status, r.error_code().as_deref()),
                    ack,
                )
            }
            Err(e) => (classify(e), None),
        };
        Done {
            sample: Sample {
                cell,
                op: op.kind.op_type(),
                key: Some(op.key_id),
                start,
                end,
                outcome,
            },
            ack,
            hist,
        }
    }

    fn ring_cell(&self, op: &Op) -> Option<CellId> {
        self.routing
            .as_ref()
            .map(|r| r.cell_for(&op.bucket, &op.key))
    }
}

fn classify(e: &HttpError) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Transport
    }
}

fn cell_header(r: &Resp) -> Option<CellId> {
    r.header("x-cellkv-cell")?.trim().parse().ok().map(CellId)
}

fn ack_of(r: &Resp, bucket: &str, key: &str) -> Option<Ack> {
    Some(Ack {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version: r.header("x-cellkv-version")?.trim().parse().ok()?,
        etag: r.header("etag")?.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Preload and verification

/// Runs `f` on every item with [`SETUP_CONCURRENCY`] workers; returns the results in order.
async fn for_each<T, R, F, Fut>(api: &Arc<Api>, items: Vec<T>, f: F) -> Vec<R>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(Arc<Api>, &T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let mut set = JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY {
        let (items, next, f, api) = (items.clone(), next.clone(), f.clone(), api.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                out.push((i, f(api.clone(), item).await));
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("a setup worker panicked"));
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Writes every initial key (recording the acks, and every attempt in the
/// history); fails if one cannot be written.
async fn preload(
    api: &Arc<Api>,
    s: &Scenario,
    ledger: &mut WriteLedger,
    history: &mut History,
) -> Result<()> {
    let started = Instant::now();
    let keys: Vec<(u64, String, String)> = s
        .workload
        .initial_keys()
        .map(|(id, b, k)| (id, b.to_owned(), k))
        .collect();
    let len = match s.workload.value_bytes {
        crate::workload::ValueSize::Fixed(n) => n,
        crate::workload::ValueSize::Range { min, max } => {
            ((u64::from(min) + u64::from(max)) / 2) as u32
        }
    };
    eprintln!("cellkv-loadtest: preloading {} keys", keys.len());
    let results = for_each(api, keys, move |api, (id, b, k): &(u64, String, String)| {
        let (id, b, k) = (*id, b.clone(), k.clone());
        async move {
            let mut last = String::new();
            let mut hist = Vec::new();
            for _ in 0..SETUP_ATTEMPTS {
                let (value, body) = api.new_value(len);
                let input = Input::Put {
                    value,
                    precondition: Precondition::None,
                };
                let call = History::now(api.origin);
                let res = api.put_value(&b, &k, body, None).await;
                hist.push(hist_op(id, PRELOAD_CLIENT, call, &api, input, &res));
                match res {
                    Ok(r) if r.is_success() => {
                        let ack = ack_of(&r, &b, &k).ok_or_else(|| {
                            format!("PUT {b}/{k}: no X-Cellkv-Version or ETag in the answer")
                        });
                        return (ack, hist);
                    }
                    Ok(r) => last = format!("{} {}", r.status, r.text()),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(SETUP_RETRY_PAUSE).await;
            }
            (Err(format!("PUT {b}/{k}: {last}")), hist)
        }
    })
    .await;
    for (r, hist) in results {
        history.extend(hist);
        let a = r.map_err(anyhow::Error::msg).context("preload")?;
        ledger.record_ack(&a.bucket, &a.key, a.version, &a.etag);
    }
    eprintln!("cellkv-loadtest: preloaded in {:.1?}", started.elapsed());
    Ok(())
}

/// `[preload]`: writes `p.objects()` objects whose keys the start map
/// places on `p.cell`, with `p.concurrency` writers, printing progress;
/// records every ack. Fails if one cannot be written.
async fn preload_cell(api: &Arc<Api>, p: &Preload, ledger: &mut WriteLedger) -> Result<()> {
    let routing = api
        .routing
        .as_ref()
        .context("[preload] needs the cluster's map to pick the cell's keys")?;
    let n = p.objects();
    if !routing.owners().contains(&p.cell) {
        bail!(
            "[preload]: cell {} owns no key in the live map (drained? removed?)",
            p.cell
        );
    }
    let keys: Vec<String> = (0u64..)
        .map(|i| format!("pre-{i:09}"))
        .filter(|k| routing.cell_for(&p.bucket, k) == p.cell)
        .take(n as usize)
        .collect();
    // One value for every object: random bytes, so no layer compresses them away.
    let mut rng = crate::workload::Rng::seed_from(u64::from(p.cell.0));
    let value: Bytes = (0..p.value_size)
        .map(|_| rng.below(256) as u8)
        .collect::<Vec<u8>>()
        .into();
    let total_mib = (n * u64::from(p.value_size)) as f64 / f64::from(1u32 << 20);
    eprintln!(
        "cellkv-loadtest: preloading cell {}: {n} objects of {} bytes ({total_mib:.1} MiB) in bucket {:?}, {} writers",
        p.cell, p.value_size, p.bucket, p.concurrency
    );
    let started = Instant::now();
    let keys = Arc::new(keys);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..p.concurrency {
        let (api, keys, next, done, value) = (
            api.clone(),
            keys.clone(),
            next.clone(),
            done.clone(),
            value.clone(),
        );
        let bucket = p.bucket.clone();
        set.spawn(async move {
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(k) = keys.get(i) else { break };
                let give_up = Instant::now() + PRELOAD_RETRY_FOR;
                let mut pause = Backoff::new(SETUP_RETRY_PAUSE, PRELOAD_RETRY_PAUSE_MAX);
                let ack = loop {
                    let last = match api.put_value(&bucket, k, value.clone(), None).await {
                        Ok(r) if r.is_success() => {
                            break ack_of(&r, &bucket, k).ok_or_else(|| {
                                format!(
                                    "PUT {bucket}/{k}: no X-Cellkv-Version or ETag in the answer"
                                )
                            });
                        }
                        // A refusal that retrying cannot change (413, 403...).
                        Ok(r) if r.status < 500 && r.status != 429 => {
                            break Err(format!("PUT {bucket}/{k}: {} {}", r.status, r.text()));
                        }
                        Ok(r) => format!("{} {}", r.status, r.text()),
                        Err(e) => e.to_string(),
                    };
                    if Instant::now() + pause.peek() > give_up {
                        break Err(format!(
                            "PUT {bucket}/{k} still failing after {PRELOAD_RETRY_FOR:?}: {last}"
                        ));
                    }
                    tokio::time::sleep(pause.next_delay()).await;
                };
                acks.push(ack?);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(acks)
        });
    }
    let mut tick = tokio::time::interval(PRELOAD_PROGRESS_EVERY);
    tick.tick().await;
    let mut acks = Vec::with_capacity(n as usize);
    let mut failure: Option<String> = None;
    loop {
        tokio::select! {
            r = set.join_next() => {
                let Some(r) = r else { break };
                match r.context("a preload writer panicked")? {
                    Ok(a) => acks.extend(a),
                    Err(e) => {
                        // Stop the others: the run cannot be what the scenario says.
                        failure.get_or_insert(e);
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                }
            }
            _ = tick.tick() => {
                let d = done.load(Ordering::Relaxed) as u64;
                let secs = started.elapsed().as_secs_f64();
                let bytes = d * u64::from(p.value_size);
                eprintln!(
                    "cellkv-loadtest: preload {d}/{n} objects ({:.1} of {total_mib:.1} MiB), {:.1} MB/s",
                    bytes as f64 / f64::from(1u32 << 20),
                    bytes as f64 / 1e6 / secs.max(1e-3)
                );
            }
        }
    }
    if let Some(e) = failure {
        bail!("preload: {e}");
    }
    for a in &acks {
        ledger.record_ack(&a.bucket, &a.key, a.version, &a.etag);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "cellkv-loadtest: preloaded {} objects ({total_mib:.1} MiB) onto cell {} in {secs:.1} s ({:.1} MB/s)",
        acks.len(),
        p.cell,
        (acks.len() as u64 * u64::from(p.value_size)) as f64 / 1e6 / secs.max(1e-3)
    );
    Ok(())
}

/// Reads every acknowledged key back and judges it. Keys in `head_buckets`
/// (large preloaded objects) are read with HEAD: version and etag only.
/// The GETs of workload keys go into the history.
async fn verify(
    api: &Arc<Api>,
    ledger: &WriteLedger,
    head_buckets: &[String],
    history: &mut History,
) -> Verification {
    let started = Instant::now();
    let keys: Vec<(String, String)> = ledger
        .keys()
        .into_iter()
        .map(|(b, k)| (b.to_owned(), k.to_owned()))
        .collect();
    eprintln!(
        "cellkv-loadtest: reading {} acknowledged keys back",
        keys.len()
    );
    let heads: Arc<Vec<String>> = Arc::new(head_buckets.to_vec());
    let reads = for_each(api, keys.clone(), move |api, (b, k): &(String, String)| {
        let (b, k) = (b.clone(), k.clone());
        let head = heads.contains(&b);
        async move { read_back(&api, &b, &k, head).await }
    })
    .await;
    let mut v = Verification::default();
    for ((b, k), (read, hist)) in keys.iter().zip(reads) {
        history.extend(hist);
        v.push(b, k, ledger.check(b, k, &read));
    }
    eprintln!(
        "cellkv-loadtest: verified in {:.1?}: {} kept, {} lost, {} unverified",
        started.elapsed(),
        v.kept,
        v.lost.len(),
        v.unverified.len()
    );
    v
}

/// Reads `b/k` back (with retries), and the attempts for the history
/// (GETs of workload keys only).
async fn read_back(api: &Api, b: &str, k: &str, head: bool) -> (ReadBack, Vec<Operation<u64>>) {
    let mut hist = Vec::new();
    let id = api.workload.key_id_of(b, k).filter(|_| !head);
    let found = read_back_into(api, b, k, head, id, &mut hist).await;
    (found, hist)
}

async fn read_back_into(
    api: &Api,
    b: &str,
    k: &str,
    head: bool,
    id: Option<u64>,
    hist: &mut Vec<Operation<u64>>,
) -> ReadBack {
    let mut last = String::new();
    for _ in 0..SETUP_ATTEMPTS {
        let call = History::now(api.origin);
        let r = if head {
            api.head(b, k).await
        } else {
            api.get(b, k).await
        };
        if let Some(id) = id {
            hist.push(hist_op(id, READ_BACK_CLIENT, call, api, Input::Get, &r));
        }
        match r {
            Ok(r) if r.is_success() => {
                let version = r.header("x-cellkv-version").and_then(|v| v.parse().ok());
                match (version, r.header("etag")) {
                    (Some(version), Some(etag)) => {
                        return ReadBack::Found {
                            version,
                            etag: etag.to_owned(),
                        }
                    }
                    _ => last = "200 without X-Cellkv-Version or ETag".to_owned(),
                }
            }
            Ok(r) if r.status == 404 => return ReadBack::Missing,
            Ok(r) => last = format!("{} {}", r.status, r.error_code().unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(SETUP_RETRY_PAUSE).await;
    }
    ReadBack::Failed(last)
}

// ---------------------------------------------------------------------------
// Load, faults, aggregation

/// What the load phase produced.
struct LoadRun {
    rec: Recorder,
    ledger: WriteLedger,
    key_cells: KeyCells,
    /// Faults that could not be injected or undone.
    fault_errors: Vec<String>,
    /// The moves (drains, adds) and their jobs.
    moves: Vec<MoveRecord>,
    /// The history before the load, with the load's requests added.
    history: History,
}

/// Offers the load for the scenario's duration while the faults run; returns
/// what the aggregator collected, the faults' errors and the moves. `added`
/// are the ids the `add_cell` faults give their cells, `generations` order
/// the writes of moved keys (see `ledger`).
async fn load(
    s: &Scenario,
    api: &Arc<Api>,
    target: &mut TargetCluster,
    added: &[CellId],
    generations: BTreeMap<CellId, i64>,
    history: History,
) -> Result<LoadRun> {
    let duration = Duration::from_secs(u64::from(s.duration_s()));
    let gen = OpGenerator::new(&s.workload, s.seed).context("workload")?;
    let (tx, rx) = mpsc::channel::<Done>(SAMPLE_CHANNEL);
    let t0 = Instant::now();
    let end = t0 + duration;
    let cells = target.cells.clone();
    let aggregator = tokio::spawn(aggregate(rx, t0, cells, generations, history));
    let mut load = JoinSet::new();
    match s.mode {
        Mode::Closed { clients } => {
            for i in 0..clients {
                let mut g = gen.fork(u64::from(i), u64::from(clients))?;
                let (api, tx) = (api.clone(), tx.clone());
                load.spawn(async move {
                    while Instant::now() < end {
                        let op = g.next_op();
                        let done = api.run_op(&op, t0, t0.elapsed(), u64::from(i)).await;
                        if tx.send(done).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            let schedule = OpenLoopSchedule::new(rate)?;
            let mut g = gen.fork(0, 1)?;
            let (api, tx) = (api.clone(), tx.clone());
            load.spawn(async move {
                let slots = Arc::new(Semaphore::new(max_in_flight as usize));
                let mut in_flight = JoinSet::new();
                for i in 0u64.. {
                    let intended = schedule.intended_at(t0, i);
                    if intended >= end {
                        break;
                    }
                    tokio::time::sleep_until(intended.into()).await;
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let op = g.next_op();
                    let (api, tx) = (api.clone(), tx.clone());
                    in_flight.spawn(async move {
                        let done = api.run_op(&op, t0, schedule.intended(i), i).await;
                        drop(slot);
                        let _ = tx.send(done).await;
                    });
                    while in_flight.try_join_next().is_some() {}
                }
                while in_flight.join_next().await.is_some() {}
            });
        }
    }
    drop(tx);

    let (fault_errors, moves) = match &mut target.control {
        Some(control) => run_faults(s, control.as_mut(), t0, added).await,
        None => (Vec::new(), Vec::new()),
    };
    let bounded = tokio::time::timeout_at((end + GRACE).into(), async {
        while load.join_next().await.is_some() {}
    })
    .await;
    if bounded.is_err() {
        eprintln!(
            "cellkv-loadtest: warning: requests still in flight {GRACE:?} after the end; abandoned"
        );
        load.abort_all();
        while load.join_next().await.is_some() {}
    }
    let (rec, ledger, key_cells, history) =
        aggregator.await.context("the aggregator task failed")?;
    Ok(LoadRun {
        rec,
        ledger,
        key_cells,
        fault_errors,
        moves,
        history,
    })
}

/// The cell each key was answered by (last answer wins).
type KeyCells = HashMap<u64, CellId>;

/// Each cell's share of the distinct keys in `key_cells`.
fn observed_shares(key_cells: &KeyCells) -> BTreeMap<CellId, f64> {
    let mut counts: BTreeMap<CellId, u64> = BTreeMap::new();
    for c in key_cells.values() {
        *counts.entry(*c).or_default() += 1;
    }
    let total = key_cells.len().max(1) as f64;
    counts
        .into_iter()
        .map(|(c, n)| (c, n as f64 / total))
        .collect()
}

/// Owns the recorder, the ledger and the history; prints progress once a second.
async fn aggregate(
    mut rx: mpsc::Receiver<Done>,
    t0: Instant,
    cells: Vec<CellId>,
    generations: BTreeMap<CellId, i64>,
    mut history: History,
) -> (Recorder, WriteLedger, KeyCells, History) {
    let mut rec = Recorder::new();
    let mut ledger = WriteLedger::with_generations(generations);
    let mut key_cells = KeyCells::new();
    let mut tick =
        tokio::time::interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break };
                rec.record(&d.sample);
                if let (Some(k), Some(c)) = (d.sample.key, d.sample.cell) {
                    key_cells.insert(k, c);
                }
                if let Some(a) = d.ack {
                    ledger.record_ack(&a.bucket, &a.key, a.version, &a.etag);
                }
                history.extend(d.hist);
            }
            _ = tick.tick() => {
                let cells = if cells.is_empty() { rec.cells().into_iter().collect() } else { cells.clone() };
                eprintln!("{}", render_progress(t0.elapsed(), &rec, &cells));
            }
        }
    }
    (rec, ledger, key_cells, history)
}

/// One step of the fault schedule.
enum Step {
    Inject(usize),
    Undo(usize),
}

/// Injects and undoes every fault on time; returns what failed, and the
/// moves. A move's inject lasts until its job ends (within `duration_s`).
async fn run_faults(
    s: &Scenario,
    control: &mut dyn Cluster,
    t0: Instant,
    added: &[CellId],
) -> (Vec<String>, Vec<MoveRecord>) {
    let mut steps: Vec<(u32, u8, Step)> = Vec::new();
    for (i, f) in s.faults.iter().enumerate() {
        let end = f.at_s + f.duration_s();
        // At one instant, undo before injecting (a cell comes back before the
        // next fault), except a fault's own undo after its inject.
        steps.push((f.at_s, 1, Step::Inject(i)));
        if !f.kind.is_move() {
            steps.push((end, if end == f.at_s { 2 } else { 0 }, Step::Undo(i)));
        }
    }
    steps.sort_by_key(|(t, o, _)| (*t, *o));
    let mut killed_leader: Vec<Option<usize>> = vec![None; s.faults.len()];
    let mut errors = Vec::new();
    let mut moves = Vec::new();
    let mut added = added.iter().copied();
    for (at, _, step) in steps {
        tokio::time::sleep_until((t0 + Duration::from_secs(u64::from(at))).into()).await;
        let (i, what, r) = match step {
            Step::Inject(i) if s.faults[i].kind.is_move() => {
                let m = run_move(s, control, i, t0, &mut added).await;
                let r = match &m.error {
                    // The job ran and failed: the report says so (an SLO), not a setup error.
                    Some(_) if m.job.is_some() => Ok(()),
                    Some(e) => Err(anyhow::anyhow!("{e}")),
                    None => Ok(()),
                };
                moves.push(m);
                (i, "run", r)
            }
            Step::Inject(i) => (
                i,
                "inject",
                inject(s, control, i, &mut killed_leader[i]).await,
            ),
            Step::Undo(i) => (i, "undo", undo(s, control, i, killed_leader[i]).await),
        };
        let label = s.faults[i].label();
        match r {
            Ok(()) => eprintln!("cellkv-loadtest: t={at}s {what} {label}"),
            Err(e) => {
                let msg = format!("t={at}s {what} {label}: {e:#}");
                eprintln!("cellkv-loadtest: error: {msg}");
                errors.push(msg);
            }
        }
    }
    (errors, moves)
}

/// Runs move fault `i` (drain or add) to its end: the job must be done by
/// `at_s + duration_s`. Never fails: what went wrong is in the record.
async fn run_move(
    s: &Scenario,
    control: &mut dyn Cluster,
    i: usize,
    t0: Instant,
    added: &mut impl Iterator<Item = CellId>,
) -> MoveRecord {
    let f = &s.faults[i];
    let deadline = t0 + Duration::from_secs(u64::from(f.at_s) + u64::from(f.duration_s()));
    let now = || t0.elapsed().as_secs_f64();
    let cell = match f.kind {
        FaultKind::AddCell => added.next(),
        _ => f.cell,
    };
    let rec = MoveRecord::new(i, f.kind, cell, now());
    let admin = match control.admin() {
        Ok(a) => a,
        Err(e) => return rec.failed(now(), format!("{e:#}")),
    };
    let bw = f.bandwidth_bytes_per_sec;
    match (f.kind, cell) {
        (FaultKind::DrainCell, Some(c)) => migration::drain(&admin, rec, c, bw, t0, deadline).await,
        (FaultKind::AddCell, Some(c)) => {
            eprintln!(
                "cellkv-loadtest: t={:.0}s starting cell {c} (3 replicas)",
                now()
            );
            match control.add_cell(c).await {
                Ok(spec) => migration::add(&admin, rec, &spec, bw, t0, deadline).await,
                Err(e) => rec.failed(now(), format!("start cell {c}: {e:#}")),
            }
        }
        (k, _) => rec.failed(now(), format!("{} names no cell", k.as_str())),
    }
}

async fn inject(
    s: &Scenario,
    control: &dyn Cluster,
    i: usize,
    killed_leader: &mut Option<usize>,
) -> Result<()> {
    let f = &s.faults[i];
    match f.kind {
        FaultKind::KillLeader => {
            *killed_leader = Some(control.kill_leader(fault_cell(f)?).await?);
        }
        FaultKind::KillCell => control.kill_cell(fault_cell(f)?).await?,
        FaultKind::FreezeCell => control.freeze_cell(fault_cell(f)?).await?,
        FaultKind::SlowCell => {
            let delay = Duration::from_millis(u64::from(f.delay_ms.unwrap_or(0)));
            control.set_cell_delay(fault_cell(f)?, delay).await?;
        }
        FaultKind::RestartRouter => control.stop_router().await?,
        FaultKind::DrainCell | FaultKind::AddCell => {
            bail!("{} is a move: run_move runs it", f.kind.as_str())
        }
        FaultKind::PartitionLeader => cut(control, f, Cut::LeaderFromFollowers).await?,
        FaultKind::IsolateFollower => cut(control, f, Cut::OneFollower).await?,
        FaultKind::CutRouter => cut(control, f, Cut::RouterFromCell).await?,
        FaultKind::SkewClock => {
            let by = f.skew_ms.unwrap_or(0);
            let what = control.skew_clock(fault_cell(f)?, by).await?;
            eprintln!("cellkv-loadtest: {}: {what}", f.label());
        }
    }
    Ok(())
}

async fn undo(
    s: &Scenario,
    control: &dyn Cluster,
    i: usize,
    killed_leader: Option<usize>,
) -> Result<()> {
    let f = &s.faults[i];
    match f.kind {
        FaultKind::KillLeader => {
            if let Some(l) = killed_leader {
                control.restart_replica(fault_cell(f)?, l).await?;
            }
        }
        FaultKind::KillCell => control.restart_cell(fault_cell(f)?).await?,
        FaultKind::FreezeCell => control.thaw_cell(fault_cell(f)?).await?,
        FaultKind::SlowCell => {
            control
                .set_cell_delay(fault_cell(f)?, Duration::ZERO)
                .await?;
        }
        FaultKind::RestartRouter => control.start_router().await?,
        FaultKind::DrainCell | FaultKind::AddCell => {}
        FaultKind::PartitionLeader | FaultKind::IsolateFollower | FaultKind::CutRouter => {
            control.heal(fault_cell(f)?).await?
        }
        FaultKind::SkewClock => {
            control.skew_clock(fault_cell(f)?, 0).await?;
        }
    }
    Ok(())
}

async fn cut(control: &dyn Cluster, f: &crate::scenario::Fault, how: Cut) -> Result<()> {
    let what = control.cut(fault_cell(f)?, how).await?;
    eprintln!("cellkv-loadtest: {}: {what}", f.label());
    Ok(())
}

fn fault_cell(f: &crate::scenario::Fault) -> Result<CellId> {
    f.cell
        .with_context(|| format!("{} names no cell", f.kind.as_str()))
}

fn write_reports(r: &Report, out: &Path) -> Result<()> {
    let json = r.to_json().context("serialize the report")?;
    std::fs::write(out.join("report.json"), json).context("write report.json")?;
    std::fs::write(out.join("report.html"), render_html(r)).context("write report.html")?;
    Ok(())
}
