//! A real `cellkv-router` process on loopback: its config file generated from
//! typed options (key for key the router's `RouterConfig`), spawned and faulted
//! through a [`ManagedProcess`], and its readiness read from `GET /readyz`.
//! It never links the router: it speaks TOML to it and HTTP with it.
//!
//! ```text
//! dir/
//!   config.toml   generated from RouterOptions + listen address + cell map
//!   router.log    stdout+stderr of every run, appended, one marker line per start
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap};
use serde::{Deserialize, Serialize};

use crate::cell_proc::{humantime, PROBE_TIMEOUT};
use crate::process::{configured_server, ServerProc, POLL};
use client::http::{Client, ClientConfig};

/// Name of the router binary.
pub const ROUTER_BIN: &str = "cellkv-router";

/// What a client token may do (mirrors the router's `access` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// GET, HEAD and listings.
    Read,
    /// Also PUT and DELETE.
    ReadWrite,
}

/// One `[[tokens]]` entry: a client bearer token with scope, access and rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenOptions {
    pub name: String,
    pub token: String,
    /// `"*"`, exact bucket names, or prefixes ending in `*`.
    pub buckets: Vec<String>,
    pub access: Access,
    pub rate_per_sec: f64,
    pub burst: u32,
}

impl TokenOptions {
    /// A read-write token for every bucket, with limits no local run or test reaches.
    pub fn unlimited(name: &str, token: &str) -> TokenOptions {
        TokenOptions {
            name: name.to_owned(),
            token: token.to_owned(),
            buckets: vec!["*".to_owned()],
            access: Access::ReadWrite,
            rate_per_sec: 1_000_000.0,
            burst: 1_000_000,
        }
    }
}

/// The router's `[breaker]` table. Defaults equal the router's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerOptions {
    pub failure_threshold: u32,
    pub open_duration: Duration,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub recovery_successes: u32,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failure_threshold: 5,
            open_duration: Duration::from_secs(2),
            health_interval: Duration::from_millis(500),
            health_timeout: Duration::from_millis(300),
            recovery_successes: 3,
        }
    }
}

/// The router's `[control]` table: where it watches the live cell map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterControlOptions {
    /// `host:port` of the control cell replicas' cell API.
    pub endpoints: Vec<String>,
    /// The control cell's `api_token`.
    pub token: String,
    pub poll_interval: Duration,
    /// Where the router saves every accepted map (and starts from).
    pub cache_file: Option<PathBuf>,
}

/// Everything about a router that is neither its address nor the cell map:
/// secrets, client tokens, limits, timeouts, and the harness's own deadlines.
/// Defaults equal the router's, except the tokens (one unlimited local token).
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Must equal every cell's `api_token`.
    pub cell_api_token: String,
    pub tokens: Vec<TokenOptions>,
    pub max_object_bytes: u64,
    pub cell_request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight_per_cell: usize,
    pub max_queue_per_cell: usize,
    pub queue_timeout: Duration,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    pub breaker: BreakerOptions,
    /// `[control]`: follow the map in a control cell; `None`: the static
    /// `cell_map` for the router's whole life.
    pub control: Option<RouterControlOptions>,
    /// `[connect_to]`: replica address → where the router dials it instead
    /// (the harness's latency proxies).
    pub connect_to: BTreeMap<String, String>,
    /// `RUST_LOG` of the router.
    pub rust_log: String,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
}

