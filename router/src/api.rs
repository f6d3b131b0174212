//! The public HTTP API (v1): objects (PUT, GET, HEAD, DELETE), bucket
//! listings, `/healthz`, `/readyz` and `/metrics`. Owns authentication order,
//! input limits and the mapping of cell answers to public responses; the
//! forwarding itself is `proxy`'s.
//!
//! One request path: observe (metrics, span, epoch header) → auth (401) →
//! rate limit (429) → names (400) → scope (403) → size (413) → proxy →
//! response. Each request routes with one topology snapshot (the proxy may
//! move it to a newer one when a cell answers `moved`); its epoch is sent
//! back in `X-Cellkv-Epoch`.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{CellId, CellState, ErrorCode};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{Authenticator, Principal};
use crate::breaker::BreakerState;
use crate::cell_client::CELL_TIME;
use crate::error::{ApiError, ServedBy, HEADER_CELL, HEADER_EPOCH, HEADER_VERSION};
use crate::listing::{self, ListQuery};
use crate::map_watch::{ControlStatus, MapWatcher};
use crate::metrics::{RouterMetrics, CELL_ALL, CELL_NONE};
use crate::proxy::Proxy;
use crate::request::{CellRequest, CellResponse, Op};

/// Shared state of every handler.
pub struct App {
    pub proxy: Arc<Proxy>,
    pub auth: Authenticator,
    pub metrics: Arc<RouterMetrics>,
    pub max_object_bytes: u64,
    /// How long a PUT body may take to arrive (`client_limits.body_read_timeout`).
    pub body_read_timeout: Duration,
    /// The map watcher, with `[control]`.
    pub watcher: Option<Arc<MapWatcher>>,
}

/// The epoch of the map that routed a response (a response extension read
/// by `observe`); responses without one get the current epoch.
#[derive(Clone, Copy, Debug)]
struct RoutedEpoch(u64);

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/v1/buckets/{bucket}/objects/{*key}",
            get(object).head(object).put(object).delete(object),
        )
        .route("/v1/buckets/{bucket}/objects", get(list_objects))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            service::metrics_route(app.metrics.registry.clone()),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Counts, times and labels every request in one place; opens its span.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let op = Op::of(req.method(), req.uri().path());
    let start = StdInstant::now();
    let span = tracing::info_span!("request", op = op.as_str(), cell = tracing::field::Empty);
    let (mut resp, in_cells) = CELL_TIME
        .scope(std::cell::Cell::new(Duration::ZERO), async {
            let resp = next.run(req).instrument(span).await;
            (resp, CELL_TIME.with(|t| t.get()))
        })
        .await;
    let took = start.elapsed();
    let epoch = resp
        .extensions()
        .get::<RoutedEpoch>()
        .map_or_else(|| app.proxy.epoch(), |e| e.0);
    resp.headers_mut()
        .insert(HEADER_EPOCH, HeaderValue::from(epoch));
    let m = &app.metrics;
    let cell = match resp.extensions().get::<ServedBy>() {
        Some(ServedBy::Cell(c)) => {
            // Requests a cell answered; not listings (their calls to the
            // cells overlap) nor requests refused before reaching one.
            if !in_cells.is_zero() {
                m.added_seconds
                    .with_label_values(&[op.as_str()])
                    .observe(took.saturating_sub(in_cells).as_secs_f64());
            }
            c.to_string()
        }
        Some(ServedBy::AllCells) => CELL_ALL.to_string(),
        None => CELL_NONE.to_string(),
    };
    m.request_duration_seconds
        .with_label_values(&[&cell, op.as_str()])
        .observe(took.as_secs_f64());
    m.requests_total
        .with_label_values(&[&cell, op.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// Authenticates the request and takes one unit of the token's rate budget.
fn admit_client(app: &App, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
    let principal = app.auth.authenticate(headers)?;
    principal
        .take(Instant::now())
        .map_err(ApiError::rate_limited)?;
    Ok(principal)
}

/// Headers passed on to the cell as they are.
const FORWARDED_REQUEST_HEADERS: [http::HeaderName; 3] = [
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::CONTENT_TYPE,
];

/// Headers of a cell's success answer passed back to the client.
const FORWARDED_RESPONSE_HEADERS: [http::HeaderName; 3] = [
    http::header::ETAG,
    http::header::CONTENT_TYPE,
    http::header::LAST_MODIFIED,
];

async fn object(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let op = match method {
        Method::GET => Op::Get,
        Method::HEAD => Op::Head,
        Method::PUT => Op::Put,
        Method::DELETE => Op::Delete,
        _ => {
            return ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed").into_response()
        }
    };
    let mut epoch = None;
    let mut resp = match object_op(&app, &mut epoch, op, method, &uri, &headers, path, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if let Some(e) = epoch {
        resp.extensions_mut().insert(RoutedEpoch(e));
    }
    resp
}

/// Serves one object request; sets `epoch` to the epoch of the map that
/// routed it (last), once it was routed.
#[allow(clippy::too_many_arguments)]
async fn object_op(
    app: &App,
    epoch: &mut Option<u64>,
    op: Op,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = admit_client(app, headers)?;
    let Path((bucket, key)) =
        path.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad path: {e}")))?;
    common::names::validate_bucket(&bucket)?;
    common::names::validate_key(&key)?;
    let topo = app.proxy.topology();
    *epoch = Some(topo.epoch());
    let cell = topo.owner(&bucket, &key);
    tracing::Span::current().record("cell", cell.0);
    principal
        .authorize(&bucket, !op.is_read())
        .map_err(|e| ApiError::from(e).with_cell(cell))?;
    let body = if op == Op::Put {
        read_body(headers, body, app.max_object_bytes, app.body_read_timeout)
            .await
            .map_err(|e| e.with_cell(cell))?
    } else {
        Bytes::new()
    };
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(v) = headers.get(&name) {
            forwarded.insert(name, v.clone());
        }
    }
    let req = CellRequest {
        op,
        method,
        // The path as the client encoded it: the cell decodes it exactly as
        // this router did, so both see the same key. The query (`?read=stale`)
        // goes along as sent: the cell validates it.
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string()),
        headers: forwarded,
        body,
    };
    let fwd = app.proxy.forward_key(topo, &bucket, &key, &req).await;
    *epoch = Some(fwd.epoch);
    if fwd.cell != cell {
        tracing::Span::current().record("cell", fwd.cell.0);
    }
    public_response(op, fwd.cell, fwd.result?)
}

/// Reads a PUT body, refusing more than `max` bytes (`service::body`).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: u64,
    within: Duration,
) -> Result<Bytes, ApiError> {
    service::body::read_limited_within(headers, body, max, within)
        .await
        .map_err(|e| match e {
            service::body::BodyError::TooLarge { .. } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("object larger than the limit of {max} bytes"),
            ),
            e @ service::body::BodyError::TimedOut { .. } => {
                ApiError::new(ErrorCode::RequestTimeout, e.to_string())
            }
            e => ApiError::new(ErrorCode::BadRequest, e.to_string()),
        })
}

