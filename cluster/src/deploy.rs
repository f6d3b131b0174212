//! A cellkv cluster as containers (Docker Compose), one process per
//! container: the files `cellkv-deploy` generates, the in-network bootstrap
//! and the description of a running deployment. Every config is one of the
//! servers' own typed configs (`common::config::*`), built the way
//! `cell_proc`, `router_proc` and `control_proc` build them for local
//! processes, and serialized; nothing here mirrors a schema by hand.
//!
//! ```text
//! dir/                 (0700: the files below hold secrets)
//!   layout.json        project, image, host ports, cells, secrets: written once, kept
//!   compose.json       the Compose file (JSON is YAML), rewritten by every `generate`
//!   config/<host>.toml every process's config, mounted read-only at /etc/cellkv/config.toml
//!   config/initial-map.toml  the map the control server stores if the control cell has none
//!   control.env        CELLKV_CONTROL_URL + CELLKV_ADMIN_TOKEN for cellkvctl on the host
//!   deployment.json    written by `describe` once everything serves: every container,
//!                      address, volume and token
//! ```
//!
//! Inside the private network every process has its own host name and the
//! same well-known ports: a replica `c<cell>-n<node>` serves its API on
//! [`CELL_API_PORT`] and Raft/admin on [`CELL_RAFT_PORT`], the control server
//! `control` on [`CONTROL_PORT`], the routers `router<i>` on [`ROUTER_PORT`].
//! Only the routers and the control server's admin API are published, on
//! host loopback ports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap, CellSpec, CellState, NodeId, ReplicaSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cell_proc::{leader_of, CellConfig, PeerConfig, CELL_BIN, PROBE_TIMEOUT};
use crate::control_proc::{control_config_toml, ControlConfig, ControlServerOptions, CONTROL_BIN};
use crate::local::{
    write_atomically, Secrets, CONTROL_CELL_ID, CONTROL_REPLICAS, MAP_POLL_INTERVAL,
};
use crate::process::{free_port, POLL};
use crate::router_proc::{
    all_cells_serving, router_config_toml, unlimited_token, RouterControlOptions, RouterOptions,
    ROUTER_BIN,
};
use client::admin::AdminClient;
use client::http::{Client, ClientConfig};

/// Ports, secrets and shape of a deployment directory.
pub const LAYOUT_FILE: &str = "layout.json";
/// Version of `layout.json` this tool writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// The Compose file.
pub const COMPOSE_FILE: &str = "compose.json";
/// The description of the running deployment.
pub const DEPLOYMENT_FILE: &str = "deployment.json";
/// `CELLKV_CONTROL_URL` and `CELLKV_ADMIN_TOKEN` for `cellkvctl` on the host.
pub const CONTROL_ENV_FILE: &str = "control.env";
/// The Compose service that runs `cellkv-deploy bootstrap` inside the
/// network (profile `tools`: `up` does not start it).
pub const BOOTSTRAP_SERVICE: &str = "bootstrap";

/// Every replica's cell API port, in its own container.
pub const CELL_API_PORT: u16 = 7001;
/// Every replica's Raft RPC and `/admin` port.
pub const CELL_RAFT_PORT: u16 = 7101;
/// The control server's admin API port.
pub const CONTROL_PORT: u16 = 7900;
/// Every router's public API port.
pub const ROUTER_PORT: u16 = 8080;
/// Where the binaries are in the image.
pub const IMAGE_BIN_DIR: &str = "/usr/local/bin";
/// Where a container finds its config file.
const CONFIG_IN_CONTAINER: &str = "/etc/cellkv/config.toml";
/// Where the control server finds the initial map.
const MAP_IN_CONTAINER: &str = "/etc/cellkv/initial-map.toml";
/// Where the bootstrap container finds `layout.json`.
const LAYOUT_IN_CONTAINER: &str = "/etc/cellkv/layout.json";
/// The data volume's mount point (owned by the image's user).
const DATA_IN_CONTAINER: &str = "/data";
/// libfaketime in the image (deploy/build-image.sh), preloaded by data replicas.
pub const FAKETIME_LIB: &str = "/usr/lib/cellkv/libfaketime.so.1";
/// The offset of a data replica's wall clock (`+1.5`, `-30`: seconds), read
/// by libfaketime every second; absent, the host's clock.
pub const FAKETIME_FILE: &str = "/data/faketime";
/// The name of the router's client token.
pub const CLIENT_TOKEN_NAME: &str = "client";

/// CPU (cores, a CFS quota, not a reservation) and memory limit of one container.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub cpus: f64,
    pub memory_mib: u64,
}

