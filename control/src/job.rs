//! Migration jobs: `JobRunner`, the state machine that moves ranges batch by
//! batch through the nine steps of docs/control-plane.md, over the persisted
//! `Job` record (a `common::admin` type, which the admin API answers). The runner talks to the world only through
//! [`Backend`] (control store + cells), so the phase logic is unit-tested
//! against an in-memory backend.
//!
//! ```text
//!  Select ─▶ Prepare ─▶ Copy ─▶ Fence ─▶ Delta ─▶ Seal ─▶ Own ─▶ Release ─▶ Commit ─┐
//!    ▲  │        └──────────┴────────┴────────┴───────┐ (cancel / operator error)    │
//!    │  └▶ Finish ─▶ done                             ▼                             │
//!    │                                 Unfence ─▶ Abort ─▶ PurgeDest ─▶ paused|cancelled
//!    └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The job is saved after every step (and periodically during the copy), so
//! a control server that dies anywhere resumes at the recorded phase and
//! redoes it; every step is idempotent.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use common::admin::{
    Batch, BatchPlan, CopyCursor, Job, JobKind, JobProgress, JobRequest, JobStatus, JobView, Phase,
    PurgeTask,
};
use common::ownership::OwnershipOp;
use common::wire::{hex, unhex, IngestBatch, IngestResult, RangeStats, ScanItem, ScanPage};
use common::{Backoff, CellId, CellMap, CellState, HashRange};

use crate::cells::PurgeReply;
use crate::limiter::Limiter;
use crate::plan;

/// The copy cursor is saved at least this often.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(1);
/// Delta ranges compared concurrently (during the write pause). A batch holds
/// hundreds of ranges and each comparison is two small scans whose time is
/// mostly the cells' read barrier, which concurrent scans share: 64 cut the
/// fenced delta of `drain-cell.toml` from 190–350 ms to 58–204 ms (8 before).
const DELTA_CONCURRENCY: usize = 64;
/// Retries of a failed job save or step.
const STEP_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
/// Retries of a failed background purge; back to the first delay after progress.
const PURGE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Steps taken while the batch's writes are paused (Fence to Release).
fn in_write_pause(p: Phase) -> bool {
    matches!(
        p,
        Phase::Fence | Phase::Delta | Phase::Seal | Phase::Own | Phase::Release
    )
}

/// Phases whose batch can still be rolled back (before `Own`).
fn before_own(p: Phase) -> bool {
    matches!(
        p,
        Phase::Prepare | Phase::Copy | Phase::Fence | Phase::Delta | Phase::Seal
    )
}

/// A new job: running, at `Select`, nothing done yet.
pub fn new_record(
    id: String,
    kind: JobKind,
    bandwidth: u64,
    max_bytes: u64,
    max_ranges: usize,
) -> Job {
    let now = now_ms();
    Job {
        id,
        kind,
        status: JobStatus::Running,
        message: None,
        requested: None,
        created_ms: now,
        updated_ms: now,
        finished_ms: None,
        bandwidth_bytes_per_sec: bandwidth,
        batch_max_bytes: max_bytes,
        batch_max_ranges: max_ranges,
        phase: Phase::Select,
        batch: None,
        progress: JobProgress::default(),
        pauses_ms: Vec::new(),
        purges: Vec::new(),
    }
}

/// What the admin API answers for `job`: the record plus rate, ETA and pauses.
pub fn view(job: &Job) -> JobView {
    let p = &job.progress;
    let secs = p.active_ms as f64 / 1000.0;
    let (rate, mut eta) = plan::rate_and_eta(p.bytes_copied, p.bytes_estimated, secs);
    if eta.is_none() || p.bytes_estimated == 0 {
        eta = plan::eta_by_ranges(p.ranges_done, p.ranges_total, secs);
    }
    if !job.status.is_active() {
        eta = None;
    }
    let (max, p99) = plan::pause_stats(&job.pauses_ms);
    JobView {
        job: job.clone(),
        rate_bytes_per_sec: rate,
        eta_secs: eta,
        pause_max_ms: max,
        pause_p99_ms: p99,
    }
}

