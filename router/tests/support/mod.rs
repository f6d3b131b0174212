//! Test support: fake cell replicas (the cell API subset the router uses, plus
//! `/health`) written with axum on `127.0.0.1:0`, a router started in-process
//! through `router::run`, and a small HTTP client. Helpers that panic start
//! with `must_`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::wire::{ListEntry, ListPage};
use common::{
    CellId, CellMap, CellSpec, CellState, ErrorBody, ErrorCode, ErrorDetail, LeaderHint, MovedHint,
    NodeId, ReplicaSpec,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::config::{Access, ControlConfig, TokenConfig};
use router::RouterConfig;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub const CELL_TOKEN: &str = "test-router-to-cell-token";
pub const CLIENT_TOKEN: &str = "test-client-token-read-write";
pub const READ_TOKEN: &str = "test-client-token-read-only";

/// One stored object of a fake cell.
#[derive(Clone, Debug)]
pub struct Obj {
    pub value: Bytes,
    pub etag: String,
    pub version: u64,
    pub content_type: Option<String>,
}

/// The data of one fake cell, shared by its replicas.
#[derive(Default)]
pub struct Store {
    pub objects: Mutex<BTreeMap<(String, String), Obj>>,
    next_version: AtomicUsize,
}

/// How a replica answers data requests.
#[derive(Clone, Debug)]
pub enum DataRole {
    Leader,
    /// Answers 421 `not_leader`, with a hint when given.
    NotLeader(Option<(NodeId, String)>),
    /// Answers 503 `no_leader` (an election is under way).
    NoLeader,
}

/// How a leader answers writes.
#[derive(Clone, Copy, Debug)]
pub enum WriteMode {
    Normal,
    /// 504 `timeout`: the write's outcome is unknown.
    Answer504,
    /// Sleeps this long before executing.
    Hang(Duration),
}

/// How a leader refuses object requests (not listings) for ownership reasons.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    Serve,
    /// 421 `moved` naming `owner` (or nobody), as of `epoch`.
    Moved {
        owner: Option<CellId>,
        epoch: u64,
    },
    /// 503 `range_moving` this many more times, then serve.
    RangeMoving(usize),
}

pub struct ReplicaState {
    pub cell: CellId,
    pub node: NodeId,
    pub store: Arc<Store>,
    pub data_role: Mutex<DataRole>,
    /// What `/health` reports: leader with quorum, or follower.
    pub health_leader: AtomicBool,
    pub write_mode: Mutex<WriteMode>,
    pub read_delay: Mutex<Duration>,
    pub refusal: Mutex<Refusal>,
    /// Object requests refused with `moved` or `range_moving`.
    pub refused: AtomicUsize,
    /// Authorized requests on `/v1` (any method), writes, reads.
    pub data_requests: AtomicUsize,
    pub writes: AtomicUsize,
    pub reads: AtomicUsize,
}

/// One fake replica serving on its own port until killed.
pub struct FakeReplica {
    pub addr: SocketAddr,
    pub state: Arc<ReplicaState>,
    server: Option<JoinHandle<()>>,
}

impl FakeReplica {
    pub async fn must_start(
        cell: CellId,
        node: NodeId,
        store: Arc<Store>,
        leader: bool,
    ) -> FakeReplica {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a fake replica");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(ReplicaState {
            cell,
            node,
            store,
            data_role: Mutex::new(if leader {
                DataRole::Leader
            } else {
                DataRole::NotLeader(None)
            }),
            health_leader: AtomicBool::new(leader),
            write_mode: Mutex::new(WriteMode::Normal),
            read_delay: Mutex::new(Duration::ZERO),
            refusal: Mutex::new(Refusal::Serve),
            refused: AtomicUsize::new(0),
            data_requests: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        let app = fake_cell_router(state.clone());
        // Accept by hand and keep every connection in one JoinSet, so that
        // aborting this task closes the listener and every connection.
        let server = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        FakeReplica {
            addr,
            state,
            server: Some(server),
        }
    }

    pub fn api_addr(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the listener and every open connection: the replica is dead.
    pub async fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
    }

