//! `CellClient`: everything the router keeps per cell — its replicas, the
//! cached leader, the circuit breaker and the bulkhead — and the attempt loop
//! that carries one request to the cell's leader, following `not_leader`
//! hints and retrying only what is provably safe. Admission (breaker,
//! bulkhead) is driven by `proxy`; health polling by `health`.
//!
//! ```text
//!  attempt at leader (or any replica) ──▶ answer ─────────────────────────▶ done
//!     │ 421 moved / 503 range_moving ───▶ done: the proxy re-routes (another cell)
//!     │ 421 not_leader + hint ──────────▶ cache hint, retry at once (≤ 3 hops)
//!     │ 503 no_leader / shutting_down ──▶ back off briefly, next replica
//!     │ connect refused (nothing sent) ─▶ next replica; all refused: unavailable
//!     │ sent, then the connection broke ▶ read: next replica │ write: outcome unknown
//!     └ deadline passed mid-attempt ────▶ 504 timeout (a write's outcome is unknown)
//! ```
//!
//! A map swap may change a cell's replicas and state in place (`update`);
//! each request works on the replica list it started with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use common::{Backoff, CellId, CellSpec, CellState, ErrorBody, ErrorCode, NodeId, ReplicaSpec};
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::breaker::{Admit, Breaker, BreakerState, Rejected};
use crate::config::RouterConfig;
use crate::error::{RouteError, HEADER_LEADER};
use crate::metrics::RouterMetrics;
use crate::request::{CellRequest, CellResponse};

tokio::task_local! {
    /// Time the current public request has spent in exchanges with cells
    /// (every attempt, from sending to the last byte of the answer). The API
    /// layer sets it up per request and subtracts it from the request's
    /// duration: the rest is what the router itself added (auth, bulkhead
    /// queueing, back-off, relaying bodies).
    pub static CELL_TIME: std::cell::Cell<Duration>;
}

/// Adds `d` to the current request's [`CELL_TIME`]; nothing outside a request.
fn add_cell_time(d: Duration) {
    let _ = CELL_TIME.try_with(|t| t.set(t.get() + d));
}

/// The pooled HTTP/1.1 client shared by every cell: one connection pool keyed
/// by replica address, so connections to each replica are reused.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Most attempts of one request: one per replica of a 3-replica cell plus a
/// leader hop and an election retry. Bounds the work one request can cause.
const MAX_ATTEMPTS: usize = 6;
/// Most `not_leader` hops in one request; more means hints are going in circles.
const MAX_LEADER_HOPS: usize = 3;
/// Waits after a `no_leader` answer: 25 ms doubling up to 400 ms. An
/// election takes a few hundred ms, so a few short waits usually span it.
const NO_LEADER_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(25), Duration::from_millis(400));
/// Largest listing page a cell may send (1000 entries of ≤ 1 KiB keys fit
/// with room to spare); object bodies are bounded by `max_object_bytes`.
const LIST_PAGE_MAX_BYTES: usize = 8 << 20;
/// Idle keep-alive connections are closed after this long: before the cell
/// closes them (`service::HEADER_READ_TIMEOUT`), so a request never goes out
/// on a connection the cell is closing (a write's outcome would be unknown).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pooled client: TCP_NODELAY (small requests must not wait for
/// Nagle), a connect timeout, TCP keep-alive, idle connections reused.
pub fn http_client(cfg: &RouterConfig) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(cfg.connect_timeout));
    conn.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(cfg.max_in_flight_per_cell)
        .build(conn)
}

/// The outcome of one forwarded request, as the breaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cell answered sensibly (2xx-4xx).
    Success,
    /// The cell failed: connect error, timeout, 5xx.
    Failure,
    /// No verdict: the caller went away or the router refused on its own account.
    Cancelled,
}