/// The CFS period the CPU quotas are counted over (Docker's default is
/// 100 ms). A container that spends its quota early in a period waits for the
/// next one: with 100 ms periods a half-core replica could stall 50 ms at a
/// time, longer than a Raft heartbeat (seen as 50 ms AppendEntries timeouts
/// and tail latencies of 400 ms at 200 requests/s); with 10 ms, 5 ms at most.
pub const CPU_PERIOD_US: u64 = 10_000;

impl Limits {
    /// `cpu_period` and `cpu_quota` of a Compose service.
    fn cpu_quota_us(&self) -> u64 {
        (self.cpus * CPU_PERIOD_US as f64).round() as u64
    }
}

/// Limits per role, sized for a 2-core machine running everything at once:
/// every replica may burst to half a core (a cell's three replicas together
/// to 1.5 cores, so one busy cell cannot take the whole machine), a router
/// to one core (it does the most work per request), the control plane to a
/// quarter core per process. Memory: RocksDB's memtables and caches at the
/// defaults stay well under 512 MiB per replica for a test-sized data set.
pub const DATA_REPLICA_LIMITS: Limits = Limits {
    cpus: 0.5,
    memory_mib: 512,
};
pub const CONTROL_REPLICA_LIMITS: Limits = Limits {
    cpus: 0.25,
    memory_mib: 256,
};
pub const CONTROL_SERVER_LIMITS: Limits = Limits {
    cpus: 0.25,
    memory_mib: 128,
};
pub const ROUTER_LIMITS: Limits = Limits {
    cpus: 1.0,
    memory_mib: 256,
};

/// A deployment directory's persistent shape (`layout.json`): generated once
/// and kept, so `generate` again (every `up`) yields the same cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployLayout {
    pub version: u32,
    /// The Compose project (prefix of containers, network and volumes).
    pub project: String,
    /// The image every container runs.
    pub image: String,
    /// Data cells' ids.
    pub cells: Vec<CellId>,
    /// Replicas per cell (the control cell's too): nodes `1..=replicas`.
    pub replicas: usize,
    /// The cells whose replicas changed since (a replica added or removed
    /// by an operator): their nodes now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<CellId, Vec<NodeId>>,
    /// The highest node id each such cell ever had: node ids are never reused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub highest_node: BTreeMap<CellId, u64>,
    /// One host loopback port per router.
    pub router_ports: Vec<u16>,
    /// The control server's admin API on the host loopback.
    pub control_port: u16,
    pub secrets: Secrets,
}

/// What a fresh layout is made of.
#[derive(Clone, Debug)]
pub struct NewLayout {
    pub project: String,
    pub image: String,
    pub cells: usize,
    pub routers: usize,
    /// Host ports of the routers (`None`: free ones).
    pub router_ports: Option<Vec<u16>>,
    /// Host port of the control server's admin API (`None`: a free one).
    pub control_port: Option<u16>,
}

impl DeployLayout {
    /// A fresh layout: cells `1..=cells` of 3 replicas, fresh secrets, the
    /// given host ports or free ones.
    pub fn allocate(new: &NewLayout) -> Result<DeployLayout> {
        if new.cells == 0 || new.cells >= CONTROL_CELL_ID.0 as usize {
            bail!("a deployment has 1 to {} data cells", CONTROL_CELL_ID.0 - 1);
        }
        if new.routers == 0 {
            bail!("a deployment needs at least one router");
        }
        check_project_name(&new.project)?;
        let router_ports = match &new.router_ports {
            Some(p) if p.len() == new.routers => p.clone(),
            Some(p) => bail!("{} router ports for {} routers", p.len(), new.routers),
            None => (0..new.routers)
                .map(|_| free_port().context("pick a free host port for a router"))
                .collect::<Result<_>>()?,
        };
        let control_port = match new.control_port {
            Some(p) => p,
            None => free_port().context("pick a free host port for the control server")?,
        };
        let cells = (1..=new.cells as u32).map(CellId).collect();
        Ok(DeployLayout {
            version: LAYOUT_VERSION,
            project: new.project.clone(),
            image: new.image.clone(),
            cells,
            replicas: CONTROL_REPLICAS,
            members: BTreeMap::new(),
            highest_node: BTreeMap::new(),
            router_ports,
            control_port,
            secrets: Secrets::generate(),
        })
    }

