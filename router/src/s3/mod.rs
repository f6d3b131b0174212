//! The S3 API on its own listener (`[s3]`, docs/s3.md): the protocol is
//! `cellkv-s3`'s, the routing is the native API's (same topology, proxy,
//! breakers and bulkheads, so a failed cell fails only its keys).
//!
//! ```text
//!  request ─▶ authenticate (sigv4::Verifier) ─▶ parse_operation ─▶ authorize (credential scope, access)
//!         ─▶ objects::* (one key: proxy.forward_key) | listing::gather (every cell) | buckets (control cell)
//!         ─▶ S3 answer (XML, headers), X-Cellkv-Cell, x-amz-request-id; errors as <Error> (HEAD: no body)
//! ```

pub mod buckets;
pub mod listing;
pub mod objects;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use cellkv_s3::names::{Operation, Target};
use cellkv_s3::xml::{self, BucketEntry, Owner};
use cellkv_s3::{ErrorCode as S3Code, S3Error, SecretKey, Verified, Verifier};
use common::{CellId, ErrorCode};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};

use crate::auth::BucketPattern;
use crate::config::{Access, RouterConfig};
use crate::error::{ApiError, HEADER_CELL};
use crate::metrics::{RouterMetrics, CELL_ALL, CELL_NONE};
use crate::proxy::Proxy;
use crate::topology::Topology;
use buckets::{BucketRegistry, Change, RegistryError};

/// The owner every listing names: cellkv has no accounts.
fn owner() -> Owner {
    Owner {
        id: "cellkv".into(),
        display_name: "cellkv".into(),
    }
}

/// One configured credential.
struct Credential {
    secret: SecretKey,
    scope: Vec<BucketPattern>,
    access: Access,
}

/// Shared state of the S3 listener.
pub struct S3App {
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<RouterMetrics>,
    pub buckets: Arc<BucketRegistry>,
    verifier: Verifier,
    credentials: HashMap<String, Credential>,
    pub region: String,
    pub max_object_bytes: u64,
    pub body_read_timeout: Duration,
    request_ids: AtomicU64,
}

impl S3App {
    pub fn new(
        cfg: &RouterConfig,
        proxy: Arc<Proxy>,
        metrics: Arc<RouterMetrics>,
        buckets: Arc<BucketRegistry>,
    ) -> S3App {
        let credentials = cfg
            .s3
            .credentials
            .iter()
            .map(|c| {
                let cred = Credential {
                    secret: SecretKey::new(c.secret_key.clone()),
                    scope: c
                        .buckets
                        .iter()
                        .filter_map(|p| BucketPattern::parse(p).ok())
                        .collect(),
                    access: c.access,
                };
                (c.access_key.clone(), cred)
            })
            .collect();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        S3App {
            proxy,
            metrics,
            buckets,
            verifier: Verifier::new(Some(cfg.s3.region.clone())),
            credentials,
            region: cfg.s3.region.clone(),
            max_object_bytes: cfg.max_object_bytes,
            body_read_timeout: cfg.client_limits.body_read_timeout,
            request_ids: AtomicU64::new(seed),
        }
    }
}

/// An S3 error answer with the cell it concerns.
#[derive(Debug)]
pub struct S3Fail {
    pub err: S3Error,
    pub cell: Option<CellId>,
    /// Seconds for `Retry-After` (503s).
    pub retry_after: Option<u64>,
}

impl S3Fail {
    pub fn with_cell(mut self, cell: CellId) -> S3Fail {
        self.cell.get_or_insert(cell);
        self
    }
}

