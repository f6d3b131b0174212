//! The admin API (`cellkvctl` talks to it): status, the map, cell lifecycle
//! (add, drain, remove, isolate, restore), plans, jobs and replica
//! operations. Bearer admin token compared in constant time; every error is
//! `{"error": {"code", "message"}}` with a stable code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use common::admin::{
    AddCellRequest, Amount, CellAdded, CellRemoved, CellStateChanged, CellStatus, ControlStatus,
    JobList, JobOptions, JobStarted, Lost, PlanRequest, PlanResponse, RemoveCellQuery,
    ReplicaStatus, ReplicasChanged, StatusResponse, TransferFigures, TransferLeaderRequest,
    TransferLeaderResponse,
};
use common::ownership::OwnershipOp;
use common::wire::RangeStats;
use common::{
    CellId, CellMap, CellSpec, CellState, ErrorBody, ErrorCode, ErrorDetail, HashRange, NodeId,
    ReplicaSpec, RoutingTable,
};
use serde::Deserialize;
use serde_json::json;

use crate::cells::{CellClient, CellError};
use crate::config::ControlConfig;
use crate::job::{self, Job, JobKind, JobRequest};
use crate::manager::{new_job_id, JobError, JobManager};
use crate::metrics::ControlMetrics;
use crate::plan;
use crate::store::{ControlStore, StoreError};

/// Longest an admin request may take (replica catch-up included).
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// One replica's `/health` during `GET /v1/status`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

pub struct App {
    pub cfg: ControlConfig,
    pub store: Arc<ControlStore>,
    pub cells: Arc<CellClient>,
    pub jobs: Arc<JobManager>,
    pub metrics: ControlMetrics,
}

/// An admin API error: one code, one message, the status from the code
/// unless a conflict (409) says otherwise.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }
    /// 409: the cluster's state does not allow this now (code `precondition_failed`).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            code: ErrorCode::PreconditionFailed,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                    cell: None,
                    leader: None,
                    moved: None,
                },
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NoMap => ApiError::new(ErrorCode::NotFound, e.to_string()),
            StoreError::Unavailable(_) | StoreError::Unknown(_) | StoreError::Contention(_) => {
                ApiError::new(ErrorCode::CellUnavailable, e.to_string())
            }
            _ => ApiError::new(ErrorCode::Internal, e.to_string()),
        }
    }
}

