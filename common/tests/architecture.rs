//! Checks the workspace's dependency rules (docs/architecture.md) from
//! `cargo metadata`, so a change that breaks them fails the build's tests:
//! - `cell` never depends on `router`, and `router` never on `cell`;
//! - `common` stays pure: no RocksDB, openraft, HTTP server or async runtime;
//! - `loadtest` (and so the tests and `cellkv-local`) drives cells and routers
//!   as processes over HTTP and links neither;
//! - `control` talks to cells and routers over HTTP only: it never links
//!   `cell` or `router`, and neither links it;
//! - `service` (what every server does the same way) links no other cellkv
//!   crate, nor RocksDB or openraft.

use std::collections::BTreeMap;
use std::process::Command;

fn dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    v["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                // Normal and build dependencies; dev-dependencies only shape tests.
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().expect("name").to_string())
                .collect();
            (p["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

fn assert_none(deps: &BTreeMap<String, Vec<String>>, krate: &str, forbidden: &[&str]) {
    let have = deps
        .get(krate)
        .unwrap_or_else(|| panic!("{krate} is in the workspace"));
    for f in forbidden {
        assert!(
            !have.iter().any(|d| d == f),
            "{krate} must not depend on {f} (docs/architecture.md)"
        );
    }
}

#[test]
fn crates_depend_one_way() {
    let deps = dependencies();
    assert_none(
        &deps,
        "cellkv-cell",
        &["cellkv-router", "cellkv-loadtest", "cellkv-control"],
    );
    assert_none(
        &deps,
        "cellkv-router",
        &[
            "cellkv-cell",
            "cellkv-loadtest",
            "cellkv-control",
            "rocksdb",
            "openraft",
        ],
    );
    assert_none(
        &deps,
        "cellkv-control",
        &[
            "cellkv-cell",
            "cellkv-router",
            "cellkv-loadtest",
            "rocksdb",
            "openraft",
        ],
    );
    assert_none(
        &deps,
        "cellkv-common",
        &[
            "cellkv-cell",
            "cellkv-router",
            "cellkv-loadtest",
            "cellkv-control",
            "rocksdb",
            "openraft",
            "hyper",
            "axum",
            "tokio",
        ],
    );
    assert_none(
        &deps,
        "cellkv-loadtest",
        &["cellkv-cell", "cellkv-router", "rocksdb", "openraft"],
    );
    assert_none(&deps, "cellkv-tests", &["cellkv-cell", "cellkv-router"]);
    // The shared server plumbing (it serves HTTP) knows nothing of cells,
    // routing or storage.
    assert_none(
        &deps,
        "cellkv-service",
        &[
            "cellkv-common",
            "cellkv-cell",
            "cellkv-router",
            "cellkv-loadtest",
            "cellkv-control",
            "rocksdb",
            "openraft",
        ],
    );
}

#[test]
fn the_checker_sees_real_edges() {
    // Guards the test above against passing vacuously (e.g. if metadata were empty).
    let deps = dependencies();
    assert!(deps["cellkv-cell"].iter().any(|d| d == "cellkv-common"));
    assert!(deps["cellkv-cell"].iter().any(|d| d == "rocksdb"));
    assert!(deps["cellkv-router"].iter().any(|d| d == "cellkv-common"));
    assert!(deps["cellkv-control"].iter().any(|d| d == "cellkv-common"));
    assert!(deps["cellkv-service"].iter().any(|d| d == "prometheus"));
}
