//! Shared pieces of the whole-system tests, one home per job:
//! - here: a temp dir kept when a test fails, a time bound per test, starting
//!   cells and clusters, the cell API ([`Api`]) and the router's public API
//!   ([`PublicApi`]) with their assertions, full-range scans, a Prometheus
//!   text reader, and running our binaries;
//! - [`leader`]: leader lookup, [`LeaderWriter`] (a `CellClient` that keeps a
//!   write going until a leader acknowledges it) and [`HintFollower`];
//! - [`writers`]: [`Writers`] (N writer tasks under load, stop + collect),
//!   [`spawn_cell_writers`] (fresh keys through a cell's leader, every
//!   acknowledgement in [`Acks`]) and [`RouterLoad`] (the control-plane
//!   tests' load through the router, with its final checks);
//! - [`readback`]: every acknowledged write reads back with its etag and value;
//! - [`control`]: [`ControlPlane`], the one control-plane set-up (a
//!   `LocalCluster`: router, control cell, `cellkv-control`, data cells), and
//!   [`run_ctl`] for `cellkvctl`.
//!
//! Processes themselves are `cluster::cell_proc`'s (cells) and
//! `cluster::local`'s (the whole cluster) business.
//!
//! A control-plane test under load takes a few lines:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn drain_under_load() {
//!     let dir = TestDir::new("my-drain");
//!     bounded_by(Duration::from_secs(240), async {
//!         let cp = ControlPlane::start(dir.path(), LocalClusterOptions::default()).await;
//!         let mut load = cp.start_load("my-bucket", 4, 100);
//!         load.wait_ops(500, secs(60)).await;
//!         let before = cp.map().await;
//!         let job = cp.admin(Method::POST, "/v1/cells/3/drain", Some(json!({}))).await;
//!         cp.wait_job(&job_id(&job), secs(120)).await;
//!         load.stop().await;
//!         let moved = moved_ranges(&before, &cp.map().await);
//!         load.verify(&cp.router_url(), &moved).await; // nothing lost, no stale read
//!     })
//!     .await;
//! }
//! ```

#![allow(dead_code)] // Not every helper has a user at every moment.

pub mod control;
pub mod leader;
pub mod readback;
pub mod writers;

pub use control::{
    job_id, job_state, key_on_cell, moved_ranges, must_ctl_json, print_job_summary, ControlPlane,
};
pub use leader::{a_follower, must_leader_url, HintFollower, LeaderWriter};
pub use readback::{assert_acked_etags, assert_acked_present, must_read_back, Expect};
pub use writers::{spawn_cell_writers, Acks, CellLoad, Writers};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use client::http::{Client, ClientConfig, HttpError, Resp};
use cluster::cell_proc::{CellOptions, LocalCell};
use cluster::local::{LocalCluster, LocalClusterOptions};
use common::wire::{ScanItem, ScanPage};
use http::Method;

/// The tests' HTTP client: 10 s per request.
pub fn http_client() -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every test finishes within this, or fails with the replicas' logs.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The bound of a whole-cluster test (router + 3 cells, faults, recovery).
pub const CLUSTER_TEST_LIMIT: Duration = Duration::from_secs(90);
/// Keep every test's directory (replica logs and data) even when it passes.
pub const KEEP_ENV: &str = "CELLKV_KEEP_TEST_DIRS";

/// A temporary directory for one test, kept (and its path printed) if the
/// test panics or `CELLKV_KEEP_TEST_DIRS` is set.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(test: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cellkv-{test}-"))
            .tempdir()
            .expect("create a temp dir");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping test dir {}", d.keep().display());
            }
        }
    }
}

/// Runs a test body with the [`TEST_LIMIT`]. The body stays alive while the
/// timeout panic unwinds, so its `LocalCell` prints the replicas' log tails.
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    bounded_by(TEST_LIMIT, fut).await
}

/// [`bounded`] with another limit.
pub async fn bounded_by<F: Future>(limit: Duration, fut: F) -> F::Output {
    let started = Instant::now();
    tokio::pin!(fut);
    match tokio::time::timeout(limit, &mut fut).await {
        Ok(v) => {
            eprintln!("test body took {:.1?}", started.elapsed());
            v
        }
        Err(_) => panic!("test exceeded its {limit:?} limit"),
    }
}

