//! A real `cellkv-router` process on loopback: its config file generated from
//! the router's own `RouterConfig` (`common::config::router`), spawned and faulted
//! through a [`ManagedProcess`], and its readiness read from `GET /readyz`.
//! It never links the router: it speaks TOML to it and HTTP with it.
//!
//! ```text
//! dir/
//!   config.toml   generated from RouterOptions + listen address + cell map
//!   router.log    stdout+stderr of every run, appended, one marker line per start
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap};

use crate::cell_proc::PROBE_TIMEOUT;
use crate::process::{configured_server, ServerProc, POLL};
use client::http::{Client, ClientConfig};

/// Name of the router binary.
pub const ROUTER_BIN: &str = "cellkv-router";

// The router's own config schema, built and serialized here (never mirrored).
pub use common::config::router::{
    Access, ControlConfig as RouterControlOptions, RouterConfig, S3Config, S3CredentialConfig,
    TokenConfig as TokenOptions,
};

/// A read-write token for every bucket, with limits no local run or test reaches.
pub fn unlimited_token(name: &str, token: &str) -> TokenOptions {
    TokenOptions {
        name: name.to_owned(),
        token: token.to_owned(),
        buckets: vec!["*".to_owned()],
        access: Access::ReadWrite,
        rate_per_sec: 1_000_000.0,
        burst: 1_000_000,
    }
}

/// Everything about a router that is neither its address nor the cell map:
/// its config template and environment.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// The router's config: secrets, client tokens, limits, timeouts, the
    /// `[control]` table to follow a control cell (`None`: the static
    /// `cell_map` for the router's whole life) and `[connect_to]` (the
    /// harness's latency proxies). `listen` and `cell_map` are replaced.
    pub config: RouterConfig,
    /// `RUST_LOG` of the router.
    pub rust_log: String,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
}

