//! S3's object operations on one key each (PutObject, GetObject, HeadObject,
//! DeleteObject, CopyObject) and DeleteObjects, each a request to the key's
//! cell through the proxy. A body is verified whole (signature chain,
//! Content-MD5, `x-amz-checksum-*`) before anything is sent to a cell, so a
//! wrong checksum stores nothing. Conditions on writes go to the cell, which
//! checks them when it applies the write (ADR 0023); conditions on reads are
//! checked here against what the cell answered.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use cellkv_s3::checksum::{md5_hex, BodyDigests};
use cellkv_s3::names::{CopySource, Query};
use cellkv_s3::xml;
use cellkv_s3::{ChecksumSet, ChunkedDecoder, ChunkedLimits, ErrorCode as S3Code, S3Error};
use common::wire::{S3Attrs, HEADER_IF_S3_MATCH, HEADER_S3_ATTRS, MAX_S3_USER_METADATA};
use common::CellId;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::task::JoinSet;

use super::{no_such_bucket, xml_response, Ctx, S3App, S3Fail, S3Result};
use crate::error::{ApiError, HEADER_CELL};
use crate::request::{percent_encode, CellRequest, CellResponse, Op};
use crate::topology::Topology;

/// The standard headers S3 stores with an object and answers on reads.
const STORED_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];
/// The cell's limit on `Content-Type`.
const MAX_CONTENT_TYPE: usize = 256;
/// DeleteObjects: keys deleted at once (each one request to its cell).
const DELETE_CONCURRENCY: usize = 32;
/// What the aws-chunked framing may add to a body: a chunk header of about
/// 90 bytes per chunk of at least 8 KiB, and the trailer.
fn chunked_overhead(max: u64) -> u64 {
    max / 64 + (64 << 10)
}

fn bad(msg: impl Into<String>) -> S3Fail {
    S3Error::with_message(S3Code::InvalidArgument, msg.into()).into()
}

/// Reads a body of at most `max` bytes (as it came: aws-chunked framing included).
pub async fn read_raw(ctx: &Ctx<'_>, body: Body, max: u64) -> Result<Bytes, S3Fail> {
    service::body::read_limited_within(&ctx.parts.headers, body, max, ctx.app.body_read_timeout)
        .await
        .map_err(|e| match e {
            service::body::BodyError::TooLarge { .. } => S3Error::with_message(
                S3Code::EntityTooLarge,
                format!("Your proposed upload exceeds the maximum allowed size of {max} bytes"),
            )
            .into(),
            service::body::BodyError::TimedOut { .. } => S3Code::RequestTimeout.into(),
            e => bad(e.to_string()),
        })
}

/// Reads and verifies a body: decodes aws-chunked ones (checking every chunk
/// signature), then every declared digest. Nothing is returned unless all hold.
pub async fn read_verified(
    ctx: &Ctx<'_>,
    body: Body,
    max: u64,
) -> Result<(Bytes, BodyDigests), S3Fail> {
    let headers = &ctx.parts.headers;
    let mode = ctx.verified.payload;
    let mut sums = ChecksumSet::from_request(headers, mode)?;
    if !mode.is_streaming() {
        let raw = read_raw(ctx, body, max).await?;
        sums.update(&raw);
        let digests = sums.finish(&[])?;
        return Ok((raw, digests));
    }
    let mut decoder =
        ChunkedDecoder::from_request(&ctx.verified, headers, ChunkedLimits::default())?;
    let declared = headers
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if declared > max {
        return Err(S3Error::with_message(
            S3Code::EntityTooLarge,
            format!("Your proposed upload exceeds the maximum allowed size of {max} bytes"),
        )
        .into());
    }
    let mut input = read_raw(ctx, body, max + chunked_overhead(max)).await?;
    let mut out = BytesMut::with_capacity(declared as usize);
    while let Some(piece) = decoder.decode(&mut input).map_err(S3Error::from)? {
        sums.update(&piece);
        out.extend_from_slice(&piece);
    }
    let trailers = decoder.finish().map_err(S3Error::from)?;
    let digests = sums.finish(&trailers)?;
    Ok((out.freeze(), digests))
}

