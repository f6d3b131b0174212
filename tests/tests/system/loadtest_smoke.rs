//! The load harness end to end: `cellkv-loadtest run` on the smoke scenario
//! (3 local cells, cell 2 killed for 5 s) must pass its SLOs, lose no write
//! and write both reports. Runs the real binary, which starts its own cluster.

use std::path::Path;
use std::time::Duration;

use crate::support::{run_loadtest, TestDir};
use serde_json::Value;

/// The whole run (cluster start, ~25 s of load, verification) stays under this.
const LIMIT: Duration = Duration::from_secs(90);

fn scenario() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios/smoke-kill-cell.toml")
}

#[test]
fn smoke_kill_cell_passes() {
    // Kept (with the harness's output and reports) if the test fails.
    let dir = TestDir::new("loadtest-smoke");
    let out = dir.path().join("out");
    let status = run_loadtest(
        &[
            "run".as_ref(),
            scenario().as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
        &dir.path().join("loadtest.log"),
        LIMIT,
    );
    assert_eq!(status.code(), Some(0), "expected exit code 0, got {status}");

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