/// A step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Worth retrying (leader change, timeout, unreachable).
    Transient(String),
    /// Needs an operator (refused op, bad config, unexpected state).
    Operator(String),
    /// The runner must stop now (shutdown or job lease lost); nothing is wrong.
    Stopped,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Transient(m) | StepError::Operator(m) => f.write_str(m),
            StepError::Stopped => f.write_str("stopped"),
        }
    }
}

pub type MapFn = Box<dyn FnMut(&mut CellMap) -> bool + Send>;

/// Everything a job needs from the outside world. Cells are named by id and
/// resolved against the current map by the implementation.
pub trait Backend: Send + Sync + 'static {
    fn map(&self) -> impl Future<Output = Result<CellMap, StepError>> + Send;
    /// Read-modify-CAS (epoch + 1) when `f` returns true.
    fn update_map(&self, f: MapFn) -> impl Future<Output = Result<CellMap, StepError>> + Send;
    fn ownership(
        &self,
        cell: CellId,
        op: OwnershipOp,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    fn scan(
        &self,
        cell: CellId,
        range: HashRange,
        after: Option<Vec<u8>>,
        values: bool,
    ) -> impl Future<Output = Result<ScanPage, StepError>> + Send;
    fn ingest(
        &self,
        cell: CellId,
        batch: IngestBatch,
    ) -> impl Future<Output = Result<IngestResult, StepError>> + Send;
    fn purge(
        &self,
        cell: CellId,
        range: HashRange,
    ) -> impl Future<Output = Result<PurgeReply, StepError>> + Send;
    fn range_stats(
        &self,
        cell: CellId,
        ranges: Vec<HashRange>,
    ) -> impl Future<Output = Result<Vec<RangeStats>, StepError>> + Send;
    fn save_job(&self, job: &Job) -> impl Future<Output = Result<(), StepError>> + Send;
}

/// Signals into a running job: operator requests and stop (shutdown, lease lost).
#[derive(Debug, Default)]
pub struct Signals {
    /// 0 none, 1 pause, 2 cancel.
    request: AtomicU8,
    stop: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Signals {
    pub fn request(&self, r: JobRequest) {
        let v = match r {
            JobRequest::Pause => 1,
            JobRequest::Cancel => 2,
        };
        self.request.fetch_max(v, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
    pub fn requested(&self) -> Option<JobRequest> {
        match self.request.load(Ordering::Acquire) {
            1 => Some(JobRequest::Pause),
            2 => Some(JobRequest::Cancel),
            _ => None,
        }
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
    /// Sleeps `d` unless stopped first (then false). Cancellation-safe.
    async fn sleep(&self, d: Duration) -> bool {
        if self.stopped() {
            return false;
        }
        let n = self.notify.notified();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopped(),
            _ = n => !self.stopped(),
        }
    }
}

/// Runner tunables (from the config).
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub step_retry_timeout: Duration,
    pub scan_page_bytes: u64,
    pub ingest_max_bytes: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            step_retry_timeout: Duration::from_secs(60),
            scan_page_bytes: 4 << 20,
            ingest_max_bytes: 4 << 20,
        }
    }
}

pub struct JobRunner<B: Backend> {
    backend: Arc<B>,
    signals: Arc<Signals>,
    cfg: RunnerConfig,
    job: Job,
    limiter: Limiter,
    /// When `active_ms` was last advanced.
    clock: Instant,
    purge_done: tokio::sync::mpsc::UnboundedReceiver<PurgeTask>,
    purge_tx: tokio::sync::mpsc::UnboundedSender<PurgeTask>,
    purging: HashSet<(CellId, u64, u64)>,
}

/// Operator-facing error for a failure of `what`.
fn describe(what: &str, e: &StepError) -> String {
    format!("{what} failed: {e}")
}