/// The S3 attributes (and Content-Type) a request sets: stored headers and
/// `x-amz-meta-*`, within S3's limits.
fn attrs_from_request(headers: &HeaderMap) -> Result<(Option<String>, S3Attrs), S3Fail> {
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let content_type = match headers.get(http::header::CONTENT_TYPE) {
        Some(v) if v.len() > MAX_CONTENT_TYPE => {
            return Err(bad(format!(
                "Content-Type is longer than {MAX_CONTENT_TYPE} bytes"
            )))
        }
        Some(v) => Some(text(v)),
        None => None,
    };
    let mut attrs = S3Attrs::default();
    for name in STORED_HEADERS {
        let values: Vec<String> = headers.get_all(name).iter().map(text).collect();
        if values.is_empty() {
            continue;
        }
        let mut value = values.join(",");
        if name == "content-encoding" {
            // aws-chunked is the framing of this request, not the object's.
            value = value
                .split(',')
                .map(str::trim)
                .filter(|e| !e.eq_ignore_ascii_case("aws-chunked") && !e.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            if value.is_empty() {
                continue;
            }
        }
        attrs.headers.push((name.to_string(), value));
    }
    let mut user: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
            match user.iter_mut().find(|(k, _)| k == n) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(&text(value));
                }
                None => user.push((n.to_string(), text(value))),
            }
        }
    }
    user.sort();
    attrs.user = user;
    if attrs.user_bytes() > MAX_S3_USER_METADATA {
        return Err(S3Error::with_message(
            S3Code::MetadataTooLarge,
            format!(
                "Your metadata headers are {} bytes; the limit is {MAX_S3_USER_METADATA}",
                attrs.user_bytes()
            ),
        )
        .into());
    }
    Ok((content_type, attrs))
}

/// The cell API path of an object (every byte of the key escaped, `/` too:
/// the cell decodes it back exactly).
fn cell_path(bucket: &str, key: &str) -> String {
    format!(
        "/v1/buckets/{}/objects/{}",
        percent_encode(bucket, false),
        percent_encode(key, false)
    )
}

fn check_names(bucket: &str, key: &str) -> Result<(), S3Fail> {
    common::names::validate_bucket(bucket)
        .map_err(|e| S3Error::with_message(S3Code::InvalidBucketName, e.to_string()))?;
    common::names::validate_key(key).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// Writes must go to a bucket the registry knows.
async fn require_recorded(ctx: &Ctx<'_>, bucket: &str) -> Result<(), S3Fail> {
    if ctx.app.buckets.exists(bucket).await? {
        Ok(())
    } else {
        Err(no_such_bucket(bucket))
    }
}

/// Sends `req` to the owner of `(bucket, key)`; an error answer becomes the
/// public error (with its cell).
async fn send(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    req: &CellRequest,
) -> Result<(CellId, CellResponse), (CellId, S3Fail)> {
    let fwd = ctx
        .app
        .proxy
        .forward_key(ctx.topo.clone(), bucket, key, req)
        .await;
    let cell = fwd.cell;
    match fwd.result {
        Err(e) => Err((cell, S3Fail::from(e).with_cell(cell))),
        Ok(resp) if resp.status.is_client_error() || resp.status.is_server_error() => {
            let e = ApiError::from_cell(cell, resp.status, &resp.body);
            Err((cell, S3Fail::from(e).with_cell(cell)))
        }
        Ok(resp) => Ok((cell, resp)),
    }
}

/// Stores `value` with `attrs` at `(bucket, key)`. `conditions`: headers
/// for the cell (`If-None-Match: *`, `X-Cellkv-If-S3-Match`).
async fn store(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    value: Bytes,
    content_type: Option<String>,
    attrs: &S3Attrs,
    conditions: HeaderMap,
) -> Result<(CellId, CellResponse), S3Fail> {
    let mut headers = conditions;
    if let Some(ct) = content_type {
        let v = HeaderValue::from_str(&ct).map_err(|_| bad("Content-Type is not valid"))?;
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    let a = HeaderValue::from_str(&attrs.to_header()).map_err(|_| bad("bad metadata"))?;
    headers.insert(HEADER_S3_ATTRS, a);
    let req = CellRequest {
        op: Op::Put,
        method: Method::PUT,
        path_and_query: cell_path(bucket, key),
        headers,
        body: value,
    };
    send(ctx, bucket, key, &req).await.map_err(|(_, e)| e)
}

/// S3's conditional PutObject headers as the cell's conditions.
fn put_conditions(headers: &HeaderMap) -> Result<HeaderMap, S3Fail> {
    let mut out = HeaderMap::new();
    let im = headers.get(http::header::IF_MATCH);
    let inm = headers.get(http::header::IF_NONE_MATCH);
    match (im, inm) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "use either If-Match or If-None-Match on a PutObject, not both",
            ))
        }
        (None, Some(v)) if v.as_bytes() == b"*" => {
            out.insert(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        }
        (None, Some(_)) => {
            return Err(S3Error::with_message(
                S3Code::NotImplemented,
                "If-None-Match on a PutObject supports only *",
            )
            .into())
        }
        (Some(v), None) => {
            let etag = v
                .to_str()
                .map_err(|_| bad("If-Match is not ASCII"))?
                .trim()
                .trim_matches('"')
                .to_string();
            if etag == "*" || etag.contains(',') {
                return Err(bad("If-Match on a PutObject names exactly one ETag"));
            }
            let v = HeaderValue::from_str(&etag).map_err(|_| bad("bad If-Match"))?;
            out.insert(HEADER_IF_S3_MATCH, v);
        }
        (None, None) => {}
    }
    Ok(out)
}