/// The options every test starts from: the cell's defaults.
pub fn opts() -> CellOptions {
    CellOptions::default()
}

/// Starts a cell and waits until it is ready; panics with context otherwise.
pub async fn must_start(opts: CellOptions, dir: &Path) -> LocalCell {
    match LocalCell::start(opts, dir).await {
        Ok(c) => c,
        Err(e) => panic!("start the cell: {e:#}"),
    }
}

/// Starts a router and its cells and waits until the router serves every
/// cell; panics with context otherwise.
pub async fn must_start_cluster(opts: LocalClusterOptions, dir: &Path) -> LocalCluster {
    let t0 = Instant::now();
    match LocalCluster::start(opts, dir).await {
        Ok(c) => {
            eprintln!(
                "cluster of {} cells serving at {} after {:.1?}",
                c.cells().len(),
                c.router_url(),
                t0.elapsed()
            );
            c
        }
        Err(e) => panic!("start the cluster: {e:#}"),
    }
}

/// Fails if the router logged an ERROR line or any process of the cluster
/// logged a panic.
#[track_caller]
pub fn assert_cluster_logs_clean(cluster: &LocalCluster) {
    let errors = cluster.router().error_lines();
    assert!(errors.is_empty(), "the router logged errors: {errors:#?}");
    assert!(
        !cluster.router().log().contains(" panic"),
        "the router panicked"
    );
    for c in cluster.cells() {
        assert_no_panics(c);
    }
}

/// A client of the router's public API with one client token.
#[derive(Clone)]
pub struct PublicApi {
    pub client: Client,
    /// `http://host:port` of the router.
    pub base: String,
    /// `Bearer <token>`, or `None` to send no `Authorization` header.
    pub auth: Option<String>,
}

impl PublicApi {
    /// The cluster's router with the cluster's client token.
    pub fn new(cluster: &LocalCluster) -> PublicApi {
        PublicApi {
            client: http_client(),
            base: cluster.router_url(),
            auth: Some(cluster.auth()),
        }
    }

    /// The same router and pool with another token (`None`: no header).
    pub fn with_token(&self, token: Option<&str>) -> PublicApi {
        PublicApi {
            auth: token.map(|t| format!("Bearer {t}")),
            ..self.clone()
        }
    }

    /// Sends `method path_and_query` with the token and `headers`.
    pub async fn try_send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, HttpError> {
        let mut h: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        if let Some(a) = &self.auth {
            h.push(("authorization", a.as_str()));
        }
        h.extend_from_slice(headers);
        self.client
            .request(method, &format!("{}{path_and_query}", self.base), &h, body)
            .await
    }

    /// [`try_send`](Self::try_send) that panics on a transport error.
    pub async fn must_send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let m = method.clone();
        self.try_send(method, path_and_query, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{m} {path_and_query}: {e}"))
    }

    /// PUT that must succeed; checks `ETag`, `X-Cellkv-Version` and the JSON body.
    pub async fn must_put(
        &self,
        bucket: &str,
        key: &str,
        value: impl Into<Bytes>,
        extra: &[(&str, &str)],
    ) -> (Stored, Resp) {
        let resp = self
            .must_send(Method::PUT, &obj_path(bucket, key), extra, value)
            .await;
        (Api::must_stored(&resp), resp)
    }
}

/// `/v1/buckets/{bucket}/objects/{key}` (test keys are URL-safe).
pub fn obj_path(bucket: &str, key: &str) -> String {
    format!("/v1/buckets/{bucket}/objects/{key}")
}

/// Polls `f` every 25 ms until it yields `Some`, or panics after `timeout`.
pub async fn must_eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `http://host:port/v1/buckets/{bucket}/objects/{key}` (test keys are URL-safe).
pub fn obj_url(base: &str, bucket: &str, key: &str) -> String {
    format!("{base}/v1/buckets/{bucket}/objects/{key}")
}

/// Scan cursors travel as hex (`after=`).
pub use common::wire::hex;