impl From<S3Error> for S3Fail {
    fn from(err: S3Error) -> Self {
        let retry_after = (err.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        S3Fail {
            err,
            cell: None,
            retry_after,
        }
    }
}

impl From<S3Code> for S3Fail {
    fn from(code: S3Code) -> Self {
        S3Error::new(code).into()
    }
}

/// cellkv's public errors in S3's terms (docs/s3.md, "Errors").
impl From<ApiError> for S3Fail {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            ErrorCode::CellUnavailable | ErrorCode::RangeMoving
                if e.status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                S3Code::ServiceUnavailable
            }
            ErrorCode::RateLimited => S3Code::SlowDown,
            ErrorCode::PayloadTooLarge => S3Code::EntityTooLarge,
            ErrorCode::PreconditionFailed => S3Code::PreconditionFailed,
            ErrorCode::NotFound => S3Code::NoSuchKey,
            ErrorCode::RequestTimeout => S3Code::RequestTimeout,
            ErrorCode::Forbidden | ErrorCode::Unauthorized => S3Code::AccessDenied,
            ErrorCode::InvalidBucket => S3Code::InvalidBucketName,
            ErrorCode::InvalidKey | ErrorCode::BadRequest => S3Code::InvalidArgument,
            ErrorCode::MethodNotAllowed => S3Code::MethodNotAllowed,
            // 502/504 (a write's outcome unknown), internal and storage errors.
            _ => S3Code::InternalError,
        };
        let retry_after = if code.status() == StatusCode::SERVICE_UNAVAILABLE {
            Some(e.retry_after.unwrap_or(1))
        } else {
            None
        };
        S3Fail {
            err: S3Error::with_message(code, e.message),
            cell: e.cell,
            retry_after,
        }
    }
}

impl From<crate::error::RouteError> for S3Fail {
    fn from(e: crate::error::RouteError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<RegistryError> for S3Fail {
    fn from(e: RegistryError) -> Self {
        S3Error::with_message(
            S3Code::ServiceUnavailable,
            format!("the bucket registry is unavailable: {e}"),
        )
        .into()
    }
}

pub type S3Result = Result<Response, S3Fail>;

/// What a handler knows about an authenticated request.
pub struct Ctx<'a> {
    pub app: &'a Arc<S3App>,
    pub parts: &'a Parts,
    pub verified: Verified,
    cred: &'a Credential,
    pub topo: Arc<Topology>,
}

impl Ctx<'_> {
    /// Checks the credential's bucket scope, and read-write access for writes.
    pub fn authorize(&self, bucket: &str, write: bool) -> Result<(), S3Fail> {
        if !self.cred.scope.iter().any(|p| p.matches(bucket)) {
            return Err(S3Error::with_message(
                S3Code::AccessDenied,
                format!(
                    "access key {} may not access bucket {bucket}",
                    self.verified.access_key
                ),
            )
            .into());
        }
        if write && self.cred.access != Access::ReadWrite {
            return Err(S3Error::with_message(
                S3Code::AccessDenied,
                format!("access key {} is read-only", self.verified.access_key),
            )
            .into());
        }
        Ok(())
    }

    fn in_scope(&self, bucket: &str) -> bool {
        self.cred.scope.iter().any(|p| p.matches(bucket))
    }
}

/// The S3 listener's routes: every path goes through `handle`.
pub fn router(app: Arc<S3App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

/// The header value naming every listed cell (`1,2,3`).
fn all_cells(topo: &Topology) -> HeaderValue {
    let ids: Vec<String> = topo.listed_cells().map(|c| c.id.to_string()).collect();
    HeaderValue::from_str(&ids.join(",")).unwrap_or(HeaderValue::from_static(""))
}

/// Serves one S3 request; records its metrics and request id.
async fn handle(State(app): State<Arc<S3App>>, req: Request) -> Response {
    let start = Instant::now();
    let rid = format!("{:016X}", app.request_ids.fetch_add(1, Ordering::Relaxed));
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let topo = app.proxy.topology();
    let mut op_name = "Unknown";
    let result = serve(&app, &parts, body, topo.clone(), &mut op_name).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(mut fail) => {
            // Name the key's cell even when the request failed before routing.
            if fail.cell.is_none() {
                if let Ok(Target::Object { bucket, key }) =
                    cellkv_s3::names::parse_path(parts.uri.path())
                {
                    fail.cell = Some(topo.owner(&bucket, &key));
                }
            }
            error_response(&fail, parts.uri.path(), &rid, head)
        }
    };
    if head {
        *resp.body_mut() = Body::empty();
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amz-request-id", v);
    }
    let cell = match h.get(HEADER_CELL).and_then(|v| v.to_str().ok()) {
        Some(c) if c.contains(',') => CELL_ALL.to_string(),
        Some(c) => c.to_string(),
        None => CELL_NONE.to_string(),
    };
    let m = &app.metrics;
    m.request_duration_seconds
        .with_label_values(&[&cell, op_name])
        .observe(start.elapsed().as_secs_f64());
    m.requests_total
        .with_label_values(&[&cell, op_name, resp.status().as_str()])
        .inc();
    resp
}