fn quoted(etag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{etag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

fn http_date(t: SystemTime) -> Option<HeaderValue> {
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
}

pub async fn put(ctx: &Ctx<'_>, bucket: &str, key: &str, body: Body) -> S3Result {
    check_names(bucket, key)?;
    require_recorded(ctx, bucket).await?;
    let headers = &ctx.parts.headers;
    let conditions = put_conditions(headers)?;
    let (content_type, mut attrs) = attrs_from_request(headers)?;
    let (value, digests) = read_verified(ctx, body, ctx.app.max_object_bytes).await?;
    attrs.etag = digests.etag();
    attrs.checksum = digests
        .checksum
        .as_ref()
        .map(|(alg, v)| (alg.name().to_string(), v.clone()));
    let (cell, _) = store(ctx, bucket, key, value, content_type, &attrs, conditions).await?;
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(http::header::ETAG, quoted(&attrs.etag));
    if let Some((alg, v)) = &digests.checksum {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(alg.header_name(), v);
        }
    }
    h.insert(HEADER_CELL, HeaderValue::from(cell.0));
    Ok(resp)
}

/// An object as a cell answered a GET or HEAD.
struct Fetched {
    native_etag: String,
    attrs: Option<S3Attrs>,
    content_type: Option<String>,
    last_modified: SystemTime,
    size: u64,
    body: Bytes,
}

impl Fetched {
    fn parse(resp: CellResponse, with_body: bool) -> Result<Fetched, S3Fail> {
        let h = &resp.headers;
        let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let attrs = match text(HEADER_S3_ATTRS) {
            Some(v) => Some(S3Attrs::from_header(&v).map_err(|e| {
                S3Error::with_message(
                    S3Code::InternalError,
                    format!("cell sent bad metadata: {e}"),
                )
            })?),
            None => None,
        };
        let last_modified = text("last-modified")
            .and_then(|v| httpdate::parse_http_date(&v).ok())
            .unwrap_or(UNIX_EPOCH);
        let size = if with_body {
            resp.body.len() as u64
        } else {
            text("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Fetched {
            native_etag: text("etag")
                .map(|e| e.trim_matches('"').to_string())
                .unwrap_or_default(),
            attrs,
            content_type: text("content-type"),
            last_modified,
            size,
            body: resp.body,
        })
    }

    /// The ETag S3 answers with (`ObjectMeta::s3_etag`).
    fn etag(&self) -> &str {
        self.attrs
            .as_ref()
            .map_or(self.native_etag.as_str(), |a| a.etag.as_str())
    }
}

/// Whether an `If-Match`/`If-None-Match` value names `etag` (or is `*`).
fn etag_listed(value: &HeaderValue, etag: &str) -> bool {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

fn date_header(headers: &HeaderMap, name: &str) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Seconds since the epoch (HTTP dates have no finer resolution).
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The outcome of a read's conditions (RFC 9110 §13.2.2, as S3 applies them).
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Pass,
    NotModified,
    Failed,
}

fn evaluate(
    headers: &HeaderMap,
    names: [&str; 4],
    etag: &str,
    modified: SystemTime,
) -> Precondition {
    let [if_match, if_none_match, if_modified_since, if_unmodified_since] = names;
    match headers.get(if_match) {
        Some(v) if !etag_listed(v, etag) => return Precondition::Failed,
        Some(_) => {}
        None => {
            if date_header(headers, if_unmodified_since).is_some_and(|t| secs(modified) > secs(t)) {
                return Precondition::Failed;
            }
        }
    }
    match headers.get(if_none_match) {
        Some(v) if etag_listed(v, etag) => return Precondition::NotModified,
        Some(_) => {}
        None => {
            if date_header(headers, if_modified_since).is_some_and(|t| secs(modified) <= secs(t)) {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Pass
}

/// A `Range: bytes=...` of an object of `size` bytes: the inclusive span, or
/// `None` for the whole object (no range, or one S3 ignores).
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, S3Fail> {
    let unsatisfiable = || -> S3Fail { S3Code::InvalidRange.into() };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let span = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| unsatisfiable())?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first: u64 = a.parse().map_err(|_| unsatisfiable())?;
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .min(size.saturating_sub(1))
        };
        if first >= size || (!b.is_empty() && b.parse::<u64>().is_ok_and(|l| l < first)) {
            return Err(unsatisfiable());
        }
        (first, last)
    };
    Ok(Some(span))
}

/// The headers every object answer carries.
fn object_headers(h: &mut HeaderMap, o: &Fetched, cell: CellId) {
    h.insert(http::header::ETAG, quoted(o.etag()));
    if let Some(v) = http_date(o.last_modified) {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    h.insert(HEADER_CELL, HeaderValue::from(cell.0));
    h.insert(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
}

pub async fn get(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
    part_number: Option<u32>,
    with_body: bool,
) -> S3Result {
    check_names(bucket, key)?;
    if version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(bad(
            "This bucket is not versioned: the only version id is null",
        ));
    }
    if part_number.is_some_and(|n| n != 1) {
        return Err(S3Error::with_message(
            S3Code::InvalidPart,
            "The object was stored in one part: the only part number is 1",
        )
        .into());
    }
    let (op, method) = if with_body {
        (Op::Get, Method::GET)
    } else {
        (Op::Head, Method::HEAD)
    };
    let req = CellRequest {
        op,
        method,
        path_and_query: cell_path(bucket, key),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let (cell, resp) = match send(ctx, bucket, key, &req).await {
        Ok(r) => r,
        Err((cell, e)) if e.err.code == S3Code::NoSuchKey => {
            if ctx.app.buckets.exists(bucket).await? {
                let mut e = S3Fail::from(S3Code::NoSuchKey).with_cell(cell);
                e.err.message = format!("The specified key does not exist: {key}").into();
                return Err(e);
            }
            return Err(no_such_bucket(bucket).with_cell(cell));
        }
        Err((_, e)) => return Err(e),
    };
    let o = Fetched::parse(resp, with_body)?;
    let headers = &ctx.parts.headers;
    let names = [
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    ];
    match evaluate(headers, names, o.etag(), o.last_modified) {
        Precondition::Pass => {}
        Precondition::Failed => {
            return Err(S3Fail::from(S3Code::PreconditionFailed).with_cell(cell))
        }
        Precondition::NotModified => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            object_headers(resp.headers_mut(), &o, cell);
            return Ok(resp);
        }
    }
    let range = match headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(r) => parse_range(r, o.size).map_err(|e| e.with_cell(cell))?,
        None => None,
    };
    let q = Query::parse(ctx.parts.uri.query())?;
    let (status, body, length) = match range {
        Some((first, last)) => {
            let body = if with_body {
                o.body.slice(first as usize..=last as usize)
            } else {
                Bytes::new()
            };
            (StatusCode::PARTIAL_CONTENT, body, last - first + 1)
        }
        None => (StatusCode::OK, o.body.clone(), o.size),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    object_headers(h, &o, cell);
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some((first, last)) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{}", o.size)) {
            h.insert(http::header::CONTENT_RANGE, v);
        }
    }
    let ct = o.content_type.as_deref().unwrap_or("binary/octet-stream");
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    if let Some(a) = &o.attrs {
        for (name, value) in &a.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                h.insert(n, v);
            }
        }
        for (name, value) in &a.user {
            let n = HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes());
            if let (Ok(n), Ok(v)) = (n, HeaderValue::from_bytes(value.as_bytes())) {
                h.insert(n, v);
            }
        }
        let wants_checksum = headers
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enabled"));
        if let (true, None, Some((alg, value))) = (wants_checksum, range, &a.checksum) {
            let name = format!("x-amz-checksum-{}", alg.to_ascii_lowercase());
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                h.insert(n, v);
            }
        }
    }
    // response-* overrides of a (signed) GetObject.
    for (param, header) in [
        ("response-content-type", http::header::CONTENT_TYPE),
        ("response-content-language", http::header::CONTENT_LANGUAGE),
        ("response-expires", http::header::EXPIRES),
        ("response-cache-control", http::header::CACHE_CONTROL),
        (
            "response-content-disposition",
            http::header::CONTENT_DISPOSITION,
        ),
        ("response-content-encoding", http::header::CONTENT_ENCODING),
    ] {
        if let Some(v) = q.get(param).and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(header, v);
        }
    }
    Ok(resp)
}

