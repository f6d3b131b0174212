//! Checks the workspace's dependency rules (docs/architecture.md) from
//! `cargo metadata` and the sources, so a change that breaks them fails the
//! build's tests:
//! - `cell` never depends on `router`, and `router` never on `cell`;
//! - `common` stays pure: no RocksDB, openraft, HTTP server or async runtime;
//! - `control` talks to cells and routers over HTTP only: it never links
//!   `cell` or `router`, and neither links it;
//! - `cell` and `router` never depend on the tooling: `client`, `cluster`,
//!   `loadtest`;
//! - `cluster` (processes, `cellkv-local`) and `client` (HTTP clients) drive
//!   cells and routers as processes over HTTP and link neither, nor the load
//!   generator;
//! - `loadtest` reaches processes only through `cluster`: it links no
//!   server, no `libc`, and its sources spawn and signal nothing;
//! - the whole-system tests (`tests`) use `cluster` and `client`, never the
//!   load generator (dev-dependencies count there: they are all it has).
//! - `service` (what every server does the same way) links no other cellkv
//!   crate, nor RocksDB or openraft.
//! - `s3` (the S3 protocol layer) is pure: it links no other cellkv crate, no
//!   storage, no server and no async runtime (ADR 0020).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Per package: (dependency name, is a dev-dependency).
type Deps = BTreeMap<String, Vec<(String, bool)>>;

fn dependencies() -> Deps {
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
                .map(|d| {
                    (
                        d["name"].as_str().expect("name").to_string(),
                        d["kind"].as_str() == Some("dev"),
                    )
                })
                .collect();
            (p["name"].as_str().expect("name").to_string(), deps)
        })
        .collect()
}

/// Fails if `krate` depends on any of `forbidden` (its dev-dependencies
/// count only with `with_dev`: they shape its tests, not what it links).
fn assert_none(deps: &Deps, krate: &str, with_dev: bool, forbidden: &[&str]) {
    let have = deps
        .get(krate)
        .unwrap_or_else(|| panic!("{krate} is in the workspace"));
    for f in forbidden {
        assert!(
            !have.iter().any(|(d, dev)| d == f && (with_dev || !dev)),
            "{krate} must not depend on {f} (docs/architecture.md)"
        );
    }
}

const SERVERS: [&str; 3] = ["cellkv-cell", "cellkv-router", "cellkv-control"];
const TOOLING: [&str; 3] = ["cellkv-client", "cellkv-cluster", "cellkv-loadtest"];
const STORAGE: [&str; 2] = ["rocksdb", "openraft"];

fn all(groups: &[&[&'static str]]) -> Vec<&'static str> {
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

#[test]
fn crates_depend_one_way() {
    let deps = dependencies();
    assert_none(
        &deps,
        "cellkv-cell",
        false,
        &all(&[&["cellkv-router", "cellkv-control"], &TOOLING]),
    );
    assert_none(
        &deps,
        "cellkv-router",
        false,
        &all(&[&["cellkv-cell", "cellkv-control"], &TOOLING, &STORAGE]),
    );
    assert_none(
        &deps,
        "cellkv-control",
        false,
        &all(&[
            &[
                "cellkv-cell",
                "cellkv-router",
                "cellkv-cluster",
                "cellkv-loadtest",
            ],
            &STORAGE,
        ]),
    );
    assert_none(
        &deps,
        "cellkv-common",
        false,
        &all(&[
            &SERVERS,
            &TOOLING,
            &["cellkv-service"],
            &STORAGE,
            &["hyper", "axum", "tokio"],
        ]),
    );
    assert_none(
        &deps,
        "cellkv-client",
        false,
        &all(&[&SERVERS, &["cellkv-cluster", "cellkv-loadtest"], &STORAGE]),
    );
    assert_none(
        &deps,
        "cellkv-cluster",
        false,
        &all(&[&SERVERS, &["cellkv-loadtest"], &STORAGE]),
    );
    assert_none(
        &deps,
        "cellkv-loadtest",
        false,
        &all(&[&SERVERS, &STORAGE, &["libc"]]),
    );
    assert_none(
        &deps,
        "cellkv-tests",
        true,
        &all(&[&SERVERS, &["cellkv-loadtest"], &STORAGE]),
    );
    // The shared server plumbing knows nothing of cells, routing or storage.
    assert_none(
        &deps,
        "cellkv-service",
        false,
        &all(&[&SERVERS, &TOOLING, &["cellkv-common"], &STORAGE]),
    );
    // The S3 protocol layer is pure: the router mounts it, nothing leaks in.
    assert_none(
        &deps,
        "cellkv-s3",
        false,
        &all(&[
            &SERVERS,
            &TOOLING,
            &["cellkv-common", "cellkv-service"],
            &STORAGE,
            &["hyper", "axum", "tokio"],
        ]),
    );
    // The linearizability checker is pure too: the harness and the tests
    // both judge histories with it.
    assert_none(
        &deps,
        "cellkv-lincheck",
        false,
        &all(&[
            &SERVERS,
            &TOOLING,
            &["cellkv-common", "cellkv-service"],
            &STORAGE,
            &["hyper", "axum", "tokio"],
        ]),
    );
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_load_generator_reaches_processes_only_through_the_cluster_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/src");
    let files = sources(&src);
    assert!(files.len() > 5, "found the load generator's sources");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read a source file");
        for needle in ["process::Command", "process::Child", "libc::", "kill("] {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: the load generator starts, signals and stops \
                 processes only through cellkv-cluster (docs/architecture.md)",
                f.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_real_edges() {
    // Guards the tests above against passing vacuously (e.g. if metadata were empty).
    let deps = dependencies();
    let has = |k: &str, d: &str| deps[k].iter().any(|(n, _)| n == d);
    assert!(has("cellkv-cell", "cellkv-common"));
    assert!(has("cellkv-cell", "rocksdb"));
    assert!(has("cellkv-router", "cellkv-common"));
    assert!(has("cellkv-router", "cellkv-s3"));
    assert!(has("cellkv-s3", "hmac"));
    assert!(has("cellkv-control", "cellkv-common"));
    assert!(has("cellkv-service", "prometheus"));
    assert!(has("cellkv-loadtest", "cellkv-cluster"));
    assert!(has("cellkv-cluster", "libc"));
    assert!(has("cellkv-tests", "cellkv-cluster"));
}