/// `"abc"` → `abc`.
pub fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Asserts an error response: status, JSON `error.code` and a message.
#[track_caller]
pub fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (status, Some(code)),
        "body: {}",
        resp.text()
    );
    let v: serde_json::Value = resp.json().expect("error body is JSON");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// [`assert_error`] for the cell API, which also names the cell in the
/// `X-Cellkv-Cell` header and in `error.cell`.
#[track_caller]
pub fn assert_api_error(resp: &Resp, status: u16, code: &str, cell: u32) {
    assert_error(resp, status, code);
    assert_eq!(
        resp.header("x-cellkv-cell"),
        Some(cell.to_string().as_str())
    );
    let v: serde_json::Value = resp.json().expect("error body is JSON");
    assert_eq!(v["error"]["cell"], cell, "{v}");
}

/// What a successful PUT acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Unquoted.
    pub etag: String,
    pub version: u64,
}

/// The cell API with the cell's token.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub auth: String,
}

impl Api {
    pub fn new(cell: &LocalCell) -> Api {
        Api {
            client: http_client(),
            auth: cell.api_auth(),
        }
    }

    fn headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![("authorization", self.auth.as_str())];
        h.extend_from_slice(extra);
        h
    }

    pub async fn try_put(
        &self,
        base: &str,
        bucket: &str,
        key: &str,
        value: impl Into<Bytes>,
        extra: &[(&str, &str)],
    ) -> Result<Resp, HttpError> {
        self.client
            .put(&obj_url(base, bucket, key), &self.headers(extra), value)
            .await
    }

    /// Like `try_get` with a query string (`"read=stale"`).
    pub async fn try_get_q(
        &self,
        base: &str,
        bucket: &str,
        key: &str,
        query: &str,
        extra: &[(&str, &str)],
    ) -> Result<Resp, HttpError> {
        let url = format!("{}?{query}", obj_url(base, bucket, key));
        self.client.get(&url, &self.headers(extra)).await
    }

    pub async fn try_get(
        &self,
        base: &str,
        bucket: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> Result<Resp, HttpError> {
        self.client
            .get(&obj_url(base, bucket, key), &self.headers(extra))
            .await
    }

    pub async fn try_head(&self, base: &str, bucket: &str, key: &str) -> Result<Resp, HttpError> {
        self.client
            .head(&obj_url(base, bucket, key), &self.headers(&[]))
            .await
    }

    pub async fn try_delete(
        &self,
        base: &str,
        bucket: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> Result<Resp, HttpError> {
        self.client
            .delete(&obj_url(base, bucket, key), &self.headers(extra))
            .await
    }

    /// `GET` with the token on any path (`/v1/...?...`).
    pub async fn try_get_path(&self, base: &str, path_and_query: &str) -> Result<Resp, HttpError> {
        self.client
            .get(&format!("{base}{path_and_query}"), &self.headers(&[]))
            .await
    }

    /// PUT that must answer 200 with matching `ETag`/`X-Cellkv-Version` headers and JSON.
    #[track_caller]
    pub fn must_stored(resp: &Resp) -> Stored {
        assert_eq!(resp.status, 200, "PUT failed: {}", resp.text());
        let body: serde_json::Value = resp.json().expect("PUT answers JSON");
        let etag = body["etag"].as_str().expect("etag in body").to_owned();
        let version = body["version"].as_u64().expect("version in body");
        assert_eq!(resp.header("etag"), Some(format!("\"{etag}\"").as_str()));
        assert_eq!(
            resp.header("x-cellkv-version"),
            Some(version.to_string().as_str())
        );
        Stored { etag, version }
    }

    pub async fn must_put(
        &self,
        base: &str,
        bucket: &str,
        key: &str,
        value: impl Into<Bytes>,
        extra: &[(&str, &str)],
    ) -> Stored {
        let resp = self
            .try_put(base, bucket, key, value, extra)
            .await
            .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e}"));
        Self::must_stored(&resp)
    }

    /// Every object of the cell in `[0, u64::MAX]`, following cursors, pages of `page_limit`.
    pub async fn try_scan_all(
        &self,
        base: &str,
        stale: bool,
        page_limit: Option<usize>,
    ) -> Result<Vec<ScanItem>> {
        let mut items = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut url = format!("{base}/internal/v1/scan?start=0&end={}", u64::MAX);
            if let Some(a) = &after {
                url.push_str(&format!("&after={}", hex(a)));
            }
            if let Some(l) = page_limit {
                url.push_str(&format!("&limit={l}"));
            }
            if stale {
                url.push_str("&read=stale");
            }
            let resp = self.client.get(&url, &self.headers(&[])).await?;
            if resp.status != 200 {
                bail!("scan {url} answered {}: {}", resp.status, resp.text());
            }
            let page: ScanPage =
                common::wire::decode_objects(&resp.body).context("decode a scan page")?;
            items.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(items),
            }
        }
    }

    pub async fn must_scan_all(&self, base: &str, stale: bool) -> Vec<ScanItem> {
        match self.try_scan_all(base, stale, None).await {
            Ok(v) => v,
            Err(e) => panic!("scan {base}: {e:#}"),
        }
    }
}

