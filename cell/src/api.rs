//! The cell API, served to the router on the API port: objects (put, get,
//! head, delete, with conditions), bucket listings and hash-range scans, plus
//! `/health` and `/metrics`. Paths mirror the public API so the same load can
//! be aimed at a cell directly. Writes go through Raft; reads are
//! linearizable via the read barrier unless `?read=stale` asks otherwise.
//!
//! One request path: auth → handler → (Raft | read barrier) → RocksDB → response.
//! Every error is `{"error": {"code", "message", "cell", "leader"?, "moved"?}}`.
//!
//! Range ownership (`common::ownership`): writes are checked when applied
//! (the state machine answers `RangeMoving`/`Moved`), reads after the read
//! barrier against the applied table, listings skip what the cell does not
//! list; `/internal/v1/scan` is never filtered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::ownership::Access;
use common::wire::{ListEntry, ListPage, ObjectMeta, ScanItem, ScanPage};
use common::{CellId, ErrorBody, ErrorCode, ErrorDetail, HashRange, LeaderHint, MovedHint, NodeId};
use http_body_util::{BodyExt, Limited};
use rocksdb::{Direction, IteratorMode, ReadOptions};
use serde::Deserialize;

use crate::auth::{check_bearer, Bearer};
use crate::db::{self, CF_BY_HASH, CF_OBJECTS};
use crate::objects;
use crate::proposer::ProposeError;
use crate::read_barrier::ReadError;
use crate::replica::Replica;
use crate::types::{Condition, OpResult, ReplicaNode, WriteOp};

pub const HEADER_CELL: &str = "x-cellkv-cell";
pub const HEADER_VERSION: &str = "x-cellkv-version";
pub const HEADER_LEADER: &str = "x-cellkv-leader";
/// Longest `Content-Type` stored with an object.
const MAX_CONTENT_TYPE: usize = 256;
/// Most keys in one listing page.
const MAX_LIST_LIMIT: usize = 1000;
/// Default and largest payload of one scan page.
const DEFAULT_SCAN_BYTES: usize = 4 << 20;
const MAX_SCAN_BYTES: usize = 64 << 20;

pub fn router(rep: Arc<Replica>) -> Router {
    let data = Router::new()
        .route(
            "/v1/buckets/{bucket}/objects/{*key}",
            get(get_object)
                .head(head_object)
                .put(put_object)
                .delete(delete_object),
        )
        .route("/v1/buckets/{bucket}/objects", get(list_objects))
        .route("/internal/v1/scan", get(scan))
        .layer(middleware::from_fn_with_state(rep.clone(), require_token));
    Router::new()
        .merge(data)
        .route("/health", get(crate::health::health))
        .route(
            "/metrics",
            service::metrics_route(rep.metrics.registry.clone()),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            )
        })
        .layer(middleware::from_fn_with_state(rep.clone(), observe))
        .with_state(rep)
}

/// Builds the JSON error response for `code`.
pub fn error_response(
    code: ErrorCode,
    message: String,
    cell: Option<CellId>,
    leader: Option<LeaderHint>,
) -> Response {
    error_response_moved(code, message, cell, leader, None)
}

/// [`error_response`] with the `moved` hint of a `moved` error.
pub fn error_response_moved(
    code: ErrorCode,
    message: String,
    cell: Option<CellId>,
    leader: Option<LeaderHint>,
    moved: Option<MovedHint>,
) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let moved_owner = moved.as_ref().and_then(|m| m.owner);
    let mut resp = (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code,
                message,
                cell,
                leader: leader.clone(),
                moved,
            },
        }),
    )
        .into_response();
    let h = resp.headers_mut();
    if let Some(l) = leader {
        if let Ok(v) = HeaderValue::from_str(&l.api_addr) {
            h.insert(HEADER_LEADER, v);
        }
    }
    // A HEAD answer has no body: the code (and a moved owner) also travel as headers.
    h.insert(
        "x-cellkv-error-code",
        HeaderValue::from_static(code.as_str()),
    );
    if let Some(owner) = moved_owner {
        h.insert("x-cellkv-moved-owner", HeaderValue::from(owner.0));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// An error from a handler, turned into a response by one mapping.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    leader: Option<LeaderHint>,
    moved: Option<MovedHint>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            leader: None,
            moved: None,
        }
    }

    /// 503 `range_moving`: the range is being handed over; retry shortly.
    pub fn range_moving(what: &str) -> ApiError {
        ApiError::new(
            ErrorCode::RangeMoving,
            format!(
                "the key's range is being moved to another cell; {what} refused, retry shortly"
            ),
        )
    }

    /// 421 `moved`: the cell does not own the key's range.
    pub fn moved(owner: Option<CellId>, epoch: u64) -> ApiError {
        let message = match owner {
            Some(c) => format!("the key's range is owned by cell {c} (ownership epoch {epoch})"),
            None => format!(
                "this cell does not own the key's range (ownership epoch {epoch}); refresh the cell map"
            ),
        };
        ApiError {
            moved: Some(MovedHint { owner, epoch }),
            ..ApiError::new(ErrorCode::Moved, message)
        }
    }
}

