//! `cluster.json`: where everything of a running local cluster is, for
//! people, scripts, tests and the load harness (`external`): the router, the
//! control server and control cell, every data cell's replicas, each with
//! its pid and the command line that restarts it. Written by `LocalCluster`
//! once everything serves and rewritten by whoever restarts a process.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use common::{CellId, NodeId};
use serde::{Deserialize, Serialize};

use crate::cell_proc::{LocalCell, ReplicaProc};
use crate::process::ProcessSpec;
use crate::proxy::LatencyProxy;

/// Where everything is, written once the cluster serves.
pub const CLUSTER_FILE: &str = "cluster.json";
/// `CELLKV_CONTROL_URL=...` and `CELLKV_ADMIN_TOKEN=...`, one per line, for
/// `set -a; . DIR/control.env` before `cellkvctl`.
pub const CONTROL_ENV_FILE: &str = "control.env";

/// Reads and parses the `cluster.json` at `path`.
pub fn read_cluster_json(path: &Path) -> Result<ClusterInfo> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// The content of `cluster.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub router: RouterInfo,
    /// The client token (`Authorization: Bearer <token>`).
    pub token: String,
    /// Router → cell token, for talking to replicas directly.
    pub cell_api_token: String,
    /// Every cell's `/admin` token.
    pub admin_token: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// The data cells (never the control cell: that is `control.cell`).
    pub cells: Vec<CellInfo>,
    /// The control plane (absent in files of launchers without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlInfo>,
    /// `cellkv-local`'s own API (`local::api`), when it serves one: adding a
    /// cell and setting latency-proxy delays on the running cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_api: Option<LocalApiInfo>,
    /// The router's S3 API and a read-write credential for every bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Info>,
}

/// Where S3 clients find the cluster (`aws --endpoint-url`, boto3's
/// `endpoint_url`, ...), and a credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Info {
    /// `http://127.0.0.1:PORT`: path-style, plain HTTP.
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// Where `cellkv-local`'s API listens; its bearer token is `control.admin_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalApiInfo {
    /// `http://host:port`.
    pub url: String,
    /// Cells whose replicas the router reaches through latency proxies
    /// (`cellkv-local --latency-proxies`): the ones whose delay can be set.
    #[serde(default)]
    pub proxied_cells: Vec<CellId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// `http://host:port` of the public API.
    pub url: String,
    /// `None` (null) when the router is not running.
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// How to start it again exactly as it ran (absent in files of older launchers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
}

/// The control server (`cellkv-control`) and the control cell it keeps the
/// map and jobs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlInfo {
    /// `http://host:port` of the admin API (`CELLKV_CONTROL_URL`).
    pub url: String,
    /// The admin API's token (`CELLKV_ADMIN_TOKEN`).
    pub admin_token: String,
    /// `None` (null) when the control server is not running.
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub log: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// The control cell's `api_token` (routers and the control server present it).
    pub cell_token: String,
    /// The control cell's replicas.
    pub cell: CellInfo,
}

/// A process's command line, working directory and environment (beyond the
/// inherited one, minus [`SCRUBBED_ENV`](crate::process::SCRUBBED_ENV)), so
/// another program can restart it identically; stdout and stderr go to its `log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl CommandInfo {
    pub(crate) fn of(spec: &ProcessSpec) -> CommandInfo {
        CommandInfo {
            bin: spec.bin.clone(),
            args: spec
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            cwd: spec.dir.clone(),
            env: spec.env.clone(),
        }
    }

    /// The process's argv as `/proc/<pid>/cmdline` shows it.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.bin.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInfo {
    pub id: CellId,
    pub replicas: Vec<ReplicaInfo>,
}

