//! `cellkv-local`'s own HTTP API: how another program (the load harness
//! with `--cluster DIR`, a test, an operator's script) acts on the processes
//! of a running local cluster. `cellkv-local` is their only owner: it starts,
//! faults and restarts them, and it alone writes `cluster.json`.
//!
//! ```text
//! GET  /v1/cluster                         → 200 ClusterInfo (cluster.json as it stands)
//! POST /v1/cells               {"id": 4}?  → 200 {"cell": CellSpec}   start a new data cell
//! PUT  /v1/cells/{id}/delay    {"round_trip_ms": 50} → 200 {"cell", "round_trip_ms"}
//! POST /v1/cells/{id}/kill-leader          → 200 {"replica": i}      SIGKILL the leader
//! POST /v1/cells/{id}/kill                 → 204                     SIGKILL every replica
//! POST /v1/cells/{id}/restart              → 204                     start the dead replicas
//! POST /v1/cells/{id}/replicas/{i}/restart → 204                     start replica i again
//! POST /v1/cells/{id}/freeze | /thaw       → 204                     SIGSTOP / SIGCONT all
//! POST /v1/router/stop | /v1/router/start  → 204
//! GET  /v1/warnings                        → 200 {"warnings": [..]}  processes that died unasked
//! ```
//!
//! It listens on loopback only, takes the control server's admin token as
//! `Authorization: Bearer`, and answers errors with cellkv's JSON error body
//! and stable codes. Bodies are capped at [`MAX_BODY_BYTES`]; a cell start is
//! bounded by the cluster's start timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use common::{CellId, CellSpec, ErrorBody, ErrorCode, ErrorDetail};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{LocalCluster, NewCellIdError};
use crate::drive::Cluster;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest delay a proxy may be asked to add (a larger one is a typo).
pub const MAX_DELAY_MS: u64 = 60_000;

/// The cluster the API acts on, shared with `cellkv-local`'s main loop.
pub type SharedCluster = Arc<Mutex<LocalCluster>>;

/// `POST /v1/cells`: the new cell's id (default: the next free one).
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct AddCellRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

/// `POST /v1/cells`'s answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct AddCellResponse {
    pub cell: CellSpec,
}

/// `PUT /v1/cells/{id}/delay`'s body, echoed with the cell as its answer.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SetDelayRequest {
    pub round_trip_ms: u64,
}

/// `PUT /v1/cells/{id}/delay`'s answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct SetDelayResponse {
    pub cell: CellId,
    pub round_trip_ms: u64,
}

/// `POST /v1/cells/{id}/kill-leader`'s answer: the replica that was killed.
#[derive(Serialize, Deserialize, Debug)]
pub struct KillLeaderResponse {
    pub replica: usize,
}

/// `GET /v1/warnings`'s answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct WarningsResponse {
    pub warnings: Vec<String>,
}

struct App {
    cluster: SharedCluster,
    token: String,
}

/// The API's routes, acting on `cluster`, guarded by `token`.
pub fn router(cluster: SharedCluster, token: String) -> Router {
    let app = Arc::new(App { cluster, token });
    Router::new()
        .route("/v1/cluster", get(cluster_info))
        .route("/v1/cells", post(add_cell))
        .route("/v1/cells/{id}/delay", put(set_delay))
        .route("/v1/cells/{id}/kill-leader", post(kill_leader))
        .route("/v1/cells/{id}/{action}", post(cell_action))
        .route("/v1/cells/{id}/replicas/{i}/restart", post(restart_replica))
        .route("/v1/router/{action}", post(router_action))
        .route("/v1/warnings", get(warnings))
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

struct ApiError(StatusCode, ErrorCode, String);

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(status, code, message.into())
    }

    fn internal(e: anyhow::Error) -> ApiError {
        ApiError::new(ErrorCode::Internal, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.1,
                message: self.2,
                cell: None,
                leader: None,
                moved: None,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ok = common::secret::bearer_matches(
        req.headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        &app.token,
    );
    if !ok {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "missing or invalid token: use the control admin token (DIR/control.env)",
        )
        .into_response();
    }
    next.run(req).await
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

/// 404 unless the cluster has data cell `id`.
fn data_cell(cluster: &LocalCluster, id: u32) -> Result<CellId, ApiError> {
    let id = CellId(id);
    if cluster.cells().iter().any(|c| c.cell_id() == id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the cluster has no data cell {id}"),
        ))
    }
}

