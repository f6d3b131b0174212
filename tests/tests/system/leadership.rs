//! Whole-system tests of leadership transfer under write load (ADR 0009), on
//! real processes: one cell of 3 `cellkv-cell` replicas (with the control
//! plane and a router: `support::ControlPlane`) and writers looping PUTs
//! while leadership moves from replica to replica. Two ways: through the
//! router, with `POST /admin/transfer-leader` on the leader; and through the
//! control server's admin API and `cellkvctl`, while the writers go straight
//! to the cell and follow its `not_leader` hints themselves. Every transfer
//! must land on its first call, on the requested node, with a short write
//! pause; no client write may fail (a followed `not_leader` redirect is not
//! a failure); every acknowledged write must read back with its etag.
//!
//! Build the binaries first: `cargo build --release --bins`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use client::http::Resp;
use cluster::cell_proc::LocalCell;
use cluster::local::LocalClusterOptions;
use common::CellId;
use http::Method;
use serde_json::{json, Value};

const BUCKET: &str = "lead";
/// Concurrent writers, each looping PUTs of fresh keys.
const WRITERS: usize = 6;
/// A transfer (one call) must finish within this.
const TRANSFER_LIMIT: Duration = Duration::from_secs(5);
/// Largest write pause a transfer may report.
const PAUSE_LIMIT_MS: u64 = 1000;
/// Acknowledged writes between two transfers: each leader serves some load.
const WRITES_PER_ROUND: u64 = 150;

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
    Cell(HintFollower),
}

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
            Endpoint::Cell(cell) => cell.send(method, BUCKET, key, body).await,
        }
    }
}

/// Writers looping PUTs of fresh keys until stopped.
struct Load {
    writers: Writers<WriterLog>,
}

impl Load {
    fn start(to: &Endpoint) -> Load {
        let writers = Writers::spawn(WRITERS, |w| {
            let mut to = to.clone();
            async move {
                let mut log = WriterLog::default();
                let mut seq = 0u64;
                while w.running() {
                    seq += 1;
                    let key = format!("w{}-{seq}", w.id);
                    let value = Bytes::from(format!("value of {key}"));
                    match to.send(Method::PUT, &key, value).await {
                        Ok(r) if r.status == 200 => {
                            let etag: Value = r.json().expect("PUT answers JSON");
                            let etag = etag["etag"].as_str().expect("etag").to_owned();
                            log.acked.insert(key, etag);
                            w.progressed();
                        }
                        Ok(r) => log
                            .failures
                            .push(format!("PUT {key}: {} {}", r.status, r.text())),
                        Err(e) => log.failures.push(format!("PUT {key}: {e}")),
                    }
                }
                log
            }
        });
        Load { writers }
    }

    /// Waits until the writers acknowledged `n` more writes.
    async fn must_progress(&self, n: u64) {
        self.writers.must_progress(n, secs(20)).await;
    }

    async fn stop(self) -> Vec<WriterLog> {
        self.writers.stop().await
    }
}

/// Asserts no write failed, then reads every acknowledged write back
/// (linearizable reads) and compares its etag and value. Returns the number checked.
async fn must_read_back_logs(from: &Endpoint, logs: &[WriterLog]) -> usize {
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    assert!(
        failures.is_empty(),
        "{} client writes failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    let all: Vec<Expect> = logs
        .iter()
        .flat_map(|l| {
            l.acked.iter().map(|(k, e)| Expect {
                key: k.clone(),
                etag: e.clone(),
                value: Some(Bytes::from(format!("value of {k}"))),
            })
        })
        .collect();
    let n = all.len();
    let from = from.clone();
    must_read_back(all, WRITERS, move |key| {
        let mut from = from.clone();
        async move {
            from.send(Method::GET, &key, Bytes::new())
                .await
                .unwrap_or_else(|e| panic!("GET {key}: {e}"))
        }
    })
    .await;
    n
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

/// The cluster of both tests: one data cell (id 1) with the control plane and a router.
fn one_cell() -> LocalClusterOptions {
    LocalClusterOptions {
        cells: 1,
        ..LocalClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_under_write_load() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("lead_load");
        let cluster = must_start_cluster(one_cell(), dir.path()).await;
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
        let checked = must_read_back_logs(&router, &logs).await;
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

/// `POST /v1/cells/1/transfer-leader` to node `to` on the control server.
async fn transfer_via_control(setup: &ControlPlane, to: u64) -> (u16, Value) {
    setup
        .admin_try_within(
            secs(30),
            Method::POST,
            "/v1/cells/1/transfer-leader",
            Some(json!({ "to": to })),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_through_the_control_server_and_cellkvctl() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("lead_ctl");
        // The writers go straight to the cell, following its hints themselves.
        let setup = ControlPlane::start(dir.path(), one_cell()).await;
        let (cell, control) = (setup.cell(CellId(1)), setup.control());
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let direct = Endpoint::Cell(HintFollower {
            api: Api::new(cell),
            leader: cell.replica(l).api_url(),
        });
        let load = Load::start(&direct);
        load.must_progress(WRITES_PER_ROUND).await;

        // The admin API.
        let t = (l + 1) % 3;
        let target = cell.replica(t).node_id().0;
        let t0 = Instant::now();
        let (status, v) = transfer_via_control(&setup, target).await;
        let took = t0.elapsed();
        assert_eq!(status, 200, "{v}\ncontrol log:\n{}", control.log_tail(30));
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
        let (status, v) = transfer_via_control(&setup, target).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["changed"], false);

        // cellkvctl, to the next replica.
        let t2 = (t + 1) % 3;
        let target2 = cell.replica(t2).node_id().0;
        let t0 = Instant::now();
        let out = setup
            .ctl(&[
                "replica",
                "transfer-leader",
                "1",
                "--to",
                &target2.to_string(),
            ])
            .await;
        let took = t0.elapsed();
        let stdout = &out.stdout;
        eprintln!("cellkvctl after {took:.1?}: {stdout}");
        assert!(
            out.status.success(),
            "cellkvctl failed: {stdout}{}",
            out.stderr
        );
        assert!(took < TRANSFER_LIMIT, "took {took:?}");
        assert!(
            stdout.contains(&format!("cell 1: leader is node {target2} (writes paused ")),
            "{stdout}"
        );
        assert_eq!(cell.wait_for_leader(secs(5)).await.unwrap(), t2);
        load.must_progress(WRITES_PER_ROUND).await;

        let logs = load.stop().await;
        let checked = must_read_back_logs(&direct, &logs).await;
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