impl Default for RouterOptions {
    /// The router's defaults with fixed, well-known secrets (matching
    /// `CellOptions::default()`) and one unlimited client token: fine on
    /// loopback, never elsewhere.
    fn default() -> Self {
        RouterOptions {
            config: RouterConfig {
                cell_api_token: "local-api-token-0123456789".into(),
                tokens: vec![unlimited_token("local", "local-client-token-0123456789")],
                ..RouterConfig::default()
            },
            rust_log: "info".into(),
            env: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Config file

/// The router's config file: listening on `listen`, routing with `cell_map`
/// (only its starting map when `opts.control` is set).
pub fn router_config_toml(
    opts: &RouterOptions,
    listen: SocketAddr,
    cell_map: &CellMap,
) -> Result<String> {
    let config = RouterConfig {
        listen,
        cell_map: cell_map.clone(),
        ..opts.config.clone()
    };
    toml::to_string(&config).context("serialize the router config as TOML")
}

// ---------------------------------------------------------------------------
// The process

/// One router process: its config and log around a [`ManagedProcess`], plus
/// readiness probes. Derefs to the process for starting and faulting it.
pub struct RouterProc {
    server: ServerProc,
    client: Client,
}

impl RouterProc {
    /// Writes the config into `dir` without starting the router.
    pub fn prepare(
        bin: &Path,
        opts: &RouterOptions,
        listen: SocketAddr,
        cell_map: &CellMap,
        dir: &Path,
    ) -> Result<RouterProc> {
        let (config_path, process) = configured_server(
            "router".into(),
            bin,
            dir,
            &router_config_toml(opts, listen, cell_map)?,
            "router.log",
            &opts.rust_log,
            &opts.env,
        )?;
        Ok(RouterProc {
            server: ServerProc::new(
                process,
                listen,
                dir,
                config_path,
                opts.config.shutdown_grace,
            ),
            client: Client::new(ClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: PROBE_TIMEOUT,
                pool_max_idle_per_host: 2,
                ..ClientConfig::default()
            }),
        })
    }

    /// `GET /readyz`: status and JSON body (200 ready, 503 not).
    pub async fn readiness(&self) -> Result<(u16, serde_json::Value)> {
        let url = format!("{}/readyz", self.url());
        Ok(self.client.get_json(&url, &[]).await?)
    }

    /// The `/readyz` entry of `cell` (`{"id", "state", "breaker", "healthy", ...}`).
    pub async fn cell_readiness(&self, cell: CellId) -> Result<serde_json::Value> {
        let (_, v) = self.readiness().await?;
        cell_entry(&v, cell)
            .cloned()
            .with_context(|| format!("cell {cell} is not in /readyz: {v}"))
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.url());
        let resp = self.client.get(&url, &[]).await?;
        if resp.status != 200 {
            bail!("GET {url} answered {}: {}", resp.status, resp.text());
        }
        Ok(resp.text())
    }

    /// Polls `/readyz` until `done(status, body)`; fails with the last answer
    /// and the log tail after `timeout`, or at once if the router exits.
    pub async fn wait_readyz(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.server.unexpected_exit() {
                bail!(
                    "the router exited unexpectedly ({status}); log tail:\n{}",
                    self.server.log_tail(40)
                );
            }
            let last = match self.readiness().await {
                Ok((status, v)) if done(status, &v) => return Ok(v),
                Ok((status, v)) => format!("{status} {v}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "router not {what} after {timeout:?}; last /readyz: {last}; log tail:\n{}",
                    self.server.log_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `/healthz` answers 200 (the process is up and serving
    /// HTTP, whatever its cells' state).
    pub async fn wait_alive(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.url());
        loop {
            if let Some(status) = self.server.unexpected_exit() {
                bail!(
                    "the router exited unexpectedly ({status}); log tail:\n{}",
                    self.server.log_tail(40)
                );
            }
            let last = match self.client.get(&url, &[]).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("{} {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "router not answering {url} after {timeout:?}; last: {last}; log tail:\n{}",
                    self.server.log_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `/readyz` answers 200 (some cell can serve).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<serde_json::Value> {
        self.wait_readyz(timeout, "ready", |status, _| status == 200)
            .await
    }

    /// Polls until every cell of `/readyz` is healthy with its breaker closed.
    pub async fn wait_serving_all(&self, timeout: Duration) -> Result<serde_json::Value> {
        self.wait_readyz(timeout, "serving every cell", |status, v| {
            status == 200 && all_cells_serving(v)
        })
        .await
    }
}

impl std::ops::Deref for RouterProc {
    type Target = ServerProc;

    fn deref(&self) -> &ServerProc {
        &self.server
    }
}

/// The `/readyz` entry of `cell`.
pub fn cell_entry(readyz: &serde_json::Value, cell: CellId) -> Option<&serde_json::Value> {
    readyz["cells"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_u64() == Some(u64::from(cell.0)))
}

/// Whether a `/readyz` body shows every cell healthy with a closed breaker.
pub fn all_cells_serving(readyz: &serde_json::Value) -> bool {
    readyz["cells"].as_array().is_some_and(|cells| {
        !cells.is_empty()
            && cells
                .iter()
                .all(|c| c["healthy"] == true && c["breaker"] == "closed")
    })
}

#[cfg(test)]
mod tests {
    use common::{CellSpec, CellState, NodeId, ReplicaSpec};

    use super::*;

    fn cell_map() -> CellMap {
        let spec = |id: u32, state| CellSpec {
            id: CellId(id),
            weight: id,
            replicas: (1..=3)
                .map(|n| ReplicaSpec {
                    node_id: NodeId(n),
                    api_addr: format!("127.0.0.1:{}", 7000 + 10 * id as u64 + n),
                    control_addr: None,
                })
                .collect(),
            state,
        };
        CellMap {
            epoch: 3,
            cells: vec![spec(1, CellState::Active), spec(2, CellState::Isolated)],
            ..CellMap::default()
        }
    }

    /// The generated file, read back with the router's own schema, is the
    /// template with the listen address and the map, and valid.
    #[test]
    fn config_round_trips_through_the_router_schema() {
        let mut opts = RouterOptions::default();
        opts.config.cell_request_timeout = Duration::from_millis(1500);
        opts.config.breaker.health_interval = Duration::from_millis(400);
        opts.config
            .connect_to
            .insert("127.0.0.1:7011".into(), "127.0.0.1:9011".into());
        opts.config.tokens.push(TokenOptions {
            name: "reader".into(),
            token: "reader-token-0123456789".into(),
            buckets: vec!["photos".into(), "logs-*".into()],
            access: Access::Read,
            rate_per_sec: 0.5,
            burst: 1,
        });
        let listen: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        let expected = |opts: &RouterOptions| RouterConfig {
            listen,
            cell_map: cell_map(),
            ..opts.config.clone()
        };
        let read_back = |text: &str| {
            let c = RouterConfig::from_toml_str(text, Path::new("config.toml")).unwrap();
            c.validate().unwrap();
            c
        };
        let text = router_config_toml(&opts, listen, &cell_map()).unwrap();
        assert_eq!(read_back(&text), expected(&opts));

        // The shape the router reads.
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["listen"].as_str(), Some("127.0.0.1:18080"));
        assert_eq!(v["cell_request_timeout"].as_str(), Some("1s 500ms"));
        assert_eq!(v["shutdown_grace"].as_str(), Some("10s"));
        assert_eq!(v["breaker"]["health_interval"].as_str(), Some("400ms"));
        assert_eq!(v["tokens"][1]["access"].as_str(), Some("read"));
        assert_eq!(
            v["cell_map"]["cells"][1]["state"].as_str(),
            Some("isolated")
        );
        assert!(v.get("control").is_none(), "no [control] unless asked");

        // With a control cell to follow: a `[control]` table.
        opts.config.control = Some(RouterControlOptions {
            endpoints: vec!["127.0.0.1:7801".into(), "127.0.0.1:7802".into()],
            token: "control-cell-token-0123456789".into(),
            poll_interval: Duration::from_millis(200),
            cache_file: Some("/d/router/map-cache.json".into()),
            ..RouterControlOptions::default()
        });
        let text = router_config_toml(&opts, listen, &cell_map()).unwrap();
        assert_eq!(read_back(&text), expected(&opts));
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["control"]["poll_interval"].as_str(), Some("200ms"));
    }

    /// What the launcher sends by default means what the router's own defaults mean.
    #[test]
    fn default_options_keep_the_routers_defaults_but_secrets_and_tokens() {
        let o = RouterOptions::default();
        let d = RouterConfig::default();
        assert_eq!(
            RouterConfig {
                cell_api_token: d.cell_api_token.clone(),
                tokens: d.tokens.clone(),
                ..o.config.clone()
            },
            d
        );
    }

    #[test]
    fn readyz_bodies_are_read_per_cell() {
        let v = serde_json::json!({"ready": true, "epoch": 1, "cells": [
            {"id": 1, "breaker": "closed", "healthy": true},
            {"id": 2, "breaker": "open", "healthy": false},
        ]});
        assert_eq!(cell_entry(&v, CellId(2)).unwrap()["breaker"], "open");
        assert!(cell_entry(&v, CellId(3)).is_none());
        assert!(!all_cells_serving(&v));
        let v = serde_json::json!({"cells": [{"id": 1, "breaker": "closed", "healthy": true}]});
        assert!(all_cells_serving(&v));
        assert!(!all_cells_serving(&serde_json::json!({"cells": []})));
        let v = serde_json::json!({"cells": [{"id": 1, "breaker": "closed", "healthy": null}]});
        assert!(!all_cells_serving(&v));
    }
}