pub async fn delete(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
) -> S3Result {
    check_names(bucket, key)?;
    if version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(bad(
            "This bucket is not versioned: the only version id is null",
        ));
    }
    require_recorded(ctx, bucket).await?;
    let cell = delete_one(ctx, bucket, key).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(HEADER_CELL, HeaderValue::from(cell.0));
    Ok(resp)
}

/// Deletes one key; a key that is not there is deleted already (as in S3).
/// `If-Match` is S3's conditional delete, checked by the cell.
async fn delete_one(ctx: &Ctx<'_>, bucket: &str, key: &str) -> Result<CellId, S3Fail> {
    let mut headers = HeaderMap::new();
    let conditional = match ctx.parts.headers.get(http::header::IF_MATCH) {
        Some(v) if ctx.parts.method == Method::DELETE => {
            let etag = v.to_str().map_err(|_| bad("If-Match is not ASCII"))?;
            let v = HeaderValue::from_str(etag.trim().trim_matches('"'))
                .map_err(|_| bad("bad If-Match"))?;
            headers.insert(HEADER_IF_S3_MATCH, v);
            true
        }
        _ => false,
    };
    let req = CellRequest {
        op: Op::Delete,
        method: Method::DELETE,
        path_and_query: cell_path(bucket, key),
        headers,
        body: Bytes::new(),
    };
    match send(ctx, bucket, key, &req).await {
        Ok((cell, _)) => Ok(cell),
        Err((cell, e)) if e.err.code == S3Code::NoSuchKey && !conditional => Ok(cell),
        Err((_, e)) => Err(e),
    }
}