impl<B: Backend> JobRunner<B> {
    pub fn new(
        backend: Arc<B>,
        signals: Arc<Signals>,
        cfg: RunnerConfig,
        job: Job,
    ) -> JobRunner<B> {
        let (purge_tx, purge_done) = tokio::sync::mpsc::unbounded_channel();
        let limiter = Limiter::new(job.bandwidth_bytes_per_sec, Instant::now());
        JobRunner {
            backend,
            signals,
            cfg,
            job,
            limiter,
            clock: Instant::now(),
            purge_done,
            purge_tx,
            purging: HashSet::new(),
        }
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Runs until the job is done, paused, cancelled or failed, or until
    /// stopped (then the job is left at a resumable point). Returns the job.
    pub async fn run(mut self) -> Job {
        self.clock = Instant::now();
        let tasks = self.job.purges.clone();
        for t in tasks {
            self.spawn_purge(t);
        }
        loop {
            if self.signals.stopped() {
                return self.job;
            }
            if let Some(r) = self.signals.requested() {
                if self.job.requested != Some(JobRequest::Cancel) {
                    self.job.requested = Some(r);
                }
            }
            if self.job.requested == Some(JobRequest::Cancel) && before_own(self.job.phase) {
                self.job.phase = Phase::Unfence;
            }
            let (phase, started) = (self.job.phase, Instant::now());
            let result = self.step().await;
            if in_write_pause(phase) {
                // Where a batch's write pause goes, step by step (the save included below).
                tracing::info!(job = %self.job.id, ?phase, ms = started.elapsed().as_millis() as u64, "write-pause step");
            }
            match result {
                Ok(()) => {}
                Err(StepError::Stopped) => return self.job,
                Err(e) => {
                    // Only operator errors reach here; roll the batch back if we can.
                    let msg = e.to_string();
                    tracing::warn!(job = %self.job.id, phase = ?self.job.phase, "job needs an operator: {msg}");
                    self.job.message = Some(msg);
                    if before_own(self.job.phase) {
                        self.job.phase = Phase::Unfence;
                        self.job.requested.get_or_insert(JobRequest::Pause);
                    } else if matches!(self.job.phase, Phase::Select) {
                        self.job.status = JobStatus::Paused;
                        self.job.requested = None;
                    } else {
                        // After Own the batch must complete: keep retrying.
                        if !self.signals.sleep(Duration::from_secs(1)).await {
                            return self.job;
                        }
                    }
                }
            }
            let saving = Instant::now();
            if self.save().await.is_err() {
                return self.job;
            }
            if in_write_pause(phase) {
                tracing::info!(job = %self.job.id, after = ?phase, ms = saving.elapsed().as_millis() as u64, "write-pause job save");
            }
            if !matches!(self.job.status, JobStatus::Running) {
                return self.job;
            }
        }
    }

    /// Persists the job (retrying transient failures until stopped).
    async fn save(&mut self) -> Result<(), StepError> {
        let now = Instant::now();
        self.job.progress.active_ms += now.duration_since(self.clock).as_millis() as u64;
        self.clock = now;
        self.job.updated_ms = now_ms();
        let mut backoff = STEP_BACKOFF;
        loop {
            match self.backend.save_job(&self.job).await {
                Ok(()) => return Ok(()),
                Err(StepError::Stopped) => return Err(StepError::Stopped),
                Err(e) => {
                    tracing::warn!(job = %self.job.id, "failed to save the job, retrying: {e}");
                    if !self.signals.sleep(backoff.next_delay()).await {
                        return Err(StepError::Stopped);
                    }
                }
            }
        }
    }

    /// Calls `f` until it succeeds, retrying transient errors with back-off
    /// for `step_retry_timeout` (forever when `must_finish`).
    async fn retry<T, F, Fut>(
        &mut self,
        what: &str,
        must_finish: bool,
        mut f: F,
    ) -> Result<T, StepError>
    where
        F: FnMut(Arc<B>) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let start = Instant::now();
        let mut backoff = STEP_BACKOFF;
        loop {
            if self.signals.stopped() {
                return Err(StepError::Stopped);
            }
            match f(self.backend.clone()).await {
                Ok(v) => {
                    return Ok(v);
                }
                Err(StepError::Transient(m)) => {
                    if !must_finish && start.elapsed() >= self.cfg.step_retry_timeout {
                        return Err(StepError::Operator(format!(
                            "{what} kept failing for {:?}: {m}",
                            self.cfg.step_retry_timeout
                        )));
                    }
                    let delay = backoff.next_delay();
                    tracing::info!(job = %self.job.id, "{what} failed, retrying in {delay:?}: {m}");
                    self.job.message = Some(format!("retrying {what}: {m}"));
                    if !self.signals.sleep(delay).await {
                        return Err(StepError::Stopped);
                    }
                }
                Err(StepError::Operator(m)) if must_finish => {
                    tracing::warn!(job = %self.job.id, "{what} refused, retrying (the batch is past Own): {m}");
                    self.job.message = Some(describe(what, &StepError::Operator(m)));
                    if !self.signals.sleep(Duration::from_secs(2)).await {
                        return Err(StepError::Stopped);
                    }
                }
                Err(e) => return Err(StepError::Operator(describe(what, &e))),
            }
        }
    }