impl Default for RouterOptions {
    /// Secrets are fixed, well-known strings (matching `CellOptions::default()`):
    /// fine on loopback, never elsewhere.
    fn default() -> Self {
        RouterOptions {
            cell_api_token: "local-api-token-0123456789".into(),
            tokens: vec![TokenOptions::unlimited(
                "local",
                "local-client-token-0123456789",
            )],
            max_object_bytes: 4 << 20,
            cell_request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_in_flight_per_cell: 256,
            max_queue_per_cell: 512,
            queue_timeout: Duration::from_secs(1),
            max_in_flight: 4096,
            shutdown_grace: Duration::from_secs(10),
            breaker: BreakerOptions::default(),
            control: None,
            connect_to: BTreeMap::new(),
            rust_log: "info".into(),
            env: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Config file

/// The router's TOML config file, key for key. `deny_unknown_fields` mirrors
/// the router, so the round-trip test catches a key this side invents.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterConfigFile {
    listen: String,
    cell_api_token: String,
    max_object_bytes: u64,
    cell_request_timeout: String,
    connect_timeout: String,
    max_in_flight_per_cell: usize,
    max_queue_per_cell: usize,
    queue_timeout: String,
    max_in_flight: usize,
    shutdown_grace: String,
    // Tables last: TOML cannot put plain keys after them.
    breaker: BreakerConfigFile,
    tokens: Vec<TokenOptions>,
    cell_map: CellMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control: Option<ControlConfigFile>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    connect_to: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlConfigFile {
    endpoints: Vec<String>,
    token: String,
    poll_interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_file: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerConfigFile {
    failure_threshold: u32,
    open_duration: String,
    health_interval: String,
    health_timeout: String,
    recovery_successes: u32,
}

/// The router's config file: listening on `listen`, routing with `cell_map`
/// (only its starting map when `opts.control` is set).
pub fn router_config_toml(
    opts: &RouterOptions,
    listen: SocketAddr,
    cell_map: &CellMap,
) -> Result<String> {
    let b = &opts.breaker;
    let file = RouterConfigFile {
        listen: listen.to_string(),
        cell_api_token: opts.cell_api_token.clone(),
        max_object_bytes: opts.max_object_bytes,
        cell_request_timeout: humantime(opts.cell_request_timeout),
        connect_timeout: humantime(opts.connect_timeout),
        max_in_flight_per_cell: opts.max_in_flight_per_cell,
        max_queue_per_cell: opts.max_queue_per_cell,
        queue_timeout: humantime(opts.queue_timeout),
        max_in_flight: opts.max_in_flight,
        shutdown_grace: humantime(opts.shutdown_grace),
        breaker: BreakerConfigFile {
            failure_threshold: b.failure_threshold,
            open_duration: humantime(b.open_duration),
            health_interval: humantime(b.health_interval),
            health_timeout: humantime(b.health_timeout),
            recovery_successes: b.recovery_successes,
        },
        tokens: opts.tokens.clone(),
        cell_map: cell_map.clone(),
        control: opts.control.as_ref().map(|c| ControlConfigFile {
            endpoints: c.endpoints.clone(),
            token: c.token.clone(),
            poll_interval: humantime(c.poll_interval),
            cache_file: c.cache_file.clone(),
        }),
        connect_to: opts.connect_to.clone(),
    };
    toml::to_string(&file).context("serialize the router config as TOML")
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
            server: ServerProc::new(process, listen, dir, config_path, opts.shutdown_grace),
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

    #[test]
    fn config_round_trips_through_toml() {
        let mut opts = RouterOptions {
            cell_request_timeout: Duration::from_millis(1500),
            ..RouterOptions::default()
        };
        opts.breaker.health_interval = Duration::from_millis(250);
        opts.connect_to
            .insert("127.0.0.1:7011".into(), "127.0.0.1:9011".into());
        opts.tokens.push(TokenOptions {
            name: "reader".into(),
            token: "reader-token-0123456789".into(),
            buckets: vec!["photos".into(), "logs-*".into()],
            access: Access::Read,
            rate_per_sec: 0.5,
            burst: 1,
        });
        let listen: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        let text = router_config_toml(&opts, listen, &cell_map()).unwrap();
        let file: RouterConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(file.cell_map, cell_map());
        assert_eq!(file.tokens, opts.tokens);
        // Serializing the parsed file gives the same text: nothing is lost.
        assert_eq!(toml::to_string(&file).unwrap(), text);

        // The shape the router reads.
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["listen"].as_str(), Some("127.0.0.1:18080"));
        assert_eq!(v["cell_request_timeout"].as_str(), Some("1500ms"));
        assert_eq!(
            v["connect_to"]["127.0.0.1:7011"].as_str(),
            Some("127.0.0.1:9011")
        );
        assert_eq!(v["shutdown_grace"].as_str(), Some("10000ms"));
        assert_eq!(v["max_in_flight_per_cell"].as_integer(), Some(256));
        assert_eq!(v["breaker"]["health_interval"].as_str(), Some("250ms"));
        assert_eq!(v["breaker"]["recovery_successes"].as_integer(), Some(3));
        assert_eq!(v["tokens"][1]["access"].as_str(), Some("read"));
        assert_eq!(v["tokens"][0]["access"].as_str(), Some("read_write"));
        assert_eq!(v["cell_map"]["epoch"].as_integer(), Some(3));
        let c2 = &v["cell_map"]["cells"][1];
        assert_eq!(c2["state"].as_str(), Some("isolated"));
        assert_eq!(c2["weight"].as_integer(), Some(2));
        assert_eq!(
            c2["replicas"][2]["api_addr"].as_str(),
            Some("127.0.0.1:7023")
        );
        assert_eq!(c2["replicas"][2]["node_id"].as_integer(), Some(3));
        assert!(v.get("control").is_none(), "no [control] unless asked");

        // With a control cell to follow: a `[control]` table, after the map.
        opts.control = Some(RouterControlOptions {
            endpoints: vec!["127.0.0.1:7801".into(), "127.0.0.1:7802".into()],
            token: "control-cell-token-0123456789".into(),
            poll_interval: Duration::from_millis(200),
            cache_file: Some("/d/router/map-cache.json".into()),
        });
        let text = router_config_toml(&opts, listen, &cell_map()).unwrap();
        let file: RouterConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&file).unwrap(), text);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["control"]["poll_interval"].as_str(), Some("200ms"));
        assert_eq!(
            v["control"]["endpoints"][1].as_str(),
            Some("127.0.0.1:7802")
        );
        assert_eq!(
            v["control"]["cache_file"].as_str(),
            Some("/d/router/map-cache.json")
        );
        assert_eq!(v["cell_map"]["epoch"].as_integer(), Some(3));
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
