//! Whole-system tests of leadership transfer under write load (ADR 0009), on
//! real processes: one cell of 3 `cellkv-cell` replicas with writers looping
//! PUTs while leadership moves from replica to replica. Two set-ups: a router
//! in front of the cell and `POST /admin/transfer-leader` on the leader; and
//! a control cell plus `cellkv-control`, whose admin API and `cellkvctl`
//! move leadership while the writers follow the cell's `not_leader` hints
//! themselves. Every transfer must land on its first call, on the requested
//! node, with a short write pause; no client write may fail (a followed
//! `not_leader` redirect is not a failure); every acknowledged write must
//! read back with its etag.
//!
//! Build the binaries first: `cargo build --release --bins`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::http::Resp;
use cluster::cell_proc::{bin_path, CellConfig, CellOptions, LocalCell};
use cluster::control_proc::{ControlConfig, ControlProc, ControlServerOptions};
use cluster::local::{LocalCluster, LocalClusterOptions};
use cluster::process::free_port;
use common::{CellId, CellMap};
use http::Method;
use serde_json::{json, Value};
use support::*;

const BUCKET: &str = "lead";
/// Concurrent writers, each looping PUTs of fresh keys.
const WRITERS: usize = 6;
/// A transfer (one call) must finish within this.
const TRANSFER_LIMIT: Duration = Duration::from_secs(5);
/// Largest write pause a transfer may report.
const PAUSE_LIMIT_MS: u64 = 1000;
/// Acknowledged writes between two transfers: each leader serves some load.
const WRITES_PER_ROUND: u64 = 150;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What one writer saw.
#[derive(Default)]
struct WriterLog {
    /// key → etag of every acknowledged PUT (each key is written once).
    acked: BTreeMap<String, String>,
    /// Every PUT that did not succeed: status or transport error, and body.
    failures: Vec<String>,
}

/// Where the load goes: the router's public API, or straight to a cell's
/// leader, following its `not_leader` hints as a router would.
#[derive(Clone)]
enum Endpoint {
    Router(PublicApi),
    Cell { api: Api, leader: String },
}

/// Most `not_leader` hops of one request (hints going in circles fail it).
const MAX_HOPS: usize = 4;

impl Endpoint {
    /// One request for `key`. A cell's 421 `not_leader` naming a leader is
    /// followed (the write provably did not execute); any other answer is
    /// returned as it is.
    async fn send(&mut self, method: Method, key: &str, body: Bytes) -> Result<Resp, String> {
        match self {
            Endpoint::Router(api) => api
                .try_send(method, &obj_path(BUCKET, key), &[], body)
                .await
                .map_err(|e| e.to_string()),
            Endpoint::Cell { api, leader } => {
                for _ in 0..MAX_HOPS {
                    let url = obj_url(leader, BUCKET, key);
                    let auth = [("authorization", api.auth.as_str())];
                    let r = api
                        .client
                        .request(method.clone(), &url, &auth, body.clone())
                        .await
                        .map_err(|e| format!("{url}: {e}"))?;
                    match (r.error_code().as_deref(), r.header("x-cellkv-leader")) {
                        (Some("not_leader"), Some(hint)) => *leader = format!("http://{hint}"),
                        _ => return Ok(r),
                    }
                }
                Err(format!("{key}: more than {MAX_HOPS} not_leader hops"))
            }
        }
    }
}

/// Writers looping PUTs of fresh keys until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    writers: Vec<tokio::task::JoinHandle<WriterLog>>,
}

impl Load {
    fn start(to: &Endpoint) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|w| {
                let (mut to, stop, acked) = (to.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut log = WriterLog::default();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let key = format!("w{w}-{seq}");
                        let value = Bytes::from(format!("value of {key}"));
                        match to.send(Method::PUT, &key, value).await {
                            Ok(r) if r.status == 200 => {
                                let etag: Value = r.json().expect("PUT answers JSON");
                                let etag = etag["etag"].as_str().expect("etag").to_owned();
                                log.acked.insert(key, etag);
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                log.failures
                                    .push(format!("PUT {key}: {} {}", r.status, r.text()))
                            }
                            Err(e) => log.failures.push(format!("PUT {key}: {e}")),
                        }
                    }
                    log
                })
            })
            .collect();
        Load {
            stop,
            acked,
            writers,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the writers acknowledged `n` more writes.
    async fn must_progress(&self, n: u64) {
        let target = self.acked() + n;
        must_eventually(
            secs(20),
            &format!("{n} more writes are acknowledged"),
            || async { (self.acked() >= target).then_some(()) },
        )
        .await;
    }

    async fn stop(self) -> Vec<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for w in self.writers {
            logs.push(w.await.expect("writer task"));
        }
        logs
    }
}

