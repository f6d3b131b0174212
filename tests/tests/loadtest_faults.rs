//! The load harness's faults end to end, with the real binaries:
//! - `slow_cell`: `cellkv-loadtest run smoke-slow-cell.toml` starts its own
//!   cluster with latency proxies in front of cell 2, slows it for 5 s, and
//!   must pass with the slowdown visible on cell 2 only;
//! - an existing cluster: `cellkv-local` runs a cluster, `cellkv-loadtest run
//!   smoke-kill-cell.toml --cluster DIR` kills cell 2's replicas by pid and
//!   starts them again from `cluster.json`; the run passes, and stopping
//!   `cellkv-local` afterwards stops the replacements too.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::external::ExternalCluster;
use loadtest::local::ClusterInfo;
use loadtest::process::bin_path;
use serde_json::Value;
use support::{run_loadtest, KillOnDrop};

/// Bound on one harness run (cluster start, ~25 s of load, verification).
const RUN_LIMIT: Duration = Duration::from_secs(100);
/// Bound on `cellkv-local` serving, and on it stopping.
const LOCAL_LIMIT: Duration = Duration::from_secs(60);

/// Kills whatever the cluster.json in `dir` names and is still running
/// (replacements the harness started are not children of cellkv-local).
struct ReapCluster(PathBuf);

impl Drop for ReapCluster {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.0.join("cluster.json")) else {
            return;
        };
        let Ok(info) = serde_json::from_str::<ClusterInfo>(&text) else {
            return;
        };
        let mut procs: Vec<_> = ExternalCluster::router_process(&info).into_iter().collect();
        for c in &info.cells {
            for i in 0..c.replicas.len() {
                procs.extend(ExternalCluster::replica_process(&info, c.id, i));
            }
        }
        for p in procs {
            let _ = p.signal(libc::SIGKILL);
        }
    }
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../config/scenarios/{name}.toml"))
}