impl From<CellError> for ApiError {
    fn from(e: CellError) -> ApiError {
        match &e {
            CellError::Transient { .. } => ApiError::new(ErrorCode::CellUnavailable, e.to_string()),
            CellError::Refused { .. } => ApiError::conflict(e.to_string()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::NotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            JobError::Conflict(_) => ApiError::conflict(e.to_string()),
            JobError::NoLease(_) => ApiError::new(ErrorCode::CellUnavailable, e.to_string()),
            JobError::Store(_) => ApiError::new(ErrorCode::CellUnavailable, e.to_string()),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/map", get(get_map))
        .route("/v1/cells", post(add_cell))
        .route("/v1/cells/{id}", delete(remove_cell))
        .route("/v1/cells/{id}/drain", post(drain_cell))
        .route("/v1/cells/{id}/isolate", post(isolate_cell))
        .route("/v1/cells/{id}/restore", post(restore_cell))
        .route("/v1/cells/{id}/replicas", post(add_replica))
        .route("/v1/cells/{id}/replicas/{node}", delete(remove_replica))
        .route(
            "/v1/cells/{id}/replicas/{node}/replace",
            post(replace_replica),
        )
        .route("/v1/cells/{id}/transfer-leader", post(transfer_leader))
        .route("/v1/plan", post(plan_handler))
        .route("/v1/rebalance", post(rebalance))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/{action}", post(job_action))
        .layer(middleware::from_fn_with_state(app.clone(), require_admin));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(DefaultBodyLimit::max(app.cfg.max_admin_body_bytes))
        .with_state(app)
}

async fn require_admin(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ok = common::secret::bearer_matches(
        req.headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        &app.cfg.admin_token,
    );
    if !ok {
        let mut r = ApiError::new(ErrorCode::Unauthorized, "missing or invalid admin token")
            .into_response();
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let resp = match tokio::time::timeout(ADMIN_REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            "the admin request took too long; check the job or cell state",
        )
        .into_response(),
    };
    app.metrics
        .admin_requests
        .with_label_values(&[resp.status().as_str()])
        .inc();
    resp
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics
        .lease_held
        .set(i64::from(app.jobs.backend.lease.held()));
    app.metrics.refresh_jobs(&app.jobs.list());
    service::metrics_response(&app.metrics.registry)
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &axum::body::Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_str("{}")
            .map_err(|e| ApiError::bad(format!("request body required: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

async fn load_map(app: &App) -> Result<CellMap, ApiError> {
    let m = app.store.map().await?;
    app.metrics.map_epoch.set(m.epoch as i64);
    Ok(m)
}

fn cell_of(map: &CellMap, id: u32) -> Result<CellSpec, ApiError> {
    map.cell(CellId(id)).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("cell {id} is not in the map (cellkvctl map lists them)"),
        )
    })
}

/// Applies a map change, mapping refusals to 409.
async fn change_map(
    app: &App,
    f: impl FnMut(&mut CellMap) -> Result<bool, String>,
) -> Result<CellMap, ApiError> {
    let m = app.store.update_map(f).await?.map_err(ApiError::conflict)?;
    app.metrics.map_epoch.set(m.epoch as i64);
    Ok(m)
}

// ---------- status ----------

async fn cell_status(
    cells: Arc<CellClient>,
    spec: CellSpec,
    routing: RoutingTable,
    target: Option<RoutingTable>,
) -> CellStatus {
    let mut healths = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in spec.replicas.iter().enumerate() {
        let (c, r) = (cells.clone(), r.clone());
        set.spawn(async move { (i, c.health(&r, HEALTH_TIMEOUT).await) });
    }
    while let Some(Ok(h)) = set.join_next().await {
        healths.push(h);
    }
    healths.sort_by_key(|(i, _)| *i);
    let leader_health = healths
        .iter()
        .filter_map(|(_, h)| h.as_ref())
        .find(|h| h["role"] == "leader")
        .cloned();
    let leader = leader_health
        .as_ref()
        .and_then(|h| h["node_id"].as_u64())
        .or_else(|| {
            healths
                .iter()
                .filter_map(|(_, h)| h.as_ref()?["leader"].as_u64())
                .next()
        })
        .map(NodeId);
    let replicas = spec
        .replicas
        .iter()
        .zip(healths.iter())
        .map(|(r, (_, h))| {
            let lag = leader_health
                .as_ref()
                .and_then(|lh| lh["followers"][r.node_id.0.to_string()]["lag_entries"].as_u64());
            ReplicaStatus {
                node_id: r.node_id,
                api_addr: r.api_addr.clone(),
                control_addr: r.control_addr.clone(),
                reachable: h.is_some(),
                ready: h.as_ref().is_some_and(|h| h["ready"] == true),
                role: h
                    .as_ref()
                    .and_then(|h| h["role"].as_str().map(str::to_string)),
                applied_index: h.as_ref().and_then(|h| h["applied_index"].as_u64()),
                lag_entries: if leader == Some(r.node_id) {
                    Some(0)
                } else {
                    lag
                },
            }
        })
        .collect();
    let owned = routing.ranges_of(spec.id);
    let t = tokio::time::timeout(Duration::from_secs(3), async {
        let stats = if owned.is_empty() {
            Ok(Vec::new())
        } else {
            cells.range_stats(&spec, &owned).await
        };
        let own = cells.get_ownership(&spec).await.ok().map(|t| t.epoch);
        (stats, own)
    })
    .await;
    let (keys, bytes, ownership_epoch) = match t {
        Ok((Ok(s), own)) => (
            Some(s.iter().map(|x| x.keys).sum()),
            Some(s.iter().map(|x| x.bytes).sum()),
            own,
        ),
        Ok((Err(_), own)) => (None, None, own),
        Err(_) => (None, None, None),
    };
    CellStatus {
        id: spec.id,
        state: spec.state,
        weight: spec.weight,
        share_pct: routing.share(spec.id) * 100.0,
        target_share_pct: target.map_or(0.0, |t| t.share(spec.id) * 100.0),
        ranges: owned.len(),
        leader,
        ownership_epoch,
        keys,
        bytes,
        replicas,
    }
}

async fn status(State(app): State<Arc<App>>) -> ApiResult {
    let map = load_map(&app).await?;
    let routing = map
        .routing()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let target = map.target_ring().map(|r| RoutingTable::from_ring(&r));
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in map.cells.iter().enumerate() {
        let fut = cell_status(
            app.cells.clone(),
            c.clone(),
            routing.clone(),
            target.clone(),
        );
        set.spawn(async move { (i, fut.await) });
    }
    let mut cells = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(c) = r {
            cells.push(c);
        }
    }
    cells.sort_by_key(|(i, _)| *i);
    let cells: Vec<CellStatus> = cells.into_iter().map(|(_, c)| c).collect();
    let lease = &app.jobs.backend.lease;
    let other = lease.other.lock().expect("lease lock").clone();
    Ok(Json(StatusResponse {
        epoch: map.epoch,
        moving_ranges: map.moving.len(),
        pending_moves: plan::pending_moves(&map).map(|m| m.len()).unwrap_or(0),
        control: ControlStatus {
            lease_held: lease.held(),
            instance: lease.holder.clone(),
            lease_holder: other.map(|l| l.holder),
        },
        cells,
        active_job: app.jobs.active().as_ref().map(job::view),
    })
    .into_response())
}

async fn get_map(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(load_map(&app).await?).into_response())
}

// ---------- cells ----------

fn new_job(app: &App, kind: JobKind, bandwidth: Option<u64>) -> Job {
    job::new_record(
        new_job_id(),
        kind,
        bandwidth.unwrap_or(app.cfg.bandwidth_bytes_per_sec).max(1),
        app.cfg.batch_max_bytes,
        app.cfg.batch_max_ranges,
    )
}

/// Stats of `ranges` at their owners (per source), for plans and estimates.
async fn stats_of(
    app: &App,
    map: &CellMap,
    moves: &[plan::Move],
) -> BTreeMap<HashRange, RangeStats> {
    let mut by_source: BTreeMap<CellId, Vec<HashRange>> = BTreeMap::new();
    for (r, from, _) in moves {
        by_source.entry(*from).or_default().push(*r);
    }
    let mut out = BTreeMap::new();
    for (cell, ranges) in by_source {
        let Some(spec) = map.cell(cell) else { continue };
        if let Ok(stats) = app.cells.range_stats(spec, &ranges).await {
            for s in stats {
                out.insert(s.range, s);
            }
        }
    }
    out
}

async fn start_job(
    app: &App,
    map: &CellMap,
    kind: JobKind,
    bandwidth: Option<u64>,
) -> Result<Job, ApiError> {
    let mut job = new_job(app, kind, bandwidth);
    let moves = plan::pending_moves(map).map_err(|e| ApiError::conflict(e.to_string()))?;
    let stats = stats_of(app, map, &moves).await;
    job.progress.ranges_total = moves.len() as u64;
    job.progress.bytes_estimated = stats.values().map(|s| s.bytes).sum();
    Ok(app.jobs.start(job).await?)
}

async fn add_cell(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let req: AddCellRequest = json_body(&body)?;
    if req.replicas.is_empty() {
        return Err(ApiError::bad(
            "replicas: list at least one replica (node_id, api_addr, control_addr)",
        ));
    }
    if let Some(r) = req.replicas.iter().find(|r| r.control_addr.is_none()) {
        return Err(ApiError::bad(format!(
            "replica {} has no control_addr: the control plane needs the control port",
            r.node_id
        )));
    }
    if req.rebalance {
        app.jobs.check_idle()?;
    }
    let map = load_map(&app).await?;
    let spec = CellSpec {
        id: req.id,
        weight: req.weight,
        replicas: req.replicas.clone(),
        state: CellState::Active,
    };
    if let Some(existing) = map.cell(req.id) {
        if existing.replicas != spec.replicas {
            return Err(ApiError::conflict(format!(
                "cell {} is already in the map with other replicas; pick another id",
                req.id
            )));
        }
    }
    let mut probe = map.clone();
    probe.cells.retain(|c| c.id != req.id);
    probe.cells.push(spec.clone());
    probe.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    // The cell must answer, and be the cell it claims to be.
    let mut seen = false;
    for r in &spec.replicas {
        if let Some(h) = app.cells.health(r, Duration::from_secs(2)).await {
            seen = true;
            if h["cell_id"].as_u64() != Some(u64::from(req.id.0)) {
                return Err(ApiError::conflict(format!(
                    "replica {} at {} reports cell_id {}, not {}; check the addresses",
                    r.node_id, r.api_addr, h["cell_id"], req.id
                )));
            }
        }
    }
    if !seen {
        return Err(ApiError::new(
            ErrorCode::CellUnavailable,
            format!(
                "no replica of cell {} answers GET /health; start and initialize the cell first",
                req.id
            ),
        ));
    }
    let owned_by_it = map
        .routing()
        .map(|t| t.owners().contains(&req.id))
        .unwrap_or(false);
    if !owned_by_it {
        app.cells
            .ownership(
                &spec,
                &OwnershipOp::Assign {
                    epoch: map.epoch,
                    owned: vec![],
                },
            )
            .await?;
    }
    let spec2 = spec.clone();
    let map = change_map(&app, move |m| {
        if m.cell(spec2.id).is_some() {
            return Ok(false);
        }
        m.cells.push(spec2.clone());
        Ok(true)
    })
    .await?;
    let job = if req.rebalance {
        let started = start_job(&app, &map, JobKind::Add { cell: req.id }, req.bandwidth).await?;
        Some(job::view(&started))
    } else {
        None
    };
    Ok(Json(CellAdded {
        cell: spec,
        epoch: map.epoch,
        job,
    })
    .into_response())
}

/// Starts a job that moves whatever the target ring asks for (e.g. after
/// `POST /v1/cells` with `rebalance: false`).
async fn rebalance(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let opts: JobOptions = json_body(&body)?;
    app.jobs.check_idle()?;
    let map = load_map(&app).await?;
    let job = start_job(&app, &map, JobKind::Rebalance, opts.bandwidth).await?;
    Ok(Json(JobStarted {
        epoch: map.epoch,
        job: job::view(&job),
    })
    .into_response())
}

async fn drain_cell(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    body: axum::body::Bytes,
) -> ApiResult {
    let opts: JobOptions = json_body(&body)?;
    app.jobs.check_idle()?;
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    if spec.state == CellState::Empty {
        return Err(ApiError::conflict(format!(
            "cell {id} is already empty; remove it with cellkvctl cell remove {id}"
        )));
    }
    let map = change_map(&app, move |m| {
        let others = m.cells.iter().any(|c| {
            c.id != CellId(id) && matches!(c.state, CellState::Active | CellState::Isolated)
        });
        if !others {
            return Err(format!(
                "cell {id} is the last active cell: add a cell before draining it"
            ));
        }
        let c = m.cell_mut(CellId(id)).ok_or("cell vanished")?;
        if c.state == CellState::Draining {
            return Ok(false);
        }
        c.state = CellState::Draining;
        Ok(true)
    })
    .await?;
    let job = start_job(
        &app,
        &map,
        JobKind::Drain { cell: CellId(id) },
        opts.bandwidth,
    )
    .await?;
    Ok(Json(JobStarted {
        epoch: map.epoch,
        job: job::view(&job),
    })
    .into_response())
}

async fn remove_cell(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    Query(q): Query<RemoveCellQuery>,
) -> ApiResult {
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    if let Some(j) = app.jobs.active() {
        return Err(ApiError::conflict(format!(
            "job {} is active; wait for it or cancel it before removing a cell",
            j.id
        )));
    }
    let routing = map
        .routing()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let owned = routing.ranges_of(spec.id);
    let force = q.force.unwrap_or(false);
    let mut lost = Lost {
        ranges: 0,
        keys: Amount::Count(0),
        bytes: Amount::Count(0),
    };
    if !owned.is_empty() {
        let stats = app.cells.range_stats(&spec, &owned).await;
        let (keys, bytes) = match &stats {
            Ok(s) => (
                s.iter().map(|x| x.keys).sum::<u64>().to_string(),
                s.iter().map(|x| x.bytes).sum::<u64>().to_string(),
            ),
            Err(_) => ("unknown (cell unreachable)".into(), "unknown".into()),
        };
        if !force {
            return Err(ApiError::conflict(format!(
                "cell {id} still owns {} ranges ({:.1}% of the keyspace, {keys} keys, {bytes} bytes); \
                 drain it first (cellkvctl cell drain {id} --wait), or remove it with force=true \
                 to LOSE those keys",
                owned.len(),
                routing.share(spec.id) * 100.0
            )));
        }
        lost = Lost {
            ranges: owned.len(),
            keys: Amount::Text(keys),
            bytes: Amount::Text(bytes),
        };
        // Hand the (lost) ranges to their target owners, empty.
        let mut probe = map.clone();
        probe.cells.retain(|c| c.id != spec.id);
        let target = probe
            .target_ring()
            .map(|r| RoutingTable::from_ring(&r))
            .ok_or_else(|| {
                ApiError::conflict("removing the last active cell would leave no owner")
            })?;
        let mut per_owner: BTreeMap<CellId, Vec<HashRange>> = BTreeMap::new();
        for r in &owned {
            for (piece, c) in target.ranges() {
                if piece.end < r.start || piece.start > r.end {
                    continue;
                }
                per_owner.entry(c).or_default().push(HashRange {
                    start: piece.start.max(r.start),
                    end: piece.end.min(r.end),
                });
            }
        }
        for (c, ranges) in &per_owner {
            let Some(cs) = map.cell(*c) else { continue };
            app.cells
                .ownership(
                    cs,
                    &OwnershipOp::Prepare {
                        epoch: map.epoch,
                        ranges: ranges.clone(),
                    },
                )
                .await?;
            app.cells
                .ownership(
                    cs,
                    &OwnershipOp::Own {
                        epoch: map.epoch + 1,
                        ranges: ranges.clone(),
                    },
                )
                .await?;
        }
        let pieces = per_owner.clone();
        change_map(&app, move |m| {
            let Ok(mut t) = m.routing() else {
                return Err("invalid map".into());
            };
            for (c, ranges) in &pieces {
                for r in ranges {
                    t = t.with_assignment(*r, *c);
                }
            }
            m.owners = t.to_owners();
            m.cells.retain(|c| c.id != CellId(id));
            Ok(true)
        })
        .await?;
    } else {
        change_map(&app, move |m| {
            let before = m.cells.len();
            m.cells.retain(|c| c.id != CellId(id));
            Ok(before != m.cells.len())
        })
        .await?;
    }
    Ok(Json(CellRemoved {
        removed: CellId(id),
        forced: force,
        lost,
    })
    .into_response())
}

async fn set_state(app: &App, id: u32, to: CellState, allowed: &[CellState]) -> ApiResult {
    let allowed = allowed.to_vec();
    let map = change_map(app, move |m| {
        let c = m
            .cell_mut(CellId(id))
            .ok_or_else(|| format!("cell {id} is not in the map"))?;
        if c.state == to {
            return Ok(false);
        }
        if !allowed.contains(&c.state) {
            return Err(format!("cell {id} is {}; cannot make it {to}", c.state));
        }
        c.state = to;
        Ok(true)
    })
    .await?;
    Ok(Json(CellStateChanged {
        cell: CellId(id),
        state: to,
        epoch: map.epoch,
    })
    .into_response())
}

async fn isolate_cell(State(app): State<Arc<App>>, Path(id): Path<u32>) -> ApiResult {
    set_state(&app, id, CellState::Isolated, &[CellState::Active]).await
}

async fn restore_cell(State(app): State<Arc<App>>, Path(id): Path<u32>) -> ApiResult {
    set_state(&app, id, CellState::Active, &[CellState::Isolated]).await
}

// ---------- plan ----------

async fn plan_handler(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let req: PlanRequest = json_body(&body)?;
    let map = load_map(&app).await?;
    let mut future = map.clone();
    match req.kind.as_str() {
        "add" => {
            let id = req
                .cell
                .unwrap_or_else(|| CellId(map.cells.iter().map(|c| c.id.0).max().unwrap_or(0) + 1));
            if map.cell(id).is_some() {
                return Err(ApiError::conflict(format!(
                    "cell {id} is already in the map"
                )));
            }
            future.cells.push(CellSpec {
                id,
                weight: req.weight.unwrap_or(1),
                replicas: vec![],
                state: CellState::Active,
            });
        }
        "drain" => {
            let id = req
                .cell
                .ok_or_else(|| ApiError::bad("plan drain needs `cell`"))?;
            let c = future.cell_mut(id).ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("cell {id} is not in the map"))
            })?;
            c.state = CellState::Draining;
        }
        "rebalance" => {
            if let (Some(id), Some(w)) = (req.cell, req.weight) {
                let c = future.cell_mut(id).ok_or_else(|| {
                    ApiError::new(ErrorCode::NotFound, format!("cell {id} is not in the map"))
                })?;
                c.weight = w;
            }
        }
        other => {
            return Err(ApiError::bad(format!(
                "kind {other:?}: expected add, drain or rebalance"
            )))
        }
    }
    let moves = plan::pending_moves(&future).map_err(|e| ApiError::conflict(e.to_string()))?;
    let stats = stats_of(&app, &map, &moves).await;
    let pairs = plan::summarize(&moves, &stats);
    let bandwidth = req
        .bandwidth
        .unwrap_or(app.cfg.bandwidth_bytes_per_sec)
        .max(1);
    let bytes: u64 = pairs.iter().map(|p| p.bytes).sum();
    let keys: u64 = pairs.iter().map(|p| p.keys).sum();
    let batches: usize = pairs
        .iter()
        .map(|p| {
            p.ranges
                .div_ceil(app.cfg.batch_max_ranges)
                .max(usize::try_from(p.bytes / app.cfg.batch_max_bytes.max(1)).unwrap_or(0))
        })
        .sum();
    Ok(Json(PlanResponse {
        kind: req.kind,
        epoch: map.epoch,
        pairs,
        ranges: moves.len(),
        keys,
        bytes,
        stats_complete: stats.len() == moves.len(),
        batches_estimate: batches,
        bandwidth_bytes_per_sec: bandwidth,
        estimated_secs: plan::estimate_secs(bytes, bandwidth),
    })
    .into_response())
}

