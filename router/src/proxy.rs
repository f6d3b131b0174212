//! `Proxy`: places a (bucket, key) by the current `Topology` and forwards a
//! request to its cell through that cell's isolation layers, cheapest
//! refusal first; follows `moved` and waits out `range_moving` answers; swaps
//! in newer cell maps and runs the health checkers of the cells they name.
//!
//! ```text
//!  isolated? ─▶ breaker ─▶ cell bulkhead (bounded queue) ─▶ global bulkhead ─▶ CellClient::send
//!  (no I/O)     (no I/O)   (waits ≤ queue_timeout)           (waits ≤ what is left of it)
//!
//!  answer 421 moved{owner known} ──▶ same request at the owner          ┐ one deadline,
//!  answer 421 moved{no owner}    ──▶ refresh the map, route again      │ ≤ MAX_MOVED_HOPS
//!  answer 503 range_moving       ──▶ back off 5 → 20 ms, route again   ┘ moved answers
//! ```
//!
//! A dead or slow cell can hold at most its own bulkhead's slots and queue;
//! once its breaker opens it costs nothing at all. Those retries are safe for
//! writes: a cell answers `moved`/`range_moving` instead of applying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use common::cell_map::CellMapError;
use common::{Backoff, CellId, CellMap, CellState, ErrorCode};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::breaker::Admit;
use crate::bulkhead::{Bulkhead, BulkheadError, BulkheadGauges};
use crate::cell_client::{http_client, CellClient, HttpClient, Outcome};
use crate::config::RouterConfig;
use crate::error::RouteError;
use crate::map_watch::RefreshHandle;
use crate::metrics::RouterMetrics;
use crate::request::{CellRequest, CellResponse};
use crate::topology::{MapRejected, Topology, TopologyDiff};

/// Most `moved` answers one request follows. A hand-over moves a range once;
/// more means the map and the cells disagree, and the deadline is better
/// spent answering than bouncing.
const MAX_MOVED_HOPS: usize = 6;
/// Back-off after `range_moving` (and after a `moved` the map does not
/// explain yet): a hand-over's write pause is a few ms to a few tens of ms.
const MOVING_BACKOFF: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(20));
/// Time that must be left after a back-off for another attempt to be worth
/// starting: one begun at the deadline's edge would turn a certain refusal
/// (503, nothing applied) into a 504 whose outcome the client cannot know.
const MOVING_MIN_ATTEMPT: Duration = Duration::from_millis(25);

pub struct Proxy {
    /// The current snapshot. A std RwLock: requests only clone the Arc
    /// (never held across an await); written once per map swap.
    topology: RwLock<Arc<Topology>>,
    /// Serializes map swaps and owns the health checker tasks (a std mutex:
    /// a swap never awaits).
    checkers: Mutex<Checkers>,
    /// Asks the map watcher for an immediate poll; unset without `[control]`.
    refresher: OnceLock<RefreshHandle>,
    /// Bounds the router's total in-flight work. Its waiters need no bound of
    /// their own: each already holds a slot of its cell's bulkhead.
    global: Bulkhead,
    pub http: HttpClient,
    /// What new cells' clients are built from.
    cfg: Arc<RouterConfig>,
    request_timeout: Duration,
    queue_timeout: Duration,
    metrics: Arc<RouterMetrics>,
}

/// The health checker tasks, one per cell of the current map.
#[derive(Default)]
struct Checkers {
    tasks: JoinSet<()>,
    by_cell: HashMap<CellId, AbortHandle>,
    /// Set by `start_health_checks`; cells added before that start with it.
    stop: Option<watch::Receiver<bool>>,
}

/// The outcome of a forwarded keyed request, with where it was routed.
pub struct Forwarded {
    /// Epoch of the map that routed the last attempt.
    pub epoch: u64,
    /// The cell that answered (or refused) last.
    pub cell: CellId,
    pub result: Result<CellResponse, RouteError>,
}

/// Reports `Cancelled` to the breaker if the request is dropped before its
/// outcome is known (client gone), so a half-open probe slot is never leaked.
struct AdmitGuard<'a> {
    cell: &'a CellClient,
    admit: Admit,
    outcome: Outcome,
}