pub struct CellClient {
    pub id: CellId,
    /// The `cell` metric label (the id as text).
    pub label: String,
    /// Routing state from the cell map; a map swap may change it (`update`).
    /// std RwLocks here and below: read by every request, written rarely,
    /// never held across an await.
    state: RwLock<CellState>,
    /// The replicas, replaced whole by a map swap; a request keeps the
    /// snapshot it started with.
    replicas: RwLock<Arc<[ReplicaSpec]>>,
    /// The node believed to lead. By node id, not index, so a changed
    /// replica list never makes it name the wrong replica.
    leader: RwLock<Option<NodeId>>,
    /// Rotates the first replica tried while no leader is known.
    rotate: AtomicUsize,
    /// A std mutex: every breaker call is a few comparisons, never awaits.
    breaker: Mutex<Breaker>,
    pub bulkhead: crate::bulkhead::Bulkhead,
    auth: HeaderValue,
    max_object_bytes: usize,
    /// Whether a health round has completed, and how the last one went.
    checked: AtomicBool,
    healthy: AtomicBool,
    metrics: Arc<RouterMetrics>,
    /// `connect_to` of the config: where to dial a replica's address instead.
    connect_to: BTreeMap<String, String>,
}

/// What one attempt at one replica produced.
enum Attempt {
    Answered(CellResponse),
    /// The connection could not be established: nothing was sent.
    ConnectFailed(String),
    /// The request was (or may have been) sent, then the exchange broke.
    Broken(String),
    TimedOut,
}