/// Counts a refusal for ownership reasons and turns it into the error to answer with.
fn refused(rep: &Replica, e: ApiError) -> ApiError {
    if matches!(e.code, ErrorCode::RangeMoving | ErrorCode::Moved) {
        rep.metrics
            .refusals_total
            .with_label_values(&[e.code.as_str()])
            .inc();
    }
    e
}

/// Whether a read of `bucket/key` may be served under the applied ownership table.
fn check_read(rep: &Replica, bucket: &str, key: &str) -> Result<(), ApiError> {
    let table = rep.sm.ownership();
    if !table.managed {
        return Ok(());
    }
    match table.access(common::ring::key_hash(bucket, key)) {
        Access::Serve | Access::ReadOnly => Ok(()),
        Access::Moving => Err(refused(rep, ApiError::range_moving("read"))),
        Access::Moved { to, epoch } => Err(refused(rep, ApiError::moved(to, epoch))),
    }
}

/// The error of a write the state machine refused for ownership reasons, if it did.
fn write_refused(rep: &Replica, res: &OpResult) -> Option<ApiError> {
    match res {
        OpResult::RangeMoving => Some(refused(rep, ApiError::range_moving("write"))),
        OpResult::Moved { owner, epoch } => Some(refused(rep, ApiError::moved(*owner, *epoch))),
        _ => None,
    }
}

type ApiResult = Result<Response, ApiError>;

fn leader_hint(leader: Option<(u64, ReplicaNode)>) -> ApiError {
    match leader {
        Some((id, node)) => ApiError {
            code: ErrorCode::NotLeader,
            message: format!(
                "this replica is not the leader; ask node {id} at {}",
                node.api_addr
            ),
            leader: Some(LeaderHint {
                node_id: NodeId(id),
                api_addr: node.api_addr,
            }),
            moved: None,
        },
        None => ApiError::new(
            ErrorCode::NoLeader,
            "the cell has no leader right now; retry shortly",
        ),
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::NotLeader { leader } => leader_hint(leader),
            ReadError::NoQuorum(m) => ApiError::new(
                ErrorCode::NoLeader,
                format!("leadership not confirmed by a quorum: {m}"),
            ),
            ReadError::ShuttingDown => {
                ApiError::new(ErrorCode::ShuttingDown, "replica is shutting down")
            }
        }
    }
}

impl From<common::names::NameError> for ApiError {
    fn from(e: common::names::NameError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("failed to read from RocksDB: {e}");
    ApiError::new(ErrorCode::StorageError, format!("storage error: {e}"))
}

async fn require_token(State(rep): State<Arc<Replica>>, req: Request, next: Next) -> Response {
    match check_bearer(req.headers(), &rep.cfg.api_token) {
        Bearer::Ok => next.run(req).await,
        Bearer::Missing => error_response(
            ErrorCode::Unauthorized,
            "missing bearer token".into(),
            Some(rep.cfg.cell_id),
            None,
        ),
        Bearer::Wrong => error_response(
            ErrorCode::Unauthorized,
            "invalid bearer token".into(),
            Some(rep.cfg.cell_id),
            None,
        ),
    }
}

/// The operation label of a request, from a fixed set (bounded metric labels).
fn op_of(method: &http::Method, path: &str) -> &'static str {
    if path.starts_with("/v1/buckets/") {
        let is_list = path.trim_end_matches('/').ends_with("/objects");
        match (method.as_str(), is_list) {
            ("GET", true) => "list",
            ("GET", false) => "get",
            ("HEAD", _) => "head",
            ("PUT", _) => "put",
            ("DELETE", _) => "delete",
            _ => "other",
        }
    } else if path == "/internal/v1/scan" {
        "scan"
    } else if path == "/health" {
        "health"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    }
}