    pub fn spec(&self) -> ReplicaSpec {
        ReplicaSpec {
            node_id: self.state.node,
            api_addr: self.api_addr(),
            control_addr: None,
        }
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// A fake cell: replicas sharing one store; replica 0 leads.
pub struct FakeCell {
    pub id: CellId,
    pub store: Arc<Store>,
    pub replicas: Vec<FakeReplica>,
}

impl FakeCell {
    pub async fn must_start(id: u32, replicas: usize) -> FakeCell {
        let store = Arc::new(Store::default());
        let mut rs = Vec::new();
        for n in 0..replicas {
            rs.push(
                FakeReplica::must_start(CellId(id), NodeId(n as u64 + 1), store.clone(), n == 0)
                    .await,
            );
        }
        FakeCell {
            id: CellId(id),
            store,
            replicas: rs,
        }
    }

    pub fn spec(&self) -> CellSpec {
        CellSpec {
            id: self.id,
            weight: 1,
            replicas: self.replicas.iter().map(FakeReplica::spec).collect(),
            state: CellState::Active,
        }
    }

    pub fn keys(&self) -> Vec<(String, String)> {
        self.store.objects.lock().unwrap().keys().cloned().collect()
    }

    /// Stores `value` under `(bucket, key)` directly (no router involved).
    pub fn put_raw(&self, bucket: &str, key: &str, value: &[u8]) {
        let version = self.store.next_version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
        self.store.objects.lock().unwrap().insert(
            (bucket.to_string(), key.to_string()),
            Obj {
                value: Bytes::copy_from_slice(value),
                etag: format!("{}-{version}", self.id),
                version,
                content_type: Some("application/json".into()),
            },
        );
    }

    /// As a control cell: stores `map` where routers poll it.
    pub fn set_map(&self, map: &CellMap) {
        self.put_raw(
            "cellkv-control",
            "cell-map",
            &serde_json::to_vec(map).expect("encode the map"),
        );
    }

    /// Makes every replica refuse object requests as `r`.
    pub fn refuse(&self, r: Refusal) {
        for rep in &self.replicas {
            *rep.state.refusal.lock().unwrap() = r;
        }
    }

    pub fn refused(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| r.state.refused.load(Ordering::SeqCst))
            .sum()
    }

    pub fn writes(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| r.state.writes.load(Ordering::SeqCst))
            .sum()
    }

    pub fn data_requests(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| r.state.data_requests.load(Ordering::SeqCst))
            .sum()
    }
}

/// A cell spec whose only replica refuses connections (a bound, then closed port).
pub async fn dead_cell_spec(id: u32) -> CellSpec {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    CellSpec {
        id: CellId(id),
        weight: 1,
        replicas: vec![ReplicaSpec {
            node_id: NodeId(1),
            api_addr: addr.to_string(),
            control_addr: None,
        }],
        state: CellState::Active,
    }
}

fn fake_cell_router(state: Arc<ReplicaState>) -> Router {
    Router::new()
        .route(
            "/v1/buckets/{bucket}/objects/{*key}",
            get(get_object)
                .head(head_object)
                .put(put_object)
                .delete(delete_object),
        )
        .route("/v1/buckets/{bucket}/objects", get(list_objects))
        .route("/health", get(health))
        .with_state(state)
}

fn error(s: &ReplicaState, code: ErrorCode, message: &str, leader: Option<LeaderHint>) -> Response {
    error_with(s, code, message, leader, None)
}

fn error_with(
    s: &ReplicaState,
    code: ErrorCode,
    message: &str,
    leader: Option<LeaderHint>,
    moved: Option<MovedHint>,
) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    let mut resp = (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                cell: Some(s.cell),
                leader: leader.clone(),
                moved: moved.clone(),
            },
        }),
    )
        .into_response();
    // HEAD answers lose their body: the code (and a moved owner) travel in headers too.
    resp.headers_mut().insert(
        "x-cellkv-error-code",
        HeaderValue::from_static(code.as_str()),
    );
    if let Some(owner) = moved.and_then(|m| m.owner) {
        resp.headers_mut()
            .insert("x-cellkv-moved-owner", HeaderValue::from(owner.0));
    }
    if let Some(l) = leader {
        resp.headers_mut().insert(
            "x-cellkv-leader",
            HeaderValue::from_str(&l.api_addr).unwrap(),
        );
    }
    resp.headers_mut()
        .insert("x-cellkv-cell", HeaderValue::from(s.cell.0));
    resp
}

