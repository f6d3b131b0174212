//! Whole-system tests of the operator workflows (issue 4), on real processes:
//! a control cell (3 × `cellkv-cell` holding the cell map and jobs), data
//! cells of 3 replicas, one `cellkv-control` and one `cellkv-router` that
//! watches the map. Every test runs a client load through the router that
//! writes and reads keys on every cell and records each acknowledged write;
//! after the operation it checks: no acknowledged write lost, no stale read,
//! no error for a key outside the moving ranges, and it prints the per-batch
//! write pause the job measured.
//!
//! Build the binaries first: `cargo build --release --bins`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::http::{Client, ClientConfig};
use cluster::cell_proc::{bin_path, CellConfig, CellOptions, LocalCell};
use cluster::process::{free_port, ManagedProcess, ProcessSpec};
use cluster::router_proc::{router_config_toml, RouterOptions};
use common::{CellId, CellMap, CellSpec, CellState, HashRange, ReplicaSpec};
use http::Method;
use serde_json::{json, Value};
use support::*;

const ADMIN_TOKEN: &str = "ops-admin-token-0123456789abcdef";
const CLIENT_TOKEN: &str = "local-client-token-0123456789";
const CONTROL_CELL: CellId = CellId(100);
/// The control cell's API token (the control server and routers present it).
const CONTROL_CELL_TOKEN: &str = "ops-control-cell-token-0123456789";
const BUCKET: &str = "ops";
/// An operator test: start-up, load, a whole migration, checks.
const OPS_TEST_LIMIT: Duration = Duration::from_secs(240);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Data cells' options: the local defaults with a fast snapshot cadence
/// so a replaced replica catches up by snapshot.
fn cell_opts(id: u32) -> CellOptions {
    CellOptions {
        cell_id: CellId(id),
        ..CellOptions::default()
    }
}

fn spec_of(cell: &LocalCell) -> CellSpec {
    let mut s = cell.cell_spec();
    for r in &mut s.replicas {
        let p = cell
            .layout()
            .peer(r.node_id)
            .expect("spec replicas come from the layout");
        r.control_addr = Some(p.raft_addr.to_string());
    }
    s
}