/// Counts, times and labels every request; refuses new ones during shutdown.
async fn observe(State(rep): State<Arc<Replica>>, req: Request, next: Next) -> Response {
    let op = op_of(req.method(), req.uri().path());
    let start = Instant::now();
    let mut resp = if rep.shutting_down.load(Ordering::Acquire) && op != "health" && op != "metrics"
    {
        error_response(
            ErrorCode::ShuttingDown,
            "replica is shutting down".into(),
            Some(rep.cfg.cell_id),
            None,
        )
    } else {
        next.run(req).await
    };
    if let Some(PendingError(code, message, leader, moved)) =
        resp.extensions_mut().remove::<PendingError>()
    {
        resp = error_response_moved(code, message, Some(rep.cfg.cell_id), leader, moved);
    } else if resp.status().is_client_error() && !is_json(&resp) {
        resp = json_rejection(resp, rep.cfg.cell_id).await;
    }
    resp.headers_mut()
        .insert(HEADER_CELL, HeaderValue::from(rep.cfg.cell_id.0));
    let m = &rep.metrics;
    m.request_duration_seconds
        .with_label_values(&[op])
        .observe(start.elapsed().as_secs_f64());
    m.requests_total
        .with_label_values(&[op, resp.status().as_str()])
        .inc();
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// Rewrites a framework rejection (a bad query string or path, in plain text)
/// as the JSON error every client of this API expects.
async fn json_rejection(resp: Response, cell: CellId) -> Response {
    let status = resp.status();
    let code = match status.as_u16() {
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        401 => ErrorCode::Unauthorized,
        _ => ErrorCode::BadRequest,
    };
    let text = match Limited::new(resp.into_body(), 4096).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.to_string()
    } else {
        text
    };
    error_response(code, message, Some(cell), None)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// `stale` serves from this replica without confirming leadership.
    read: Option<String>,
}

impl ReadQuery {
    fn stale(&self) -> Result<bool, ApiError> {
        match self.read.as_deref() {
            None | Some("linearizable") => Ok(false),
            Some("stale") => Ok(true),
            Some(other) => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("read={other:?}: expected `linearizable` or `stale`"),
            )),
        }
    }
}

/// Waits until a read may be served: a leadership round for linearizable reads,
/// and never while a snapshot is replacing the state.
async fn read_gate(rep: &Replica, stale: bool) -> Result<(), ApiError> {
    if !stale {
        tokio::time::timeout(rep.cfg.request_timeout, rep.reads.wait())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Timeout,
                    "linearizable read timed out confirming leadership",
                )
            })??;
    }
    if rep.sm.loading.load(Ordering::Acquire) {
        return Err(ApiError::new(
            ErrorCode::CellUnavailable,
            "replica is installing a snapshot",
        ));
    }
    Ok(())
}

fn quoted_etag(etag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{etag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Parses `If-Match` / `If-None-Match` values: `*` or a list of quoted etags.
fn etag_matches(header: &HeaderValue, etag: &str) -> bool {
    header
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

fn object_headers(h: &mut HeaderMap, meta: &ObjectMeta) {
    h.insert(http::header::ETAG, quoted_etag(&meta.etag));
    if let Some(a) = &meta.s3 {
        if let Ok(v) = HeaderValue::from_str(&a.to_header()) {
            h.insert(common::wire::HEADER_S3_ATTRS, v);
        }
    }
    h.insert(HEADER_VERSION, HeaderValue::from(meta.version));
    let ct = meta
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let t = UNIX_EPOCH + Duration::from_millis(meta.modified_ms);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
}

fn validate(bucket: &str, key: &str) -> Result<(), ApiError> {
    common::names::validate_bucket(bucket)?;
    common::names::validate_key(key)?;
    Ok(())
}

async fn read_object(
    rep: &Replica,
    bucket: &str,
    key: &str,
    q: &ReadQuery,
    headers: &HeaderMap,
    with_body: bool,
) -> ApiResult {
    validate(bucket, key)?;
    read_gate(rep, q.stale()?).await?;
    check_read(rep, bucket, key)?;
    let pkey = common::ring::placement_key(bucket, key);
    let Some(buf) = rep
        .db
        .get_pinned_cf(db::cf(&rep.db, CF_OBJECTS), &pkey)
        .map_err(storage)?
    else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {key:?} in bucket {bucket:?}"),
        ));
    };
    let (meta, value) = objects::decode_object(&buf).map_err(storage)?;
    if let Some(inm) = headers.get(http::header::IF_NONE_MATCH) {
        if etag_matches(inm, &meta.etag) {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            object_headers(resp.headers_mut(), &meta);
            return Ok(resp);
        }
    }
    let mut resp = if with_body {
        Body::from(value.to_vec()).into_response()
    } else {
        Body::empty().into_response()
    };
    object_headers(resp.headers_mut(), &meta);
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    Ok(resp)
}