impl CellClient {
    pub fn new(spec: &CellSpec, cfg: &RouterConfig, metrics: Arc<RouterMetrics>) -> CellClient {
        let label = spec.id.to_string();
        let gauges = crate::bulkhead::BulkheadGauges {
            in_flight: Some(metrics.in_flight.with_label_values(&[&label])),
            queue_depth: Some(metrics.queue_depth.with_label_values(&[&label])),
        };
        metrics
            .breaker_state
            .with_label_values(&[&label])
            .set(BreakerState::Closed.as_gauge());
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.cell_api_token))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
        auth.set_sensitive(true);
        CellClient {
            id: spec.id,
            label,
            state: RwLock::new(spec.state),
            replicas: RwLock::new(spec.replicas.clone().into()),
            leader: RwLock::new(None),
            rotate: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::new(&cfg.breaker, Instant::now())),
            bulkhead: crate::bulkhead::Bulkhead::new(
                cfg.max_in_flight_per_cell,
                cfg.max_queue_per_cell,
                gauges,
            ),
            auth,
            max_object_bytes: usize::try_from(cfg.max_object_bytes).unwrap_or(usize::MAX),
            checked: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            metrics,
            connect_to: cfg.connect_to.clone(),
        }
    }

    /// Where to open a connection for the replica at `api_addr`: the
    /// config's `connect_to` override, else the address itself.
    pub fn dial_addr<'a>(&'a self, api_addr: &'a str) -> &'a str {
        self.connect_to
            .get(api_addr)
            .map_or(api_addr, String::as_str)
    }

    /// The current replica list (a cheap snapshot).
    pub fn replicas(&self) -> Arc<[ReplicaSpec]> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cell's routing state in the current map.
    pub fn state(&self) -> CellState {
        *self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a newer map's spec of this cell: its state and replica list.
    /// Breaker, bulkhead and (if its node is still listed) the cached leader
    /// are kept. Returns whether anything changed.
    pub fn update(&self, spec: &CellSpec) -> bool {
        let mut changed = false;
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            if *st != spec.state {
                tracing::info!(cell = %self.id, from = %*st, to = %spec.state, "cell state changed");
                *st = spec.state;
                changed = true;
            }
        }
        let mut reps = self.replicas.write().unwrap_or_else(|e| e.into_inner());
        if reps[..] != spec.replicas[..] {
            tracing::info!(cell = %self.id, replicas = spec.replicas.len(), "cell replica list changed");
            *reps = spec.replicas.clone().into();
            let mut l = self.leader.write().unwrap_or_else(|e| e.into_inner());
            if l.is_some_and(|n| !reps.iter().any(|r| r.node_id == n)) {
                *l = None;
            }
            changed = true;
        }
        changed
    }

    /// The node believed to lead, if any.
    pub fn leader(&self) -> Option<NodeId> {
        *self.leader.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The believed leader's index in `reps`, if it is listed there.
    fn leader_index(&self, reps: &[ReplicaSpec]) -> Option<usize> {
        let node = self.leader()?;
        reps.iter().position(|r| r.node_id == node)
    }

    pub fn leader_addr(&self) -> Option<String> {
        let reps = self.replicas();
        self.leader_index(&reps).map(|i| reps[i].api_addr.clone())
    }

    pub fn set_leader(&self, node: Option<NodeId>) {
        let mut l = self.leader.write().unwrap_or_else(|e| e.into_inner());
        if *l != node {
            tracing::debug!(cell = %self.id, leader = ?node, "leader cache updated");
            *l = node;
        }
    }

    /// Forgets the cached leader if it is `node` (it just failed us).
    fn forget_leader(&self, node: NodeId) {
        let mut l = self.leader.write().unwrap_or_else(|e| e.into_inner());
        if *l == Some(node) {
            *l = None;
        }
    }

    /// Runs `f` on the breaker; logs and exports any state change.
    fn with_breaker<R>(&self, f: impl FnOnce(&mut Breaker, Instant) -> R) -> R {
        let now = Instant::now();
        let (before, after, r) = {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let before = b.state(now);
            let r = f(&mut b, now);
            (before, b.state(now), r)
        };
        if before != after {
            // WARN only when a serving cell starts failing fast and INFO when it
            // recovers; the open/half-open cycling of a dead cell is DEBUG.
            match (before, after) {
                (BreakerState::Closed, _) => {
                    tracing::warn!(cell = %self.id, "circuit breaker opened: failing requests fast")
                }
                (_, BreakerState::Closed) => {
                    tracing::info!(cell = %self.id, "circuit breaker closed: cell recovered")
                }
                _ => {
                    tracing::debug!(cell = %self.id, from = before.as_str(), to = after.as_str(), "circuit breaker changed state")
                }
            }
            self.metrics
                .breaker_state
                .with_label_values(&[&self.label])
                .set(after.as_gauge());
        }
        r
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.with_breaker(|b, now| b.state(now))
    }

    /// Whether this cell may take requests: not isolated, breaker allowing.
    /// No I/O, no waiting: this is the fast-fail path.
    pub fn admit(&self) -> Result<Admit, RouteError> {
        if self.state() == CellState::Isolated {
            return Err(RouteError::Isolated { cell: self.id });
        }
        self.with_breaker(|b, now| b.admit(now))
            .map_err(|r| match r {
                Rejected::Open { retry_after } => RouteError::BreakerOpen {
                    cell: self.id,
                    retry_after,
                },
                Rejected::ProbeInFlight => RouteError::ProbeInFlight { cell: self.id },
            })
    }

    /// Feeds a request's outcome to the breaker.
    pub fn report(&self, admit: Admit, outcome: Outcome) {
        self.with_breaker(|b, now| match outcome {
            Outcome::Success => b.on_success(admit),
            Outcome::Failure => b.on_failure(admit, now),
            Outcome::Cancelled => b.on_cancel(admit),
        });
    }

    /// Feeds one health round: `leader` is the replica that reported itself
    /// leader with a quorum (the cell is healthy iff there is one).
    pub fn on_health(&self, leader: Option<NodeId>) {
        let healthy = leader.is_some();
        if leader.is_some() {
            self.set_leader(leader);
        }
        self.checked.store(true, Ordering::Release);
        self.healthy.store(healthy, Ordering::Release);
        self.with_breaker(|b, now| b.on_health(healthy, now));
    }

    /// `Some(healthy)` after the first health round, `None` before.
    pub fn last_health(&self) -> Option<bool> {
        self.checked
            .load(Ordering::Acquire)
            .then(|| self.healthy.load(Ordering::Acquire))
    }

    fn retry(&self, reason: &'static str) {
        self.metrics
            .retries_total
            .with_label_values(&[&self.label, reason])
            .inc();
    }

    fn next_replica(from: usize, refused: &[bool]) -> usize {
        let n = refused.len();
        (1..=n)
            .map(|d| (from + d) % n)
            .find(|&i| !refused[i])
            .unwrap_or(from)
    }

    /// The replica a `not_leader` answer points at, if it is one of ours.
    /// Hints naming an address outside the cell map are ignored: the router's
    /// cell token is never sent to an address the operator did not list.
    fn resolve_hint(reps: &[ReplicaSpec], resp: &CellResponse) -> Option<usize> {
        if let Some(addr) = resp
            .headers
            .get(HEADER_LEADER)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(i) = reps.iter().position(|r| r.api_addr == addr) {
                return Some(i);
            }
        }
        let hint = serde_json::from_slice::<ErrorBody>(&resp.body)
            .ok()?
            .error
            .leader?;
        reps.iter()
            .position(|r| r.api_addr == hint.api_addr)
            .or_else(|| reps.iter().position(|r| r.node_id == hint.node_id))
    }

    /// Carries `req` to the cell's leader before `deadline`.
    ///
    /// Retries only what is safe: reads always; writes only after an answer
    /// proving they were not executed (421, 503 `no_leader`/`shutting_down`/
    /// `cell_unavailable`) or a refused connection. A write whose attempt
    /// timed out or broke after sending is never retried. A leader's
    /// `moved` or `range_moving` answer is returned as it is: the range is
    /// not this cell's to serve now, which the proxy handles.
    pub async fn send(
        &self,
        http: &HttpClient,
        req: &CellRequest,
        deadline: Instant,
    ) -> Result<CellResponse, RouteError> {
        let reps = self.replicas();
        let n = reps.len();
        let read = req.op.is_read();
        let mut target = self
            .leader_index(&reps)
            .unwrap_or_else(|| self.rotate.fetch_add(1, Ordering::Relaxed) % n);
        let mut refused = vec![false; n];
        // Replicas that said "no leader": during an election a stale follower
        // still points at the deposed leader, which answers 503 no_leader.
        let mut no_leader_from = vec![false; n];
        let mut backoff = NO_LEADER_BACKOFF;
        let mut hops = 0;
        let mut last = String::from("no attempt was made");
        // Why the next attempt is a retry; counted when it actually happens.
        let mut retry_reason: Option<&'static str> = None;
        // Attempts made without waiting first. Retries after a back-off (an
        // election in progress) are bounded by the deadline alone, so an
        // election shorter than the deadline never fails a request.
        let mut immediate = 0usize;
        let mut backed_off = false;
        for attempt in 0usize.. {
            if !std::mem::take(&mut backed_off) {
                immediate += 1;
                if immediate > MAX_ATTEMPTS {
                    break;
                }
            }
            if let Some(reason) = retry_reason.take() {
                self.retry(reason);
            }
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                // Every earlier attempt was refused before execution, so even
                // for a write this is "unavailable", not "outcome unknown".
                return Err(if attempt == 0 {
                    RouteError::Timeout {
                        cell: self.id,
                        write: false,
                    }
                } else {
                    RouteError::Unavailable {
                        cell: self.id,
                        reason: format!("deadline passed while retrying; last: {last}"),
                    }
                });
            }
            let replica = &reps[target];
            match self.attempt(http, replica, req, remaining).await {
                Attempt::Answered(resp) => {
                    let status = resp.status;
                    if matches!(
                        resp.error_code(),
                        Some(ErrorCode::Moved | ErrorCode::RangeMoving)
                    ) {
                        // Only a leader checks ownership: remember it.
                        self.set_leader(Some(replica.node_id));
                        return Ok(resp);
                    }
                    if status == StatusCode::MISDIRECTED_REQUEST {
                        last = format!("node {} is not the leader", replica.node_id);
                        let hint = Self::resolve_hint(&reps, &resp).filter(|&i| i != target);
                        if hint.is_some_and(|i| no_leader_from[i]) {
                            // A stale hint at a replica that just said it has no
                            // leader: an election is under way. Wait, try the next.
                            retry_reason = Some("no_leader");
                            self.forget_leader(replica.node_id);
                            tokio::time::sleep(backoff.next_delay().min(remaining)).await;
                            backed_off = true;
                            target = Self::next_replica(target, &refused);
                            continue;
                        }
                        hops += 1;
                        if hops > MAX_LEADER_HOPS {
                            break;
                        }
                        retry_reason = Some("not_leader");
                        match hint {
                            Some(i) => {
                                self.set_leader(Some(reps[i].node_id));
                                target = i;
                            }
                            None => {
                                self.forget_leader(replica.node_id);
                                target = Self::next_replica(target, &refused);
                            }
                        }
                        continue;
                    }
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        let code = resp.error_code();
                        let not_executed = matches!(
                            code,
                            Some(
                                ErrorCode::NoLeader
                                    | ErrorCode::ShuttingDown
                                    | ErrorCode::CellUnavailable
                            )
                        );
                        if read || not_executed {
                            let reason = match code {
                                Some(ErrorCode::NoLeader) => "no_leader",
                                Some(ErrorCode::ShuttingDown) => "shutting_down",
                                _ => "unavailable",
                            };
                            last = format!("node {} answered 503 {reason}", replica.node_id);
                            retry_reason = Some(reason);
                            self.forget_leader(replica.node_id);
                            if code == Some(ErrorCode::NoLeader) {
                                no_leader_from[target] = true;
                            }
                            // An election needs time; a replica going away or
                            // installing a snapshot does not: try the next one now.
                            if !matches!(
                                code,
                                Some(ErrorCode::ShuttingDown | ErrorCode::CellUnavailable)
                            ) {
                                tokio::time::sleep(backoff.next_delay().min(remaining)).await;
                                backed_off = true;
                            }
                            target = Self::next_replica(target, &refused);
                            continue;
                        }
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        // Needs a human: every request to this cell will fail alike.
                        tracing::error!(cell = %self.id, node = %replica.node_id, "cell refused the router's cell_api_token; check that it matches the cells' api_token");
                    } else {
                        // Only a leader executes (or refuses) requests: remember it.
                        self.set_leader(Some(replica.node_id));
                    }
                    return Ok(resp);
                }
                Attempt::ConnectFailed(e) => {
                    last = format!(
                        "connect to node {} at {}: {e}",
                        replica.node_id, replica.api_addr
                    );
                    refused[target] = true;
                    self.forget_leader(replica.node_id);
                    if refused.iter().all(|&r| r) {
                        return Err(RouteError::Unavailable {
                            cell: self.id,
                            reason: format!("no replica accepts connections (last: {last})"),
                        });
                    }
                    retry_reason = Some("connect_error");
                    target = Self::next_replica(target, &refused);
                }
                Attempt::Broken(e) => {
                    if !read {
                        tracing::warn!(cell = %self.id, node = %replica.node_id, "write outcome unknown: failed to complete the exchange: {e}");
                        return Err(RouteError::OutcomeUnknown { cell: self.id });
                    }
                    last = format!("exchange with node {} broke: {e}", replica.node_id);
                    self.forget_leader(replica.node_id);
                    retry_reason = Some("transport_error");
                    target = Self::next_replica(target, &refused);
                }
                Attempt::TimedOut => {
                    return Err(RouteError::Timeout {
                        cell: self.id,
                        write: !read,
                    })
                }
            }
        }
        Err(RouteError::Unavailable {
            cell: self.id,
            reason: format!("gave up after {MAX_ATTEMPTS} immediate attempts; last: {last}"),
        })
    }

    /// One exchange with one replica, body fully read, within `timeout`.
    async fn attempt(
        &self,
        http: &HttpClient,
        replica: &ReplicaSpec,
        req: &CellRequest,
        timeout: Duration,
    ) -> Attempt {
        let uri = format!(
            "http://{}{}",
            self.dial_addr(&replica.api_addr),
            req.path_and_query
        );
        let mut builder = http::Request::builder().method(req.method.clone()).uri(uri);
        if let Some(h) = builder.headers_mut() {
            h.extend(req.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            h.insert(http::header::AUTHORIZATION, self.auth.clone());
        }
        let request = match builder.body(Full::new(req.body.clone())) {
            Ok(r) => r,
            // Nothing was sent; the map's addresses are validated, so this is a bad path.
            Err(e) => return Attempt::ConnectFailed(format!("build request: {e}")),
        };
        let limit = self.max_object_bytes.max(LIST_PAGE_MAX_BYTES);
        let exchange = async {
            let resp = http.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Attempt::ConnectFailed(error_chain(&e))
                } else {
                    Attempt::Broken(error_chain(&e))
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| Attempt::Broken(format!("read response body: {e}")))?
                .to_bytes();
            Ok::<_, Attempt>(CellResponse {
                status: parts.status,
                headers: parts.headers,
                body,
                node: replica.node_id,
            })
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, exchange).await;
        add_cell_time(started.elapsed());
        match outcome {
            Ok(Ok(resp)) => Attempt::Answered(resp),
            Ok(Err(a)) => a,
            Err(_) => Attempt::TimedOut,
        }
    }
}

/// An error and its causes on one line ("client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
