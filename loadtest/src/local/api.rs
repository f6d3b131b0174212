//! `cellkv-local`'s own HTTP API: what another program acting on a running
//! local cluster (the load harness with `--cluster DIR`) has to ask
//! `cellkv-local` for, because only the launcher can do it right.
//!
//! - Start a new data cell's replicas. `cellkv-local` owns `layout.json`, so
//!   the cell is persisted there (a restart brings it back) and its
//!   processes are its children (they stop with the cluster). The cell gets
//!   no keys yet: register it with the control server (`cellkvctl cell add`).
//! - Set the round trip the latency proxies of a cell add between the router
//!   and its replicas (`cellkv-local --latency-proxies`).
//!
//! ```text
//! POST /v1/cells               {"id": 4}?              → 200 {"cell": CellSpec}
//! PUT  /v1/cells/{id}/delay    {"round_trip_ms": 50}   → 200 {"cell", "round_trip_ms"}
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
use axum::routing::{post, put};
use axum::{Json, Router};
use common::{CellId, ErrorBody, ErrorCode, ErrorDetail};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::{LocalCluster, NewCellIdError};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest delay a proxy may be asked to add (a larger one is a typo).
pub const MAX_DELAY_MS: u64 = 60_000;

/// The cluster the API acts on, shared with `cellkv-local`'s main loop.
pub type SharedCluster = Arc<Mutex<LocalCluster>>;

struct App {
    cluster: SharedCluster,
    token: String,
}

/// The API's routes, acting on `cluster`, guarded by `token`.
pub fn router(cluster: SharedCluster, token: String) -> Router {
    let app = Arc::new(App { cluster, token });
    Router::new()
        .route("/v1/cells", post(add_cell))
        .route("/v1/cells/{id}/delay", put(set_delay))
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AddCell {
    /// Default: the next free id.
    id: Option<u32>,
}

async fn add_cell(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: AddCell = if body.is_empty() {
        AddCell::default()
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
        Ok(spec) => Ok(Json(json!({ "cell": spec })).into_response()),
        Err(e) => Err(ApiError::new(
            ErrorCode::Internal,
            format!("start cell {id}: {e:#}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDelay {
    round_trip_ms: u64,
}

async fn set_delay(
    State(app): State<Arc<App>>,
    Path(id): Path<u32>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: SetDelay = json_body(&body)?;
    if req.round_trip_ms > MAX_DELAY_MS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("round_trip_ms must be at most {MAX_DELAY_MS}"),
        ));
    }
    let cluster = app.cluster.lock().await;
    let id = CellId(id);
    if !cluster.cells().iter().any(|c| c.cell_id() == id) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the cluster has no data cell {id}"),
        ));
    }
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
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{e:#}")))?;
    Ok(Json(json!({ "cell": id, "round_trip_ms": req.round_trip_ms })).into_response())
}