impl Drop for AdmitGuard<'_> {
    fn drop(&mut self) {
        self.cell.report(self.admit, self.outcome);
    }
}

impl Proxy {
    /// Builds the first topology from `map` (the static map, or a newer
    /// cached one) and one `CellClient` per cell.
    pub fn new(
        cfg: &RouterConfig,
        map: CellMap,
        metrics: Arc<RouterMetrics>,
    ) -> Result<Proxy, CellMapError> {
        let (topology, _) = Topology::build(map, None, |spec| {
            CellClient::new(spec, cfg, metrics.clone())
        })?;
        metrics
            .map_epoch
            .set(i64::try_from(topology.epoch()).unwrap_or(i64::MAX));
        let global_gauges = BulkheadGauges {
            in_flight: Some(metrics.global_in_flight.clone()),
            // No gauge for the global queue: its waiters show in the per-cell ones.
            queue_depth: None,
        };
        Ok(Proxy {
            topology: RwLock::new(Arc::new(topology)),
            checkers: Mutex::new(Checkers::default()),
            refresher: OnceLock::new(),
            global: Bulkhead::new(cfg.max_in_flight, usize::MAX, global_gauges),
            http: http_client(cfg),
            cfg: Arc::new(cfg.clone()),
            request_timeout: cfg.cell_request_timeout,
            queue_timeout: cfg.queue_timeout,
            metrics,
        })
    }

    /// The current topology snapshot.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Epoch of the current map.
    pub fn epoch(&self) -> u64 {
        self.topology().epoch()
    }

    pub fn global_in_flight(&self) -> usize {
        self.global.in_flight()
    }

    /// Swaps in `map` if it is valid and newer than the current one: new
    /// cells get clients and health checkers, staying cells are updated in
    /// place, removed cells' checkers stop.
    pub fn apply(&self, map: CellMap) -> Result<TopologyDiff, MapRejected> {
        let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.topology();
        if map.epoch <= current.epoch() {
            return Err(MapRejected::NotNewer {
                offered: map.epoch,
                current: current.epoch(),
            });
        }
        let (next, diff) = Topology::build(map, Some(&current), |spec| {
            CellClient::new(spec, &self.cfg, self.metrics.clone())
        })?;
        let next = Arc::new(next);
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        let epoch = next.epoch();
        self.metrics
            .map_epoch
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        for id in &diff.removed {
            if let Some(h) = checkers.by_cell.remove(id) {
                h.abort();
            }
            let label = id.to_string();
            for g in [
                &self.metrics.breaker_state,
                &self.metrics.in_flight,
                &self.metrics.queue_depth,
            ] {
                let _ = g.remove_label_values(&[&label]);
            }
        }
        for id in &diff.added {
            if let Some(cell) = next.cell(*id) {
                self.spawn_checker(&mut checkers, cell.clone());
            }
        }
        while checkers.tasks.try_join_next().is_some() {}
        tracing::info!(
            epoch,
            from = current.epoch(),
            added = ?diff.added,
            removed = ?diff.removed,
            updated = ?diff.updated,
            "switched to a new cell map"
        );
        Ok(diff)
    }

    fn spawn_checker(&self, checkers: &mut Checkers, cell: Arc<CellClient>) {
        let Some(stop) = checkers.stop.clone() else {
            return;
        };
        let id = cell.id;
        let h = checkers.tasks.spawn(crate::health::run_checker(
            cell,
            self.http.clone(),
            self.metrics.clone(),
            self.cfg.breaker.health_interval,
            self.cfg.breaker.health_timeout,
            stop,
        ));
        if let Some(old) = checkers.by_cell.insert(id, h) {
            old.abort();
        }
    }

    /// Starts a health checker for every cell of the current map (and, from
    /// now on, for every cell a swap adds) until `stop` turns true.
    pub fn start_health_checks(&self, stop: watch::Receiver<bool>) {
        let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        checkers.stop = Some(stop);
        for cell in self.topology().cells() {
            self.spawn_checker(&mut checkers, cell.clone());
        }
    }