/// Starts `bin --config config` in the config file's directory, logging to
/// `<label>.log` there.
fn start_process(label: &str, bin: &str, config: &Path) -> ManagedProcess {
    let dir = config.parent().expect("config files live in a directory");
    let p = ManagedProcess::new(ProcessSpec {
        label: label.into(),
        bin: bin_path(bin).unwrap(),
        args: vec!["--config".into(), config.into()],
        dir: dir.to_owned(),
        log_path: dir.join(format!("{label}.log")),
        env: vec![
            ("RUST_LOG".into(), "info".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
    });
    p.start().unwrap();
    p
}

/// The processes of one operator test.
struct Ops {
    dir: PathBuf,
    /// Kept alive (and killed on drop) with the test.
    _control_cell: LocalCell,
    cells: BTreeMap<CellId, LocalCell>,
    control: ManagedProcess,
    control_url: String,
    router: ManagedProcess,
    router_url: String,
    admin: Client,
}

impl Ops {
    /// Control cell + `n` data cells + control server + router, all ready.
    async fn start(dir: &Path, n: u32, control_extra: &str) -> Ops {
        let control_cell = must_start(
            CellOptions {
                cell_id: CONTROL_CELL,
                config: CellConfig {
                    api_token: CONTROL_CELL_TOKEN.into(),
                    ..CellOptions::default().config
                },
                ..CellOptions::default()
            },
            &dir.join("control-cell"),
        )
        .await;
        let mut cells = BTreeMap::new();
        for id in 1..=n {
            let c = must_start(cell_opts(id), &dir.join(format!("cell{id}"))).await;
            cells.insert(CellId(id), c);
        }
        let map = CellMap {
            epoch: 1,
            cells: cells.values().map(spec_of).collect(),
            ..CellMap::default()
        };
        let map_path = dir.join("initial-map.toml");
        std::fs::write(&map_path, toml::to_string(&map).unwrap()).unwrap();

        let control_port = free_port().unwrap();
        let control_dir = dir.join("control");
        std::fs::create_dir_all(&control_dir).unwrap();
        let control_cfg = control_dir.join("control.toml");
        let endpoints: Vec<String> = control_cell
            .layout()
            .peers
            .iter()
            .map(|p| format!("\"{}\"", p.api_addr))
            .collect();
        let d = CellOptions::default();
        std::fs::write(
            &control_cfg,
            format!(
                "admin_listen = \"127.0.0.1:{control_port}\"\n\
                 admin_token = \"{ADMIN_TOKEN}\"\n\
                 control_cell = [{}]\n\
                 control_token = \"{CONTROL_CELL_TOKEN}\"\n\
                 cell_api_token = \"{}\"\n\
                 cell_admin_token = \"{}\"\n\
                 initial_map = \"{}\"\n{control_extra}",
                endpoints.join(", "),
                d.config.api_token,
                d.config.admin_token,
                map_path.display()
            ),
        )
        .unwrap();
        let control = start_process("control", "cellkv-control", &control_cfg);
        let control_url = format!("http://127.0.0.1:{control_port}");

        let router_port = free_port().unwrap();
        let router_dir = dir.join("router");
        std::fs::create_dir_all(&router_dir).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{router_port}").parse().unwrap();
        let mut router_toml = router_config_toml(&RouterOptions::default(), listen, &map).unwrap();
        router_toml.push_str(&format!(
            "\n[control]\nendpoints = [{}]\ntoken = \"{CONTROL_CELL_TOKEN}\"\npoll_interval = \"200ms\"\ncache_file = \"{}\"\n",
            endpoints.join(", "),
            router_dir.join("map-cache.json").display()
        ));
        let router_cfg = router_dir.join("config.toml");
        std::fs::write(&router_cfg, router_toml).unwrap();
        let router = start_process("router", "cellkv-router", &router_cfg);
        let ops = Ops {
            dir: dir.to_owned(),
            _control_cell: control_cell,
            cells,
            control,
            control_url,
            router,
            router_url: format!("http://127.0.0.1:{router_port}"),
            admin: Client::new(ClientConfig {
                request_timeout: secs(10),
                ..ClientConfig::default()
            }),
        };
        ops.wait_control_ready().await;
        ops.wait_router_ready().await;
        ops
    }

    fn admin_auth() -> String {
        format!("Bearer {ADMIN_TOKEN}")
    }

    /// `method path` on the control server's admin API, JSON in and out.
    async fn admin_try(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = Self::admin_auth();
        let mut h = vec![("authorization", auth.as_str())];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()))
            .unwrap_or_default();
        match self
            .admin
            .request(
                method.clone(),
                &format!("{}{path}", self.control_url),
                &h,
                bytes,
            )
            .await
        {
            Ok(r) => (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            ),
            Err(e) => (0, json!({ "transport": e.to_string() })),
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.admin_try(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {v}\ncontrol log:\n{}",
            self.control.log_tail(40)
        );
        v
    }

    async fn wait_control_ready(&self) {
        let deadline = Instant::now() + secs(30);
        loop {
            let (s, _) = self.admin_try(Method::GET, "/v1/map", None).await;
            if s == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "control server not ready; log:\n{}",
                self.control.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_router_ready(&self) {
        let deadline = Instant::now() + secs(30);
        loop {
            if let Ok(r) = self
                .admin
                .get(&format!("{}/readyz", self.router_url), &[])
                .await
            {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "router not ready; log:\n{}",
                self.router.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn map(&self) -> CellMap {
        serde_json::from_value(self.admin(Method::GET, "/v1/map", None).await).unwrap()
    }

    /// Polls the job until it is done; panics if it fails or takes too long.
    async fn wait_job(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (s, job) = self
                .admin_try(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await;
            if s == 200 {
                match job_state(&job).as_str() {
                    "done" | "completed" | "succeeded" => return job,
                    "failed" | "cancelled" => panic!(
                        "job {id} ended {}: {job}\ncontrol log:\n{}",
                        job_state(&job),
                        self.control.log_tail(60)
                    ),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not done in {limit:?}: {job}\ncontrol log:\n{}",
                self.control.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts a new data cell `id` (not registered anywhere yet).
    async fn start_cell(&mut self, id: u32) -> CellSpec {
        let c = must_start(cell_opts(id), &self.dir.join(format!("cell{id}"))).await;
        let spec = spec_of(&c);
        self.cells.insert(CellId(id), c);
        spec
    }

    fn log_tails(&self) -> String {
        format!(
            "--- control\n{}\n--- router\n{}",
            self.control.log_tail(40),
            self.router.log_tail(40)
        )
    }
}

fn job_state(job: &Value) -> String {
    job.get("state")
        .or_else(|| job.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn job_id(v: &Value) -> String {
    v.get("id")
        .or_else(|| v.get("job").and_then(|j| j.get("id")))
        .or_else(|| v.get("job_id"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no job id in {v}"))
        .to_owned()
}

// ---------------------------------------------------------------------------
// The client load

/// What the load saw for one key.
#[derive(Default, Clone, Debug)]
struct KeyLog {
    /// Etag of the last acknowledged write.
    acked: Option<String>,
    /// Errors answered for this key: (status, code).
    errors: Vec<(u16, String)>,
}

/// Writers and readers through the router. Each worker owns a disjoint set of
/// keys and is their only writer, so a read after an acknowledged write must
/// return exactly that write's etag: anything else is a stale read.
struct Load {
    stop: Arc<AtomicBool>,
    /// Transport errors are expected only while the router is down.
    router_down: Arc<AtomicBool>,
    keys: Arc<Mutex<HashMap<String, KeyLog>>>,
    stale: Arc<Mutex<Vec<String>>>,
    ops: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(router_url: &str, workers: usize, keys_per_worker: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let router_down = Arc::new(AtomicBool::new(false));
        let keys: Arc<Mutex<HashMap<String, KeyLog>>> = Arc::default();
        let stale: Arc<Mutex<Vec<String>>> = Arc::default();
        let ops = Arc::new(AtomicU64::new(0));
        let client = Client::new(ClientConfig {
            request_timeout: secs(10),
            ..ClientConfig::default()
        });
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (stop, router_down, keys, stale, ops, client) = (
                stop.clone(),
                router_down.clone(),
                keys.clone(),
                stale.clone(),
                ops.clone(),
                client.clone(),
            );
            let base = router_url.to_owned();
            tasks.push(tokio::spawn(async move {
                let auth = format!("Bearer {CLIENT_TOKEN}");
                // Records a failed answer for `key`. A transport error counts
                // only while the router is meant to be up; after any failed
                // PUT the key's state is unknown, so its ack is forgotten.
                let failed = |key: &str,
                              r: &Result<client::http::Resp, client::http::HttpError>,
                              was_put: bool| {
                    let mut keys = keys.lock().unwrap();
                    let log = keys.entry(key.to_owned()).or_default();
                    match r {
                        Ok(r) => log
                            .errors
                            .push((r.status, r.error_code().unwrap_or_default())),
                        Err(e) if !router_down.load(Ordering::Relaxed) => {
                            log.errors.push((0, e.to_string()))
                        }
                        Err(_) => {}
                    }
                    if was_put {
                        log.acked = None;
                    }
                };
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("w{w}-k{}", i as usize % keys_per_worker);
                    let url = obj_url(&base, BUCKET, &key);
                    let value = format!("{key}-v{i}");
                    let put = client
                        .request(
                            Method::PUT,
                            &url,
                            &[("authorization", &auth)],
                            Bytes::from(value),
                        )
                        .await;
                    ops.fetch_add(1, Ordering::Relaxed);
                    let want = match &put {
                        Ok(r) if r.status == 200 || r.status == 201 => {
                            let etag = r.header("etag").unwrap_or("").to_owned();
                            keys.lock().unwrap().entry(key.clone()).or_default().acked =
                                Some(etag.clone());
                            etag
                        }
                        _ => {
                            failed(&key, &put, true);
                            if put.is_err() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                    };
                    // Read it back: must be exactly the acknowledged version.
                    let get = client
                        .request(Method::GET, &url, &[("authorization", &auth)], Bytes::new())
                        .await;
                    ops.fetch_add(1, Ordering::Relaxed);
                    match &get {
                        Ok(r) if r.status == 200 => {
                            let got = r.header("etag").unwrap_or("");
                            if got != want {
                                stale
                                    .lock()
                                    .unwrap()
                                    .push(format!("{key}: read {got}, acked {want:?}"));
                            }
                        }
                        _ => {
                            failed(&key, &get, false);
                            if get.is_err() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }));
        }
        Load {
            stop,
            router_down,
            keys,
            stale,
            ops,
            tasks,
        }
    }

    async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
    }

    /// Runs until `n` more operations were done (progress under load).
    async fn wait_ops(&self, n: u64, limit: Duration) {
        let start = self.ops.load(Ordering::Relaxed);
        let deadline = Instant::now() + limit;
        while self.ops.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The final checks: every acknowledged write is there with its etag
    /// (read through the router), no stale read, and no error for a key
    /// whose hash lies outside `moving`.
    async fn verify(&self, router_url: &str, moving: &[HashRange]) -> (usize, usize) {
        let stale = self.stale.lock().unwrap().clone();
        assert!(stale.is_empty(), "stale reads: {stale:?}");
        let keys = self.keys.lock().unwrap().clone();
        let mut outside_errors = Vec::new();
        let mut inside_errors = 0;
        for (k, log) in &keys {
            if log.errors.is_empty() {
                continue;
            }
            let h = common::key_hash(BUCKET, k);
            if moving.iter().any(|r| r.contains(h)) {
                inside_errors += log.errors.len();
            } else {
                outside_errors.push(format!("{k}: {:?}", log.errors));
            }
        }
        assert!(
            outside_errors.is_empty(),
            "errors for keys outside the moving ranges: {outside_errors:?}"
        );
        let client = Client::new(ClientConfig {
            request_timeout: secs(10),
            ..ClientConfig::default()
        });
        let auth = format!("Bearer {CLIENT_TOKEN}");
        let mut checked = 0;
        for (k, log) in &keys {
            let Some(want) = &log.acked else { continue };
            let r = client
                .request(
                    Method::GET,
                    &obj_url(router_url, BUCKET, k),
                    &[("authorization", &auth)],
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "acknowledged {k} lost: {}", r.text());
            assert_eq!(r.header("etag"), Some(want.as_str()), "{k} went back");
            checked += 1;
        }
        assert!(checked > 0, "the load acknowledged nothing");
        (checked, inside_errors)
    }
}

/// The ranges whose owner differs between two maps: what a job moved.
fn moved_ranges(before: &CellMap, after: &CellMap) -> Vec<HashRange> {
    before
        .routing()
        .unwrap()
        .diff(&after.routing().unwrap())
        .into_iter()
        .map(|(r, _, _)| r)
        .collect()
}

fn print_job_summary(what: &str, job: &Value) {
    let p = &job["progress"];
    eprintln!(
        "{what}: ranges {}/{}, keys copied {}, bytes copied {}, write pause max {} ms p99 {} ms, pauses {}",
        p["ranges_done"],
        p["ranges_total"],
        p["keys_copied"],
        p["bytes_copied"],
        job["pause_max_ms"],
        job["pause_p99_ms"],
        job["pauses_ms"]
    );
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_a_cell_to_empty_and_remove_it_under_load() {
    let dir = TestDir::new("ops-drain");
    bounded_by(OPS_TEST_LIMIT, async {
        let ops = Ops::start(dir.path(), 3, "batch_max_bytes = 65536\n").await;
        let mut load = Load::start(&ops.router_url, 6, 150);
        load.wait_ops(1500, secs(60)).await;

        let before = ops.map().await;
        let job = ops
            .admin(Method::POST, "/v1/cells/3/drain", Some(json!({})))
            .await;
        let id = job_id(&job);
        let done = ops.wait_job(&id, secs(120)).await;
        print_job_summary("drain", &done);
        load.wait_ops(500, secs(30)).await;
        load.stop().await;

        let map = ops.map().await;
        let c3 = map
            .cell(CellId(3))
            .expect("cell 3 still listed until removed");
        assert_eq!(c3.state, CellState::Empty, "{map:?}");
        let routing = map.routing().unwrap();
        assert!(routing.ranges_of(CellId(3)).is_empty());
        let (checked, inside) = load
            .verify(&ops.router_url, &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");

        ops.admin(Method::DELETE, "/v1/cells/3", None).await;
        let map = ops.map().await;
        assert!(map.cell(CellId(3)).is_none());
        // The router follows: keys keep working after removal.
        load.verify(&ops.router_url, &[]).await;
        let _ = ops.log_tails();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_cell_and_rebalance_onto_it_under_load() {
    let dir = TestDir::new("ops-add");
    bounded_by(OPS_TEST_LIMIT, async {
        let mut ops = Ops::start(dir.path(), 2, "batch_max_bytes = 65536\n").await;
        let mut load = Load::start(&ops.router_url, 6, 150);
        load.wait_ops(1500, secs(60)).await;

        let spec = ops.start_cell(3).await;
        let before = ops.map().await;
        let job = ops
            .admin(
                Method::POST,
                "/v1/cells",
                Some(json!({ "id": spec.id, "weight": spec.weight, "replicas": spec.replicas })),
            )
            .await;
        let id = job_id(&job);
        let done = ops.wait_job(&id, secs(120)).await;
        print_job_summary("add", &done);
        load.wait_ops(500, secs(30)).await;
        load.stop().await;

        let map = ops.map().await;
        let share = map.routing().unwrap().share(CellId(3));
        let target = map.target_ring().unwrap().share(CellId(3));
        assert!(
            (share - target).abs() < 1e-9 && share > 0.25,
            "cell 3 owns {share}, target {target}"
        );
        let (checked, inside) = load
            .verify(&ops.router_url, &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");
        // The new cell really holds the keys it owns: read one straight from it.
        let routing = map.routing().unwrap();
        let on3 = load
            .keys
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, l)| l.acked.is_some() && routing.cell_for(BUCKET, k) == CellId(3))
            .count();
        assert!(on3 > 0, "no acknowledged key routes to the new cell");
    })
    .await;
}

/// Preloads `n` objects of `size` bytes through the router (so a drain has
/// something to move for a few seconds at a low bandwidth).
async fn preload(router_url: &str, n: usize, size: usize) {
    let client = Client::new(ClientConfig {
        request_timeout: secs(10),
        ..ClientConfig::default()
    });
    let auth = format!("Bearer {CLIENT_TOKEN}");
    let value = Bytes::from(vec![b'x'; size]);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, auth, value, base) = (
            client.clone(),
            auth.clone(),
            value.clone(),
            router_url.to_owned(),
        );
        set.spawn(async move {
            for i in (w..n).step_by(8) {
                let r = client
                    .request(
                        Method::PUT,
                        &obj_url(&base, "preload", &format!("p{i}")),
                        &[("authorization", &auth)],
                        value.clone(),
                    )
                    .await
                    .unwrap();
                assert!(r.is_success(), "preload: {} {}", r.status, r.text());
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_survives_router_control_and_source_replica_kills() {
    let dir = TestDir::new("ops-drain-kills");
    bounded_by(OPS_TEST_LIMIT, async {
        // A slow copy so the kills land in the middle of the job.
        let ops = Ops::start(
            dir.path(),
            3,
            "batch_max_bytes = 1048576\nbandwidth_bytes_per_sec = 1048576\n",
        )
        .await;
        preload(&ops.router_url, 3000, 4096).await;
        let mut load = Load::start(&ops.router_url, 4, 100);
        load.wait_ops(500, secs(60)).await;

        let before = ops.map().await;
        let job = ops
            .admin(Method::POST, "/v1/cells/3/drain", Some(json!({})))
            .await;
        let id = job_id(&job);
        // Wait until it copies, then kill the router...
        must_eventually(secs(30), "the drain copies something", || async {
            let (_, j) = ops
                .admin_try(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await;
            (j["progress"]["bytes_copied"].as_u64().unwrap_or(0) > 0).then_some(())
        })
        .await;
        load.router_down.store(true, Ordering::Relaxed);
        ops.router.kill().unwrap();
        // ...then the leader of the source cell...
        let src = &ops.cells[&CellId(3)];
        let leader = src.wait_for_leader(secs(10)).await.unwrap();
        src.replica(leader).kill().unwrap();
        // ...and the control server itself.
        ops.control.kill().unwrap();
        tokio::time::sleep(secs(2)).await;
        ops.router.start().unwrap();
        ops.wait_router_ready().await;
        load.router_down.store(false, Ordering::Relaxed);
        ops.control.start().unwrap();
        ops.wait_control_ready().await;
        src.replica(leader).start().unwrap();

        let done = ops.wait_job(&id, secs(150)).await;
        print_job_summary("drain with kills", &done);
        load.wait_ops(300, secs(30)).await;
        load.stop().await;
        let map = ops.map().await;
        assert_eq!(map.cell(CellId(3)).unwrap().state, CellState::Empty);
        assert!(map.routing().unwrap().ranges_of(CellId(3)).is_empty());
        let (checked, inside) = load
            .verify(&ops.router_url, &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");
        // Every preloaded object survived the move.
        let client = Client::new(ClientConfig::default());
        let auth = format!("Bearer {CLIENT_TOKEN}");
        for i in (0..3000).step_by(7) {
            let r = client
                .request(
                    Method::GET,
                    &obj_url(&ops.router_url, "preload", &format!("p{i}")),
                    &[("authorization", &auth)],
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "preloaded p{i} lost: {}", r.text());
            assert_eq!(r.body.len(), 4096);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_a_killed_replica_under_load() {
    let dir = TestDir::new("ops-replace");
    bounded_by(OPS_TEST_LIMIT, async {
        let ops = Ops::start(dir.path(), 2, "").await;
        let mut load = Load::start(&ops.router_url, 4, 100);
        load.wait_ops(500, secs(60)).await;

        // Kill a follower of cell 1 for good.
        let cell = &ops.cells[&CellId(1)];
        let leader = cell.wait_for_leader(secs(10)).await.unwrap();
        let victim = (0..cell.len()).find(|&i| i != leader).unwrap();
        let dead = cell.replica(victim).node_id();
        cell.replica(victim).kill().unwrap();

        // A new, empty replica process (node 4) waits to be added.
        let mut layout = cell.layout().clone();
        let loopback = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let new_peer = cluster::cell_proc::Peer {
            node_id: common::NodeId(4),
            api_addr: loopback(free_port().unwrap()),
            raft_addr: loopback(free_port().unwrap()),
        };
        layout.peers.push(new_peer.clone());
        let newbie = cluster::cell_proc::ReplicaProc::prepare(
            &bin_path("cellkv-cell").unwrap(),
            cell.options(),
            &layout,
            common::NodeId(4),
            &ops.dir.join("cell1-node4"),
        )
        .unwrap();
        newbie.start().unwrap();

        let body = serde_json::to_value(ReplicaSpec {
            node_id: common::NodeId(4),
            api_addr: new_peer.api_addr.to_string(),
            control_addr: Some(new_peer.raft_addr.to_string()),
        })
        .unwrap();
        let (status, v) = ops
            .admin_try(
                Method::POST,
                &format!("/v1/cells/1/replicas/{dead}/replace"),
                Some(body),
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "replace answered {status}: {v}\n{}",
            ops.log_tails()
        );
        if let Some(id) = v
            .get("id")
            .or_else(|| v.get("job").and_then(|j| j.get("id")))
        {
            ops.wait_job(id.as_str().unwrap(), secs(60)).await;
        }
        load.wait_ops(500, secs(30)).await;
        load.stop().await;

        let map = ops.map().await;
        let nodes: Vec<u64> = map
            .cell(CellId(1))
            .unwrap()
            .replicas
            .iter()
            .map(|r| r.node_id.0)
            .collect();
        assert!(nodes.contains(&4) && !nodes.contains(&dead.0), "{nodes:?}");
        // The cell never lost availability: no errors at all for any key.
        let (checked, inside) = load.verify(&ops.router_url, &[]).await;
        assert_eq!(inside, 0);
        eprintln!("verified {checked} acknowledged keys");
        // The new replica holds the data: its health shows it applied the log.
        let (_, h): (u16, Value) = ops
            .admin
            .get_json(&format!("http://{}/health", new_peer.api_addr), &[])
            .await
            .unwrap();
        assert!(h["applied_index"].as_u64().unwrap_or(0) > 0, "{h}");
        drop(newbie);
    })
    .await;
}

// ---------------------------------------------------------------------------
// cellkvctl, the operator CLI, against the same processes

/// What one `cellkvctl` run printed.
struct CtlOut {
    code: i32,
    stdout: String,
    stderr: String,
}

impl CtlOut {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "cellkvctl --json printed no JSON ({e}): {}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Ops {
    /// Runs `cellkvctl args` against this control server (URL and token from
    /// the environment, as an operator would set them), at most `limit`.
    async fn ctl_with(&self, env: &[(&str, &str)], args: &[&str], limit: Duration) -> CtlOut {
        let mut cmd = std::process::Command::new(bin_path("cellkvctl").unwrap());
        cmd.args(args)
            .env("CELLKV_CONTROL_URL", &self.control_url)
            .env("CELLKV_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let what = format!("cellkvctl {}", args.join(" "));
        let out = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || cmd.output().unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} ran over {limit:?}"))
        .unwrap();
        let out = CtlOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ {what}\n-> exit {}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        out
    }

    async fn ctl(&self, args: &[&str]) -> CtlOut {
        self.ctl_with(&[], args, secs(30)).await
    }

    /// `cellkvctl args` must succeed.
    async fn ctl_ok(&self, args: &[&str]) -> CtlOut {
        let out = self.ctl(args).await;
        assert_eq!(
            out.code,
            0,
            "cellkvctl {args:?} failed:\n{}{}\ncontrol log:\n{}",
            out.stdout,
            out.stderr,
            self.control.log_tail(30)
        );
        out
    }
}

/// A key of `bucket` that the map routes to `cell`.
fn key_on(map: &CellMap, bucket: &str, cell: CellId) -> String {
    let routing = map.routing().unwrap();
    (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| routing.cell_for(bucket, k) == cell)
        .unwrap()
}

/// Status of a GET through the router and its error code (if any).
async fn router_get(router_url: &str, bucket: &str, key: &str) -> (u16, String) {
    let client = Client::new(ClientConfig::default());
    let auth = format!("Bearer {CLIENT_TOKEN}");
    match client
        .request(
            Method::GET,
            &obj_url(router_url, bucket, key),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
    {
        Ok(r) => (r.status, r.error_code().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The operator's whole workflow through `cellkvctl` (not the admin API):
/// status (table and JSON), clear errors for a wrong token, an unreachable
/// server and removing a cell that still owns keys; isolate and restore
/// with the router following; plan, drain with `--wait` under load, jobs,
/// remove. The load's checks are the same as the other operator tests'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellkvctl_drives_isolate_plan_drain_and_remove() {
    let dir = TestDir::new("ops-ctl");
    bounded_by(OPS_TEST_LIMIT, async {
        let ops = Ops::start(dir.path(), 3, "batch_max_bytes = 65536\n").await;
        preload(&ops.router_url, 600, 1024).await;

        // status: a table with every cell, and the same as JSON.
        let out = ops.ctl_ok(&["status"]).await;
        assert!(out.stdout.contains("CELL") && out.stdout.contains("LEADER"));
        for id in ["1", "2", "3"] {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.starts_with(id) && l.contains("active")),
                "cell {id} missing from:\n{}",
                out.stdout
            );
        }
        let status = ops.ctl_ok(&["--json", "status"]).await.json();
        let cells = status["cells"].as_array().expect("cells");
        assert_eq!(cells.len(), 3, "{status}");
        let share: f64 = cells.iter().map(|c| c["share_pct"].as_f64().unwrap()).sum();
        assert!((share - 100.0).abs() < 0.01, "shares add up to {share}");
        for c in cells {
            assert!(!c["leader"].is_null(), "no leader shown: {c}");
        }

        // Errors say what to do, with distinct exit codes.
        let bad = ops
            .ctl_with(
                &[("CELLKV_ADMIN_TOKEN", "not-the-admin-token")],
                &["status"],
                secs(30),
            )
            .await;
        assert_eq!(bad.code, 2, "wrong token exit code");
        assert!(bad.stderr.contains("unauthorized") && bad.stderr.contains("CELLKV_ADMIN_TOKEN"));
        let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
        let down = ops.ctl(&["--url", &nowhere, "status"]).await;
        assert_eq!(down.code, 2, "unreachable server exit code");
        assert!(down.stderr.contains("cannot reach"), "{}", down.stderr);

        // isolate: the router fails cell 2's keys fast; restore brings them back.
        let map = ops.map().await;
        let k2 = key_on(&map, BUCKET, CellId(2));
        let k1 = key_on(&map, BUCKET, CellId(1));
        ops.ctl_ok(&["cell", "isolate", "2"]).await;
        assert_eq!(
            ops.map().await.cell(CellId(2)).unwrap().state,
            CellState::Isolated
        );
        must_eventually(secs(5), "the router isolates cell 2", || async {
            let (s, code) = router_get(&ops.router_url, BUCKET, &k2).await;
            (s == 503 && code == "cell_unavailable").then_some(())
        })
        .await;
        // ...and only cell 2: a key of cell 1 still answers (404: never written).
        assert_eq!(router_get(&ops.router_url, BUCKET, &k1).await.0, 404);
        ops.ctl_ok(&["cell", "restore", "2"]).await;
        must_eventually(secs(5), "the router restores cell 2", || async {
            (router_get(&ops.router_url, BUCKET, &k2).await.0 == 404).then_some(())
        })
        .await;

        let mut load = Load::start(&ops.router_url, 4, 100);
        load.wait_ops(800, secs(60)).await;

        // plan: what a drain of cell 3 would move, to cells 1 and 2.
        let plan = ops.ctl_ok(&["--json", "plan", "drain", "3"]).await.json();
        assert!(plan["ranges"].as_u64().unwrap() > 0, "{plan}");
        assert!(plan["keys"].as_u64().unwrap() > 0, "{plan}");
        assert!(plan["bytes"].as_u64().unwrap() > 0, "{plan}");
        let to: std::collections::BTreeSet<u64> = plan["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["from"].as_u64(), Some(3), "{p}");
                p["to"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(to, [1, 2].into(), "{plan}");
        let text = ops.ctl_ok(&["plan", "drain", "3"]).await;
        assert!(text.stdout.contains("FROM") && text.stdout.contains("total:"));

        // remove refuses a cell that still owns keys, and says what to do.
        let refused = ops.ctl(&["cell", "remove", "3"]).await;
        assert_eq!(refused.code, 1);
        assert!(
            refused.stderr.contains("drain it first") && refused.stderr.contains("force"),
            "{}",
            refused.stderr
        );

        // drain --wait follows the job to its end with a progress line.
        let before = ops.map().await;
        let drained = ops
            .ctl_with(&[], &["cell", "drain", "3", "--wait"], secs(150))
            .await;
        assert_eq!(drained.code, 0, "{}", drained.stderr);
        assert!(drained.stderr.contains("ranges"), "{}", drained.stderr);
        let map = ops.map().await;
        assert_eq!(map.cell(CellId(3)).unwrap().state, CellState::Empty);

        let jobs = ops.ctl_ok(&["--json", "jobs"]).await.json();
        let job = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["cell"].as_u64() == Some(3))
            .unwrap_or_else(|| panic!("no drain job listed: {jobs}"))
            .clone();
        assert_eq!(job_state(&job), "done", "{job}");
        print_job_summary("drain via cellkvctl", &job);
        let table = ops.ctl_ok(&["jobs"]).await;
        assert!(table.stdout.contains("JOB") && table.stdout.contains("done"));

        ops.ctl_ok(&["cell", "remove", "3"]).await;
        let map: CellMap =
            serde_json::from_value(ops.ctl_ok(&["--json", "map"]).await.json()).unwrap();
        assert!(map.cell(CellId(3)).is_none());

        load.wait_ops(300, secs(30)).await;
        load.stop().await;
        let (checked, inside) = load
            .verify(&ops.router_url, &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");
    })
    .await;
}