fn report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn slo<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["slo"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no SLO {name}: {:#}", report["slo"]))
}

fn healthy_cells(fault: &Value) -> Vec<u64> {
    fault["healthy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["cell"].as_u64().unwrap())
        .collect()
}

/// Keeps the temp dir (for a look after a failure) and panics.
fn fail_keeping(dir: tempfile::TempDir, why: &str) -> ! {
    let kept = dir.keep();
    panic!("{why}; kept {}", kept.display())
}

#[test]
fn smoke_slow_cell_passes_with_the_slowdown_on_the_slowed_cell_only() {
    let dir = tempfile::Builder::new()
        .prefix("cellkv-loadtest-slow-")
        .tempdir()
        .unwrap();
    let out = dir.path().join("out");
    let status = run_loadtest(
        &[
            "run".as_ref(),
            scenario("smoke-slow-cell").as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &dir.path().join("loadtest.log"),
        RUN_LIMIT,
    );
    if status.code() != Some(0) {
        fail_keeping(dir, &format!("expected exit code 0, got {status}"));
    }
    let r = report(&out);
    assert_eq!(r["passed"], true, "{:#}", r["slo"]);
    assert_eq!(r["analysis"]["lost_writes"], 0);
    assert_eq!(slo(&r, "slowdown_applied")["pass"], true);

    let faults = r["analysis"]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1);
    let f = &faults[0];
    assert_eq!(f["window"]["added_latency_ms"], 150.0);
    // The slowed cell is the faulty one; the others are judged healthy.
    assert_eq!(healthy_cells(f), vec![1, 3]);
    assert_eq!(f["faulted"][0]["cell"], 2);
    let added = f["faulted"][0]["added_p50_ms"].as_f64().unwrap();
    assert!(
        added >= 0.8 * 150.0,
        "cell 2's median grew by {added} ms only"
    );
    let healthy_min = r["scenario"]["slo"]["healthy_availability_min"]
        .as_f64()
        .unwrap();
    assert!(f["healthy_availability"].as_f64().unwrap() >= healthy_min);
    // The healthy cells did not get the delay: their p99 stayed far below it.
    for h in f["healthy"].as_array().unwrap() {
        let p99 = h["during"]["p99_ms"].as_f64().unwrap();
        assert!(p99 < 150.0, "healthy cell {} p99 {p99} ms", h["cell"]);
    }

    // The router reached cell 2, and only cell 2, through proxies.
    let info: ClusterInfo =
        serde_json::from_str(&std::fs::read_to_string(out.join("cluster/cluster.json")).unwrap())
            .unwrap();
    for c in &info.cells {
        for rep in &c.replicas {
            assert_eq!(rep.proxy_url.is_some(), c.id.0 == 2, "cell {}", c.id);
        }
    }
}

/// Polls until `dir/cluster.json` exists (cellkv-local writes it once serving).
fn wait_cluster_json(dir: &Path, local: &mut KillOnDrop, log: &Path) -> ClusterInfo {
    let deadline = Instant::now() + LOCAL_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("cluster.json")) {
            return serde_json::from_str(&text).unwrap();
        }
        if let Some(s) = local.0.try_wait().unwrap() {
            panic!(
                "cellkv-local exited ({s}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "cellkv-local not serving after {LOCAL_LIMIT:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pids_of(info: &ClusterInfo, cell: u32) -> Vec<Option<u32>> {
    info.cells
        .iter()
        .find(|c| c.id.0 == cell)
        .unwrap()
        .replicas
        .iter()
        .map(|r| r.pid)
        .collect()
}

#[test]
fn faults_an_existing_cellkv_local_cluster_through_its_cluster_json() {
    let dir = tempfile::Builder::new()
        .prefix("cellkv-loadtest-existing-")
        .tempdir()
        .unwrap();
    let cluster_dir = dir.path().join("cluster");
    let local_log = dir.path().join("cellkv-local.log");
    let log_file = std::fs::File::create(&local_log).unwrap();
    // Dropped in reverse order: cellkv-local first, then whatever is left.
    let _reap = ReapCluster(cluster_dir.clone());
    let mut local = KillOnDrop(
        Command::new(bin_path("cellkv-local").unwrap())
            .arg("--data-dir")
            .arg(&cluster_dir)
            .arg("--cells")
            .arg("3")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let before = wait_cluster_json(&cluster_dir, &mut local, &local_log);
    assert!(
        before.router.command.is_some(),
        "no command line for the router"
    );
    assert!(before.cells[1].replicas[0].command.is_some());

    // slow_cell needs the harness's own proxies: refused, with the reason.
    let refused_log = dir.path().join("refused.log");
    let status = run_loadtest(
        &[
            "run".as_ref(),
            scenario("smoke-slow-cell").as_os_str(),
            "--cluster".as_ref(),
            cluster_dir.as_os_str(),
            "--out".as_ref(),
            dir.path().join("refused").as_os_str(),
        ],
        &refused_log,
        RUN_LIMIT,
    );
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read_to_string(&refused_log).unwrap();
    assert!(
        text.contains("slow_cell") && text.contains("start_local"),
        "{text}"
    );

    // Kill cell 2 for 5 s through cluster.json: by pid, restarted as it ran.
    let out = dir.path().join("out");
    let status = run_loadtest(
        &[
            "run".as_ref(),
            scenario("smoke-kill-cell").as_os_str(),
            "--cluster".as_ref(),
            cluster_dir.join("cluster.json").as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &dir.path().join("loadtest.log"),
        RUN_LIMIT,
    );
    if status.code() != Some(0) {
        drop(local);
        fail_keeping(dir, &format!("expected exit code 0, got {status}"));
    }
    let r = report(&out);
    assert_eq!(r["passed"], true, "{:#}", r["slo"]);
    assert_eq!(r["analysis"]["lost_writes"], 0);
    assert!(r["writes_checked"].as_u64().unwrap() > 0);
    let faults = r["analysis"]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1);
    assert_eq!(healthy_cells(&faults[0]), vec![1, 3]);
    assert!(faults[0]["faulted"][0]["fast_fails"].as_u64().unwrap() > 0);
    // The harness used the existing cluster: it started none of its own.
    assert!(!out.join("cluster").exists());

    // cluster.json names cell 2's replacements, all running; cell 1 untouched.
    let after: ClusterInfo =
        serde_json::from_str(&std::fs::read_to_string(cluster_dir.join("cluster.json")).unwrap())
            .unwrap();
    assert_eq!(pids_of(&after, 1), pids_of(&before, 1));
    assert_eq!(after.router.pid, before.router.pid);
    let (old2, new2) = (pids_of(&before, 2), pids_of(&after, 2));
    for (i, (o, n)) in old2.iter().zip(&new2).enumerate() {
        assert!(
            n.is_some() && n != o,
            "replica {i} of cell 2: {o:?} → {n:?}"
        );
        let p = ExternalCluster::replica_process(&after, common::CellId(2), i).unwrap();
        assert!(p.is_alive(), "replacement {p:?} is not running");
    }
    let replica_log = std::fs::read_to_string(&after.cells[1].replicas[0].log).unwrap();
    assert!(
        replica_log.contains("restart of cell 2 node 1 by cellkv-loadtest"),
        "no restart marker in the replica log"
    );

    // Stopping cellkv-local (SIGTERM: std's Child can only SIGKILL) stops
    // the replacements too, cleanly.
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(local.0.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + LOCAL_LIMIT;
    let status = loop {
        if let Some(s) = local.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "cellkv-local did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&local_log).unwrap_or_default();
    assert!(
        status.success(),
        "cellkv-local exited with {status}:\n{text}"
    );
    for i in 0..new2.len() {
        let p = ExternalCluster::replica_process(&after, common::CellId(2), i).unwrap();
        assert!(!p.is_alive(), "{p:?} survived cellkv-local's stop");
    }
}