// ---------- jobs ----------

async fn list_jobs(State(app): State<Arc<App>>) -> ApiResult {
    let jobs = app.jobs.list().iter().map(job::view).collect();
    Ok(Json(JobList { jobs }).into_response())
}

async fn get_job(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let job = match app.jobs.get(&id) {
        Some(j) => j,
        None => app
            .store
            .get_json::<Job>(&crate::store::job_key(&id))
            .await?
            .map(|(j, _)| j)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no job {id} (cellkvctl jobs lists them)"),
                )
            })?,
    };
    Ok(Json(job::view(&job)).into_response())
}

async fn job_action(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult {
    let job = match action.as_str() {
        "pause" => app.jobs.request(&id, JobRequest::Pause).await?,
        "cancel" => app.jobs.request(&id, JobRequest::Cancel).await?,
        "resume" => app.jobs.resume(&id).await?,
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no job action {other:?}: use pause, resume or cancel"),
            ))
        }
    };
    Ok(Json(job::view(&job)).into_response())
}

// ---------- replicas ----------

async fn wait_caught_up_voters(
    app: &App,
    spec: &CellSpec,
) -> Result<crate::cells::Membership, ApiError> {
    Ok(app.cells.membership(spec).await?)
}

async fn add_replica(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    body: axum::body::Bytes,
) -> ApiResult {
    let r: ReplicaSpec = json_body(&body)?;
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    if spec.replicas.iter().any(|x| x.node_id == r.node_id) {
        return Err(ApiError::conflict(format!(
            "cell {id} already has node {}",
            r.node_id
        )));
    }
    if r.control_addr.is_none() {
        return Err(ApiError::bad(
            "the new replica needs control_addr (its Raft/control port)",
        ));
    }
    app.cells.add_learner(&spec, &r).await?;
    let m = wait_caught_up_voters(&app, &spec).await?;
    let mut voters = m.voters.clone();
    if !voters.contains(&r.node_id.0) {
        voters.push(r.node_id.0);
    }
    app.cells.set_voters(&spec, &voters).await?;
    let r2 = r.clone();
    let map = change_map(&app, move |m| {
        let c = m.cell_mut(CellId(id)).ok_or("cell vanished")?;
        if c.replicas.iter().any(|x| x.node_id == r2.node_id) {
            return Ok(false);
        }
        c.replicas.push(r2.clone());
        Ok(true)
    })
    .await?;
    Ok(Json(replicas_changed(id, None, &voters, map.epoch)).into_response())
}