/// Asserts no write failed, then reads every acknowledged write back
/// (linearizable reads) and compares its etag. Returns the number checked.
async fn must_read_back(from: &Endpoint, logs: &[WriterLog]) -> usize {
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    assert!(
        failures.is_empty(),
        "{} client writes failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    let all: Vec<(String, String)> = logs
        .iter()
        .flat_map(|l| l.acked.iter().map(|(k, e)| (k.clone(), e.clone())))
        .collect();
    let mut readers = tokio::task::JoinSet::new();
    for chunk in all.chunks(all.len().div_ceil(WRITERS).max(1)) {
        let (mut from, chunk) = (from.clone(), chunk.to_vec());
        readers.spawn(async move {
            for (key, etag) in chunk {
                let r = from
                    .send(Method::GET, &key, Bytes::new())
                    .await
                    .unwrap_or_else(|e| panic!("GET {key}: {e}"));
                assert_eq!(r.status, 200, "GET {key}: {}", r.text());
                assert_eq!(
                    r.header("etag").map(unquote),
                    Some(etag.as_str()),
                    "{key} reads back with another etag"
                );
                assert_eq!(r.text(), format!("value of {key}"));
            }
        });
    }
    while let Some(r) = readers.join_next().await {
        r.expect("reader task");
    }
    all.len()
}

/// `POST /admin/transfer-leader` with `body` on replica `i`'s control port.
async fn transfer_on(cell: &LocalCell, i: usize, body: Value) -> Resp {
    let url = format!("{}/admin/transfer-leader", cell.replica(i).raft_url());
    let auth = cell.admin_auth();
    cell.client()
        .with_timeout(secs(30))
        .post(
            &url,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Sums `name{labels}` over every replica's `/metrics`.
async fn cell_metric(cell: &LocalCell, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for i in 0..cell.len() {
        sum += metric(&must_metrics(cell, i).await, name, labels);
    }
    sum
}

/// Fails on ERROR lines in the replicas' logs, except openraft's reports of
/// an RPC that outlived its deadline (`timeout after 50ms when AppendEntries`,
/// `... when Vote`): with 6 writers, a router and 3 replicas on 2 cores a
/// heartbeat or a start-up vote can be late under load alone, and openraft
/// retries it.
#[track_caller]
fn assert_cell_logs_clean(cell: &LocalCell) {
    let errors: Vec<String> = cell
        .error_lines()
        .into_iter()
        .filter(|l| !l.contains("timeout after"))
        .collect();
    assert!(errors.is_empty(), "replicas logged errors: {errors:#?}");
}

async fn must_start_one_cell(dir: &Path) -> LocalCluster {
    must_start_cluster(
        LocalClusterOptions {
            cells: 1,
            ..LocalClusterOptions::default()
        },
        dir,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_under_write_load() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("lead_load");
        let cluster = must_start_one_cell(dir.path()).await;
        let cell = cluster.cell(CellId(1));
        let api = PublicApi::new(&cluster);
        let router = Endpoint::Router(api.clone());
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let (f, other) = ((l + 1) % 3, (l + 2) % 3);

        // Refusals, with stable codes.
        let to = |n: usize| json!({"to": cell.replica(n).node_id().0});
        let r = transfer_on(cell, f, to(other)).await;
        assert_api_error(&r, 421, "not_leader", 1);
        assert_eq!(
            r.header("x-cellkv-leader-control"),
            Some(cell.replica(l).raft_addr().to_string().as_str())
        );
        let r = transfer_on(cell, l, to(l)).await;
        assert_api_error(&r, 400, "bad_request", 1);
        let r = transfer_on(cell, l, json!({"to": 9})).await;
        assert_api_error(&r, 400, "bad_request", 1);
        let r = transfer_on(cell, l, json!({"to": 2, "x": 1})).await;
        assert_api_error(&r, 400, "bad_request", 1);
        let r = transfer_on(cell, l, json!({"to": 2, "timeout_ms": 0})).await;
        assert_api_error(&r, 400, "bad_request", 1);

        // Transfers while the writers run: to each follower in turn, twice round.
        let load = Load::start(&router);
        load.must_progress(WRITES_PER_ROUND).await;
        let mut pauses = Vec::new();
        for round in 0..6 {
            let l = cell.wait_for_leader(secs(5)).await.unwrap();
            let t = (l + 1) % 3;
            let target = cell.replica(t).node_id().0;
            let body = json!({"to": target, "timeout_ms": 10_000});
            let t0 = Instant::now();
            let r = if round == 3 {
                // Two at once: the leader was elected a moment ago, so the
                // first waits out its lease while the second is refused.
                let (a, b) = tokio::join!(
                    transfer_on(cell, l, body.clone()),
                    transfer_on(cell, l, body.clone()),
                );
                let (ok, busy) = if a.status == 200 { (a, b) } else { (b, a) };
                assert_api_error(&busy, 412, "precondition_failed", 1);
                assert!(
                    busy.text().contains("another leadership transfer"),
                    "{}",
                    busy.text()
                );
                ok
            } else {
                transfer_on(cell, l, body).await
            };
            let took = t0.elapsed();
            assert_eq!(r.status, 200, "round {round}: {}", r.text());
            let v: Value = r.json().unwrap();
            eprintln!(
                "round {round}: node {} → node {target} in {took:.1?}: {v}",
                cell.replica(l).node_id()
            );
            assert!(took < TRANSFER_LIMIT, "round {round} took {took:?}");
            assert_eq!(v["leader"], target, "{v}");
            assert!(v["attempts"].as_u64().is_some_and(|a| a >= 1), "{v}");
            let pause = v["write_pause_ms"].as_u64().expect("write_pause_ms");
            assert!(
                pause < PAUSE_LIMIT_MS,
                "round {round}: writes paused {pause} ms"
            );
            pauses.push(pause);
            assert_eq!(cell.wait_for_leader(secs(5)).await.unwrap(), t);
            load.must_progress(WRITES_PER_ROUND).await;
        }
        let logs = load.stop().await;
        let checked = must_read_back(&router, &logs).await;
        pauses.sort_unstable();
        eprintln!("{checked} acknowledged writes read back; write pauses (ms, sorted): {pauses:?}");

        let text = api
            .client
            .get(&format!("{}/metrics", api.base), &[])
            .await
            .unwrap()
            .text();
        eprintln!(
            "router retries after not_leader: {}",
            metric(
                &text,
                "cellkv_router_retries_total",
                &[("reason", "not_leader")]
            )
        );
        assert_eq!(
            cell_metric(
                cell,
                "cellkv_cell_leader_transfers_total",
                &[("outcome", "moved")]
            )
            .await,
            6.0
        );
        assert_eq!(
            cell_metric(
                cell,
                "cellkv_cell_leader_transfer_write_pause_seconds_count",
                &[]
            )
            .await,
            6.0
        );
        assert_cluster_logs_clean(&cluster);
        assert_cell_logs_clean(cell);
    })
    .await
}

// ---------------------------------------------------------------------------
// Through the control server and cellkvctl

const CONTROL_ADMIN_TOKEN: &str = "lead-admin-token-0123456789abcdef";
const CONTROL_CELL_TOKEN: &str = "lead-control-cell-token-0123456789";

/// The control-plane set-up: a data cell (id 1), a control cell and a
/// `cellkv-control` whose map holds the data cell with its control
/// addresses. No router: the writers follow the cell's hints themselves.
struct ControlPlane {
    cell: LocalCell,
    _control_cell: LocalCell,
    control: ControlProc,
}

impl ControlPlane {
    async fn must_start(dir: &Path) -> ControlPlane {
        let cell = must_start(CellOptions::default(), &dir.join("cell1")).await;
        let control_cell = must_start(
            CellOptions {
                cell_id: CellId(100),
                config: CellConfig {
                    api_token: CONTROL_CELL_TOKEN.into(),
                    ..CellOptions::default().config
                },
                ..CellOptions::default()
            },
            &dir.join("control-cell"),
        )
        .await;
        let mut spec = cell.cell_spec();
        for r in &mut spec.replicas {
            r.control_addr = cell
                .layout()
                .peer(r.node_id)
                .map(|p| p.raft_addr.to_string());
        }
        let map = CellMap {
            epoch: 1,
            cells: vec![spec],
            ..CellMap::default()
        };
        let control = ControlProc::prepare(
            &bin_path("cellkv-control").unwrap(),
            &ControlServerOptions {
                config: ControlConfig {
                    admin_listen: SocketAddr::from(([127, 0, 0, 1], free_port().unwrap())),
                    admin_token: CONTROL_ADMIN_TOKEN.into(),
                    control_cell: control_cell
                        .layout()
                        .peers
                        .iter()
                        .map(|p| p.api_addr.to_string())
                        .collect(),
                    control_token: CONTROL_CELL_TOKEN.into(),
                    cell_api_token: cell.options().config.api_token.clone(),
                    cell_admin_token: cell.options().config.admin_token.clone(),
                    ..ControlServerOptions::default().config
                },
                ..ControlServerOptions::default()
            },
            Some(&map),
            &dir.join("control"),
        )
        .unwrap();
        control.start().unwrap();
        let setup = ControlPlane {
            cell,
            _control_cell: control_cell,
            control,
        };
        must_eventually(secs(30), "the control server serves its map", || async {
            let r = setup.admin(Method::GET, "/v1/map", None).await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
        setup
    }

    /// `method path` on the control server's admin API.
    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Resp, client::http::HttpError> {
        let auth = format!("Bearer {CONTROL_ADMIN_TOKEN}");
        self.cell
            .client()
            .with_timeout(secs(30))
            .request(
                method,
                &format!("{}{path}", self.control.url()),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body.map(|b| serde_json::to_vec(&b).unwrap())
                    .unwrap_or_default(),
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_through_the_control_server_and_cellkvctl() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("lead_ctl");
        let setup = ControlPlane::must_start(dir.path()).await;
        let (cell, control) = (&setup.cell, &setup.control);
        let url = control.url();
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let direct = Endpoint::Cell {
            api: Api::new(cell),
            leader: cell.replica(l).api_url(),
        };
        let load = Load::start(&direct);
        load.must_progress(WRITES_PER_ROUND).await;

        // The admin API.
        let t = (l + 1) % 3;
        let target = cell.replica(t).node_id().0;
        let t0 = Instant::now();
        let r = setup
            .admin(
                Method::POST,
                "/v1/cells/1/transfer-leader",
                Some(json!({"to": target})),
            )
            .await
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(
            r.status,
            200,
            "{}\ncontrol log:\n{}",
            r.text(),
            control.log_tail(30)
        );
        let v: Value = r.json().unwrap();
        eprintln!("control API: node {target} leads after {took:.1?}: {v}");
        assert!(took < TRANSFER_LIMIT, "took {took:?}");
        assert_eq!(
            (v["leader"].as_u64(), v["changed"].as_bool()),
            (Some(target), Some(true)),
            "{v}"
        );
        assert!(
            v["write_pause_ms"]
                .as_u64()
                .is_some_and(|p| p < PAUSE_LIMIT_MS),
            "{v}"
        );
        assert_eq!(cell.wait_for_leader(secs(5)).await.unwrap(), t);
        load.must_progress(WRITES_PER_ROUND).await;

        // The target already leads: nothing to do.
        let r = setup
            .admin(
                Method::POST,
                "/v1/cells/1/transfer-leader",
                Some(json!({"to": target})),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json::<Value>().unwrap()["changed"], false);

        // cellkvctl, to the next replica.
        let t2 = (t + 1) % 3;
        let target2 = cell.replica(t2).node_id().0;
        let t0 = Instant::now();
        let out = tokio::process::Command::new(bin_path("cellkvctl").unwrap())
            .args([
                "replica",
                "transfer-leader",
                "1",
                "--to",
                &target2.to_string(),
            ])
            .env("CELLKV_CONTROL_URL", &url)
            .env("CELLKV_ADMIN_TOKEN", CONTROL_ADMIN_TOKEN)
            .output()
            .await
            .unwrap();
        let took = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("cellkvctl after {took:.1?}: {stdout}");
        assert!(
            out.status.success(),
            "cellkvctl failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < TRANSFER_LIMIT, "took {took:?}");
        assert!(
            stdout.contains(&format!("cell 1: leader is node {target2} (writes paused ")),
            "{stdout}"
        );
        assert_eq!(cell.wait_for_leader(secs(5)).await.unwrap(), t2);
        load.must_progress(WRITES_PER_ROUND).await;

        let logs = load.stop().await;
        let checked = must_read_back(&direct, &logs).await;
        eprintln!("{checked} acknowledged writes read back");
        assert_no_panics(cell);
        assert_cell_logs_clean(cell);
        let errors = control.error_lines();
        assert!(
            errors.is_empty(),
            "the control server logged errors: {errors:#?}"
        );
    })
    .await
}
