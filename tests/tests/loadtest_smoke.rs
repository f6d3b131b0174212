//! The load harness end to end: `cellkv-loadtest run` on the smoke scenario
//! (3 local cells, cell 2 killed for 5 s) must pass its SLOs, lose no write
//! and write both reports. Runs the real binary, which starts its own cluster.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::process::bin_path;
use serde_json::Value;

/// The whole run (cluster start, ~25 s of load, verification) stays under this.
const LIMIT: Duration = Duration::from_secs(90);

/// Kills the harness (and with it the cluster it started) if the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios/smoke-kill-cell.toml")
}

#[test]
fn smoke_kill_cell_passes() {
    let dir = tempfile::Builder::new()
        .prefix("cellkv-loadtest-smoke-")
        .tempdir()
        .unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("loadtest.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    let mut child = KillOnDrop(
        Command::new(bin_path("cellkv-loadtest").unwrap())
            .arg("run")
            .arg(scenario())
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > LIMIT {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = dir.keep();
            panic!("cellkv-loadtest ran over {LIMIT:?}; output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "cellkv-loadtest finished in {:.1?} ({status}):\n{text}",
        started.elapsed()
    );
    let keep = |why: &str| -> ! {
        let kept = dir.path().to_owned();
        std::mem::forget(dir);
        panic!("{why}; kept {}", kept.display())
    };
    if status.code() != Some(0) {
        keep(&format!("expected exit code 0, got {status}"));
    }

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{:#}", report["slo"]);
    assert!(report["writes_checked"].as_u64().unwrap() > 0);
    assert_eq!(report["lost_writes"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["analysis"]["lost_writes"], 0);
    let min = report["scenario"]["slo"]["healthy_availability_min"]
        .as_f64()
        .unwrap();
    let faults = report["analysis"]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1);
    let healthy = faults[0]["healthy_availability"].as_f64().unwrap();
    assert!(healthy >= min, "healthy availability {healthy} < {min}");
    let cells: Vec<u64> = faults[0]["healthy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["cell"].as_u64().unwrap())
        .collect();
    assert_eq!(cells, vec![1, 3], "the healthy cells");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "report.html has no chart");
}