    /// The layout in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<DeployLayout>> {
        let path = dir.join(LAYOUT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    fn parse(text: &str, path: &Path) -> Result<DeployLayout> {
        let layout: DeployLayout =
            serde_json::from_str(text).with_context(|| format!("parse {}", path.display()))?;
        if layout.version != LAYOUT_VERSION {
            bail!(
                "{} has version {}; this tool reads version {LAYOUT_VERSION}",
                path.display(),
                layout.version
            );
        }
        Ok(layout)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("serialize the layout")?;
        write_atomically(&dir.join(LAYOUT_FILE), text.as_bytes())
    }

    /// Every cell, the control cell first.
    pub fn all_cells(&self) -> Vec<CellId> {
        std::iter::once(CONTROL_CELL_ID)
            .chain(self.cells.iter().copied())
            .collect()
    }

    /// Node ids of `cell`'s replicas (containers), in order.
    pub fn nodes(&self, cell: CellId) -> Vec<NodeId> {
        match self.members.get(&cell) {
            Some(nodes) => nodes.clone(),
            None => (1..=self.replicas as u64).map(NodeId).collect(),
        }
    }

    /// The members of `cell` as its replicas' configs list them.
    pub fn peer_configs(&self, cell: CellId) -> Vec<PeerConfig> {
        self.nodes(cell)
            .into_iter()
            .map(|node| PeerConfig {
                node_id: node,
                api_addr: replica_api_addr(cell, node),
                raft_addr: replica_raft_addr(cell, node),
            })
            .collect()
    }

    /// The control cell's replicas' API addresses.
    pub fn control_endpoints(&self) -> Vec<String> {
        self.nodes(CONTROL_CELL_ID)
            .into_iter()
            .map(|n| replica_api_addr(CONTROL_CELL_ID, n))
            .collect()
    }

    /// The map the control server stores first (and the routers' starting
    /// map): every data cell active, weight 1, epoch 1.
    pub fn cell_map(&self) -> CellMap {
        let spec = |id: CellId| CellSpec {
            id,
            weight: 1,
            replicas: self
                .nodes(id)
                .into_iter()
                .map(|node| ReplicaSpec {
                    node_id: node,
                    api_addr: replica_api_addr(id, node),
                    control_addr: Some(replica_raft_addr(id, node)),
                })
                .collect(),
            state: CellState::Active,
        };
        CellMap {
            epoch: 1,
            cells: self.cells.iter().map(|&id| spec(id)).collect(),
            ..CellMap::default()
        }
    }

    /// Router host names, `router1..`.
    pub fn routers(&self) -> Vec<String> {
        (1..=self.router_ports.len())
            .map(|i| format!("router{i}"))
            .collect()
    }

    /// `http://127.0.0.1:<port>` of every router, as published on the host.
    pub fn router_urls(&self) -> Vec<String> {
        self.router_ports
            .iter()
            .map(|p| format!("http://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, *p))))
            .collect()
    }

    /// `http://127.0.0.1:<port>` of the control server's admin API on the host.
    pub fn control_url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.control_port))
        )
    }

    // -- configs --------------------------------------------------------------

    /// Replica `node` of `cell`'s config: the cell's defaults with the
    /// deployment's secrets (the control cell has its own API token),
    /// listening on every interface of its container, advertising its host name.
    pub fn replica_config(&self, cell: CellId, node: NodeId) -> CellConfig {
        let s = &self.secrets;
        let api_token = if cell == CONTROL_CELL_ID {
            s.control_cell_token.clone()
        } else {
            s.cell_api_token.clone()
        };
        CellConfig {
            cell_id: cell,
            node_id: node,
            api_listen: any_addr(CELL_API_PORT),
            raft_listen: any_addr(CELL_RAFT_PORT),
            api_advertise: Some(replica_api_addr(cell, node)),
            raft_advertise: Some(replica_raft_addr(cell, node)),
            data_dir: PathBuf::from(DATA_IN_CONTAINER),
            cluster_secret: s.cluster_secret.clone(),
            api_token,
            admin_token: s.admin_token.clone(),
            peers: self.peer_configs(cell),
            ..CellConfig::default()
        }
    }

    /// The control server's config (the local launcher's template: the
    /// server's defaults with a short job lease).
    pub fn control_config(&self) -> ControlConfig {
        let s = &self.secrets;
        ControlConfig {
            admin_listen: any_addr(CONTROL_PORT),
            admin_token: s.control_admin_token.clone(),
            control_cell: self.control_endpoints(),
            control_token: s.control_cell_token.clone(),
            cell_api_token: s.cell_api_token.clone(),
            cell_admin_token: s.admin_token.clone(),
            ..ControlServerOptions::default().config
        }
    }

    /// Every router's options: the router's defaults, the client token, and
    /// the control cell to follow (map cache in the container's /data).
    pub fn router_options(&self) -> RouterOptions {
        let s = &self.secrets;
        let mut opts = RouterOptions::default();
        opts.config.cell_api_token = s.cell_api_token.clone();
        opts.config.tokens = vec![unlimited_token(CLIENT_TOKEN_NAME, &s.client_token)];
        opts.config.control = Some(RouterControlOptions {
            endpoints: self.control_endpoints(),
            token: s.control_cell_token.clone(),
            poll_interval: MAP_POLL_INTERVAL,
            cache_file: Some(Path::new(DATA_IN_CONTAINER).join("map-cache.json")),
            ..RouterControlOptions::default()
        });
        opts
    }

    /// Every config file: `(file name under config/, TOML text)`, checked
    /// by the servers' own validation first.
    pub fn config_files(&self) -> Result<Vec<(String, String)>> {
        let mut files = Vec::new();
        for cell in self.all_cells() {
            for node in self.nodes(cell) {
                let config = self.replica_config(cell, node);
                config
                    .validate()
                    .with_context(|| format!("the config of {}", replica_host(cell, node)))?;
                let text = toml::to_string(&config).context("serialize a replica config")?;
                files.push((format!("{}.toml", replica_host(cell, node)), text));
            }
        }
        let control = self.control_config();
        control.validate().context("the control server's config")?;
        files.push((
            "control.toml".into(),
            control_config_toml(&control, Some(Path::new(MAP_IN_CONTAINER)))?,
        ));
        let map = self.cell_map();
        map.validate().context("the initial cell map")?;
        files.push((
            "initial-map.toml".into(),
            toml::to_string(&map).context("serialize the initial map")?,
        ));
        let router = self.router_options();
        for name in self.routers() {
            let text = router_config_toml(&router, any_addr(ROUTER_PORT), &map)?;
            common::config::router::RouterConfig::from_toml_str(&text, Path::new(&name))?
                .validate()
                .with_context(|| format!("the config of {name}"))?;
            files.push((format!("{name}.toml"), text));
        }
        Ok(files)
    }

    // -- the Compose file -----------------------------------------------------

    /// The Compose file: one service per process, each with its host name,
    /// config, volume (replicas) and limits, on one private network.
    pub fn compose(&self) -> Value {
        let mut services = serde_json::Map::new();
        let mut volumes = serde_json::Map::new();
        let service = |bin: &str, host: &str, limits: Limits, grace: Duration| {
            json!({
                "image": self.image,
                "hostname": host,
                "command": [format!("{IMAGE_BIN_DIR}/{bin}"), "--config", CONFIG_IN_CONTAINER],
                "volumes": [format!("./config/{host}.toml:{CONFIG_IN_CONTAINER}:ro")],
                "networks": ["cellkv"],
                "restart": "unless-stopped",
                "cpu_period": CPU_PERIOD_US,
                "cpu_quota": limits.cpu_quota_us(),
                "mem_limit": format!("{}m", limits.memory_mib),
                // The server's own shutdown grace, and a little more.
                "stop_grace_period": format!("{}s", grace.as_secs() + 5),
                "environment": {"RUST_LOG": "info", "NO_COLOR": "1"},
                "labels": {"io.cellkv.role": host_role(host)},
            })
        };
        for cell in self.all_cells() {
            let limits = if cell == CONTROL_CELL_ID {
                CONTROL_REPLICA_LIMITS
            } else {
                DATA_REPLICA_LIMITS
            };
            for node in self.nodes(cell) {
                let host = replica_host(cell, node);
                let config = self.replica_config(cell, node);
                let mut s = service(CELL_BIN, &host, limits, config.shutdown_grace);
                if cell != CONTROL_CELL_ID {
                    // The load harness moves this replica's wall clock by
                    // writing FAKETIME_FILE (ADR 0022); without the file the
                    // clock is the host's. Monotonic clocks are never moved.
                    let env = &mut s["environment"];
                    env["LD_PRELOAD"] = json!(FAKETIME_LIB);
                    env["FAKETIME_TIMESTAMP_FILE"] = json!(FAKETIME_FILE);
                    env["FAKETIME_DONT_FAKE_MONOTONIC"] = json!("1");
                    env["FAKETIME_CACHE_DURATION"] = json!("1");
                }
                let volume = data_volume(cell, node);
                push(&mut s["volumes"], format!("{volume}:{DATA_IN_CONTAINER}"));
                s["labels"]["io.cellkv.cell"] = json!(cell.0.to_string());
                volumes.insert(volume, json!({}));
                services.insert(host, s);
            }
        }
        let control = self.control_config();
        let mut s = service(
            CONTROL_BIN,
            "control",
            CONTROL_SERVER_LIMITS,
            control.shutdown_grace,
        );
        push(
            &mut s["volumes"],
            format!("./config/initial-map.toml:{MAP_IN_CONTAINER}:ro"),
        );
        s["ports"] = json!([format!("127.0.0.1:{}:{CONTROL_PORT}", self.control_port)]);
        s["depends_on"] = json!(self
            .nodes(CONTROL_CELL_ID)
            .into_iter()
            .map(|n| replica_host(CONTROL_CELL_ID, n))
            .collect::<Vec<_>>());
        services.insert("control".into(), s);
        let grace = self.router_options().config.shutdown_grace;
        for (name, port) in self.routers().into_iter().zip(&self.router_ports) {
            let mut s = service(ROUTER_BIN, &name, ROUTER_LIMITS, grace);
            s["ports"] = json!([format!("127.0.0.1:{port}:{ROUTER_PORT}")]);
            services.insert(name, s);
        }
        services.insert(
            BOOTSTRAP_SERVICE.into(),
            json!({
                "image": self.image,
                "profiles": ["tools"],
                "command": [
                    format!("{IMAGE_BIN_DIR}/{DEPLOY_BIN}"), "bootstrap",
                    "--layout", LAYOUT_IN_CONTAINER,
                ],
                "volumes": [format!("./{LAYOUT_FILE}:{LAYOUT_IN_CONTAINER}:ro")],
                "networks": ["cellkv"],
                "restart": "no",
                "cpus": 0.25,
                "mem_limit": "64m",
            }),
        );
        json!({
            "services": services,
            "networks": {"cellkv": {"driver": "bridge"}},
            "volumes": volumes,
        })
    }

    /// Writes `layout.json` (if new), `config/*`, `compose.json` and
    /// `control.env` into `dir`.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("create {}", config_dir.display()))?;
        for (name, text) in self.config_files()? {
            write_atomically(&config_dir.join(name), text.as_bytes())?;
        }
        let compose =
            serde_json::to_string_pretty(&self.compose()).context("serialize the Compose file")?;
        write_atomically(&dir.join(COMPOSE_FILE), compose.as_bytes())?;
        let env = format!(
            "CELLKV_CONTROL_URL={}\nCELLKV_ADMIN_TOKEN={}\n",
            self.control_url(),
            self.secrets.control_admin_token
        );
        write_atomically(&dir.join(CONTROL_ENV_FILE), env.as_bytes())
    }
}