async fn remove_replica(
    State(app): State<Arc<App>>,
    Path((id, node)): Path<(u32, u64)>,
) -> ApiResult {
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    let m = app.cells.membership(&spec).await?;
    let voters: Vec<u64> = m.voters.iter().copied().filter(|v| *v != node).collect();
    if voters.is_empty() {
        return Err(ApiError::conflict(format!(
            "node {node} is the last voter of cell {id}; add a replica first"
        )));
    }
    if voters.len() != m.voters.len() {
        app.cells.set_voters(&spec, &voters).await?;
    }
    let map = change_map(&app, move |m| {
        let c = m.cell_mut(CellId(id)).ok_or("cell vanished")?;
        let before = c.replicas.len();
        c.replicas.retain(|r| r.node_id != NodeId(node));
        Ok(before != c.replicas.len())
    })
    .await?;
    Ok(Json(replicas_changed(id, None, &voters, map.epoch)).into_response())
}

async fn replace_replica(
    State(app): State<Arc<App>>,
    Path((id, node)): Path<(u32, u64)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let r: ReplicaSpec = json_body(&body)?;
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    if r.node_id == NodeId(node) {
        return Err(ApiError::bad(
            "the new replica needs a node_id different from the one it replaces",
        ));
    }
    if r.control_addr.is_none() {
        return Err(ApiError::bad(
            "the new replica needs control_addr (its Raft/control port)",
        ));
    }
    app.cells.add_learner(&spec, &r).await?;
    let m = app.cells.membership(&spec).await?;
    let mut voters: Vec<u64> = m.voters.iter().copied().filter(|v| *v != node).collect();
    if !voters.contains(&r.node_id.0) {
        voters.push(r.node_id.0);
    }
    app.cells.set_voters(&spec, &voters).await?;
    let r2 = r.clone();
    let map = change_map(&app, move |m| {
        let c = m.cell_mut(CellId(id)).ok_or("cell vanished")?;
        let before = c.replicas.clone();
        c.replicas.retain(|x| x.node_id != NodeId(node));
        if !c.replicas.iter().any(|x| x.node_id == r2.node_id) {
            c.replicas.push(r2.clone());
        }
        Ok(before != c.replicas)
    })
    .await?;
    Ok(Json(replicas_changed(id, Some(NodeId(node)), &voters, map.epoch)).into_response())
}