    /// Stops every health checker and waits for them (the checkers watch
    /// `stop` too; this also covers one stuck in a probe).
    pub async fn stop_health_checks(&self) {
        let mut tasks = {
            let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
            checkers.stop = None;
            checkers.by_cell.clear();
            std::mem::take(&mut checkers.tasks)
        };
        tasks.shutdown().await;
    }

    /// Health checker tasks running (tests, `/readyz`).
    pub fn health_checkers(&self) -> usize {
        self.checkers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_cell
            .values()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Connects the map watcher, so `moved` answers can ask for a refresh.
    pub fn set_refresher(&self, handle: RefreshHandle) {
        let _ = self.refresher.set(handle);
    }

    /// Asks for a map poll now, without waiting for it.
    pub fn request_refresh(&self) {
        if let Some(r) = self.refresher.get() {
            r.request();
        }
    }

    /// Asks for a map poll and waits for it, at most until `deadline`.
    pub async fn refresh_before(&self, deadline: Instant) {
        if let Some(r) = self.refresher.get() {
            let _ = tokio::time::timeout_at(deadline, r.refresh()).await;
        }
    }

    /// Forwards a keyed request to the owner of `(bucket, key)` by `topo`,
    /// following `moved` answers and waiting out `range_moving` ones, all
    /// within one `cell_request_timeout`.
    pub async fn forward_key(
        &self,
        topo: Arc<Topology>,
        bucket: &str,
        key: &str,
        req: &CellRequest,
    ) -> Forwarded {
        let mut topo = topo;
        let mut target = topo.owner(bucket, key);
        // Set when the first attempt gets its slots; every hop shares it.
        let mut deadline: Option<Instant> = None;
        let mut moved_hops = 0usize;
        let mut backoff = MOVING_BACKOFF;
        let finish = |topo: &Topology, cell: CellId, result| Forwarded {
            epoch: topo.epoch(),
            cell,
            result,
        };
        loop {
            let empty = topo
                .cell(target)
                .is_some_and(|c| c.state() == CellState::Empty);
            let answer = if empty {
                // The map gives the key to a drained cell: it is inconsistent or
                // stale. Treat it as a `moved` without an owner.
                None
            } else {
                match self.forward_via(&topo, target, req, &mut deadline).await {
                    Ok(resp) => Some(resp),
                    Err(e) => return finish(&topo, target, Err(e)),
                }
            };
            let code = answer
                .as_ref()
                .map_or(Some(ErrorCode::Moved), |r| r.error_code());
            let d = *deadline.get_or_insert_with(|| Instant::now() + self.request_timeout);
            match code {
                Some(ErrorCode::Moved) => {
                    moved_hops += 1;
                    if !empty {
                        self.metrics
                            .moved_total
                            .with_label_values(&[&target.to_string()])
                            .inc();
                    }
                    if moved_hops > MAX_MOVED_HOPS {
                        let reason = format!(
                            "gave up after {MAX_MOVED_HOPS} moved answers (map epoch {})",
                            topo.epoch()
                        );
                        return finish(
                            &topo,
                            target,
                            Err(RouteError::Moved {
                                cell: target,
                                reason,
                            }),
                        );
                    }
                    let hint = answer.as_ref().and_then(CellResponse::moved_hint);
                    let owner = hint.as_ref().and_then(|h| h.owner).filter(|&o| o != target);
                    let stale = hint.as_ref().is_some_and(|h| h.epoch > topo.epoch());
                    let next = match owner.filter(|&o| Self::routable(&topo, o)) {
                        Some(o) => {
                            if stale {
                                self.request_refresh();
                            }
                            o
                        }
                        None => {
                            self.refresh_before(d).await;
                            let latest = self.topology();
                            if latest.epoch() > topo.epoch() {
                                topo = latest;
                            }
                            owner
                                .filter(|&o| Self::routable(&topo, o))
                                .unwrap_or_else(|| topo.owner(bucket, key))
                        }
                    };
                    if next == target && !Self::pause(&mut backoff, d).await {
                        let reason = if empty {
                            format!("it is empty in map epoch {}", topo.epoch())
                        } else {
                            format!("the map (epoch {}) still names it", topo.epoch())
                        };
                        return finish(
                            &topo,
                            target,
                            Err(RouteError::Moved {
                                cell: target,
                                reason,
                            }),
                        );
                    }
                    tracing::debug!(from = %target, to = %next, epoch = topo.epoch(), "following a moved answer");
                    target = next;
                }
                Some(ErrorCode::RangeMoving) => {
                    if !Self::pause(&mut backoff, d).await {
                        return finish(
                            &topo,
                            target,
                            Err(RouteError::RangeMoving { cell: target }),
                        );
                    }
                    self.metrics
                        .retries_total
                        .with_label_values(&[&target.to_string(), "range_moving"])
                        .inc();
                    let latest = self.topology();
                    if latest.epoch() > topo.epoch() {
                        topo = latest;
                        target = topo.owner(bucket, key);
                    }
                }
                _ => {
                    let resp = answer.expect("a real answer: only an empty cell has none");
                    return finish(&topo, target, Ok(resp));
                }
            }
        }
    }

    /// Whether `id` is in `topo` and may own keys.
    fn routable(topo: &Topology, id: CellId) -> bool {
        topo.cell(id).is_some_and(|c| c.state() != CellState::Empty)
    }

    /// Sleeps `backoff`'s next delay unless that would leave less than
    /// [`MOVING_MIN_ATTEMPT`] before `deadline`: then returns false at once.
    async fn pause(backoff: &mut Backoff, deadline: Instant) -> bool {
        if Instant::now() + backoff.peek() + MOVING_MIN_ATTEMPT >= deadline {
            return false;
        }
        tokio::time::sleep(backoff.next_delay()).await;
        true
    }

    /// Forwards `req` to cell `id` of `topo` as it is (listings: cells filter
    /// their pages themselves and never answer `moved`).
    pub async fn forward(
        &self,
        topo: &Topology,
        id: CellId,
        req: &CellRequest,
    ) -> Result<CellResponse, RouteError> {
        self.forward_via(topo, id, req, &mut None).await
    }

    /// One trip to cell `id` through its isolation layers. `deadline` is
    /// the request's: set here on the first trip, after the queues.
    async fn forward_via(
        &self,
        topo: &Topology,
        id: CellId,
        req: &CellRequest,
        deadline: &mut Option<Instant>,
    ) -> Result<CellResponse, RouteError> {
        let Some(cell) = topo.cell(id) else {
            return Err(RouteError::Unavailable {
                cell: id,
                reason: format!("the cell is not in the cell map (epoch {})", topo.epoch()),
            });
        };
        let res = self.forward_to(cell, req, deadline).await;
        if let Err(e) = &res {
            if let Some(reason) = e.fast_fail_reason() {
                self.metrics
                    .fast_fail_total
                    .with_label_values(&[&cell.label, reason])
                    .inc();
            }
        }
        res
    }

    async fn forward_to(
        &self,
        cell: &CellClient,
        req: &CellRequest,
        deadline: &mut Option<Instant>,
    ) -> Result<CellResponse, RouteError> {
        let admit = cell.admit()?;
        let mut guard = AdmitGuard {
            cell,
            admit,
            outcome: Outcome::Cancelled,
        };
        let queued_at = Instant::now();
        let _slot = cell
            .bulkhead
            .acquire(self.queue_timeout)
            .await
            .map_err(|e| match e {
                BulkheadError::QueueFull => RouteError::QueueFull { cell: cell.id },
                BulkheadError::QueueTimeout => RouteError::QueueTimeout { cell: cell.id },
            })?;
        let left = self.queue_timeout.saturating_sub(queued_at.elapsed());
        let _global = self
            .global
            .acquire(left)
            .await
            .map_err(|_| RouteError::Overloaded { cell: cell.id })?;
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.request_timeout);
        let res = cell.send(&self.http, req, deadline).await;
        guard.outcome = match &res {
            // A hand-over in progress is the cell working as designed.
            Ok(resp) if resp.error_code() == Some(ErrorCode::RangeMoving) => Outcome::Success,
            Ok(resp) if resp.status.is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) if e.is_cell_failure() => Outcome::Failure,
            Err(_) => Outcome::Cancelled,
        };
        res
    }
}