/// Name of the deployment tool (`src/bin/cellkv-deploy.rs`), in the image too.
pub const DEPLOY_BIN: &str = "cellkv-deploy";

/// Host name (and Compose service) of replica `node` of `cell`.
pub fn replica_host(cell: CellId, node: NodeId) -> String {
    format!("c{cell}-n{node}")
}

/// The named volume of a replica's data (prefixed by the project).
pub fn data_volume(cell: CellId, node: NodeId) -> String {
    format!("{}-data", replica_host(cell, node))
}

pub fn replica_api_addr(cell: CellId, node: NodeId) -> String {
    format!("{}:{CELL_API_PORT}", replica_host(cell, node))
}

pub fn replica_raft_addr(cell: CellId, node: NodeId) -> String {
    format!("{}:{CELL_RAFT_PORT}", replica_host(cell, node))
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

fn push(array: &mut Value, item: String) {
    if let Some(a) = array.as_array_mut() {
        a.push(Value::String(item));
    }
}

fn host_role(host: &str) -> &'static str {
    if host.starts_with(&format!("c{CONTROL_CELL_ID}-")) {
        "control-replica"
    } else if host.starts_with('c') && host != "control" {
        "replica"
    } else if host == "control" {
        "control"
    } else {
        "router"
    }
}

