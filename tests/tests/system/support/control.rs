//! The one control-plane set-up of the tests: [`ControlPlane`], a
//! [`LocalCluster`] (router, control cell, `cellkv-control`, data cells) with
//! the admin API, job, map and `cellkvctl` helpers the tests use; and
//! [`run_ctl`], the one way to run `cellkvctl` (here or against a
//! `cellkv-local` cluster's directory).

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::http::Client;
use cluster::local::{LocalCluster, LocalClusterOptions};
use common::{CellId, CellMap, HashRange};
use http::Method;
use serde_json::{json, Value};

use super::writers::RouterLoad;
use super::{http_client, must_start_cluster};

/// A started local cluster with its control plane, for tests that drive it.
/// Derefs to the [`LocalCluster`] (cells, router, control server, secrets).
pub struct ControlPlane {
    pub cluster: LocalCluster,
    /// For the admin API (10 s per request unless told otherwise).
    admin: Client,
}

impl std::ops::Deref for ControlPlane {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for ControlPlane {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

impl ControlPlane {
    /// `opts.cells` data cells, the control plane and the router, all
    /// serving (see [`LocalCluster::start`]); panics otherwise.
    pub async fn start(dir: &Path, opts: LocalClusterOptions) -> ControlPlane {
        let cp = ControlPlane {
            cluster: must_start_cluster(opts, dir).await,
            admin: http_client(),
        };
        cp.wait_control_ready().await;
        cp.wait_router_ready().await;
        cp
    }

    /// `Bearer <control server admin token>`.
    pub fn admin_auth(&self) -> String {
        format!("Bearer {}", self.secrets().control_admin_token)
    }

    /// [`RouterLoad::start`] through this cluster's router with its client token.
    pub fn start_load(
        &self,
        bucket: &'static str,
        workers: usize,
        keys_per_worker: usize,
    ) -> RouterLoad {
        RouterLoad::start(
            &self.router_url(),
            &self.auth(),
            bucket,
            workers,
            keys_per_worker,
        )
    }

    /// `method path` on the control server's admin API, JSON in and out
    /// (status 0 and `{"transport": ...}` when it did not answer).
    pub async fn admin_try(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_try_within(Duration::from_secs(10), method, path, body)
            .await
    }

    /// [`admin_try`](Self::admin_try) with another request timeout.
    pub async fn admin_try_within(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = self.admin_auth();
        let mut h = vec![("authorization", auth.as_str())];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        let bytes = body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()))
            .unwrap_or_default();
        match self
            .admin
            .with_timeout(limit)
            .request(method, &format!("{}{path}", self.control_url()), &h, bytes)
            .await
        {
            Ok(r) => (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            ),
            Err(e) => (0, json!({ "transport": e.to_string() })),
        }
    }

