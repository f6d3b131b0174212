//! Whole-system tests of the operator workflows (issue 4), on real processes
//! (`support::ControlPlane`, a `LocalCluster`): a control cell (3 ×
//! `cellkv-cell` holding the cell map and jobs), data cells of 3 replicas,
//! one `cellkv-control` and one `cellkv-router` that watches the map. Every
//! test runs a client load through the router (`support::RouterLoad`) that
//! writes and reads keys on every cell and records each acknowledged write;
//! after the operation it checks: no acknowledged write lost, no stale read,
//! no error for a key outside the moving ranges, and it prints the per-batch
//! write pause the job measured.
//!
//! Build the binaries first: `cargo build --release --bins`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use client::http::{Client, ClientConfig};
use cluster::cell_proc::bin_path;
use cluster::control_proc::ControlServerOptions;
use cluster::local::LocalClusterOptions;
use cluster::process::free_port;
use common::{CellId, CellMap, CellState, ReplicaSpec};
use http::Method;
use serde_json::{json, Value};

const BUCKET: &str = "ops";
/// An operator test: start-up, load, a whole migration, checks.
const OPS_TEST_LIMIT: Duration = Duration::from_secs(240);

/// `n` data cells, the control plane and the router, all ready. The control
/// server keeps its own defaults (a 10 s job lease) but for `control`'s
/// copy settings.
async fn start_ops(dir: &Path, n: usize, mut control: ControlServerOptions) -> ControlPlane {
    control.config.lease_ttl = secs(10);
    ControlPlane::start(
        dir,
        LocalClusterOptions {
            cells: n,
            control,
            ..LocalClusterOptions::default()
        },
    )
    .await
}

/// The control server's copy settings: batches of at most `batch_max_bytes`.
fn batches_of(batch_max_bytes: u64) -> ControlServerOptions {
    let mut o = ControlServerOptions::default();
    o.config.batch_max_bytes = batch_max_bytes;
    o
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_a_cell_to_empty_and_remove_it_under_load() {
    let dir = TestDir::new("ops-drain");
    bounded_by(OPS_TEST_LIMIT, async {
        let ops = start_ops(dir.path(), 3, batches_of(65536)).await;
        let mut load = ops.start_load(BUCKET, 6, 150);
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
            .verify(&ops.router_url(), &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");

        ops.admin(Method::DELETE, "/v1/cells/3", None).await;
        let map = ops.map().await;
        assert!(map.cell(CellId(3)).is_none());
        // The router follows: keys keep working after removal.
        load.verify(&ops.router_url(), &[]).await;
        let _ = ops.log_tails();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_cell_and_rebalance_onto_it_under_load() {
    let dir = TestDir::new("ops-add");
    bounded_by(OPS_TEST_LIMIT, async {
        let mut ops = start_ops(dir.path(), 2, batches_of(65536)).await;
        let mut load = ops.start_load(BUCKET, 6, 150);
        load.wait_ops(1500, secs(60)).await;

        let spec = ops.add_cell(CellId(3)).await.unwrap();
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
            .verify(&ops.router_url(), &moved_ranges(&before, &map))
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
async fn preload(ops: &ControlPlane, n: usize, size: usize) {
    let client = http_client();
    let auth = ops.auth();
    let value = Bytes::from(vec![b'x'; size]);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, auth, value, base) = (
            client.clone(),
            auth.clone(),
            value.clone(),
            ops.router_url(),
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
        let ops = start_ops(dir.path(), 3, {
            let mut o = batches_of(1048576);
            o.config.bandwidth_bytes_per_sec = 1048576;
            o
        })
        .await;
        preload(&ops, 3000, 4096).await;
        let mut load = ops.start_load(BUCKET, 4, 100);
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
        ops.router().kill().unwrap();
        // ...then the leader of the source cell...
        let src = ops.cell(CellId(3));
        let leader = src.wait_for_leader(secs(10)).await.unwrap();
        src.replica(leader).kill().unwrap();
        // ...and the control server itself.
        ops.control().kill().unwrap();
        tokio::time::sleep(secs(2)).await;
        ops.router().start().unwrap();
        ops.wait_router_ready().await;
        load.router_down.store(false, Ordering::Relaxed);
        ops.control().start().unwrap();
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
            .verify(&ops.router_url(), &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");
        // Every preloaded object survived the move.
        let client = Client::new(ClientConfig::default());
        let auth = ops.auth();
        for i in (0..3000).step_by(7) {
            let r = client
                .request(
                    Method::GET,
                    &obj_url(&ops.router_url(), "preload", &format!("p{i}")),
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
        let ops = start_ops(dir.path(), 2, ControlServerOptions::default()).await;
        let mut load = ops.start_load(BUCKET, 4, 100);
        load.wait_ops(500, secs(60)).await;

        // Kill a follower of cell 1 for good.
        let cell = ops.cell(CellId(1));
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
            &ops.dir().join("cell1-node4"),
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
        let (checked, inside) = load.verify(&ops.router_url(), &[]).await;
        assert_eq!(inside, 0);
        eprintln!("verified {checked} acknowledged keys");
        // The new replica holds the data: its health shows it applied the log.
        let (_, h): (u16, Value) = http_client()
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

/// Status of a GET through the router and its error code (if any).
async fn router_get(ops: &ControlPlane, bucket: &str, key: &str) -> (u16, String) {
    let client = Client::new(ClientConfig::default());
    let auth = ops.auth();
    match client
        .request(
            Method::GET,
            &obj_url(&ops.router_url(), bucket, key),
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
        let ops = start_ops(dir.path(), 3, batches_of(65536)).await;
        preload(&ops, 600, 1024).await;

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
        assert_eq!(bad.code(), 2, "wrong token exit code");
        assert!(bad.stderr.contains("unauthorized") && bad.stderr.contains("CELLKV_ADMIN_TOKEN"));
        let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
        let down = ops.ctl(&["--url", &nowhere, "status"]).await;
        assert_eq!(down.code(), 2, "unreachable server exit code");
        assert!(down.stderr.contains("cannot reach"), "{}", down.stderr);

        // isolate: the router fails cell 2's keys fast; restore brings them back.
        let map = ops.map().await;
        let k2 = key_on_cell(&map, BUCKET, CellId(2));
        let k1 = key_on_cell(&map, BUCKET, CellId(1));
        ops.ctl_ok(&["cell", "isolate", "2"]).await;
        assert_eq!(
            ops.map().await.cell(CellId(2)).unwrap().state,
            CellState::Isolated
        );
        must_eventually(secs(5), "the router isolates cell 2", || async {
            let (s, code) = router_get(&ops, BUCKET, &k2).await;
            (s == 503 && code == "cell_unavailable").then_some(())
        })
        .await;
        // ...and only cell 2: a key of cell 1 still answers (404: never written).
        assert_eq!(router_get(&ops, BUCKET, &k1).await.0, 404);
        ops.ctl_ok(&["cell", "restore", "2"]).await;
        must_eventually(secs(5), "the router restores cell 2", || async {
            (router_get(&ops, BUCKET, &k2).await.0 == 404).then_some(())
        })
        .await;

        let mut load = ops.start_load(BUCKET, 4, 100);
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
        assert_eq!(refused.code(), 1);
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
        assert_eq!(drained.code(), 0, "{}", drained.stderr);
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
            .verify(&ops.router_url(), &moved_ranges(&before, &map))
            .await;
        eprintln!("verified {checked} acknowledged keys; {inside} errors inside moving ranges");
    })
    .await;
}