/// Compose project names: lower-case letters, digits, `-` and `_`.
fn check_project_name(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && p.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!("project name {p:?}: use lower-case letters, digits, '-' and '_'");
    }
    Ok(())
}

/// The layout of `dir`, created (and saved) from `new` if there is none. A
/// kept layout must agree with what `new` asks for explicitly.
pub fn load_or_create(dir: &Path, new: &NewLayout) -> Result<(DeployLayout, bool)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make {} private", dir.display()))?;
    }
    if let Some(layout) = DeployLayout::load(dir)? {
        if layout.project != new.project {
            bail!(
                "{} belongs to Compose project {:?}, not {:?}: use the same project or a new directory",
                dir.display(),
                layout.project,
                new.project
            );
        }
        return Ok((layout, false));
    }
    let layout = DeployLayout::allocate(new)?;
    layout.save(dir)?;
    Ok((layout, true))
}

// ---------------------------------------------------------------------------
// Bootstrap, inside the network

fn probe_client() -> Client {
    Client::new(ClientConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: PROBE_TIMEOUT,
        pool_max_idle_per_host: 2,
        ..ClientConfig::default()
    })
}

/// Run inside the deployment's network: initializes every cell (the
/// replicas' `/admin/init` on node 1; an initialized cell is fine), waits
/// until each has a leader and every replica is ready, until the control
/// server holds its job lease, and until every router serves every cell of
/// the live map. Prints progress on stderr.
pub async fn bootstrap(layout: &DeployLayout, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let client = probe_client();
    let cells = layout.all_cells();
    let mut set = tokio::task::JoinSet::new();
    for cell in cells {
        let (client, layout) = (client.clone(), layout.clone());
        set.spawn(async move {
            let hosts: Vec<String> = layout
                .nodes(cell)
                .into_iter()
                .map(|n| replica_host(cell, n))
                .collect();
            bootstrap_cell(&client, &layout, cell, &hosts, deadline)
                .await
                .with_context(|| format!("bootstrap cell {cell}"))
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("a bootstrap task failed")??;
    }
    let admin = AdminClient::new(
        &format!("http://control:{CONTROL_PORT}"),
        &layout.secrets.control_admin_token,
    );
    let epoch = loop {
        let last = match admin.status().await {
            Ok(s) if s.control.lease_held => break admin.map().await?.epoch,
            Ok(s) => format!("the job lease is not held yet: {:?}", s.control),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("the control server is not ready after {timeout:?}; last: {last}");
        }
        tokio::time::sleep(POLL * 4).await;
    };
    eprintln!("cellkv-deploy: the control server holds its lease (map epoch {epoch})");
    for name in layout.routers() {
        let url = format!("http://{name}:{ROUTER_PORT}/readyz");
        wait_router(&client, &url, epoch, deadline)
            .await
            .with_context(|| format!("wait for {name}"))?;
        eprintln!("cellkv-deploy: {name} serves every cell");
    }
    Ok(())
}

/// Initializes `cell` (its replicas reached at `hosts`, host names inside
/// the network or addresses from the host, in node order) and waits until
/// it has a leader and every replica is ready.
pub(crate) async fn bootstrap_cell(
    client: &Client,
    layout: &DeployLayout,
    cell: CellId,
    hosts: &[String],
    deadline: Instant,
) -> Result<()> {
    for host in hosts {
        let url = format!("http://{host}:{CELL_API_PORT}/health");
        loop {
            match client.get(&url, &[]).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    bail!("{host} does not answer {url}: {e}")
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
    let url = format!("http://{}:{CELL_RAFT_PORT}/admin/init", hosts[0]);
    let auth = format!("Bearer {}", layout.secrets.admin_token);
    loop {
        match client
            .post(&url, &[("authorization", &auth)], Vec::new())
            .await
        {
            Ok(r) if r.status == 200 => {
                eprintln!("cellkv-deploy: cell {cell} initialized");
                break;
            }
            Ok(r)
                if r.status == 409 && r.error_code().as_deref() == Some("already_initialized") =>
            {
                eprintln!("cellkv-deploy: cell {cell} was initialized before");
                break;
            }
            Ok(r) => bail!("POST {url} answered {}: {}", r.status, r.text()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("POST {url}"))
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
    loop {
        let mut health = Vec::with_capacity(hosts.len());
        for host in hosts {
            let url = format!("http://{host}:{CELL_API_PORT}/health");
            health.push(
                client
                    .get_json::<Value>(&url, &[])
                    .await
                    .ok()
                    .map(|(_, v)| v),
            );
        }
        let all_ready = health
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| h["ready"] == true));
        if all_ready && leader_of(&health).is_some() {
            eprintln!("cellkv-deploy: cell {cell} is ready");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("not ready in time; health: {health:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a router's `/readyz` until it follows map `epoch` (or later) and
/// serves every cell.
async fn wait_router(client: &Client, url: &str, epoch: u64, deadline: Instant) -> Result<()> {
    loop {
        let last = match client.get_json::<Value>(url, &[]).await {
            Ok((200, v)) if v["epoch"].as_u64() >= Some(epoch) && all_cells_serving(&v) => {
                return Ok(())
            }
            Ok((status, v)) => format!("{status} {v}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{url} does not serve every cell in time; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------
// From the host: readiness through the published ports, and the description

/// One container of the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The Compose service (also the container's host name in the network).
    pub service: String,
    /// `replica`, `control-replica`, `control` or `router`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// Addresses inside the network (`host:port`), by name (`api`, `raft`, `admin`, `http`).
    pub addresses: Vec<(String, String)>,
    /// `http://127.0.0.1:PORT` on the host, for the published ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// The named volume of its data (prefixed by the project in Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The config file on the host.
    pub config: PathBuf,
}

/// `deployment.json`: the running deployment (the role of `cluster.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub project: String,
    pub image: String,
    pub compose_file: PathBuf,
    /// The private network's Docker name.
    pub network: String,
    /// The routers' URLs on the host.
    pub routers: Vec<String>,
    /// The client token (`Authorization: Bearer <token>`).
    pub token: String,
    /// `http://127.0.0.1:PORT` of the control server's admin API on the host.
    pub control_url: String,
    /// Its token (`CELLKV_ADMIN_TOKEN` of cellkvctl).
    pub control_admin_token: String,
    /// Router → data cell token.
    pub cell_api_token: String,
    /// Every cell's `/admin` token.
    pub admin_token: String,
    /// The control cell's API token.
    pub control_cell_token: String,
    pub containers: Vec<ContainerInfo>,
}

impl DeployLayout {
    /// The description of this deployment, its files in `dir`.
    pub fn describe(&self, dir: &Path) -> Deployment {
        let config = |host: &str| dir.join("config").join(format!("{host}.toml"));
        let mut containers = Vec::new();
        for cell in self.all_cells() {
            for node in self.nodes(cell) {
                let host = replica_host(cell, node);
                containers.push(ContainerInfo {
                    role: host_role(&host).into(),
                    cell_id: Some(cell),
                    node_id: Some(node),
                    addresses: vec![
                        ("api".into(), replica_api_addr(cell, node)),
                        ("raft".into(), replica_raft_addr(cell, node)),
                    ],
                    published: None,
                    volume: Some(format!("{}_{}", self.project, data_volume(cell, node))),
                    config: config(&host),
                    service: host,
                });
            }
        }
        containers.push(ContainerInfo {
            service: "control".into(),
            role: "control".into(),
            cell_id: None,
            node_id: None,
            addresses: vec![("admin".into(), format!("control:{CONTROL_PORT}"))],
            published: Some(self.control_url()),
            volume: None,
            config: config("control"),
        });
        for (name, url) in self.routers().into_iter().zip(self.router_urls()) {
            containers.push(ContainerInfo {
                role: "router".into(),
                cell_id: None,
                node_id: None,
                addresses: vec![("http".into(), format!("{name}:{ROUTER_PORT}"))],
                published: Some(url),
                volume: None,
                config: config(&name),
                service: name,
            });
        }
        let s = &self.secrets;
        Deployment {
            project: self.project.clone(),
            image: self.image.clone(),
            compose_file: dir.join(COMPOSE_FILE),
            network: format!("{}_cellkv", self.project),
            routers: self.router_urls(),
            token: s.client_token.clone(),
            control_url: self.control_url(),
            control_admin_token: s.control_admin_token.clone(),
            cell_api_token: s.cell_api_token.clone(),
            admin_token: s.admin_token.clone(),
            control_cell_token: s.control_cell_token.clone(),
            containers,
        }
    }

    /// From the host: waits until the control server's published port shows
    /// the lease held and every router's published port serves every cell.
    pub async fn wait_published(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let admin = AdminClient::new(&self.control_url(), &self.secrets.control_admin_token);
        let epoch = loop {
            let last = match admin.status().await {
                Ok(s) if s.control.lease_held => break admin.map().await?.epoch,
                Ok(s) => format!("lease not held: {:?}", s.control),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the control server is not ready at {} after {timeout:?}: {last}",
                    self.control_url()
                );
            }
            tokio::time::sleep(POLL * 4).await;
        };
        let client = probe_client();
        for url in self.router_urls() {
            wait_router(&client, &format!("{url}/readyz"), epoch, deadline).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> DeployLayout {
        DeployLayout::allocate(&NewLayout {
            project: "cellkv-test".into(),
            image: "cellkv:dev".into(),
            cells: 3,
            routers: 2,
            router_ports: Some(vec![18080, 18081]),
            control_port: Some(17900),
        })
        .unwrap()
    }

    /// A replaced replica: the cell's configs, map and description follow
    /// its members; other cells keep nodes 1..=3; a layout written before
    /// members existed still reads.
    #[test]
    fn changed_members_reach_every_file() {
        let mut l = layout();
        l.members
            .insert(CellId(2), vec![NodeId(1), NodeId(2), NodeId(4)]);
        l.highest_node.insert(CellId(2), 4);
        assert_eq!(l.nodes(CellId(1)), vec![NodeId(1), NodeId(2), NodeId(3)]);
        let files = l.config_files().unwrap();
        assert!(files.iter().any(|(n, _)| n == "c2-n4.toml"));
        assert!(!files.iter().any(|(n, _)| n == "c2-n3.toml"));
        let text = &files.iter().find(|(n, _)| n == "c2-n4.toml").unwrap().1;
        let c = CellConfig::from_toml_str(text, Path::new("x")).unwrap();
        let peers: Vec<u64> = c.peers.iter().map(|p| p.node_id.0).collect();
        assert_eq!(peers, vec![1, 2, 4]);
        let spec = l
            .cell_map()
            .cells
            .into_iter()
            .find(|c| c.id == CellId(2))
            .unwrap();
        assert_eq!(spec.replicas[2].api_addr, "c2-n4:7001");
        let compose = l.compose();
        assert!(compose["services"].get("c2-n4").is_some());
        assert!(compose["services"].get("c2-n3").is_none());
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(DeployLayout::parse(&text, Path::new("x")).unwrap(), l);
        let old = serde_json::to_string(&layout()).unwrap();
        assert!(!old.contains("members"), "{old}");
        DeployLayout::parse(&old, Path::new("x")).unwrap();
    }

    /// Every file parses back with its server's own schema and validates;
    /// replicas name each other by host name.
    #[test]
    fn configs_read_back_with_the_servers_schemas() {
        let l = layout();
        let files = l.config_files().unwrap();
        // 4 cells × 3 replicas, the control server, the map, 2 routers.
        assert_eq!(files.len(), 12 + 1 + 1 + 2);
        let text = |name: &str| &files.iter().find(|(n, _)| n == name).unwrap().1;
        let c = CellConfig::from_toml_str(text("c2-n3.toml"), Path::new("x")).unwrap();
        assert_eq!((c.cell_id, c.node_id), (CellId(2), NodeId(3)));
        assert_eq!(c.api_listen, "0.0.0.0:7001".parse().unwrap());
        assert_eq!(c.api_advertise.as_deref(), Some("c2-n3:7001"));
        assert_eq!(c.peers[0].raft_addr, "c2-n1:7101");
        assert_eq!(c.api_token, l.secrets.cell_api_token);
        let cc = CellConfig::from_toml_str(text("c100-n1.toml"), Path::new("x")).unwrap();
        assert_eq!(cc.api_token, l.secrets.control_cell_token);
        let control = ControlConfig::from_toml_str(text("control.toml"), Path::new("x")).unwrap();
        control.validate().unwrap();
        assert_eq!(control.control_cell[2], "c100-n3:7001");
        assert_eq!(
            control.initial_map.as_deref(),
            Some(Path::new(MAP_IN_CONTAINER))
        );
        let map: CellMap = toml::from_str(text("initial-map.toml")).unwrap();
        assert_eq!(map.cells.len(), 3);
        assert_eq!(map.cells[0].replicas[1].api_addr, "c1-n2:7001");
        let r = common::config::router::RouterConfig::from_toml_str(
            text("router2.toml"),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(r.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(r.tokens[0].token, l.secrets.client_token);
        assert_eq!(r.control.unwrap().endpoints.len(), 3);
    }

    #[test]
    fn compose_has_one_service_per_process_and_publishes_only_on_loopback() {
        let l = layout();
        let c = l.compose();
        let services = c["services"].as_object().unwrap();
        // 12 replicas, control, 2 routers, the bootstrap tool.
        assert_eq!(services.len(), 16);
        assert_eq!(c["volumes"].as_object().unwrap().len(), 12);
        for (name, s) in services {
            if let Some(ports) = s["ports"].as_array() {
                for p in ports {
                    assert!(p.as_str().unwrap().starts_with("127.0.0.1:"), "{name}: {p}");
                }
            }
        }
        assert_eq!(services["router2"]["ports"][0], "127.0.0.1:18081:8080");
        assert_eq!(services["c1-n1"]["hostname"], "c1-n1");
        assert_eq!(services["c1-n1"]["cpu_period"], 10_000);
        assert_eq!(services["c1-n1"]["cpu_quota"], 5_000);
        assert_eq!(services["c1-n1"]["volumes"][1], "c1-n1-data:/data");
        assert!(services["c1-n1"].get("ports").is_none());
        assert_eq!(services["bootstrap"]["profiles"][0], "tools");
    }

    #[test]
    fn layout_is_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let new = NewLayout {
            project: "p1".into(),
            image: "cellkv:dev".into(),
            cells: 2,
            routers: 1,
            router_ports: None,
            control_port: None,
        };
        let (a, fresh) = load_or_create(dir.path(), &new).unwrap();
        assert!(fresh);
        let (b, fresh) = load_or_create(dir.path(), &new).unwrap();
        assert!(!fresh);
        assert_eq!(a, b);
        let other = NewLayout {
            project: "p2".into(),
            ..new
        };
        assert!(load_or_create(dir.path(), &other).is_err());
        assert!(check_project_name("Bad Name").is_err());
        a.write_files(dir.path()).unwrap();
        assert!(dir.path().join("config/c100-n3.toml").is_file());
        assert!(dir.path().join(COMPOSE_FILE).is_file());
    }
}