async fn get_object(
    State(rep): State<Arc<Replica>>,
    Path((bucket, key)): Path<(String, String)>,
    query: Result<Query<ReadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let Query(q) = query.map_err(bad_query)?;
    read_object(&rep, &bucket, &key, &q, &headers, true).await
}

async fn head_object(
    State(rep): State<Arc<Replica>>,
    Path((bucket, key)): Path<(String, String)>,
    query: Result<Query<ReadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let Query(q) = query.map_err(bad_query)?;
    read_object(&rep, &bucket, &key, &q, &headers, false).await
}

/// A query string that does not parse (an unknown parameter, say): 400.
fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("bad query: {}", e.body_text()),
    )
}

fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let im = headers.get(http::header::IF_MATCH);
    let inm = headers.get(http::header::IF_NONE_MATCH);
    if let Some(v) = headers.get(common::wire::HEADER_IF_S3_MATCH) {
        if im.is_some() || inm.is_some() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "use one condition: If-Match, If-None-Match or X-Cellkv-If-S3-Match",
            ));
        }
        let s = v.to_str().map_err(|_| {
            ApiError::new(ErrorCode::BadRequest, "X-Cellkv-If-S3-Match is not ASCII")
        })?;
        return Ok(Condition::IfS3Match(s.trim().trim_matches('"').to_string()));
    }
    match (im, inm) {
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "use either If-Match or If-None-Match, not both",
        )),
        (None, None) => Ok(Condition::None),
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Condition::IfAbsent),
        (None, Some(_)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "on writes, If-None-Match supports only `*`",
        )),
        (Some(v), None) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, "If-Match is not ASCII"))?
                .trim();
            if s == "*" || s.contains(',') {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "If-Match must name exactly one etag",
                ));
            }
            Ok(Condition::IfMatch(
                s.trim_start_matches("W/").trim_matches('"').to_string(),
            ))
        }
    }
}

/// Proposes `op` through the batching proposer and waits for it to be applied (or the deadline).
async fn propose(rep: &Replica, op: WriteOp) -> Result<OpResult, ApiError> {
    match tokio::time::timeout(rep.cfg.request_timeout, rep.proposer.propose(op)).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::Timeout,
            "write not confirmed before the deadline; its outcome is unknown",
        )),
        Ok(Ok((res, _index))) => Ok(res),
        Ok(Err(ProposeError::NotLeader { leader })) => Err(leader_hint(leader)),
        Ok(Err(ProposeError::Rejected(m))) => Err(ApiError::new(ErrorCode::Internal, m)),
        // The entry may already be in the log: the outcome is unknown, so this must
        // not look like "not executed" (503 shutting_down), which routers retry.
        Ok(Err(ProposeError::Stopped(m))) => Err(ApiError::new(
            ErrorCode::Timeout,
            format!("replica stopped; the write's outcome is unknown: {m}"),
        )),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