async fn cluster_info(State(app): State<Arc<App>>) -> Response {
    Json(app.cluster.lock().await.info()).into_response()
}

async fn add_cell(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Json<AddCellResponse>, ApiError> {
    let req: AddCellRequest = if body.is_empty() {
        AddCellRequest::default()
    } else {
        json_body(&body)?
    };
    let mut cluster = app.cluster.lock().await;
    let id = req.id.map_or_else(|| cluster.next_cell_id(), CellId);
    match cluster.check_new_cell_id(id) {
        Ok(()) => {}
        Err(e @ NewCellIdError::Reserved(_)) => {
            return Err(ApiError::new(ErrorCode::BadRequest, e.to_string()))
        }
        Err(e @ NewCellIdError::Exists(_)) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                ErrorCode::PreconditionFailed,
                e.to_string(),
            ))
        }
    }
    match cluster.add_cell(id).await {
        Ok(cell) => Ok(Json(AddCellResponse { cell })),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("start cell {id}: {e:#}"),
        )),
    }
}

async fn set_delay(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    body: axum::body::Bytes,
) -> Result<Json<SetDelayResponse>, ApiError> {
    let req: SetDelayRequest = json_body(&body)?;
    if req.round_trip_ms > MAX_DELAY_MS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("round_trip_ms must be at most {MAX_DELAY_MS}"),
        ));
    }
    let cluster = app.cluster.lock().await;
    let id = data_cell(&cluster, id)?;
    if cluster.proxies_of(id).is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            ErrorCode::PreconditionFailed,
            format!(
                "the router reaches cell {id} directly: start cellkv-local with \
                 --latency-proxies to put proxies in front of every cell (cells added \
                 later have none)"
            ),
        ));
    }
    cluster
        .set_cell_delay(id, Duration::from_millis(req.round_trip_ms))
        .map_err(ApiError::internal)?;
    Ok(Json(SetDelayResponse {
        cell: id,
        round_trip_ms: req.round_trip_ms,
    }))
}

async fn kill_leader(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
) -> Result<Json<KillLeaderResponse>, ApiError> {
    let cluster = app.cluster.lock().await;
    let id = data_cell(&cluster, id)?;
    let replica = Cluster::kill_leader(&*cluster, id).await.map_err(|e| {
        ApiError(
            StatusCode::CONFLICT,
            ErrorCode::CellUnavailable,
            format!("{e:#}"),
        )
    })?;
    Ok(Json(KillLeaderResponse { replica }))
}

async fn cell_action(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(u32, String)>,
) -> Result<StatusCode, ApiError> {
    let cluster = app.cluster.lock().await;
    let id = data_cell(&cluster, id)?;
    let c: &LocalCluster = &cluster;
    let done = match action.as_str() {
        "kill" => c.kill_cell(id).await,
        "restart" => c.restart_cell(id).await,
        "freeze" => c.freeze_cell(id).await,
        "thaw" => c.thaw_cell(id).await,
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no cell action {other:?}: kill, restart, freeze, thaw, kill-leader, delay"
                ),
            ))
        }
    };
    done.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_replica(
    State(app): State<Arc<App>>,
    Path((id, i)): Path<(u32, usize)>,
) -> Result<StatusCode, ApiError> {
    let cluster = app.cluster.lock().await;
    let id = data_cell(&cluster, id)?;
    if i >= cluster.cell(id).replicas().len() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("cell {id} has no replica {i}"),
        ));
    }
    cluster
        .restart_replica(id, i)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn router_action(
    State(app): State<Arc<App>>,
    Path(action): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cluster = app.cluster.lock().await;
    let done = match action.as_str() {
        "stop" => cluster.stop_router().await,
        "start" => cluster.start_router().await,
        other => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no router action {other:?}: stop, start"),
            ))
        }
    };
    done.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn warnings(State(app): State<Arc<App>>) -> Result<Json<WarningsResponse>, ApiError> {
    let cluster = app.cluster.lock().await;
    let warnings = Cluster::warnings(&*cluster)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(WarningsResponse { warnings }))
}