impl CellInfo {
    /// The cell as it runs now; `proxies` (one per replica, or none) are the
    /// latency proxies the router reaches it through.
    pub(crate) fn of(cell: &LocalCell, proxies: &[LatencyProxy]) -> CellInfo {
        CellInfo {
            id: cell.cell_id(),
            replicas: cell
                .replicas()
                .iter()
                .enumerate()
                .map(|(i, r)| ReplicaInfo::of(r, proxies.get(i)))
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub node_id: NodeId,
    /// `None` (null) when the replica is not running.
    pub pid: Option<u32>,
    /// The cell API (`/v1`, `/health`, `/metrics`).
    pub api_url: String,
    /// Raft RPC and `/admin`.
    pub raft_url: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// How to start it again exactly as it ran (absent in files of older launchers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// `http://host:port` of the latency proxy the router reaches this
    /// replica through, when there is one (`slow_cell` scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

impl ReplicaInfo {
    fn of(r: &ReplicaProc, proxy: Option<&LatencyProxy>) -> ReplicaInfo {
        ReplicaInfo {
            node_id: r.node_id(),
            pid: r.pid(),
            api_url: r.api_url(),
            raft_url: r.raft_url(),
            data_dir: r.data_dir().to_owned(),
            config: r.config_path().to_owned(),
            log: r.log_path().to_owned(),
            command: Some(CommandInfo::of(r.spec())),
            proxy_url: proxy.map(|p| format!("http://{}", p.listen_addr())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    fn replica(node: u64, cell: &str) -> ReplicaInfo {
        ReplicaInfo {
            node_id: NodeId(node),
            pid: None,
            api_url: "http://127.0.0.1:17001".into(),
            raft_url: "http://127.0.0.1:17101".into(),
            data_dir: format!("/d/{cell}-n{node}/data").into(),
            config: format!("/d/{cell}-n{node}/config.toml").into(),
            log: format!("/d/{cell}-n{node}/replica.log").into(),
            command: None,
            proxy_url: None,
        }
    }

    #[test]
    fn cluster_json_has_the_documented_shape() {
        let command = |name: &str| CommandInfo {
            bin: format!("/bin/{name}").into(),
            args: vec!["--config".into(), format!("/d/{name}/config.toml")],
            cwd: format!("/d/{name}").into(),
            env: vec![("RUST_LOG".into(), "info".into())],
        };
        let info = ClusterInfo {
            router: RouterInfo {
                url: "http://127.0.0.1:18080".into(),
                pid: Some(42),
                config: "/d/router/config.toml".into(),
                log: "/d/router/router.log".into(),
                command: Some(command("router")),
            },
            token: "client-x".into(),
            cell_api_token: "cell-api-x".into(),
            admin_token: "admin-x".into(),
            dir: "/d".into(),
            cells: vec![CellInfo {
                id: CellId(1),
                replicas: vec![ReplicaInfo {
                    node_id: NodeId(2),
                    proxy_url: Some("http://127.0.0.1:17201".into()),
                    ..replica(2, "c1")
                }],
            }],
            control: Some(ControlInfo {
                url: "http://127.0.0.1:17900".into(),
                admin_token: "control-admin-x".into(),
                pid: Some(43),
                config: "/d/control/config.toml".into(),
                log: "/d/control/control.log".into(),
                command: Some(command("control")),
                cell_token: "control-cell-x".into(),
                cell: CellInfo {
                    id: CellId(100),
                    replicas: vec![replica(1, "control/c100")],
                },
            }),
            local_api: None,
            s3: Some(S3Info {
                url: "http://127.0.0.1:19000".into(),
                access_key: "CKVEXAMPLE".into(),
                secret_key: "s3-x".into(),
                region: "us-east-1".into(),
            }),
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(
            keys(&v),
            [
                "admin_token",
                "cell_api_token",
                "cells",
                "control",
                "dir",
                "router",
                "s3",
                "token"
            ]
        );
        assert_eq!(
            keys(&v["s3"]),
            ["access_key", "region", "secret_key", "url"]
        );
        assert_eq!(
            keys(&v["router"]),
            ["command", "config", "log", "pid", "url"]
        );
        assert_eq!(keys(&v["router"]["command"]), ["args", "bin", "cwd", "env"]);
        assert_eq!(v["router"]["command"]["args"][1], "/d/router/config.toml");
        assert_eq!(v["router"]["command"]["env"][0][0], "RUST_LOG");
        assert_eq!(v["router"]["url"], "http://127.0.0.1:18080");
        assert_eq!(v["router"]["pid"], 42);
        assert_eq!(v["token"], "client-x");
        assert_eq!(keys(&v["cells"][0]), ["id", "replicas"]);
        assert_eq!(v["cells"][0]["id"], 1);
        let r = &v["cells"][0]["replicas"][0];
        // No command: the key is left out (and a file without it still parses).
        assert_eq!(
            keys(r),
            [
                "api_url",
                "config",
                "data_dir",
                "log",
                "node_id",
                "pid",
                "proxy_url",
                "raft_url"
            ]
        );
        assert_eq!(r["proxy_url"], "http://127.0.0.1:17201");
        assert_eq!(r["node_id"], 2);
        assert_eq!(r["pid"], serde_json::Value::Null);
        assert_eq!(r["data_dir"], "/d/c1-n2/data");
        let c = &v["control"];
        assert_eq!(
            keys(c),
            [
                "admin_token",
                "cell",
                "cell_token",
                "command",
                "config",
                "log",
                "pid",
                "url"
            ]
        );
        assert_eq!(c["url"], "http://127.0.0.1:17900");
        assert_eq!(c["admin_token"], "control-admin-x");
        assert_eq!(c["cell"]["id"], 100);
        assert_eq!(c["cell"]["replicas"][0]["node_id"], 1);
        let back: ClusterInfo = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, info);

        // A file of a launcher without a control plane still parses.
        let mut old = v;
        old.as_object_mut().unwrap().remove("control");
        let back: ClusterInfo = serde_json::from_value(old).unwrap();
        assert_eq!(back.control, None);
    }
}