async fn put_object(
    State(rep): State<Arc<Replica>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    validate(&bucket, &key)?;
    let max = rep.cfg.max_object_bytes;
    let cond = condition(&headers)?;
    let content_type = match headers.get(http::header::CONTENT_TYPE) {
        None => None,
        Some(v) if v.len() <= MAX_CONTENT_TYPE => Some(
            v.to_str()
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, "Content-Type is not ASCII"))?
                .to_string(),
        ),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("Content-Type longer than {MAX_CONTENT_TYPE} bytes"),
            ))
        }
    };
    let s3 = match headers.get(common::wire::HEADER_S3_ATTRS) {
        None => None,
        Some(v) => {
            let a = v
                .to_str()
                .ok()
                .and_then(|v| common::wire::S3Attrs::from_header(v).ok())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::BadRequest, "undecodable X-Cellkv-S3 header")
                })?;
            a.check()
                .map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?;
            Some(a)
        }
    };
    let within = rep.cfg.client_limits.body_read_timeout;
    let value: Vec<u8> = service::body::read_limited_within(&headers, body, max, within)
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
        })?
        // The body's own buffer (read_limited builds one Vec): no copy.
        .into();
    let cmd = match s3 {
        None => WriteOp::Put {
            bucket,
            key,
            value,
            content_type,
            condition: cond,
            modified_ms: now_ms(),
        },
        Some(s3) => WriteOp::PutS3 {
            bucket,
            key,
            value,
            content_type,
            s3,
            condition: cond,
            modified_ms: now_ms(),
        },
    };
    let res = propose(&rep, cmd).await?;
    if let Some(e) = write_refused(&rep, &res) {
        return Err(e);
    }
    match res {
        OpResult::Stored(meta) => {
            let mut resp = Json(
                serde_json::json!({"etag": meta.etag, "version": meta.version, "size": meta.size}),
            )
            .into_response();
            resp.headers_mut()
                .insert(http::header::ETAG, quoted_etag(&meta.etag));
            resp.headers_mut()
                .insert(HEADER_VERSION, HeaderValue::from(meta.version));
            if let Ok(t) = HeaderValue::from_str(&httpdate::fmt_http_date(
                UNIX_EPOCH + Duration::from_millis(meta.modified_ms),
            )) {
                resp.headers_mut().insert(http::header::LAST_MODIFIED, t);
            }
            failpoint_after_ack(&rep);
            Ok(resp)
        }
        OpResult::PreconditionFailed { current_etag } => Err(precondition(current_etag)),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected outcome {other:?}"),
        )),
    }
}

fn precondition(current: Option<String>) -> ApiError {
    ApiError::new(
        ErrorCode::PreconditionFailed,
        match current {
            Some(e) => format!("precondition failed: current etag is \"{e}\""),
            None => "precondition failed: the object does not exist".into(),
        },
    )
}

async fn delete_object(
    State(rep): State<Arc<Replica>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    validate(&bucket, &key)?;
    let cond = condition(&headers)?;
    if cond == Condition::IfAbsent {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "If-None-Match is not allowed on DELETE",
        ));
    }
    let res = propose(
        &rep,
        WriteOp::Delete {
            bucket: bucket.clone(),
            key: key.clone(),
            condition: cond,
        },
    )
    .await?;
    if let Some(e) = write_refused(&rep, &res) {
        return Err(e);
    }
    match res {
        OpResult::Deleted { version } => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            resp.headers_mut()
                .insert(HEADER_VERSION, HeaderValue::from(version));
            failpoint_after_ack(&rep);
            Ok(resp)
        }
        OpResult::NotFound => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no object {key:?} in bucket {bucket:?}"),
        )),
        OpResult::PreconditionFailed { current_etag } => Err(precondition(current_etag)),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// Test hook: with `CELLKV_FAILPOINT=abort_after_ack` in the environment the