pub async fn delete_many(ctx: &Ctx<'_>, bucket: &str, body: Body) -> S3Result {
    require_recorded(ctx, bucket).await?;
    let (raw, _) = read_verified(ctx, body, xml::MAX_DELETE_BODY as u64).await?;
    let request = xml::parse_delete(&raw)?;
    let mut result = xml::DeleteResult::default();
    let app: Arc<S3App> = ctx.app.clone();
    for chunk in request.objects.chunks(DELETE_CONCURRENCY) {
        let mut set = JoinSet::new();
        for (i, obj) in chunk.iter().enumerate() {
            let (app, topo, bucket, obj) = (
                app.clone(),
                ctx.topo.clone(),
                bucket.to_string(),
                obj.clone(),
            );
            set.spawn(async move {
                (
                    i,
                    obj.clone(),
                    delete_detached(&app, topo, &bucket, &obj).await,
                )
            });
        }
        let mut done = Vec::new();
        while let Some(j) = set.join_next().await {
            match j {
                Ok(r) => done.push(r),
                Err(e) => tracing::error!("failed to join a DeleteObjects task: {e}"),
            }
        }
        done.sort_by_key(|(i, _, _)| *i);
        for (_, obj, outcome) in done {
            match outcome {
                Ok(()) => result.deleted.push(obj),
                Err(e) => result.errors.push(xml::DeleteError {
                    key: obj.key,
                    version_id: obj.version_id,
                    code: e.err.code,
                    message: e.err.message.into_owned(),
                }),
            }
        }
    }
    let mut resp = xml_response(StatusCode::OK, result.to_xml(request.quiet));
    resp.headers_mut()
        .insert(HEADER_CELL, super::all_cells(&ctx.topo));
    Ok(resp)
}

