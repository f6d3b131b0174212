//! A real `cellkv-control` process on loopback: its config file generated
//! from the server's own `ControlConfig` (`common::config::control`),
//! spawned and faulted through a [`ManagedProcess`], and its readiness read
//! from the admin API (`GET /v1/status`: the map is stored, the job lease
//! held). It never links the control crate: it speaks TOML to it and HTTP
//! with it ([`AdminClient`]).
//!
//! ```text
//! dir/
//!   config.toml       generated from ControlServerOptions (+ the initial map's path)
//!   initial-map.toml  the map stored when the control cell holds none yet
//!   control.log       stdout+stderr of every run, appended, one marker line per start
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::admin::StatusResponse;
use common::CellMap;

use crate::process::{configured_server, ServerProc, POLL};
use client::admin::AdminClient;

/// Name of the control server binary.
pub const CONTROL_BIN: &str = "cellkv-control";
/// Name of the operator CLI (run by people and tests, never by the harness).
pub const CTL_BIN: &str = "cellkvctl";

// The control server's own config schema, built and serialized here (never mirrored).
pub use common::config::control::ControlConfig;

/// A control server's config and environment.
#[derive(Clone, Debug)]
pub struct ControlServerOptions {
    /// The server's config: addresses, secrets, copy limits, timeouts, the
    /// lease. `initial_map` is replaced when [`ControlProc::prepare`] is
    /// given a map to write.
    pub config: ControlConfig,
    /// `RUST_LOG` of the server.
    pub rust_log: String,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
}

/// The job lease of a local control server. Shorter than the server's 10 s
/// default: a restarted local cluster waits for the lease its previous run
/// still holds before it takes jobs, and that wait is part of every restart.
pub const LOCAL_LEASE_TTL: Duration = Duration::from_secs(5);

impl Default for ControlServerOptions {
    /// The server's defaults but [`LOCAL_LEASE_TTL`]; no addresses or
    /// secrets yet (the caller fills them in).
    fn default() -> Self {
        ControlServerOptions {
            config: ControlConfig {
                lease_ttl: LOCAL_LEASE_TTL,
                ..ControlConfig::default()
            },
            rust_log: "info".into(),
            env: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Config file

/// The control server's config file; `initial_map` names the map file.
pub fn control_config_toml(config: &ControlConfig, initial_map: Option<&Path>) -> Result<String> {
    let config = ControlConfig {
        initial_map: initial_map
            .map(Path::to_owned)
            .or_else(|| config.initial_map.clone()),
        ..config.clone()
    };
    toml::to_string(&config).context("serialize the control server config as TOML")
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
    /// Writes the config (and `initial_map`, if any, for the server to store
    /// when the control cell holds no map yet) into `dir` without starting
    /// the server.
    pub fn prepare(
        bin: &Path,
        opts: &ControlServerOptions,
        initial_map: Option<&CellMap>,
        dir: &Path,
    ) -> Result<ControlProc> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let map_path = match initial_map {
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
            &control_config_toml(&opts.config, map_path.as_deref())?,
            "control.log",
            &opts.rust_log,
            &opts.env,
        )?;
        let config = &opts.config;
        let url = format!("http://{}", config.admin_listen);
        Ok(ControlProc {
            server: ServerProc::new(
                process,
                config.admin_listen,
                dir,
                config_path,
                config.shutdown_grace,
            ),
            admin: AdminClient::new(&url, &config.admin_token),
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

    /// Addresses and secrets as a local cluster fills them in.
    fn options() -> ControlServerOptions {
        let mut o = ControlServerOptions::default();
        o.config.admin_listen = "127.0.0.1:17900".parse().unwrap();
        o.config.admin_token = "control-admin-0123456789".into();
        o.config.control_cell = vec!["127.0.0.1:17801".into(), "127.0.0.1:17802".into()];
        o.config.control_token = "control-cell-0123456789".into();
        o.config.cell_api_token = "cell-api-0123456789".into();
        o.config.cell_admin_token = "cell-admin-0123456789".into();
        o
    }

    /// The generated file, read back with the server's own schema, is the
    /// options' config with the map's path, and valid.
    #[test]
    fn config_round_trips_through_the_control_schema() {
        let mut opts = options();
        opts.config.bandwidth_bytes_per_sec = 1 << 20;
        opts.config.lease_ttl = Duration::from_millis(2500);
        let text = control_config_toml(&opts.config, Some(Path::new("/d/map.toml"))).unwrap();
        let parsed = ControlConfig::from_toml_str(&text, Path::new("config.toml")).unwrap();
        parsed.validate().unwrap();
        assert_eq!(
            parsed,
            ControlConfig {
                initial_map: Some("/d/map.toml".into()),
                ..opts.config.clone()
            }
        );
        // The shape the server reads: humantime strings, plain keys.
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["lease_ttl"].as_str(), Some("2s 500ms"));
        assert_eq!(v["request_timeout"].as_str(), Some("10s"));
        assert_eq!(v["control_cell"][1].as_str(), Some("127.0.0.1:17802"));
        let text = control_config_toml(&opts.config, None).unwrap();
        assert!(!text.contains("initial_map"), "{text}");
    }

    /// What the launcher sends by default means what the server's own
    /// defaults mean, but a shorter lease.
    #[test]
    fn default_options_keep_the_servers_defaults_but_the_lease() {
        let o = ControlServerOptions::default();
        assert_eq!(o.config.lease_ttl, LOCAL_LEASE_TTL);
        assert_eq!(
            ControlConfig {
                lease_ttl: ControlConfig::default().lease_ttl,
                ..o.config
            },
            ControlConfig::default()
        );
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
        let p = ControlProc::prepare(Path::new("/bin/true"), &options(), Some(&map), dir.path())
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