fn error_response(fail: &S3Fail, resource: &str, rid: &str, head: bool) -> Response {
    let body = if head {
        Body::empty()
    } else {
        Body::from(fail.err.to_xml(resource, rid))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = fail.err.status();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Some(c) = fail.cell {
        h.insert(HEADER_CELL, HeaderValue::from(c.0));
    }
    if let Some(s) = fail.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// authenticate → parse → authorize → run.
async fn serve(
    app: &Arc<S3App>,
    parts: &Parts,
    body: Body,
    topo: Arc<Topology>,
    op_name: &mut &'static str,
) -> S3Result {
    let verified = app
        .verifier
        .verify(parts, SystemTime::now(), |ak| {
            app.credentials.get(ak).map(|c| c.secret.clone())
        })
        .map_err(S3Error::from)?;
    let cred = app
        .credentials
        .get(&verified.access_key)
        .ok_or_else(|| S3Error::new(S3Code::InvalidAccessKeyId))?;
    let op = cellkv_s3::parse_operation(&parts.method, &parts.uri, &parts.headers)?;
    *op_name = op.name();
    let ctx = Ctx {
        app,
        parts,
        verified,
        cred,
        topo,
    };
    if let Some(b) = op.bucket() {
        ctx.authorize(b, op.is_write())?;
    }
    match op {
        Operation::ListBuckets => list_buckets(&ctx),
        Operation::CreateBucket { bucket } => create_bucket(&ctx, &bucket, body).await,
        Operation::HeadBucket { bucket } => head_bucket(&ctx, &bucket).await,
        Operation::DeleteBucket { bucket } => delete_bucket(&ctx, &bucket).await,
        Operation::GetBucketLocation { bucket } => {
            require_bucket(&ctx, &bucket).await?;
            Ok(xml_response(
                StatusCode::OK,
                xml::location_constraint(&app.region),
            ))
        }
        Operation::ListObjectsV2 { .. }
        | Operation::ListObjects { .. }
        | Operation::ListObjectVersions { .. } => list_objects(&ctx, op).await,
        Operation::GetObject {
            bucket,
            key,
            version_id,
            part_number,
        } => objects::get(&ctx, &bucket, &key, version_id, part_number, true).await,
        Operation::HeadObject {
            bucket,
            key,
            version_id,
            part_number,
        } => objects::get(&ctx, &bucket, &key, version_id, part_number, false).await,
        Operation::PutObject { bucket, key } => objects::put(&ctx, &bucket, &key, body).await,
        Operation::CopyObject {
            bucket,
            key,
            source,
        } => objects::copy(&ctx, &bucket, &key, &source).await,
        Operation::DeleteObject {
            bucket,
            key,
            version_id,
        } => objects::delete(&ctx, &bucket, &key, version_id).await,
        Operation::DeleteObjects { bucket } => objects::delete_many(&ctx, &bucket, body).await,
        Operation::CreateMultipartUpload { .. }
        | Operation::UploadPart { .. }
        | Operation::UploadPartCopy { .. }
        | Operation::CompleteMultipartUpload { .. }
        | Operation::AbortMultipartUpload { .. }
        | Operation::ListParts { .. }
        | Operation::ListMultipartUploads { .. } => Err(S3Error::with_message(
            S3Code::NotImplemented,
            "multipart uploads are not implemented yet (docs/s3.md); upload objects with one PUT",
        )
        .into()),
    }
}

/// An XML answer.
pub fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

fn list_buckets(ctx: &Ctx<'_>) -> S3Result {
    let entries: Vec<BucketEntry> = ctx
        .app
        .buckets
        .all()
        .into_iter()
        .filter(|(name, _)| ctx.in_scope(name))
        .map(|(name, r)| BucketEntry {
            name,
            created: UNIX_EPOCH + Duration::from_millis(r.created_ms),
        })
        .collect();
    Ok(xml_response(
        StatusCode::OK,
        xml::list_buckets(&owner(), &entries),
    ))
}

/// Whether `bucket` holds at least one object (asks every cell: 503 if one
/// cannot answer).
async fn holds_objects(ctx: &Ctx<'_>, bucket: &str) -> Result<bool, S3Fail> {
    let ask = listing::Ask {
        max_keys: 1,
        ..listing::Ask::default()
    };
    let g = listing::gather(&ctx.app.proxy, &ctx.topo, bucket, &ask).await?;
    Ok(!g.contents.is_empty() || !g.common_prefixes.is_empty())
}

/// A bucket exists when it is recorded in the registry or holds objects
/// (written through the native API). `NoSuchBucket` otherwise.
async fn require_bucket(ctx: &Ctx<'_>, bucket: &str) -> Result<(), S3Fail> {
    if ctx.app.buckets.exists(bucket).await? || holds_objects(ctx, bucket).await? {
        return Ok(());
    }
    Err(no_such_bucket(bucket))
}

pub fn no_such_bucket(bucket: &str) -> S3Fail {
    S3Error::with_message(
        S3Code::NoSuchBucket,
        format!("The specified bucket does not exist: {bucket}"),
    )
    .into()
}

async fn create_bucket(ctx: &Ctx<'_>, bucket: &str, body: Body) -> S3Result {
    common::names::validate_bucket(bucket)
        .map_err(|e| S3Error::with_message(S3Code::InvalidBucketName, e.to_string()))?;
    if ctx
        .parts
        .headers
        .get("x-amz-bucket-object-lock-enabled")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        return Err(
            S3Error::with_message(S3Code::NotImplemented, "object lock is not supported").into(),
        );
    }
    let raw = objects::read_raw(ctx, body, xml::MAX_CREATE_BUCKET_BODY as u64).await?;
    if let Some(loc) = xml::parse_create_bucket_configuration(&raw)? {
        if loc != ctx.app.region {
            return Err(S3Error::with_message(
                S3Code::InvalidArgument,
                format!(
                    "The LocationConstraint {loc} is not this endpoint's region {}",
                    ctx.app.region
                ),
            )
            .into());
        }
    }
    match ctx.app.buckets.create(bucket).await? {
        Change::Done => {
            let mut resp = Response::new(Body::empty());
            if let Ok(v) = HeaderValue::from_str(&format!("/{bucket}")) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            Ok(resp)
        }
        Change::Unchanged => Err(S3Code::BucketAlreadyOwnedByYou.into()),
    }
}

async fn head_bucket(ctx: &Ctx<'_>, bucket: &str) -> S3Result {
    require_bucket(ctx, bucket).await?;
    let mut resp = Response::new(Body::empty());
    if let Ok(v) = HeaderValue::from_str(&ctx.app.region) {
        resp.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(resp)
}

async fn delete_bucket(ctx: &Ctx<'_>, bucket: &str) -> S3Result {
    if holds_objects(ctx, bucket).await? {
        let mut fail = S3Fail::from(S3Code::BucketNotEmpty);
        fail.err.message = format!("The bucket you tried to delete is not empty: {bucket}").into();
        return Err(fail);
    }
    if !ctx.app.buckets.is_recorded() {
        return Ok(no_content(&ctx.topo));
    }
    match ctx.app.buckets.delete(bucket).await? {
        Change::Done => Ok(no_content(&ctx.topo)),
        Change::Unchanged => Err(no_such_bucket(bucket)),
    }
}

fn no_content(topo: &Topology) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut().insert(HEADER_CELL, all_cells(topo));
    resp
}

/// Continuation tokens are the hex of where the next page starts after:
/// opaque to clients, any key survives them.
fn encode_token(s: &str) -> String {
    common::wire::hex(s.as_bytes())
}

fn decode_token(t: &str) -> Result<String, S3Fail> {
    common::wire::unhex(t)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            S3Error::with_message(
                S3Code::InvalidArgument,
                "The continuation token provided is incorrect",
            )
            .into()
        })
}