/// `gate` plus the ownership check of object requests.
fn object_gate(s: &ReplicaState, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = gate(s, headers) {
        return Some(r);
    }
    let mut refusal = s.refusal.lock().unwrap();
    let current = *refusal;
    match current {
        Refusal::Serve => None,
        Refusal::Moved { owner, epoch } => {
            s.refused.fetch_add(1, Ordering::SeqCst);
            Some(error_with(
                s,
                ErrorCode::Moved,
                "the key's range has moved",
                None,
                Some(MovedHint { owner, epoch }),
            ))
        }
        Refusal::RangeMoving(0) => None,
        Refusal::RangeMoving(n) => {
            *refusal = Refusal::RangeMoving(n - 1);
            s.refused.fetch_add(1, Ordering::SeqCst);
            Some(error(
                s,
                ErrorCode::RangeMoving,
                "the key's range is moving",
                None,
            ))
        }
    }
}

/// Auth and leadership checks shared by every data handler: the refusal, if any.
fn gate(s: &ReplicaState, headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {CELL_TOKEN}");
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return Some(error(
            s,
            ErrorCode::Unauthorized,
            "invalid bearer token",
            None,
        ));
    }
    s.data_requests.fetch_add(1, Ordering::SeqCst);
    match &*s.data_role.lock().unwrap() {
        DataRole::Leader => None,
        DataRole::NoLeader => Some(error(
            s,
            ErrorCode::NoLeader,
            "the cell has no leader right now",
            None,
        )),
        DataRole::NotLeader(hint) => Some(error(
            s,
            ErrorCode::NotLeader,
            "this replica is not the leader",
            hint.clone()
                .map(|(node_id, api_addr)| LeaderHint { node_id, api_addr }),
        )),
    }
}

fn object_headers(resp: &mut Response, s: &ReplicaState, o: &Obj) {
    let h = resp.headers_mut();
    h.insert(
        "etag",
        HeaderValue::from_str(&format!("\"{}\"", o.etag)).unwrap(),
    );
    h.insert("x-cellkv-version", HeaderValue::from(o.version));
    h.insert("x-cellkv-cell", HeaderValue::from(s.cell.0));
    let ct = o
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    h.insert("content-type", HeaderValue::from_str(&ct).unwrap());
    h.insert(
        "last-modified",
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
}

fn etag_of(v: &HeaderValue) -> String {
    v.to_str().unwrap().trim().trim_matches('"').to_string()
}

async fn read(
    s: Arc<ReplicaState>,
    bucket: String,
    key: String,
    headers: HeaderMap,
    body: bool,
) -> Response {
    if let Some(r) = object_gate(&s, &headers) {
        return r;
    }
    s.reads.fetch_add(1, Ordering::SeqCst);
    let delay = *s.read_delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(o) = s.store.objects.lock().unwrap().get(&(bucket, key)).cloned() else {
        return error(&s, ErrorCode::NotFound, "no such object", None);
    };
    if let Some(inm) = headers.get("if-none-match") {
        if etag_of(inm) == o.etag {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            object_headers(&mut resp, &s, &o);
            return resp;
        }
    }
    let mut resp = if body {
        Body::from(o.value.clone()).into_response()
    } else {
        Body::empty().into_response()
    };
    object_headers(&mut resp, &s, &o);
    resp.headers_mut()
        .insert("content-length", HeaderValue::from(o.value.len()));
    resp
}

async fn get_object(
    State(s): State<Arc<ReplicaState>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read(s, bucket, key, headers, true).await
}

async fn head_object(
    State(s): State<Arc<ReplicaState>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read(s, bucket, key, headers, false).await
}

async fn put_object(
    State(s): State<Arc<ReplicaState>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    value: Bytes,
) -> Response {
    if let Some(r) = object_gate(&s, &headers) {
        return r;
    }
    s.writes.fetch_add(1, Ordering::SeqCst);
    let mode = *s.write_mode.lock().unwrap();
    match mode {
        WriteMode::Normal => {}
        WriteMode::Answer504 => {
            return error(
                &s,
                ErrorCode::Timeout,
                "write not confirmed before the deadline; its outcome is unknown",
                None,
            )
        }
        WriteMode::Hang(d) => tokio::time::sleep(d).await,
    }
    let mut objects = s.store.objects.lock().unwrap();
    let k = (bucket, key);
    let current = objects.get(&k).map(|o| o.etag.clone());
    if headers.get("if-none-match").is_some() && current.is_some() {
        drop(objects);
        return error(
            &s,
            ErrorCode::PreconditionFailed,
            "precondition failed",
            None,
        );
    }
    if let Some(im) = headers.get("if-match") {
        if current.as_deref() != Some(etag_of(im).as_str()) {
            drop(objects);
            return error(
                &s,
                ErrorCode::PreconditionFailed,
                "precondition failed",
                None,
            );
        }
    }
    let version = s.store.next_version.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let o = Obj {
        etag: format!("{}-{version}", s.cell),
        version,
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string()),
        value: value.clone(),
    };
    objects.insert(k, o.clone());
    drop(objects);
    let mut resp =
        Json(serde_json::json!({"etag": o.etag, "version": version, "size": value.len()}))
            .into_response();
    resp.headers_mut().insert(
        "etag",
        HeaderValue::from_str(&format!("\"{}\"", o.etag)).unwrap(),
    );
    resp.headers_mut()
        .insert("x-cellkv-version", HeaderValue::from(version));
    resp
}

