//! `MapWatcher`: keeps the router's cell map current. It polls the map object
//! in the control cell (bucket `cellkv-control`, key `cell-map`) every
//! `poll_interval` — a HEAD, and a GET only when the etag changed — and hands
//! every valid map with a larger epoch to `Proxy::apply`. Polls can also be
//! asked for at once (`RefreshHandle`, after a `moved` answer); they never
//! overlap, so concurrent asks share one poll.
//!
//! ```text
//!  tick / refresh ─▶ HEAD endpoint ─┬ 200, same etag ───▶ done
//!                                   ├ 200, new etag ────▶ GET ─▶ parse, validate ─▶ apply (epoch > current) ─▶ cache file
//!                                   ├ 404 ──────────────▶ done (no map stored yet)
//!                                   ├ 421 not_leader ───▶ the hinted endpoint (only a listed one)
//!                                   └ error / timeout ──▶ next endpoint; all failed: keep the last map
//! ```
//!
//! Static stability: while the control cell is unreachable the router keeps
//! routing with its last map and reports the staleness (log, metrics,
//! `/readyz`). The cache file lets a restarted router start from that map.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::CellMap;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::cell_client::{error_chain, HttpClient};
use crate::config::ControlConfig;
use crate::error::HEADER_LEADER;
use crate::metrics::RouterMetrics;
use crate::proxy::Proxy;
use crate::topology::MapRejected;

/// The control cell bucket and key holding the map (docs/control-plane.md).
pub const CONTROL_BUCKET: &str = "cellkv-control";
pub const MAP_KEY: &str = "cell-map";
/// Largest map object read: a map of thousands of cells is well under 1 MiB.
const MAP_MAX_BYTES: usize = 16 << 20;
/// `not_leader` hops one poll follows on top of trying every endpoint once.
const MAX_LEADER_HOPS: usize = 2;
/// While the control cell stays unreachable, repeat the warning this often.
const STALE_WARN_EVERY: Duration = Duration::from_secs(30);

/// Polls started and completed so far; what `RefreshHandle::refresh` waits on.
#[derive(Clone, Copy, Debug, Default)]
struct PollCount {
    started: u64,
    completed: u64,
}

/// Asks the watcher for a poll now. Cheap to clone.
#[derive(Clone)]
pub struct RefreshHandle {
    wake: Arc<Notify>,
    polls: watch::Receiver<PollCount>,
}

impl RefreshHandle {
    /// Asks for a poll without waiting for it. Asks made while one is
    /// pending coalesce into it.
    pub fn request(&self) {
        self.wake.notify_one();
    }

    /// Asks for a poll and waits until one that started after this call has
    /// completed (whether it found a new map or not). Cancellation-safe.
    pub async fn refresh(&self) {
        let mut polls = self.polls.clone();
        let target = polls.borrow_and_update().started + 1;
        self.wake.notify_one();
        // Err only if the watcher is gone (shutdown): nothing to wait for.
        let _ = polls.wait_for(|p| p.completed >= target).await;
    }
}

/// What `/readyz` shows about the map source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControlStatus {
    /// Milliseconds since the last successful poll; null before the first.
    pub last_success_ms_ago: Option<u64>,
    /// Failed polls since the last successful one.
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct StatusInner {
    last_success: Option<Instant>,
    consecutive_errors: u64,
    last_error: Option<String>,
}

/// Why a poll failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("no control cell endpoint answered: {0}")]
    Unreachable(String),
    #[error("the control cell holds an unusable cell map: {0}")]
    BadMap(String),
}

impl PollError {
    /// The `reason` label of `cellkv_router_map_refresh_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PollError::Unreachable(_) => "unreachable",
            PollError::BadMap(_) => "bad_map",
        }
    }
}

/// What the poll loop remembers between polls.
#[derive(Default)]
struct PollState {
    /// Etag of the last map object read and judged (applied or not newer).
    etag: Option<String>,
    /// Etag and error of a map object refused as unusable (not read again).
    rejected: Option<(String, String)>,
    /// The endpoint to ask first: the last one that answered.
    preferred: usize,
}

/// One control cell answer, as the poll sees it.
enum Answer {
    Found { etag: Option<String>, body: Bytes },
    Missing,
    NotLeader(Option<usize>),
    Failed(String),
}