/// A scan as a comparable map: (bucket, key) → (etag, value).
pub fn scan_map(items: &[ScanItem]) -> BTreeMap<(String, String), (String, Vec<u8>)> {
    items
        .iter()
        .map(|i| {
            (
                (i.bucket.clone(), i.key.clone()),
                (i.meta.etag.clone(), i.value.clone()),
            )
        })
        .collect()
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (0 when there is none). Reads Prometheus text format.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has_all = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair.split_once('=') == Some((k, &format!("\"{v}\""))))
            });
            has_all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Fails if any replica's log records a panic (the cell logs it, then aborts).
#[track_caller]
pub fn assert_no_panics(cell: &LocalCell) {
    for r in cell.replicas() {
        let log = r.log();
        let panics: Vec<&str> = log.lines().filter(|l| l.contains(" panic")).collect();
        assert!(
            panics.is_empty(),
            "node {} panicked: {panics:?}",
            r.node_id()
        );
    }
}

/// Replica `i`'s `/metrics` text.
pub async fn must_metrics(cell: &LocalCell, i: usize) -> String {
    let url = format!("{}/metrics", cell.replica(i).api_url());
    let resp = cell
        .client()
        .get(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text()
}

/// `/health` field `field` of replica `i` as a number (0 if absent).
pub async fn must_health_u64(cell: &LocalCell, i: usize, field: &str) -> u64 {
    let h = cell
        .health(i)
        .await
        .unwrap_or_else(|e| panic!("health of replica {i}: {e:#}"));
    h[field].as_u64().unwrap_or(0)
}

#[test]
fn metric_reader_sums_matching_series() {
    let text = "# HELP x y\n# TYPE x counter\n\
        x_total{reason=\"a\",cell=\"1\"} 2\n\
        x_total{reason=\"b\",cell=\"1\"} 3\n\
        x_total{reason=\"a\",cell=\"2\"} 4\n\
        y 7\n";
    assert_eq!(metric(text, "x_total", &[("reason", "a")]), 6.0);
    assert_eq!(
        metric(text, "x_total", &[("reason", "a"), ("cell", "1")]),
        2.0
    );
    assert_eq!(metric(text, "x_total", &[]), 9.0);
    assert_eq!(metric(text, "y", &[]), 7.0);
    assert_eq!(metric(text, "z", &[]), 0.0);
}

/// A child process killed (with whatever it started) when dropped, e.g. when
/// a test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns our binary `bin` with `args`, no stdin, stdout and stderr to a
/// fresh `log`.
pub fn spawn_logged<S: AsRef<std::ffi::OsStr>>(bin: &str, args: &[S], log: &Path) -> KillOnDrop {
    let log_file = std::fs::File::create(log).unwrap();
    KillOnDrop(
        Command::new(cluster::process::bin_path(bin).unwrap())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    )
}

/// Runs the `cellkv-loadtest` binary with `args`, its output to `log`, for
/// at most `limit` (then it is killed and the test fails with the output);
/// prints the output and returns the exit status.
pub fn run_loadtest(args: &[&std::ffi::OsStr], log: &Path, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    let mut child = spawn_logged("cellkv-loadtest", args, log);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            panic!(
                "cellkv-loadtest ran over {limit:?}; output:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "cellkv-loadtest {:?} finished in {:.1?} ({status}):\n{}",
        args,
        started.elapsed(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    status
}