/// The answer to a replica change of cell `id`.
fn replicas_changed(
    id: u32,
    replaced: Option<NodeId>,
    voters: &[u64],
    epoch: u64,
) -> ReplicasChanged {
    ReplicasChanged {
        cell: CellId(id),
        replaced,
        voters: voters.iter().copied().map(NodeId).collect(),
        epoch,
    }
}

/// Default and largest budget a cell gets for one leadership transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the `elect` fallback waits for the target to lead.
const ELECT_FALLBACK_WAIT: Duration = Duration::from_secs(5);

/// The replica of `spec` whose `/health` says it leads, if one does.
async fn leader_by_health(app: &App, spec: &CellSpec) -> Option<NodeId> {
    for r in &spec.replicas {
        if let Some(h) = app.cells.health(r, HEALTH_TIMEOUT).await {
            if h["role"] == "leader" {
                return Some(r.node_id);
            }
        }
    }
    None
}

/// `POST /v1/cells/{id}/transfer-leader`: the cell's leader hands leadership
/// to `to` (or to another voter) while clients keep writing
/// (`/admin/transfer-leader`, ADR 0009). Cells without that endpoint get
/// `/admin/elect` on the target instead, which is reliable only in a quiet cell.
async fn transfer_leader(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: TransferLeaderRequest = json_body(&body)?;
    let map = load_map(&app).await?;
    let spec = cell_of(&map, id)?;
    let current = leader_by_health(&app, &spec).await;
    let target = match req.to {
        Some(t) => t,
        None => spec
            .replicas
            .iter()
            .map(|r| r.node_id)
            .find(|n| Some(*n) != current)
            .ok_or_else(|| ApiError::conflict(format!("cell {id} has no other replica to lead")))?,
    };
    if !spec.replicas.iter().any(|r| r.node_id == target) {
        return Err(ApiError::bad(format!(
            "node {target} is not a replica of cell {id} in the map"
        )));
    }
    if Some(target) == current {
        return Ok(Json(led_by(id, target, false)).into_response());
    }
    if req.timeout_ms == Some(0) {
        return Err(ApiError::bad("timeout_ms must be > 0"));
    }
    let budget = req
        .timeout_ms
        .map_or(TRANSFER_TIMEOUT, Duration::from_millis)
        .min(MAX_TRANSFER_TIMEOUT);
    match app.cells.transfer_leader(&spec, target, budget).await {
        Ok(v) => Ok(Json(TransferLeaderResponse {
            cell: CellId(id),
            leader: v["leader"].as_u64().map(NodeId),
            changed: true,
            transfer: Some(TransferFigures {
                term: v["term"].as_u64(),
                attempts: v["attempts"].as_u64(),
                write_pause_ms: v["write_pause_ms"].as_u64(),
            }),
        })
        .into_response()),
        Err(CellError::Refused { status: 404, .. }) => {
            tracing::warn!(cell = id, "the cell has no /admin/transfer-leader (an older build); using /admin/elect on the target");
            elect_fallback(&app, id, &spec, target).await
        }
        Err(e) => {
            // A call retried after an unknown outcome can find the target
            // already leading (and be refused for it): look before failing.
            if leader_by_health(&app, &spec).await == Some(target) {
                return Ok(Json(led_by(id, target, true)).into_response());
            }
            Err(e.into())
        }
    }
}

/// A transfer's answer without the cell's figures.
fn led_by(id: u32, leader: NodeId, changed: bool) -> TransferLeaderResponse {
    TransferLeaderResponse {
        cell: CellId(id),
        leader: Some(leader),
        changed,
        transfer: None,
    }
}

/// `/admin/elect` on the target, then waits for it to lead.
async fn elect_fallback(app: &App, id: u32, spec: &CellSpec, target: NodeId) -> ApiResult {
    app.cells.elect(spec, target).await?;
    let replica = spec.replicas.iter().find(|r| r.node_id == target).cloned();
    let deadline = tokio::time::Instant::now() + ELECT_FALLBACK_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(r) = &replica {
            if let Some(h) = app.cells.health(r, HEALTH_TIMEOUT).await {
                if h["role"] == "leader" {
                    return Ok(Json(led_by(id, target, true)).into_response());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::new(
        ErrorCode::Timeout,
        format!(
            "node {target} started an election but is not the leader after {ELECT_FALLBACK_WAIT:?}; check cellkvctl status"
        ),
    ))
}