    /// [`admin_try`](Self::admin_try) that must answer 2xx.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.admin_try(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {v}\ncontrol log:\n{}",
            self.control().log_tail(40)
        );
        v
    }

    /// Polls until the control server serves its map (after a restart).
    pub async fn wait_control_ready(&self) {
        poll_ready(
            "control server",
            || self.control().log_tail(40),
            || async { self.admin_try(Method::GET, "/v1/map", None).await.0 == 200 },
        )
        .await
    }

    /// Polls until the router answers `/readyz` with 200 (after a restart).
    pub async fn wait_router_ready(&self) {
        let url = format!("{}/readyz", self.router_url());
        poll_ready(
            "router",
            || self.router().log_tail(40),
            || async {
                self.admin
                    .get(&url, &[])
                    .await
                    .is_ok_and(|r| r.status == 200)
            },
        )
        .await
    }

    /// The live map.
    pub async fn map(&self) -> CellMap {
        serde_json::from_value(self.admin(Method::GET, "/v1/map", None).await).unwrap()
    }

    /// Polls the job until it is done; panics if it fails or takes too long.
    pub async fn wait_job(&self, id: &str, limit: Duration) -> Value {
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
                        self.control().log_tail(60)
                    ),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not done in {limit:?}: {job}\ncontrol log:\n{}",
                self.control().log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn log_tails(&self) -> String {
        format!(
            "--- control\n{}\n--- router\n{}",
            self.control().log_tail(40),
            self.router().log_tail(40)
        )
    }

    /// Runs `cellkvctl args` against this control server (URL and token from
    /// the cluster's `control.env`, as an operator would set them, then
    /// `env`), at most `limit`.
    pub async fn ctl_with(&self, env: &[(&str, &str)], args: &[&str], limit: Duration) -> CtlOut {
        let dir = self.dir().to_owned();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let what = format!("cellkvctl {}", args.join(" "));
        let out = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let args: Vec<&str> = owned.iter().map(String::as_str).collect();
                run_ctl_env(&dir, &env, &args)
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} ran over {limit:?}"))
        .unwrap();
        eprintln!(
            "$ {what}\n-> exit {}\n{}{}",
            out.code(),
            out.stdout,
            out.stderr
        );
        out
    }

    pub async fn ctl(&self, args: &[&str]) -> CtlOut {
        self.ctl_with(&[], args, Duration::from_secs(30)).await
    }

    /// `cellkvctl args` must succeed.
    pub async fn ctl_ok(&self, args: &[&str]) -> CtlOut {
        let out = self.ctl(args).await;
        assert_eq!(
            out.code(),
            0,
            "cellkvctl {args:?} failed:\n{}{}\ncontrol log:\n{}",
            out.stdout,
            out.stderr,
            self.control().log_tail(30)
        );
        out
    }
}

/// Polls `ready` every 100 ms for up to 30 s; then fails with `log`.
async fn poll_ready<Fut: std::future::Future<Output = bool>>(
    what: &str,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> Fut,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "{what} not ready; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job's `state` (or `status`).
pub fn job_state(job: &Value) -> String {
    job.get("state")
        .or_else(|| job.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The job id in an admin API answer.
pub fn job_id(v: &Value) -> String {
    v.get("id")
        .or_else(|| v.get("job").and_then(|j| j.get("id")))
        .or_else(|| v.get("job_id"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no job id in {v}"))
        .to_owned()
}

/// The ranges whose owner differs between two maps: what a job moved.
pub fn moved_ranges(before: &CellMap, after: &CellMap) -> Vec<HashRange> {
    before
        .routing()
        .unwrap()
        .diff(&after.routing().unwrap())
        .into_iter()
        .map(|(r, _, _)| r)
        .collect()
}

/// A key of `bucket` that the map routes to `cell`.
pub fn key_on_cell(map: &CellMap, bucket: &str, cell: CellId) -> String {
    let routing = map.routing().unwrap();
    (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| routing.cell_for(bucket, k) == cell)
        .unwrap()
}

pub fn print_job_summary(what: &str, job: &Value) {
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
// cellkvctl

/// What one `cellkvctl` run printed.
pub struct CtlOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOut {
    /// The exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Stdout as JSON (of a `--json` run).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "cellkvctl --json printed no JSON ({e}): {}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs the `cellkvctl` binary with `args` against the control server of the
/// local cluster in `cluster_dir` (URL and admin token from its
/// `control.env`, as `LocalCluster` writes it; then `env`), no stdin.
/// Bounded by `cellkvctl`'s own timeouts.
pub fn run_ctl_env(cluster_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> CtlOut {
    let env_file = cluster_dir.join(cluster::local::CONTROL_ENV_FILE);
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", env_file.display()));
    let mut cmd = Command::new(cluster::process::bin_path(cluster::control_proc::CTL_BIN).unwrap());
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k.trim(), v.trim());
        }
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    CtlOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run_ctl_env`] without extra environment.
pub fn run_ctl(cluster_dir: &Path, args: &[&str]) -> CtlOut {
    run_ctl_env(cluster_dir, &[], args)
}

/// `cellkvctl --json <args>` against the cluster in `cluster_dir`, which must
/// succeed; its JSON output.
#[track_caller]
pub fn must_ctl_json(cluster_dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_ctl(cluster_dir, &all);
    assert!(
        out.status.success(),
        "cellkvctl {all:?} exited {}:\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("cellkvctl {all:?} printed no JSON ({e}):\n{}", out.stdout))
}