pub struct MapWatcher {
    cfg: ControlConfig,
    proxy: Arc<Proxy>,
    http: HttpClient,
    metrics: Arc<RouterMetrics>,
    auth: HeaderValue,
    wake: Arc<Notify>,
    polls: watch::Sender<PollCount>,
    /// A std mutex: a few field updates per poll, read by `/readyz`.
    status: Mutex<StatusInner>,
}

impl MapWatcher {
    pub fn new(
        cfg: ControlConfig,
        proxy: Arc<Proxy>,
        metrics: Arc<RouterMetrics>,
    ) -> Arc<MapWatcher> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.token))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
        auth.set_sensitive(true);
        let (polls, _) = watch::channel(PollCount::default());
        Arc::new(MapWatcher {
            http: proxy.http.clone(),
            cfg,
            proxy,
            metrics,
            auth,
            wake: Arc::new(Notify::new()),
            polls,
            status: Mutex::new(StatusInner::default()),
        })
    }

    pub fn handle(&self) -> RefreshHandle {
        RefreshHandle {
            wake: self.wake.clone(),
            polls: self.polls.subscribe(),
        }
    }

    pub fn status(&self) -> ControlStatus {
        let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        ControlStatus {
            last_success_ms_ago: s
                .last_success
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
            consecutive_errors: s.consecutive_errors,
            last_error: s.last_error.clone(),
        }
    }

    /// Polls until `stop` turns true: at once, then every `poll_interval`
    /// after the previous poll ended, and whenever a refresh is asked for.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut st = PollState::default();
        let started = Instant::now();
        let mut next = started;
        let mut last_warn: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = self.wake.notified() => {}
            }
            self.polls.send_modify(|p| p.started += 1);
            let res = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = self.poll_once(&mut st) => r,
            };
            self.polls.send_modify(|p| p.completed += 1);
            self.record(res, started, &mut last_warn);
            next = Instant::now() + self.cfg.poll_interval;
        }
    }

    fn record(
        &self,
        res: Result<(), PollError>,
        started: Instant,
        last_warn: &mut Option<Instant>,
    ) {
        let now = Instant::now();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match res {
            Ok(()) => {
                if s.consecutive_errors > 0 {
                    tracing::info!(
                        epoch = self.proxy.epoch(),
                        failed_polls = s.consecutive_errors,
                        "cell map source reachable again"
                    );
                }
                s.last_success = Some(now);
                s.consecutive_errors = 0;
                s.last_error = None;
                *last_warn = None;
                self.metrics.map_poll_age_seconds.set(0.0);
            }
            Err(e) => {
                self.metrics
                    .map_refresh_errors_total
                    .with_label_values(&[e.reason()])
                    .inc();
                s.consecutive_errors += 1;
                s.last_error = Some(e.to_string());
                let age = now.duration_since(s.last_success.unwrap_or(started));
                self.metrics.map_poll_age_seconds.set(age.as_secs_f64());
                if last_warn.is_none_or(|t| now.duration_since(t) >= STALE_WARN_EVERY) {
                    *last_warn = Some(now);
                    tracing::warn!(
                        epoch = self.proxy.epoch(),
                        since_last_success = ?age,
                        "failed to poll the cell map ({e}); still serving with the last map"
                    );
                }
            }
        }
    }

    /// One poll over the endpoints, starting with the last one that answered.
    async fn poll_once(&self, st: &mut PollState) -> Result<(), PollError> {
        let n = self.cfg.endpoints.len();
        let mut idx = st.preferred % n;
        let mut last = String::from("no endpoint was asked");
        for _ in 0..n + MAX_LEADER_HOPS {
            let head = self.ask(idx, Method::HEAD).await;
            let answer = match head {
                Answer::Found { etag: Some(e), .. } if st.etag.as_deref() == Some(e.as_str()) => {
                    st.preferred = idx;
                    return Ok(());
                }
                Answer::Found { etag: Some(e), .. }
                    if st.rejected.as_ref().is_some_and(|(r, _)| *r == e) =>
                {
                    st.preferred = idx;
                    let why = st
                        .rejected
                        .as_ref()
                        .map(|(_, w)| w.clone())
                        .unwrap_or_default();
                    return Err(PollError::BadMap(why));
                }
                Answer::Found { .. } => self.ask(idx, Method::GET).await,
                other => other,
            };
            match answer {
                Answer::Found { etag, body } => {
                    st.preferred = idx;
                    return self.accept(st, etag, &body).await;
                }
                Answer::Missing => {
                    st.preferred = idx;
                    tracing::debug!("the control cell holds no cell map yet");
                    return Ok(());
                }
                Answer::NotLeader(hint) => {
                    last = format!("{} is not the leader", self.cfg.endpoints[idx]);
                    idx = hint.filter(|&h| h != idx).unwrap_or((idx + 1) % n);
                }
                Answer::Failed(why) => {
                    last = why;
                    idx = (idx + 1) % n;
                }
            }
        }
        Err(PollError::Unreachable(last))
    }

    /// Parses, validates and applies a fetched map; saves it when applied.
    async fn accept(
        &self,
        st: &mut PollState,
        etag: Option<String>,
        body: &[u8],
    ) -> Result<(), PollError> {
        let refuse = |st: &mut PollState, why: String| {
            if let Some(e) = &etag {
                st.rejected = Some((e.clone(), why.clone()));
            }
            tracing::error!(etag = ?etag, "the control cell holds an unusable cell map; keeping epoch {}: {why}", self.proxy.epoch());
            Err(PollError::BadMap(why))
        };
        let map: CellMap = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => return refuse(st, format!("parse JSON: {e}")),
        };
        match self.proxy.apply(map.clone()) {
            Ok(_) => {
                st.etag = etag;
                st.rejected = None;
                if let Some(path) = &self.cfg.cache_file {
                    save_cache(path.clone(), &map).await;
                }
                Ok(())
            }
            Err(MapRejected::NotNewer { offered, current }) => {
                if offered < current {
                    tracing::debug!(
                        offered,
                        current,
                        "the control cell's map is older than ours; ignored"
                    );
                }
                st.etag = etag;
                st.rejected = None;
                Ok(())
            }
            Err(MapRejected::Invalid(e)) => refuse(st, format!("epoch {}: {e}", map.epoch)),
        }
    }

    /// One request for the map object at endpoint `idx`, within `request_timeout`.
    async fn ask(&self, idx: usize, method: Method) -> Answer {
        let ep = &self.cfg.endpoints[idx];
        let uri = format!("http://{ep}/v1/buckets/{CONTROL_BUCKET}/objects/{MAP_KEY}");
        let req = match http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, self.auth.clone())
            .body(Full::new(Bytes::new()))
        {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("build a request to {ep}: {e}")),
        };
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| format!("ask {ep}: {}", error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAP_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("read the map from {ep}: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = match tokio::time::timeout(self.cfg.request_timeout, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Answer::Failed(e),
            Err(_) => {
                return Answer::Failed(format!(
                    "{ep} did not answer within {:?}",
                    self.cfg.request_timeout
                ))
            }
        };
        match parts.status {
            StatusCode::OK => Answer::Found {
                etag: parts
                    .headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
                body,
            },
            StatusCode::NOT_FOUND => Answer::Missing,
            StatusCode::MISDIRECTED_REQUEST => {
                // Only a listed endpoint is ever sent the token.
                let hint = parts
                    .headers
                    .get(HEADER_LEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|a| self.cfg.endpoints.iter().position(|e| e == a));
                Answer::NotLeader(hint)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Failed(format!(
                "{ep} refused control.token ({}); check it matches the control cell's api_token",
                parts.status
            )),
            s => Answer::Failed(format!("{ep} answered {s}")),
        }
    }
}

