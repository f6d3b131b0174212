//! A real `cellkv-control` process on loopback: its config file generated
//! from typed options (key for key the control server's `ControlConfig`),
//! spawned and faulted through a [`ManagedProcess`], and its readiness read
//! from the admin API (`GET /v1/status`: the map is stored, the job lease
//! held). It never links the control crate: it speaks TOML to it and HTTP
//! with it ([`AdminClient`]).
//!
//! ```text
//! dir/
//!   config.toml       generated from ControlServerOptions + addresses + secrets
//!   initial-map.toml  the map stored when the control cell holds none yet
//!   control.log       stdout+stderr of every run, appended, one marker line per start
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::admin::StatusResponse;
use common::CellMap;
use serde::{Deserialize, Serialize};

use crate::cell_proc::humantime;
use crate::process::{configured_server, ServerProc, POLL};
use client::admin::AdminClient;

/// Name of the control server binary.
pub const CONTROL_BIN: &str = "cellkv-control";
/// Name of the operator CLI (run by people and tests, never by the harness).
pub const CTL_BIN: &str = "cellkvctl";

/// Everything about a control server that is neither an address nor a
/// secret: copy limits, timeouts, the lease, its environment. Defaults equal
/// the control server's, except a shorter job lease (see `lease_ttl`).
#[derive(Clone, Debug)]
pub struct ControlServerOptions {
    /// Default copy rate limit of a job (a drain or add may ask for another).
    pub bandwidth_bytes_per_sec: u64,
    pub batch_max_bytes: u64,
    pub batch_max_ranges: usize,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub step_retry_timeout: Duration,
    /// The job lease. Shorter than the server's 10 s default: a restarted
    /// local cluster waits for the lease its previous run still holds before
    /// it takes jobs, and that wait is part of every restart.
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    /// `RUST_LOG` of the server.
    pub rust_log: String,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
}

impl Default for ControlServerOptions {
    fn default() -> Self {
        ControlServerOptions {
            bandwidth_bytes_per_sec: 64 << 20,
            batch_max_bytes: 64 << 20,
            batch_max_ranges: 512,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            step_retry_timeout: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            rust_log: "info".into(),
            env: Vec::new(),
        }
    }
}

/// Where a control server listens, what it talks to, and its secrets.
#[derive(Clone, Debug)]
pub struct ControlSetup {
    pub admin_listen: SocketAddr,
    /// The admin API's token (cellkvctl's); distinct from every data token.
    pub admin_token: String,
    /// `host:port` of the control cell replicas' cell API.
    pub control_cell: Vec<String>,
    /// The control cell's `api_token`.
    pub control_token: String,
    /// The data cells' `api_token` and `admin_token`.
    pub cell_api_token: String,
    pub cell_admin_token: String,
    /// Stored, with explicit owners, when the control cell holds no map yet.
    pub initial_map: Option<CellMap>,
}

// ---------------------------------------------------------------------------
// Config file

/// The control server's TOML config file, key for key (the keys the harness
/// sets; the rest keep the server's defaults). `deny_unknown_fields` mirrors
/// the server, so the round-trip test catches a key this side invents.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlConfigFile {
    admin_listen: String,
    admin_token: String,
    control_cell: Vec<String>,
    control_token: String,
    cell_api_token: String,
    cell_admin_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initial_map: Option<PathBuf>,
    bandwidth_bytes_per_sec: u64,
    batch_max_bytes: u64,
    batch_max_ranges: usize,
    request_timeout: String,
    connect_timeout: String,
    step_retry_timeout: String,
    lease_ttl: String,
    shutdown_grace: String,
}

/// The control server's config file; `initial_map` names the map file.
pub fn control_config_toml(
    opts: &ControlServerOptions,
    setup: &ControlSetup,
    initial_map: Option<&Path>,
) -> Result<String> {
    let file = ControlConfigFile {
        admin_listen: setup.admin_listen.to_string(),
        admin_token: setup.admin_token.clone(),
        control_cell: setup.control_cell.clone(),
        control_token: setup.control_token.clone(),
        cell_api_token: setup.cell_api_token.clone(),
        cell_admin_token: setup.cell_admin_token.clone(),
        initial_map: initial_map.map(Path::to_owned),
        bandwidth_bytes_per_sec: opts.bandwidth_bytes_per_sec,
        batch_max_bytes: opts.batch_max_bytes,
        batch_max_ranges: opts.batch_max_ranges,
        request_timeout: humantime(opts.request_timeout),
        connect_timeout: humantime(opts.connect_timeout),
        step_retry_timeout: humantime(opts.step_retry_timeout),
        lease_ttl: humantime(opts.lease_ttl),
        shutdown_grace: humantime(opts.shutdown_grace),
    };
    toml::to_string(&file).context("serialize the control server config as TOML")
}

// ---------------------------------------------------------------------------
// The process

/// One control server process: its config, initial map and log around a
/// [`ManagedProcess`], plus an admin client. Derefs to the process for
/// starting and faulting it.
pub struct ControlProc {
    server: ServerProc,
    admin: AdminClient,
}