    fn batch(&self) -> Result<&Batch, StepError> {
        self.job.batch.as_ref().ok_or_else(|| {
            StepError::Operator(format!("phase {:?} without a batch", self.job.phase))
        })
    }

    async fn map_epoch(&mut self) -> Result<u64, StepError> {
        Ok(self
            .retry("read the map", false, |b| async move { b.map().await })
            .await?
            .epoch)
    }

    async fn op(
        &mut self,
        what: &str,
        cell: CellId,
        op: OwnershipOp,
        must_finish: bool,
    ) -> Result<(), StepError> {
        self.retry(what, must_finish, |b| {
            let op = op.clone();
            async move { b.ownership(cell, op).await }
        })
        .await
    }

    fn spawn_purge(&mut self, t: PurgeTask) {
        if !self.purging.insert((t.cell, t.range.start, t.range.end)) {
            return;
        }
        let b = self.backend.clone();
        let tx = self.purge_tx.clone();
        let sig = self.signals.clone();
        tokio::spawn(async move {
            let mut backoff = PURGE_BACKOFF;
            loop {
                if sig.stopped() {
                    return;
                }
                match b.purge(t.cell, t.range).await {
                    Ok(PurgeReply { more: true, .. }) => backoff.reset(),
                    Ok(PurgeReply { more: false, .. }) => {
                        let _ = tx.send(t);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(cell = %t.cell, "failed to purge, retrying: {e}");
                        if !sig.sleep(backoff.next_delay()).await {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Forgets a background purge that completed.
    fn purge_finished(&mut self, t: &PurgeTask) {
        self.purging.remove(&(t.cell, t.range.start, t.range.end));
        self.job.purges.retain(|p| p != t);
    }

    fn reap_purges(&mut self) {
        while let Ok(t) = self.purge_done.try_recv() {
            self.purge_finished(&t);
        }
    }

    async fn wait_purges(&mut self) -> Result<(), StepError> {
        self.reap_purges();
        while !self.job.purges.is_empty() {
            tokio::select! {
                t = self.purge_done.recv() => {
                    if let Some(t) = t {
                        self.purge_finished(&t);
                    }
                }
                ok = self.signals.sleep(Duration::from_millis(500)) => {
                    if !ok { return Err(StepError::Stopped); }
                }
            }
        }
        Ok(())
    }

    async fn step(&mut self) -> Result<(), StepError> {
        match self.job.phase {
            Phase::Select => self.select().await,
            Phase::Prepare => {
                let BatchPlan {
                    from, to, ranges, ..
                } = self.batch()?.plan.clone();
                let id = self.job.id.clone();
                let moving: Vec<common::cell_map::MovingRange> = ranges
                    .iter()
                    .map(|r| common::cell_map::MovingRange {
                        range: *r,
                        from,
                        to,
                        job: id.clone(),
                    })
                    .collect();
                let m = self
                    .retry("mark the batch as moving in the map", false, |b| {
                        let moving = moving.clone();
                        let id = id.clone();
                        async move {
                            b.update_map(Box::new(move |m: &mut CellMap| {
                                let before = m.moving.len();
                                m.moving.retain(|x| x.job != id);
                                let changed = before != m.moving.len() || !moving.is_empty();
                                m.moving.extend(moving.iter().cloned());
                                changed
                            }))
                            .await
                        }
                    })
                    .await?;
                let op = OwnershipOp::Prepare {
                    epoch: m.epoch,
                    ranges,
                };
                self.op("Prepare at the destination", to, op, false).await?;
                self.job.phase = Phase::Copy;
                Ok(())
            }
            Phase::Copy => {
                if self.copy().await? {
                    self.job.phase = Phase::Fence;
                }
                Ok(())
            }
            Phase::Fence => {
                let BatchPlan { from, ranges, .. } = self.batch()?.plan.clone();
                let epoch = self.map_epoch().await?;
                let op = OwnershipOp::Fence {
                    epoch,
                    ranges,
                    seal: false,
                };
                self.op("Fence at the source", from, op, false).await?;
                if let Some(b) = self.job.batch.as_mut() {
                    b.fence_ms.get_or_insert_with(now_ms);
                }
                self.job.phase = Phase::Delta;
                Ok(())
            }
            Phase::Delta => {
                self.delta().await?;
                self.job.phase = Phase::Seal;
                Ok(())
            }
            Phase::Seal => {
                let BatchPlan { from, ranges, .. } = self.batch()?.plan.clone();
                let epoch = self.map_epoch().await?;
                let op = OwnershipOp::Fence {
                    epoch,
                    ranges,
                    seal: true,
                };
                self.op("Seal at the source", from, op, false).await?;
                self.job.phase = Phase::Own;
                Ok(())
            }
            Phase::Own => {
                let epoch = match self.batch()?.epoch {
                    Some(e) => e,
                    None => {
                        let e = self.map_epoch().await? + 1;
                        if let Some(b) = self.job.batch.as_mut() {
                            b.epoch = Some(e);
                        }
                        // Record the epoch before using it: a redo must reuse it.
                        self.save().await?;
                        e
                    }
                };
                let BatchPlan { to, ranges, .. } = self.batch()?.plan.clone();
                self.op(
                    "Own at the destination",
                    to,
                    OwnershipOp::Own { epoch, ranges },
                    true,
                )
                .await?;
                self.job.phase = Phase::Release;
                Ok(())
            }
            Phase::Release => {
                let (from, to, ranges, epoch, fence_ms) = {
                    let b = self.batch()?;
                    (
                        b.plan.from,
                        b.plan.to,
                        b.plan.ranges.clone(),
                        b.epoch.unwrap_or(0),
                        b.fence_ms,
                    )
                };
                self.op(
                    "Release at the source",
                    from,
                    OwnershipOp::Release { epoch, ranges, to },
                    true,
                )
                .await?;
                let pause = now_ms().saturating_sub(fence_ms.unwrap_or_else(now_ms));
                self.job.pauses_ms.push(pause);
                self.job.phase = Phase::Commit;
                Ok(())
            }
            Phase::Commit => self.commit().await,
            Phase::Finish => self.finish().await,
            Phase::Unfence => {
                let BatchPlan { from, ranges, .. } = self.batch()?.plan.clone();
                let epoch = self.map_epoch().await?;
                self.op(
                    "Unfence at the source",
                    from,
                    OwnershipOp::Unfence { epoch, ranges },
                    true,
                )
                .await?;
                self.job.phase = Phase::Abort;
                Ok(())
            }
            Phase::Abort => {
                let BatchPlan { to, ranges, .. } = self.batch()?.plan.clone();
                let epoch = self.map_epoch().await?;
                self.op(
                    "Abort at the destination",
                    to,
                    OwnershipOp::Abort { epoch, ranges },
                    true,
                )
                .await?;
                self.job.phase = Phase::PurgeDest;
                Ok(())
            }
            Phase::PurgeDest => {
                let (to, cover) = {
                    let b = self.batch()?;
                    (b.plan.to, plan::covering(&b.plan.ranges))
                };
                if let Some(range) = cover {
                    loop {
                        let r = self
                            .retry(
                                "purge the destination's partial copy",
                                true,
                                |b| async move { b.purge(to, range).await },
                            )
                            .await?;
                        if !r.more {
                            break;
                        }
                    }
                }
                let id = self.job.id.clone();
                self.retry("clear the batch from the map's moving list", true, |b| {
                    let id = id.clone();
                    async move {
                        b.update_map(Box::new(move |m: &mut CellMap| {
                            let before = m.moving.len();
                            m.moving.retain(|x| x.job != id);
                            before != m.moving.len()
                        }))
                        .await
                    }
                })
                .await?;
                self.job.batch = None;
                self.job.phase = Phase::Select;
                if self.job.requested == Some(JobRequest::Cancel) {
                    self.end_cancelled().await?;
                } else {
                    self.wait_purges().await?;
                    self.job.status = JobStatus::Paused;
                    self.job.requested = None;
                }
                Ok(())
            }
        }
    }

    async fn select(&mut self) -> Result<(), StepError> {
        self.reap_purges();
        match self.job.requested {
            Some(JobRequest::Cancel) => return self.end_cancelled().await,
            Some(JobRequest::Pause) => {
                self.wait_purges().await?;
                self.job.status = JobStatus::Paused;
                self.job.requested = None;
                self.job.message = Some("paused by the operator".into());
                return Ok(());
            }
            None => {}
        }
        let map = self
            .retry("read the map", false, |b| async move { b.map().await })
            .await?;
        let moves = plan::pending_moves(&map).map_err(|e| StepError::Operator(e.to_string()))?;
        self.job.progress.ranges_total = self.job.progress.ranges_done + moves.len() as u64;
        let Some((from, to, candidates)) = plan::first_pair(&moves) else {
            self.job.phase = Phase::Finish;
            return Ok(());
        };
        let cands = candidates.clone();
        let stats = self
            .retry("read range stats at the source", false, |b| {
                let c = cands.clone();
                async move { b.range_stats(from, c).await }
            })
            .await?;
        let plan = plan::make_batch(
            from,
            to,
            &candidates,
            &stats,
            self.job.batch_max_bytes,
            self.job.batch_max_ranges,
        );
        tracing::info!(
            job = %self.job.id, batch = self.job.progress.batches_done, from = %from, to = %to,
            ranges = plan.ranges.len(), keys = plan.keys, bytes = plan.bytes, "starting a batch"
        );
        self.job.batch = Some(Batch {
            index: self.job.progress.batches_done,
            plan,
            epoch: None,
            fence_ms: None,
            cursor: CopyCursor::default(),
        });
        self.job.message = None;
        self.job.phase = Phase::Prepare;
        Ok(())
    }

    /// Step 2; false when it stopped early for a cancel.
    async fn copy(&mut self) -> Result<bool, StepError> {
        let BatchPlan {
            from,
            to,
            ranges,
            range_keys: keys,
            ..
        } = self.batch()?.plan.clone();
        let mut last_save = Instant::now();
        loop {
            let cursor = self.batch()?.cursor.clone();
            if cursor.range >= ranges.len() {
                return Ok(true);
            }
            if self.signals.requested() == Some(JobRequest::Cancel) {
                // The main loop rolls the batch back.
                self.job.requested = Some(JobRequest::Cancel);
                return Ok(false);
            }
            let range = ranges[cursor.range];
            // Empty when planned: anything written since is copied by the delta.
            if keys.get(cursor.range) == Some(&0) {
                self.advance_range();
                continue;
            }
            let after = cursor.after.as_deref().and_then(unhex);
            let page = self
                .retry("scan the source", false, |b| {
                    let after = after.clone();
                    async move { b.scan(from, range, after, true).await }
                })
                .await?;
            let bytes: u64 = page.items.iter().map(|i| i.value.len() as u64).sum();
            let n = page.items.len() as u64;
            self.ingest_all(to, page.items, Vec::new()).await?;
            self.job.progress.keys_copied += n;
            self.job.progress.bytes_copied += bytes;
            match page.next {
                Some(next) => {
                    if let Some(b) = self.job.batch.as_mut() {
                        b.cursor.after = Some(hex(&next));
                    }
                }
                None => self.advance_range(),
            }
            let wait = self.limiter.take(bytes, Instant::now());
            if !wait.is_zero() && !self.signals.sleep(wait).await {
                self.save().await?;
                return Err(StepError::Stopped);
            }
            if last_save.elapsed() >= CURSOR_SAVE_EVERY {
                self.save().await?;
                last_save = Instant::now();
            }
            if self.signals.stopped() {
                self.save().await?;
                return Err(StepError::Stopped);
            }
        }
    }

    fn advance_range(&mut self) {
        if let Some(b) = self.job.batch.as_mut() {
            b.cursor.range += 1;
            b.cursor.after = None;
        }
    }

    /// Sends `items` and `deletes` to `to` in requests of at most `ingest_max_bytes`.
    async fn ingest_all(
        &mut self,
        to: CellId,
        items: Vec<ScanItem>,
        deletes: Vec<(String, String)>,
    ) -> Result<(), StepError> {
        let chunks = chunk_items(items, self.cfg.ingest_max_bytes);
        let n = chunks.len();
        let mut deletes = Some(deletes);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let dels = if i + 1 == n {
                deletes.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let batch = IngestBatch {
                job: self.job.id.clone(),
                items: chunk,
                deletes: dels,
            };
            self.retry("ingest at the destination", false, |b| {
                let batch = batch.clone();
                async move { b.ingest(to, batch).await }
            })
            .await?;
        }
        if let Some(d) = deletes.filter(|d| !d.is_empty()) {
            let batch = IngestBatch {
                job: self.job.id.clone(),
                items: Vec::new(),
                deletes: d,
            };
            self.retry("ingest deletes at the destination", false, |b| {
                let batch = batch.clone();
                async move { b.ingest(to, batch).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Step 4: makes D hold exactly S's content over the batch's ranges.
    async fn delta(&mut self) -> Result<(), StepError> {
        let BatchPlan {
            from, to, ranges, ..
        } = self.batch()?.plan.clone();
        let rs = ranges.clone();
        let (s_stats, d_stats) = self
            .retry("read range stats for the delta", false, |b| {
                let rs = rs.clone();
                async move {
                    let s = b.range_stats(from, rs.clone()).await?;
                    let d = b.range_stats(to, rs).await?;
                    Ok((s, d))
                }
            })
            .await?;
        let keys_of = |stats: &[RangeStats], r: &HashRange| {
            stats
                .iter()
                .find(|s| s.range == *r)
                .map_or(u64::MAX, |s| s.keys)
        };
        let work: Vec<HashRange> = ranges
            .iter()
            .filter(|r| keys_of(&s_stats, r) > 0 || keys_of(&d_stats, r) > 0)
            .copied()
            .collect();
        for chunk in work.chunks(DELTA_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for r in chunk {
                let b = self.backend.clone();
                let r = *r;
                set.spawn(async move { diff_range(b, from, to, r).await.map(|d| (r, d)) });
            }
            let mut diffs = Vec::new();
            while let Some(res) = set.join_next().await {
                match res {
                    Ok(Ok(d)) => diffs.push(d),
                    Ok(Err(e)) => {
                        // Retry this chunk's failed range sequentially below.
                        tracing::info!(job = %self.job.id, "delta scan failed, retrying: {e}");
                    }
                    Err(e) => return Err(StepError::Operator(format!("delta task failed: {e}"))),
                }
            }
            let done: HashSet<HashRange> = diffs.iter().map(|(r, _)| *r).collect();
            for r in chunk.iter().filter(|r| !done.contains(r)) {
                let r = *r;
                let d = self
                    .retry("compare source and destination", false, |b| async move {
                        diff_range(b, from, to, r).await
                    })
                    .await?;
                diffs.push((r, d));
            }
            for (range, d) in diffs {
                if d.copy.is_empty() && d.delete.is_empty() {
                    continue;
                }
                let items = if d.copy.is_empty() {
                    Vec::new()
                } else {
                    let want: HashSet<(String, String)> = d.copy.into_iter().collect();
                    self.collect_values(from, range, &want).await?
                };
                let (n, bytes, dels) = (
                    items.len() as u64,
                    items.iter().map(|i| i.value.len() as u64).sum::<u64>(),
                    d.delete.len() as u64,
                );
                self.ingest_all(to, items, d.delete).await?;
                self.job.progress.keys_copied += n;
                self.job.progress.bytes_copied += bytes;
                self.job.progress.keys_deleted += dels;
            }
        }
        Ok(())
    }

    /// Scans `range` at `from` with values, keeping the keys in `want`.
    async fn collect_values(
        &mut self,
        from: CellId,
        range: HashRange,
        want: &HashSet<(String, String)>,
    ) -> Result<Vec<ScanItem>, StepError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let a = after.clone();
            let page = self
                .retry("scan the source for the delta", false, |b| {
                    let a = a.clone();
                    async move { b.scan(from, range, a, true).await }
                })
                .await?;
            out.extend(
                page.items
                    .into_iter()
                    .filter(|i| want.contains(&(i.bucket.clone(), i.key.clone()))),
            );
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    async fn commit(&mut self) -> Result<(), StepError> {
        let BatchPlan {
            from, to, ranges, ..
        } = self.batch()?.plan.clone();
        let id = self.job.id.clone();
        let rs = ranges.clone();
        self.retry("publish the batch in the map", true, |b| {
            let rs = rs.clone();
            let id = id.clone();
            async move {
                b.update_map(Box::new(move |m: &mut CellMap| {
                    let Ok(mut t) = m.routing() else { return false };
                    let before = t.clone();
                    for r in &rs {
                        t = t.with_assignment(*r, to);
                    }
                    let n = m.moving.len();
                    m.moving.retain(|x| x.job != id);
                    let changed = t != before || n != m.moving.len();
                    m.owners = t.to_owners();
                    changed
                }))
                .await
            }
        })
        .await?;
        if let Some(range) = plan::covering(&ranges) {
            let t = PurgeTask { cell: from, range };
            if !self.job.purges.contains(&t) {
                self.job.purges.push(t.clone());
            }
            self.spawn_purge(t);
        }
        self.job.progress.ranges_done += ranges.len() as u64;
        self.job.progress.batches_done += 1;
        self.job.batch = None;
        self.job.phase = Phase::Select;
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), StepError> {
        self.wait_purges().await?;
        if let JobKind::Drain { cell } = self.job.kind {
            self.retry("mark the drained cell empty", true, |b| async move {
                b.update_map(Box::new(move |m: &mut CellMap| {
                    let owns = m
                        .routing()
                        .map(|t| t.owners().contains(&cell))
                        .unwrap_or(true);
                    match m.cell_mut(cell) {
                        Some(c) if !owns && c.state != CellState::Empty => {
                            c.state = CellState::Empty;
                            true
                        }
                        _ => false,
                    }
                }))
                .await
            })
            .await?;
        }
        self.job.status = JobStatus::Done;
        self.job.finished_ms = Some(now_ms());
        self.job.message = None;
        tracing::info!(job = %self.job.id, ranges = self.job.progress.ranges_done, "job done");
        Ok(())
    }

    async fn end_cancelled(&mut self) -> Result<(), StepError> {
        self.wait_purges().await?;
        if let JobKind::Drain { cell } = self.job.kind {
            // A cancelled drain leaves the cell serving what it still owns.
            self.retry("mark the cell active again", true, |b| async move {
                b.update_map(Box::new(move |m: &mut CellMap| match m.cell_mut(cell) {
                    Some(c) if c.state == CellState::Draining => {
                        c.state = CellState::Active;
                        true
                    }
                    _ => false,
                }))
                .await
            })
            .await?;
        }
        self.job.status = JobStatus::Cancelled;
        self.job.requested = None;
        self.job.finished_ms = Some(now_ms());
        self.job.message = Some("cancelled by the operator".into());
        Ok(())
    }
}

/// Splits items into groups of at most `max_bytes` of values (at least one item each).
pub fn chunk_items(items: Vec<ScanItem>, max_bytes: u64) -> Vec<Vec<ScanItem>> {
    let mut out: Vec<Vec<ScanItem>> = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0u64;
    for it in items {
        let s = it.value.len() as u64 + it.key.len() as u64 + 64;
        if !cur.is_empty() && size + s > max_bytes {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += s;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What the delta must do for one range.
#[derive(Debug, Default)]
pub struct RangeDiff {
    /// At S, and missing at D or with another etag.
    pub copy: Vec<(String, String)>,
    /// At D, absent at S.
    pub delete: Vec<(String, String)>,
}

async fn list_meta<B: Backend>(
    b: &B,
    cell: CellId,
    range: HashRange,
) -> Result<BTreeMap<(String, String), String>, StepError> {
    let mut out = BTreeMap::new();
    let mut after = None;
    loop {
        let page = b.scan(cell, range, after, false).await?;
        for i in page.items {
            out.insert((i.bucket, i.key), i.meta.etag);
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Metadata-only comparison of S and D over `range`.
pub async fn diff_range<B: Backend>(
    b: Arc<B>,
    from: CellId,
    to: CellId,
    range: HashRange,
) -> Result<RangeDiff, StepError> {
    let (s, d) = tokio::join!(list_meta(&*b, from, range), list_meta(&*b, to, range));
    let (s, d) = (s?, d?);
    let mut diff = RangeDiff::default();
    for (k, etag) in &s {
        if d.get(k) != Some(etag) {
            diff.copy.push(k.clone());
        }
    }
    for k in d.keys() {
        if !s.contains_key(k) {
            diff.delete.push(k.clone());
        }
    }
    Ok(diff)
}

#[cfg(test)]
pub(crate) mod tests;