/// Turns a cell's answer into the public response.
fn public_response(op: Op, cell: CellId, resp: CellResponse) -> Result<Response, ApiError> {
    if resp.status.is_client_error() || resp.status.is_server_error() {
        return Err(ApiError::from_cell(cell, resp.status, &resp.body));
    }
    let no_body = op == Op::Head
        || resp.status == StatusCode::NOT_MODIFIED
        || resp.status == StatusCode::NO_CONTENT;
    let body = if no_body {
        Body::empty()
    } else {
        Body::from(resp.body)
    };
    let mut out = Response::new(body);
    *out.status_mut() = resp.status;
    let h = out.headers_mut();
    for name in FORWARDED_RESPONSE_HEADERS {
        if let Some(v) = resp.headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(v) = resp.headers.get(HEADER_VERSION) {
        h.insert(HEADER_VERSION, v.clone());
    }
    if op == Op::Head {
        if let Some(v) = resp.headers.get(http::header::CONTENT_LENGTH) {
            h.insert(http::header::CONTENT_LENGTH, v.clone());
        }
    }
    h.insert(HEADER_CELL, HeaderValue::from(cell.0));
    out.extensions_mut().insert(ServedBy::Cell(cell));
    Ok(out)
}

async fn list_objects(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    // Set once the request passed auth and validation and went to the cells:
    // only then does the response carry the cells' ids (header and metric label).
    let mut dispatched = false;
    let topo = app.proxy.topology();
    let result = async {
        let principal = admit_client(&app, &headers)?;
        let Path(bucket) =
            path.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad path: {e}")))?;
        common::names::validate_bucket(&bucket)?;
        principal.authorize(&bucket, false)?;
        let Query(q) = query.map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("bad query: {}", e.body_text()),
            )
        })?;
        dispatched = true;
        listing::list(app.proxy.clone(), topo.clone(), &bucket, &q).await
    }
    .await;
    let mut resp = match result {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => e.into_response(),
    };
    if dispatched {
        let ids: Vec<String> = topo.listed_cells().map(|c| c.id.to_string()).collect();
        if let Ok(v) = HeaderValue::from_str(&ids.join(",")) {
            resp.headers_mut().insert(HEADER_CELL, v);
        }
        resp.extensions_mut().insert(ServedBy::AllCells);
    }
    resp.extensions_mut().insert(RoutedEpoch(topo.epoch()));
    resp
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// Epoch of the cell map the router routes with now.
    epoch: u64,
    /// The map watcher's view of the control cell; absent without `[control]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<ControlStatus>,
    cells: Vec<CellReadiness>,
}

#[derive(Serialize)]
struct CellReadiness {
    id: CellId,
    state: CellState,
    breaker: &'static str,
    /// Outcome of the last health round; null before the first.
    healthy: Option<bool>,
    leader: Option<String>,
    in_flight: usize,
    queued: usize,
}

/// 200 when at least one cell can serve: not isolated or empty, breaker
/// closed, and a health round has found its leader.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut ready = false;
    let topo = app.proxy.topology();
    let cells: Vec<CellReadiness> = topo
        .cells()
        .map(|c| {
            let breaker = c.breaker_state();
            let healthy = c.last_health();
            let state = c.state();
            ready |= !matches!(state, CellState::Isolated | CellState::Empty)
                && breaker == BreakerState::Closed
                && healthy == Some(true);
            CellReadiness {
                id: c.id,
                state,
                breaker: breaker.as_str(),
                healthy,
                leader: c.leader_addr(),
                in_flight: c.bulkhead.in_flight(),
                queued: c.bulkhead.queued(),
            }
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        epoch: topo.epoch(),
        control: app.watcher.as_ref().map(|w| w.status()),
        cells,
    };
    (status, axum::Json(body)).into_response()
}
