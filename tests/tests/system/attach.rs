//! `cellkv-local` is the one owner of its cluster's processes: every fault
//! of the `Cluster` trait, asked through its API by an `AttachedCluster`,
//! takes effect on the real processes, `cluster.json` (which only
//! `cellkv-local` writes) follows, and nothing it restarted outlives it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{bounded_by, spawn_logged, TestDir};
use client::http::{Client, ClientConfig};
use cluster::attach::AttachedCluster;
use cluster::local::{read_cluster_json, ClusterInfo};
use cluster::Cluster;
use common::CellId;

/// Bound on `cellkv-local` serving, and on each step.
const LIMIT: Duration = Duration::from_secs(60);

/// `/proc/<pid>/stat`'s state letter, `None` once the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .next()?
        .chars()
        .next()
        .filter(|s| !matches!(s, 'Z' | 'X'))
}

fn pids(info: &ClusterInfo, cell: u32) -> Vec<Option<u32>> {
    info.cells
        .iter()
        .find(|c| c.id.0 == cell)
        .expect("the cell is in cluster.json")
        .replicas
        .iter()
        .map(|r| r.pid)
        .collect()
}

fn on_disk(dir: &Path) -> ClusterInfo {
    read_cluster_json(&dir.join("cluster.json")).unwrap()
}

/// Polls `url` until it answers 200 or `LIMIT` passes.
async fn wait_ok(http: &Client, url: &str) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(r) = http.get(url, &[]).await {
            if r.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} not 200 within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_goes_through_cellkv_local_which_alone_owns_the_processes() {
    let dir = TestDir::new("attach");
    let cluster_dir = dir.path().join("cluster");
    let log = dir.path().join("cellkv-local.log");
    let mut local = spawn_logged(
        "cellkv-local",
        &[
            "--data-dir".as_ref(),
            cluster_dir.as_os_str(),
            "--cells".as_ref(),
            std::ffi::OsStr::new("3"),
        ],
        &log,
    );
    let deadline = Instant::now() + LIMIT;
    while !cluster_dir.join("cluster.json").exists() {
        assert!(
            local.0.try_wait().unwrap().is_none(),
            "cellkv-local exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "cellkv-local not serving");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = AttachedCluster::open(&cluster_dir).unwrap();
    let http = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    });
    let e = c.endpoints();
    assert_eq!(e.cells, [CellId(1), CellId(2), CellId(3)]);
    assert_eq!(e.next_cell_id, CellId(4));
    assert!(e.auth.starts_with("Bearer "));
    let before = on_disk(&cluster_dir);
    assert_eq!(c.warnings().await.unwrap(), Vec::<String>::new());

    // Kill cell 1's leader: its pid is gone and cluster.json says so; a
    // fault asked for is no warning. Restarted, it runs under a new pid.
    let l = bounded_by(LIMIT, c.kill_leader(CellId(1))).await.unwrap();
    let old = pids(&before, 1)[l].unwrap();
    assert_eq!(state(old), None, "the killed leader is gone");
    assert_eq!(pids(&on_disk(&cluster_dir), 1)[l], None);
    assert_eq!(c.warnings().await.unwrap(), Vec::<String>::new());
    bounded_by(LIMIT, c.restart_replica(CellId(1), l))
        .await
        .unwrap();
    let new = pids(&on_disk(&cluster_dir), 1)[l].expect("restarted");
    assert_ne!(new, old);
    assert!(state(new).is_some());
    assert_eq!(c.info().cells[0].replicas[l].pid, Some(new));

    // Freeze cell 2: every replica stopped (state T); thaw: running again.
    bounded_by(LIMIT, c.freeze_cell(CellId(2))).await.unwrap();
    for p in pids(&before, 2) {
        assert_eq!(state(p.unwrap()), Some('T'));
    }
    bounded_by(LIMIT, c.thaw_cell(CellId(2))).await.unwrap();
    for p in pids(&before, 2) {
        assert_ne!(state(p.unwrap()), Some('T'));
    }

    // Kill cell 3, then start it again: new pids, all running.
    bounded_by(LIMIT, c.kill_cell(CellId(3))).await.unwrap();
    assert_eq!(pids(&on_disk(&cluster_dir), 3), [None, None, None]);
    bounded_by(LIMIT, c.restart_cell(CellId(3))).await.unwrap();
    let again = pids(&on_disk(&cluster_dir), 3);
    for (o, n) in pids(&before, 3).iter().zip(&again) {
        assert!(n.is_some() && n != o, "{o:?} → {n:?}");
        assert!(state(n.unwrap()).is_some());
    }

    // Stop the router: it no longer answers; start it: it serves again.
    let readyz = format!("{}/readyz", e.router_url);
    bounded_by(LIMIT, c.stop_router()).await.unwrap();
    assert_eq!(on_disk(&cluster_dir).router.pid, None);
    assert!(http.get(&readyz, &[]).await.unwrap_err().is_connect());
    bounded_by(LIMIT, c.start_router()).await.unwrap();
    assert!(on_disk(&cluster_dir).router.pid.is_some());
    wait_ok(&http, &readyz).await;

    // A cell the cluster does not have: a clear error, nothing changes.
    let err = c.kill_cell(CellId(9)).await.unwrap_err();
    assert!(format!("{err:#}").contains("no data cell 9"), "{err:#}");
    // A new cell: started by cellkv-local, in its layout and cluster.json.
    let spec = bounded_by(LIMIT * 2, c.add_cell(CellId(4))).await.unwrap();
    assert_eq!(spec.id, CellId(4));
    assert_eq!(on_disk(&cluster_dir).cells.len(), 4);
    assert_eq!(c.endpoints().cells.len(), 4);
    assert_eq!(c.warnings().await.unwrap(), Vec::<String>::new());

    // Stopping cellkv-local stops every process, the restarted ones too.
    let all: Vec<u32> = {
        let info = on_disk(&cluster_dir);
        let mut v: Vec<u32> = info
            .cells
            .iter()
            .flat_map(|c| c.replicas.iter().filter_map(|r| r.pid))
            .collect();
        v.extend(info.router.pid);
        v
    };
    let term = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(local.0.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = local.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "cellkv-local did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "{status}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for p in all {
        assert_eq!(state(p), None, "pid {p} outlived cellkv-local");
    }
}