async fn list_objects(ctx: &Ctx<'_>, op: Operation) -> S3Result {
    let (bucket, list, start_after) = match &op {
        Operation::ListObjectsV2 {
            bucket,
            list,
            continuation_token,
            start_after,
            ..
        } => {
            let from = match continuation_token {
                Some(t) => Some(decode_token(t)?),
                None => start_after.clone(),
            };
            (bucket, list, from)
        }
        Operation::ListObjects {
            bucket,
            list,
            marker,
        } => (bucket, list, marker.clone()),
        Operation::ListObjectVersions {
            bucket,
            list,
            key_marker,
            ..
        } => (bucket, list, key_marker.clone()),
        _ => unreachable!("list_objects is called for listings only"),
    };
    let ask = listing::Ask {
        prefix: list.prefix.clone(),
        delimiter: list.delimiter.clone(),
        start_after: start_after.clone().filter(|s| !s.is_empty()),
        max_keys: list.max_keys as usize,
    };
    let g = listing::gather(&ctx.app.proxy, &ctx.topo, bucket, &ask).await?;
    if g.contents.is_empty() && g.common_prefixes.is_empty() {
        require_bucket(ctx, bucket).await?;
    }
    let body = match op {
        Operation::ListObjectsV2 {
            bucket,
            list,
            continuation_token,
            start_after,
            fetch_owner,
        } => xml::ListObjectsV2Result {
            bucket,
            prefix: list.prefix,
            delimiter: list.delimiter,
            max_keys: list.max_keys,
            start_after,
            continuation_token,
            next_continuation_token: g
                .is_truncated
                .then(|| g.next_start_after.as_deref().map(encode_token))
                .flatten(),
            is_truncated: g.is_truncated,
            encoding: list.encoding,
            owner: fetch_owner.then(owner),
            contents: g.contents,
            common_prefixes: g.common_prefixes,
        }
        .to_xml(),
        Operation::ListObjects {
            bucket,
            list,
            marker,
        } => xml::ListObjectsV1Result {
            bucket,
            prefix: list.prefix,
            marker: marker.unwrap_or_default(),
            next_marker: (g.is_truncated && list.delimiter.is_some())
                .then(|| g.last.clone())
                .flatten(),
            delimiter: list.delimiter,
            max_keys: list.max_keys,
            is_truncated: g.is_truncated,
            encoding: list.encoding,
            owner: Some(owner()),
            contents: g.contents,
            common_prefixes: g.common_prefixes,
        }
        .to_xml(),
        Operation::ListObjectVersions {
            bucket,
            list,
            key_marker,
            version_id_marker,
        } => xml::ListVersionsResult {
            bucket,
            prefix: list.prefix,
            key_marker: key_marker.unwrap_or_default(),
            version_id_marker: version_id_marker.unwrap_or_default(),
            next_key_marker: g.is_truncated.then(|| g.last.clone()).flatten(),
            next_version_id_marker: g.is_truncated.then(|| "null".to_string()),
            delimiter: list.delimiter,
            max_keys: list.max_keys,
            is_truncated: g.is_truncated,
            encoding: list.encoding,
            owner: Some(owner()),
            versions: g.contents,
            common_prefixes: g.common_prefixes,
        }
        .to_xml(),
        _ => unreachable!("list_objects is called for listings only"),
    };
    let mut resp = xml_response(StatusCode::OK, body);
    resp.headers_mut().insert(HEADER_CELL, all_cells(&ctx.topo));
    Ok(resp)
}