/// One key of a DeleteObjects, on a task of its own.
async fn delete_detached(
    app: &S3App,
    topo: Arc<Topology>,
    bucket: &str,
    obj: &xml::ObjectIdentifier,
) -> Result<(), S3Fail> {
    check_names(bucket, &obj.key)?;
    if obj.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(bad(
            "This bucket is not versioned: the only version id is null",
        ));
    }
    let req = CellRequest {
        op: Op::Delete,
        method: Method::DELETE,
        path_and_query: cell_path(bucket, &obj.key),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let fwd = app.proxy.forward_key(topo, bucket, &obj.key, &req).await;
    match fwd.result {
        Err(e) => Err(S3Fail::from(e)),
        Ok(resp) if resp.status == StatusCode::NOT_FOUND => Ok(()),
        Ok(resp) if resp.status.is_client_error() || resp.status.is_server_error() => Err(
            S3Fail::from(ApiError::from_cell(fwd.cell, resp.status, &resp.body)),
        ),
        Ok(_) => Ok(()),
    }
}

pub async fn copy(ctx: &Ctx<'_>, bucket: &str, key: &str, source: &CopySource) -> S3Result {
    check_names(bucket, key)?;
    check_names(&source.bucket, &source.key)?;
    ctx.authorize(&source.bucket, false)?;
    if source.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(bad(
            "The source bucket is not versioned: the only version id is null",
        ));
    }
    require_recorded(ctx, bucket).await?;
    let headers = &ctx.parts.headers;
    let replace = match headers
        .get("x-amz-metadata-directive")
        .map(|v| v.as_bytes().to_ascii_uppercase())
        .as_deref()
    {
        None | Some(b"COPY") => false,
        Some(b"REPLACE") => true,
        Some(_) => return Err(bad("Unknown metadata directive.")),
    };
    if !replace && bucket == source.bucket && key == source.key {
        return Err(S3Error::with_message(
            S3Code::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        )
        .into());
    }
    let req = CellRequest {
        op: Op::Get,
        method: Method::GET,
        path_and_query: cell_path(&source.bucket, &source.key),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let (src_cell, resp) = match send(ctx, &source.bucket, &source.key, &req).await {
        Ok(r) => r,
        Err((cell, e)) if e.err.code == S3Code::NoSuchKey => {
            let mut e = S3Fail::from(S3Code::NoSuchKey).with_cell(cell);
            e.err.message =
                format!("The specified copy source does not exist: {}", source.key).into();
            return Err(e);
        }
        Err((_, e)) => return Err(e),
    };
    let src = Fetched::parse(resp, true)?;
    let names = [
        "x-amz-copy-source-if-match",
        "x-amz-copy-source-if-none-match",
        "x-amz-copy-source-if-modified-since",
        "x-amz-copy-source-if-unmodified-since",
    ];
    if evaluate(headers, names, src.etag(), src.last_modified) != Precondition::Pass {
        return Err(S3Fail::from(S3Code::PreconditionFailed).with_cell(src_cell));
    }
    let (content_type, mut attrs) = if replace {
        attrs_from_request(headers)?
    } else {
        (
            src.content_type.clone(),
            src.attrs.clone().unwrap_or_default(),
        )
    };
    // The copy's ETag is its MD5: the source's when it has one (a plain
    // single-part ETag), else computed.
    let src_md5 = src
        .attrs
        .as_ref()
        .map(|a| a.etag.clone())
        .filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()));
    attrs.etag = src_md5.unwrap_or_else(|| md5_hex(&src.body));
    attrs.checksum = src.attrs.as_ref().and_then(|a| a.checksum.clone());
    let conditions = put_conditions(headers)?;
    let (cell, put_resp) =
        store(ctx, bucket, key, src.body, content_type, &attrs, conditions).await?;
    let modified = put_resp
        .headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or_else(SystemTime::now);
    let mut resp = xml_response(
        StatusCode::OK,
        xml::copy_object_result(&attrs.etag, modified),
    );
    resp.headers_mut()
        .insert(HEADER_CELL, HeaderValue::from(cell.0));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn ranges() {
        let r = |s: &str, size| parse_range(s, size).map_err(|e| e.err.code);
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-200", 100), Ok(Some((0, 99))));
        assert_eq!(r("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(r("bytes=100-", 100), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=5-1", 100), Err(S3Code::InvalidRange));
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=0-0", 0), Err(S3Code::InvalidRange));
    }

    #[test]
    fn read_conditions() {
        let names = [
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
        ];
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let before = httpdate::fmt_http_date(t - Duration::from_secs(10));
        let after = httpdate::fmt_http_date(t + Duration::from_secs(10));
        let ev = |pairs: &[(&str, &str)]| evaluate(&hm(pairs), names, "abc", t);
        assert_eq!(ev(&[]), Precondition::Pass);
        assert_eq!(ev(&[("if-match", "\"abc\"")]), Precondition::Pass);
        assert_eq!(ev(&[("if-match", "\"x\", \"abc\"")]), Precondition::Pass);
        assert_eq!(ev(&[("if-match", "\"x\"")]), Precondition::Failed);
        assert_eq!(
            ev(&[("if-none-match", "\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(ev(&[("if-none-match", "*")]), Precondition::NotModified);
        assert_eq!(
            ev(&[("if-modified-since", &after)]),
            Precondition::NotModified
        );
        assert_eq!(ev(&[("if-modified-since", &before)]), Precondition::Pass);
        assert_eq!(
            ev(&[("if-unmodified-since", &before)]),
            Precondition::Failed
        );
        // If-Match wins over If-Unmodified-Since; If-None-Match over If-Modified-Since.
        assert_eq!(
            ev(&[("if-match", "\"abc\""), ("if-unmodified-since", &before)]),
            Precondition::Pass
        );
        assert_eq!(
            ev(&[("if-none-match", "\"x\""), ("if-modified-since", &after)]),
            Precondition::Pass
        );
    }

    #[test]
    fn attributes_from_headers() {
        let h = hm(&[
            ("content-type", "text/plain"),
            ("content-encoding", "aws-chunked"),
            ("cache-control", "no-cache"),
            ("x-amz-meta-color", "blue"),
            ("x-amz-meta-b", "1"),
            ("x-amz-meta-b", "2"),
        ]);
        let (ct, a) = attrs_from_request(&h).unwrap();
        assert_eq!(ct.as_deref(), Some("text/plain"));
        assert_eq!(
            a.headers,
            vec![("cache-control".to_string(), "no-cache".to_string())]
        );
        assert_eq!(
            a.user,
            vec![
                ("b".to_string(), "1,2".to_string()),
                ("color".to_string(), "blue".to_string())
            ]
        );
        let h = hm(&[("content-encoding", "aws-chunked,gzip")]);
        assert_eq!(
            attrs_from_request(&h).unwrap().1.headers,
            vec![("content-encoding".to_string(), "gzip".to_string())]
        );
        let big = "v".repeat(MAX_S3_USER_METADATA);
        let h = hm(&[("x-amz-meta-k", &big)]);
        assert_eq!(
            attrs_from_request(&h).unwrap_err().err.code,
            S3Code::MetadataTooLarge
        );
    }

    #[test]
    fn put_conditions_map_to_the_cell() {
        let c = put_conditions(&hm(&[("if-none-match", "*")])).unwrap();
        assert_eq!(c.get("if-none-match").unwrap(), "*");
        let c = put_conditions(&hm(&[("if-match", "\"abc\"")])).unwrap();
        assert_eq!(c.get(HEADER_IF_S3_MATCH).unwrap(), "abc");
        assert!(c.get("if-match").is_none());
        assert!(put_conditions(&hm(&[("if-match", "*")])).is_err());
        assert!(put_conditions(&hm(&[("if-none-match", "\"x\"")])).is_err());
    }

    #[test]
    fn keys_reach_the_cell_exactly() {
        assert_eq!(
            cell_path("b", "a b/+%/ü"),
            "/v1/buckets/b/objects/a%20b%2F%2B%25%2F%C3%BC"
        );
    }
}