/// Writes `map` to `path` atomically (temporary file, fsync, rename, fsync
/// of the directory) off the async workers. Failures are logged: the cache
/// only helps a restart, serving never depends on it.
pub async fn save_cache(path: PathBuf, map: &CellMap) {
    let bytes = match serde_json::to_vec_pretty(map) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("failed to encode the cell map for the cache file: {e}");
            return;
        }
    };
    let epoch = map.epoch;
    let shown = path.display().to_string();
    let res = tokio::task::spawn_blocking(move || service::write_file_durably(&path, &bytes)).await;
    match res {
        Ok(Ok(())) => tracing::debug!(epoch, path = %shown, "saved the cell map"),
        Ok(Err(e)) => tracing::warn!(epoch, "failed to save the cell map to {shown}: {e}"),
        Err(e) => tracing::warn!(epoch, "failed to save the cell map to {shown}: {e}"),
    }
}

/// Reads a cache file: `Ok(None)` if there is none, the map if it parses and
/// validates, else an error saying why.
pub fn read_cache(path: &Path) -> Result<Option<CellMap>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let map: CellMap =
        serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))?;
    map.validate()
        .and_then(|()| map.routing().map(|_| ()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(map))
}

/// The map a router starts with: the static one, or the cache file's when
/// that is newer (a router restarted while the control cell is down).
pub fn initial_map(static_map: &CellMap, control: Option<&ControlConfig>) -> CellMap {
    let Some(path) = control.and_then(|c| c.cache_file.as_deref()) else {
        return static_map.clone();
    };
    match read_cache(path) {
        Ok(Some(m)) if m.epoch > static_map.epoch => {
            tracing::info!(
                epoch = m.epoch,
                static_epoch = static_map.epoch,
                path = %path.display(),
                "starting from the cached cell map"
            );
            m
        }
        Ok(Some(m)) => {
            tracing::info!(
                cached_epoch = m.epoch,
                epoch = static_map.epoch,
                "the cached cell map is not newer than the static one; starting from the static map"
            );
            static_map.clone()
        }
        Ok(None) => static_map.clone(),
        Err(e) => {
            tracing::warn!("failed to use the cell map cache: {e}; starting from the static map");
            static_map.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use common::{CellId, CellSpec, CellState, NodeId, ReplicaSpec};

    use super::*;

    fn map(epoch: u64) -> CellMap {
        CellMap {
            epoch,
            cells: vec![CellSpec {
                id: CellId(1),
                weight: 1,
                replicas: vec![ReplicaSpec {
                    node_id: NodeId(1),
                    api_addr: "127.0.0.1:7001".into(),
                    control_addr: None,
                }],
                state: CellState::Active,
            }],
            ..CellMap::default()
        }
    }

    #[test]
    fn cache_round_trip_and_initial_map_choice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json");
        assert_eq!(read_cache(&path), Ok(None));
        service::write_file_durably(&path, &serde_json::to_vec(&map(5)).unwrap()).unwrap();
        assert!(!dir.path().join("map.json.tmp").exists());
        assert_eq!(read_cache(&path).unwrap().unwrap().epoch, 5);
        // Overwrite in place.
        service::write_file_durably(&path, &serde_json::to_vec(&map(6)).unwrap()).unwrap();
        assert_eq!(read_cache(&path).unwrap().unwrap().epoch, 6);

        let control = ControlConfig {
            cache_file: Some(path.clone()),
            ..ControlConfig::default()
        };
        assert_eq!(
            initial_map(&map(2), Some(&control)).epoch,
            6,
            "newer cache wins"
        );
        assert_eq!(
            initial_map(&map(9), Some(&control)).epoch,
            9,
            "newer static wins"
        );
        assert_eq!(initial_map(&map(2), None).epoch, 2, "no [control]: static");

        std::fs::write(&path, b"{not json").unwrap();
        assert!(read_cache(&path).is_err());
        assert_eq!(
            initial_map(&map(2), Some(&control)).epoch,
            2,
            "bad cache ignored"
        );
        let mut invalid = map(8);
        invalid.cells.clear();
        std::fs::write(&path, serde_json::to_vec(&invalid).unwrap()).unwrap();
        assert!(read_cache(&path).unwrap_err().contains("no cells"));
    }

    #[tokio::test]
    async fn refresh_waits_for_a_poll_that_started_after_it() {
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(PollCount::default());
        let handle = RefreshHandle {
            wake: wake.clone(),
            polls: rx,
        };
        // A poll is under way when the refresh is asked for: its end is not enough.
        tx.send_modify(|p| p.started = 1);
        let waiter = tokio::spawn({
            let h = handle.clone();
            async move { h.refresh().await }
        });
        tokio::task::yield_now().await;
        tx.send_modify(|p| p.completed = 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // The watcher was woken and runs the next poll.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        tx.send_modify(|p| p.started = 2);
        tx.send_modify(|p| p.completed = 2);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("refresh returns")
            .unwrap();
    }

    #[test]
    fn poll_error_reasons_are_bounded() {
        assert_eq!(PollError::Unreachable("x".into()).reason(), "unreachable");
        assert_eq!(PollError::BadMap("x".into()).reason(), "bad_map");
    }
}