async fn delete_object(
    State(s): State<Arc<ReplicaState>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = object_gate(&s, &headers) {
        return r;
    }
    s.writes.fetch_add(1, Ordering::SeqCst);
    let mode = *s.write_mode.lock().unwrap();
    match mode {
        WriteMode::Normal => {}
        WriteMode::Answer504 => return error(&s, ErrorCode::Timeout, "outcome unknown", None),
        WriteMode::Hang(d) => tokio::time::sleep(d).await,
    }
    let removed = s.store.objects.lock().unwrap().remove(&(bucket, key));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(&s, ErrorCode::NotFound, "no such object", None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<usize>,
}

async fn list_objects(
    State(s): State<Arc<ReplicaState>>,
    Path(bucket): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    s.reads.fetch_add(1, Ordering::SeqCst);
    let limit = q.limit.unwrap_or(1000);
    let objects = s.store.objects.lock().unwrap();
    let mut out = Vec::new();
    let mut more = false;
    for ((b, k), o) in objects.iter() {
        if *b != bucket
            || !k.starts_with(&q.prefix)
            || q.start_after.as_ref().is_some_and(|sa| k <= sa)
        {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(ListEntry {
            key: k.clone(),
            size: o.value.len() as u64,
            etag: o.etag.clone(),
            last_modified_ms: 1,
            s3_etag: None,
        });
    }
    let next = if more {
        out.last().map(|e| e.key.clone())
    } else {
        None
    };
    Json(ListPage {
        objects: out,
        next_start_after: next,
    })
    .into_response()
}

async fn health(State(s): State<Arc<ReplicaState>>) -> Response {
    let leader = s.health_leader.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "cell_id": s.cell.0,
        "node_id": s.node.0,
        "ready": true,
        "role": if leader { "leader" } else { "follower" },
        "quorum_reachable": true,
        "disk": {"ok": true},
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// The value of the first line of Prometheus text starting with `line_prefix`.
pub fn metric_value(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A router config for `cells` with a read-write and a read-only token and
/// fast health checks; tests override what they need.
pub fn config(cells: Vec<CellSpec>) -> RouterConfig {
    let mut cfg = RouterConfig {
        cell_api_token: CELL_TOKEN.into(),
        cell_map: CellMap {
            epoch: 1,
            cells,
            ..CellMap::default()
        },
        tokens: vec![
            TokenConfig {
                token: CLIENT_TOKEN.into(),
                name: "writer".into(),
                buckets: vec!["*".into()],
                access: Access::ReadWrite,
                rate_per_sec: 100_000.0,
                burst: 100_000,
            },
            TokenConfig {
                token: READ_TOKEN.into(),
                name: "reader".into(),
                buckets: vec!["photos".into(), "logs-*".into()],
                access: Access::Read,
                rate_per_sec: 100_000.0,
                burst: 100_000,
            },
        ],
        cell_request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        ..RouterConfig::default()
    };
    cfg.breaker.health_interval = Duration::from_millis(100);
    cfg.breaker.health_timeout = Duration::from_millis(100);
    cfg.breaker.open_duration = Duration::from_millis(500);
    cfg
}

/// `cfg` watching the map in `control` (a fake cell: `CELL_TOKEN` is its token).
pub fn with_control(mut cfg: RouterConfig, control: &FakeCell, poll: Duration) -> RouterConfig {
    cfg.control = Some(ControlConfig {
        endpoints: control.replicas.iter().map(FakeReplica::api_addr).collect(),
        token: CELL_TOKEN.into(),
        poll_interval: poll,
        request_timeout: Duration::from_millis(300),
        cache_file: None,
    });
    cfg
}

/// The first `n` keys `key-{i}` `map` routes to `cell`.
pub fn keys_routed(map: &CellMap, bucket: &str, cell: u32, n: usize) -> Vec<String> {
    let t = map.routing().expect("routing table");
    (0..)
        .map(|i| format!("key-{i}"))
        .filter(|k| t.cell_for(bucket, k) == CellId(cell))
        .take(n)
        .collect()
}

/// A router running in this process on an ephemeral port.
pub struct TestRouter {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), router::RouterError>>>,
}

impl TestRouter {
    pub async fn must_start(cfg: RouterConfig) -> TestRouter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the router");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(router::run(cfg, listener, None, async move {
            let _ = rx.await;
        }));
        let r = TestRouter {
            addr,
            stop: Some(tx),
            task: Some(task),
        };
        r.must_wait_for(
            "the router to answer /healthz",
            |s, _| s == StatusCode::OK,
            "/healthz",
        )
        .await;
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Polls `path` until `pred(status, json body)` holds, up to 5 s.
    pub async fn must_wait_for(
        &self,
        what: &str,
        pred: impl Fn(StatusCode, &serde_json::Value) -> bool,
        path: &str,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(r) = try_send(Method::GET, &self.url(path), &[], Bytes::new()).await {
                let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
                if pred(r.status, &v) {
                    return v;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/readyz` reports `cell` with breaker state `breaker`.
    pub async fn must_wait_breaker(&self, cell: u32, breaker: &str) {
        self.must_wait_for(
            &format!("cell {cell} breaker {breaker}"),
            |_, v| {
                v["cells"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["id"] == cell && c["breaker"] == breaker && !c["healthy"].is_null())
            },
            "/readyz",
        )
        .await;
    }

    /// Waits until `/readyz` reports map epoch `epoch`; returns how long it took.
    pub async fn must_wait_epoch(&self, epoch: u64) -> Duration {
        let start = tokio::time::Instant::now();
        self.must_wait_for(
            &format!("map epoch {epoch}"),
            |_, v| v["epoch"] == epoch,
            "/readyz",
        )
        .await;
        start.elapsed()
    }

    pub async fn must_metrics(&self) -> String {
        let r = must_send(Method::GET, &self.url("/metrics"), &[], Bytes::new()).await;
        String::from_utf8(r.body.to_vec()).expect("utf-8 metrics")
    }

    /// Stops the router gracefully and checks it exited cleanly.
    pub async fn must_stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("router stops in time")
                .expect("router task");
            r.expect("router exits cleanly");
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn try_send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client().request(b.body(Full::new(body))?).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn must_send(method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    try_send(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:#}"))
}

pub fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {CLIENT_TOKEN}"))
}

/// Sends a request as the read-write client.
pub async fn must_call(method: Method, url: &str, extra: &[(&str, &str)], body: &[u8]) -> Reply {
    let (k, v) = auth();
    let mut headers = vec![(k, v.as_str())];
    headers.extend_from_slice(extra);
    must_send(method, url, &headers, Bytes::copy_from_slice(body)).await
}

/// The first `n` keys `key-{i}` the ring of `cfg` places on `cell`.
pub fn keys_on(cfg: &RouterConfig, bucket: &str, cell: u32, n: usize) -> Vec<String> {
    let ring = cfg.cell_map.ring().expect("ring");
    (0..)
        .map(|i| format!("key-{i}"))
        .filter(|k| ring.cell_for(bucket, k) == CellId(cell))
        .take(n)
        .collect()
}