impl ControlProc {
    /// Writes the config (and the initial map, if any) into `dir` without
    /// starting the server.
    pub fn prepare(
        bin: &Path,
        opts: &ControlServerOptions,
        setup: &ControlSetup,
        dir: &Path,
    ) -> Result<ControlProc> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let map_path = match &setup.initial_map {
            Some(map) => {
                let path = dir.join("initial-map.toml");
                let text = toml::to_string(map).context("serialize the initial map as TOML")?;
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let (config_path, process) = configured_server(
            "control server".into(),
            bin,
            dir,
            &control_config_toml(opts, setup, map_path.as_deref())?,
            "control.log",
            &opts.rust_log,
            &opts.env,
        )?;
        let url = format!("http://{}", setup.admin_listen);
        Ok(ControlProc {
            server: ServerProc::new(
                process,
                setup.admin_listen,
                dir,
                config_path,
                opts.shutdown_grace,
            ),
            admin: AdminClient::new(&url, &setup.admin_token),
        })
    }

    /// A client of this server's admin API (with its admin token).
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// Polls `GET /v1/status` until the server answers with a stored map and
    /// holds the job lease (so drains and adds are accepted at once: it takes
    /// the lease only after telling every data cell what it owns). Fails with
    /// the last answer and the log tail after `timeout`, or at once if the
    /// server exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<StatusResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.server.unexpected_exit() {
                bail!(
                    "the control server exited unexpectedly ({status}); log tail:\n{}",
                    self.server.log_tail(40)
                );
            }
            let last = match self.admin.status().await {
                Ok(s) if s.control.lease_held => return Ok(s),
                Ok(s) => format!("the job lease is not held yet: {:?}", s.control),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "control server not ready after {timeout:?}; last: {last}; log tail:\n{}",
                    self.server.log_tail(30)
                );
            }
            tokio::time::sleep(POLL * 4).await;
        }
    }
}

impl std::ops::Deref for ControlProc {
    type Target = ServerProc;

    fn deref(&self) -> &ServerProc {
        &self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_toml() {
        let opts = ControlServerOptions {
            bandwidth_bytes_per_sec: 1 << 20,
            lease_ttl: Duration::from_millis(2500),
            ..ControlServerOptions::default()
        };
        let setup = ControlSetup {
            admin_listen: "127.0.0.1:17900".parse().unwrap(),
            admin_token: "control-admin-0123456789".into(),
            control_cell: vec!["127.0.0.1:17801".into(), "127.0.0.1:17802".into()],
            control_token: "control-cell-0123456789".into(),
            cell_api_token: "cell-api-0123456789".into(),
            cell_admin_token: "cell-admin-0123456789".into(),
            initial_map: None,
        };
        let text = control_config_toml(&opts, &setup, Some(Path::new("/d/map.toml"))).unwrap();
        let file: ControlConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&file).unwrap(), text);
        // The shape the server reads: humantime strings, plain keys.
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["admin_listen"].as_str(), Some("127.0.0.1:17900"));
        assert_eq!(v["control_cell"][1].as_str(), Some("127.0.0.1:17802"));
        assert_eq!(v["lease_ttl"].as_str(), Some("2500ms"));
        assert_eq!(v["request_timeout"].as_str(), Some("10000ms"));
        assert_eq!(v["bandwidth_bytes_per_sec"].as_integer(), Some(1 << 20));
        assert_eq!(v["initial_map"].as_str(), Some("/d/map.toml"));
        let text = control_config_toml(&opts, &setup, None).unwrap();
        assert!(!text.contains("initial_map"), "{text}");
    }

    #[test]
    fn prepare_writes_the_config_and_the_initial_map() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::cell_proc::CellLayout::allocate(common::CellId(1), 3).unwrap();
        let map = CellMap {
            epoch: 1,
            cells: vec![layout.cell_spec()],
            ..CellMap::default()
        };
        let setup = ControlSetup {
            admin_listen: "127.0.0.1:17900".parse().unwrap(),
            admin_token: "control-admin-0123456789".into(),
            control_cell: vec!["127.0.0.1:17801".into()],
            control_token: "control-cell-0123456789".into(),
            cell_api_token: "cell-api-0123456789".into(),
            cell_admin_token: "cell-admin-0123456789".into(),
            initial_map: Some(map.clone()),
        };
        let p = ControlProc::prepare(
            Path::new("/bin/true"),
            &ControlServerOptions::default(),
            &setup,
            dir.path(),
        )
        .unwrap();
        assert_eq!(p.url(), "http://127.0.0.1:17900");
        let stored: CellMap =
            toml::from_str(&std::fs::read_to_string(dir.path().join("initial-map.toml")).unwrap())
                .unwrap();
        assert_eq!(stored, map);
        let cfg = std::fs::read_to_string(p.config_path()).unwrap();
        assert!(cfg.contains("initial-map.toml"), "{cfg}");
    }
}