/// replica aborts moments after acknowledging a write (the reply is already
/// on its way). Proves acknowledged writes survive an immediate crash.
fn failpoint_after_ack(rep: &Replica) {
    if rep.failpoint_abort_after_ack {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            tracing::warn!("failpoint abort_after_ack: aborting");
            std::process::abort();
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<usize>,
    read: Option<String>,
}

async fn list_objects(
    State(rep): State<Arc<Replica>>,
    Path(bucket): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    common::names::validate_bucket(&bucket)?;
    let limit = q.limit.unwrap_or(MAX_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1..={MAX_LIST_LIMIT}"),
        ));
    }
    read_gate(
        &rep,
        ReadQuery {
            read: q.read.clone(),
        }
        .stale()?,
    )
    .await?;
    let bucket_prefix = common::ring::placement_key(&bucket, "");
    let key_prefix = common::ring::placement_key(&bucket, &q.prefix);
    let seek = match &q.start_after {
        Some(sa) if sa.as_str() >= q.prefix.as_str() => common::ring::placement_key(&bucket, sa),
        _ => key_prefix.clone(),
    };
    let table = rep.sm.ownership();
    let cf = db::cf(&rep.db, CF_OBJECTS);
    let mut out = Vec::new();
    let mut more = false;
    for item in rep
        .db
        .iterator_cf(cf, IteratorMode::From(&seek, Direction::Forward))
    {
        let (k, v) = item.map_err(storage)?;
        if !k.starts_with(&key_prefix) {
            break;
        }
        let key = std::str::from_utf8(&k[bucket_prefix.len()..]).map_err(storage)?;
        if q.start_after.as_deref() == Some(key) {
            continue;
        }
        if table.managed && !table.lists(common::ring::key_hash(&bucket, key)) {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        let (meta, _) = objects::decode_object(&v).map_err(storage)?;
        out.push(ListEntry {
            key: key.to_string(),
            size: meta.size,
            s3_etag: meta.s3.map(|a| a.etag),
            etag: meta.etag,
            last_modified_ms: meta.modified_ms,
        });
    }
    let next = if more {
        out.last().map(|e| e.key.clone())
    } else {
        None
    };
    Ok(Json(ListPage {
        objects: out,
        next_start_after: next,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    start: u64,
    end: u64,
    /// Hex cursor from the previous page.
    after: Option<String>,
    limit: Option<usize>,
    max_bytes: Option<usize>,
    read: Option<String>,
    /// `false`: metadata only (every value empty), for comparing two cells' contents.
    values: Option<bool>,
}

/// A page of every object whose placement hash is in `[start, end]`, values
/// included unless `values=false`, read from one consistent RocksDB snapshot.
/// The basis of moving data between cells; never filtered by ownership.
async fn scan(State(rep): State<Arc<Replica>>, Query(q): Query<ScanQuery>) -> ApiResult {
    if q.start > q.end {
        return Err(ApiError::new(ErrorCode::BadRequest, "start must be <= end"));
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let max_bytes = q
        .max_bytes
        .unwrap_or(DEFAULT_SCAN_BYTES)
        .clamp(1, MAX_SCAN_BYTES);
    let after = match &q.after {
        Some(h) => Some(
            common::wire::unhex(h)
                .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "after is not a hex cursor"))?,
        ),
        None => None,
    };
    read_gate(
        &rep,
        ReadQuery {
            read: q.read.clone(),
        }
        .stale()?,
    )
    .await?;
    let applied_index = rep.sm.applied_index.load(Ordering::Acquire);
    let with_values = q.values.unwrap_or(true);
    let rep2 = rep.clone();
    let range = HashRange {
        start: q.start,
        end: q.end,
    };
    let page = tokio::task::spawn_blocking(move || -> Result<ScanPage, ApiError> {
        let db = &rep2.db;
        let snap = db.snapshot();
        let cf_hash = db::cf(db, CF_BY_HASH);
        let cf_obj = db::cf(db, CF_OBJECTS);
        let start_key = after
            .clone()
            .unwrap_or_else(|| q.start.to_be_bytes().to_vec());
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        let it = db.iterator_cf_opt(
            cf_hash,
            ro,
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let (mut items, mut bytes, mut next) = (Vec::new(), 0usize, None);
        for item in it {
            let (k, _) = item.map_err(storage)?;
            if after.as_deref() == Some(&k[..]) {
                continue;
            }
            if k.len() < 9 {
                return Err(storage("short by_hash key"));
            }
            let hash = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            if hash > q.end {
                break;
            }
            if items.len() >= limit || bytes >= max_bytes {
                next = Some(prev_key(&items));
                break;
            }
            let pkey = &k[8..];
            let Some(buf) = snap.get_cf(cf_obj, pkey).map_err(storage)? else {
                return Err(storage("by_hash index points at a missing object"));
            };
            let (meta, value) = objects::decode_object(&buf).map_err(storage)?;
            let (bucket, key) =
                objects::split_placement_key(pkey).ok_or_else(|| storage("bad placement key"))?;
            let value = if with_values {
                value.to_vec()
            } else {
                Vec::new()
            };
            bytes += value.len() + pkey.len() + meta.etag.len() + 32;
            items.push(ScanItem {
                hash,
                bucket: bucket.into(),
                key: key.into(),
                meta,
                value,
            });
        }
        Ok(ScanPage {
            range,
            items,
            next,
            applied_index,
        })
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let body = common::wire::encode_objects(&page)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
}

/// The `by_hash` key of the last item of a page: the cursor for the next one.
fn prev_key(items: &[ScanItem]) -> Vec<u8> {
    let last = items.last().expect("called with a non-empty page");
    objects::hash_index_key(
        last.hash,
        &common::ring::placement_key(&last.bucket, &last.key),
    )
}

/// Handlers do not know their cell; `observe` turns this marker into the full
/// JSON error (with the cell id) so every error body is built in one place.
#[derive(Clone)]
struct PendingError(ErrorCode, String, Option<LeaderHint>, Option<MovedHint>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        resp.extensions_mut().insert(PendingError(
            self.code,
            self.message,
            self.leader,
            self.moved,
        ));
        resp
    }
}
