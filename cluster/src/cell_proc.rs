//! Real `cellkv-cell` processes on loopback: generating a replica's config
//! file, spawning it with its log in its own directory, faulting it (SIGKILL,
//! SIGTERM, SIGSTOP/SIGCONT, restart) and bootstrapping a 3-replica cell.
//! Used by the integration tests, the local launcher and the load harness. It
//! talks to replicas only over HTTP (`/health`, `/admin/init`); it never links the cell.
//!
//! ```text
//! base_dir/c<cell>-n<node>/
//!   config.toml    generated from CellOptions + CellLayout
//!   replica.log    stdout+stderr of every run, appended, one marker line per start
//!   data/          the replica's data_dir
//! ```
//!
//! The process core (spawn, log, signals, Drop kill) is
//! [`ManagedProcess`](crate::process::ManagedProcess); this module adds what
//! makes it a replica. Every wait has a deadline and polls; nothing sleeps to
//! synchronize. Dropping a [`ReplicaProc`] (or a [`LocalCell`]) SIGKILLs its
//! process, and prints the log tail first when the thread is panicking.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, NodeId};
use serde::{Deserialize, Serialize};

use crate::process::{configured_server, ManagedProcess, POLL};
use client::http::{Client, ClientConfig};
// Where they were before the process core moved out; callers keep using them from here.
pub use crate::process::{bin_dir, bin_path, free_port, BIN_DIR_ENV};

/// Name of the replica binary.
pub const CELL_BIN: &str = "cellkv-cell";
/// Deadline of one `/health` or `/admin` call made by the harness. A stopped
/// (SIGSTOP) replica costs this much per poll, so it stays short.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

// The replica's own config schema, built and serialized here (never mirrored).
pub use common::config::cell::{CellConfig, Durability, PeerConfig, RaftConfig as RaftOptions};

/// Everything about a local cell that is not an address: the replicas'
/// config, their number and environment, and the harness's own deadlines.
#[derive(Clone, Debug)]
pub struct CellOptions {
    pub cell_id: CellId,
    /// Number of replicas (node ids 1..=replicas).
    pub replicas: usize,
    /// Every replica's config: secrets, limits, Raft knobs. Its identity,
    /// addresses, data dir and peers are replaced per replica (from
    /// `cell_id` and the layout).
    pub config: CellConfig,
    /// `RUST_LOG` of the replicas.
    pub rust_log: String,
    /// Extra environment of every run of every replica.
    pub env: Vec<(String, String)>,
    /// Deadline for [`LocalCell::start`]: processes up, cell initialized, all ready.
    pub start_timeout: Duration,
}

impl Default for CellOptions {
    /// The cell's defaults with fixed, well-known secrets: fine on loopback,
    /// never elsewhere.
    fn default() -> Self {
        CellOptions {
            cell_id: CellId(1),
            replicas: 3,
            config: CellConfig {
                cluster_secret: "local-cluster-secret-0123456789".into(),
                api_token: "local-api-token-0123456789".into(),
                admin_token: "local-admin-token-0123456789".into(),
                ..CellConfig::default()
            },
            rust_log: "info".into(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// One member's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub node_id: NodeId,
    pub api_addr: SocketAddr,
    pub raft_addr: SocketAddr,
}

/// Which replicas a cell has and where they listen (persisted by
/// `local::LocalLayout`, hence serde).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellLayout {
    pub cell_id: CellId,
    pub peers: Vec<Peer>,
}

impl CellLayout {
    /// Node ids `1..=replicas`, each with two fresh loopback ports.
    pub fn allocate(cell_id: CellId, replicas: usize) -> std::io::Result<CellLayout> {
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let peers = (1..=replicas as u64)
            .map(|id| {
                Ok(Peer {
                    node_id: NodeId(id),
                    api_addr: loopback(free_port()?),
                    raft_addr: loopback(free_port()?),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(CellLayout { cell_id, peers })
    }

    pub fn peer(&self, node: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node_id == node)
    }

    /// The members as a replica's config lists them (`[[peers]]`).
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.peers
            .iter()
            .map(|p| PeerConfig {
                node_id: p.node_id,
                api_addr: p.api_addr.to_string(),
                raft_addr: p.raft_addr.to_string(),
            })
            .collect()
    }

    /// This cell as the cell map names it: weight 1, active, every replica's
    /// API address and control port (the control plane's way in; routers
    /// ignore it).
    pub fn cell_spec(&self) -> common::CellSpec {
        common::CellSpec {
            id: self.cell_id,
            weight: 1,
            replicas: self
                .peers
                .iter()
                .map(|p| common::ReplicaSpec {
                    node_id: p.node_id,
                    api_addr: p.api_addr.to_string(),
                    control_addr: Some(p.raft_addr.to_string()),
                })
                .collect(),
            state: common::CellState::Active,
        }
    }
}

// ---------------------------------------------------------------------------
// Config file

/// The config file of replica `node` of `layout`, storing its data in `data_dir`.
pub fn replica_config_toml(
    opts: &CellOptions,
    layout: &CellLayout,
    node: NodeId,
    data_dir: &Path,
) -> Result<String> {
    let me = layout.peer(node).with_context(|| {
        format!(
            "node {node} is not in the layout of cell {}",
            layout.cell_id
        )
    })?;
    let config = CellConfig {
        cell_id: layout.cell_id,
        node_id: node,
        api_listen: me.api_addr,
        raft_listen: me.raft_addr,
        api_advertise: None,
        raft_advertise: None,
        data_dir: data_dir.to_owned(),
        peers: layout.peer_configs(),
        ..opts.config.clone()
    };
    toml::to_string(&config).context("serialize the replica config as TOML")
}
// ---------------------------------------------------------------------------
// One replica process

/// One replica process: its config, log and data dir around a
/// [`ManagedProcess`]. Derefs to the process for starting, faulting and
/// reading logs (`kill`, `terminate`, `stop_signal`, `restart`, `log_tail`...).
pub struct ReplicaProc {
    cell_id: CellId,
    node_id: NodeId,
    api_addr: SocketAddr,
    raft_addr: SocketAddr,
    dir: PathBuf,
    data_dir: PathBuf,
    config_path: PathBuf,
    process: ManagedProcess,
}

impl ReplicaProc {
    /// Writes the config of replica `node` into `dir` (data in `dir/data`)
    /// without starting it.
    pub fn prepare(
        bin: &Path,
        opts: &CellOptions,
        layout: &CellLayout,
        node: NodeId,
        dir: &Path,
    ) -> Result<ReplicaProc> {
        Self::prepare_with_data_dir(bin, opts, layout, node, dir, &dir.join("data"))
    }

    /// Like [`prepare`](Self::prepare) with the data in `data_dir` (which may be
    /// anywhere, even somewhere unusable).
    pub fn prepare_with_data_dir(
        bin: &Path,
        opts: &CellOptions,
        layout: &CellLayout,
        node: NodeId,
        dir: &Path,
        data_dir: &Path,
    ) -> Result<ReplicaProc> {
        let me = layout
            .peer(node)
            .with_context(|| format!("node {node} is not in the layout"))?
            .clone();
        let (config_path, process) = configured_server(
            format!("cell {} node {node}", layout.cell_id),
            bin,
            dir,
            &replica_config_toml(opts, layout, node, data_dir)?,
            "replica.log",
            &opts.rust_log,
            &opts.env,
        )?;
        Ok(ReplicaProc {
            cell_id: layout.cell_id,
            node_id: node,
            api_addr: me.api_addr,
            raft_addr: me.raft_addr,
            dir: dir.to_owned(),
            data_dir: data_dir.to_owned(),
            config_path,
            process,
        })
    }

    /// The process itself (also reachable through `Deref`).
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn cell_id(&self) -> CellId {
        self.cell_id
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    /// `http://<api addr>`, no trailing slash.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `http://<raft addr>`, no trailing slash.
    pub fn raft_url(&self) -> String {
        format!("http://{}", self.raft_addr)
    }

    /// The replica's own directory (config, log, and by default the data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

impl std::ops::Deref for ReplicaProc {
    type Target = ManagedProcess;

    fn deref(&self) -> &ManagedProcess {
        &self.process
    }
}

// ---------------------------------------------------------------------------
// A whole cell

/// The replicas of one cell as real processes on loopback. Replicas are
/// addressed by index `0..len()`; replica `i` has node id `i + 1`.
pub struct LocalCell {
    opts: CellOptions,
    layout: CellLayout,
    dir: PathBuf,
    client: Client,
    replicas: Vec<ReplicaProc>,
}

impl LocalCell {
    /// Spawns every replica in `base_dir`, waits until each answers `/health`,
    /// initializes the cell through replica 0 (an already initialized cell is
    /// fine), and waits until there is a leader and every replica is ready.
    pub async fn start(opts: CellOptions, base_dir: &Path) -> Result<LocalCell> {
        let cell = LocalCell::spawn(opts, base_dir)?;
        cell.bootstrap().await?;
        Ok(cell)
    }

    /// Spawns every replica on fresh ports, nothing more.
    pub fn spawn(opts: CellOptions, base_dir: &Path) -> Result<LocalCell> {
        let layout =
            CellLayout::allocate(opts.cell_id, opts.replicas).context("allocate loopback ports")?;
        Self::spawn_with_layout(opts, layout, base_dir)
    }

    /// Spawns every replica of `layout` (e.g. the same ports as a previous run).
    pub fn spawn_with_layout(
        opts: CellOptions,
        layout: CellLayout,
        base_dir: &Path,
    ) -> Result<LocalCell> {
        Self::spawn_with_binary(&bin_path(CELL_BIN)?, opts, layout, base_dir)
    }

    /// Like [`spawn_with_layout`](Self::spawn_with_layout) running `bin`.
    pub fn spawn_with_binary(
        bin: &Path,
        opts: CellOptions,
        layout: CellLayout,
        base_dir: &Path,
    ) -> Result<LocalCell> {
        let mut cell = LocalCell {
            client: Client::new(ClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: PROBE_TIMEOUT,
                pool_max_idle_per_host: 2,
                ..ClientConfig::default()
            }),
            dir: base_dir.to_owned(),
            replicas: Vec::with_capacity(layout.peers.len()),
            opts,
            layout,
        };
        for p in &cell.layout.peers {
            let dir = base_dir.join(format!("c{}-n{}", cell.layout.cell_id, p.node_id));
            let r = ReplicaProc::prepare(bin, &cell.opts, &cell.layout, p.node_id, &dir)?;
            // Pushed before start: if a later start fails, Drop kills the earlier ones.
            cell.replicas.push(r);
            cell.replicas.last().expect("just pushed").start()?;
        }
        Ok(cell)
    }

    /// Waits for every replica to answer, initializes the cell, waits until ready.
    pub async fn bootstrap(&self) -> Result<usize> {
        let deadline = Instant::now() + self.opts.start_timeout;
        for i in 0..self.len() {
            self.wait_answering(i, deadline).await?;
        }
        self.initialize(0, deadline).await?;
        self.wait_ready(deadline.saturating_duration_since(Instant::now()))
            .await
    }

    /// Polls replica `i`'s `/health` until it answers with any status.
    async fn wait_answering(&self, i: usize, deadline: Instant) -> Result<()> {
        let url = format!("{}/health", self.replicas[i].api_url());
        loop {
            self.check_no_crash()?;
            if self.client.get(&url, &[]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} did not answer {url} in time; log tail:\n{}",
                    self.replicas[i].node_id,
                    self.replicas[i].log_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `POST /admin/init` on replica `i`; `already_initialized` counts as done.
    async fn initialize(&self, i: usize, deadline: Instant) -> Result<()> {
        let url = format!("{}/admin/init", self.replicas[i].raft_url());
        let auth = format!("Bearer {}", self.opts.config.admin_token);
        loop {
            self.check_no_crash()?;
            match self
                .client
                .post(&url, &[("authorization", &auth)], Vec::new())
                .await
            {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r)
                    if r.status == 409
                        && r.error_code().as_deref() == Some("already_initialized") =>
                {
                    return Ok(())
                }
                Ok(r) => bail!("POST {url} answered {}: {}", r.status, r.text()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("retrying cell initialization: {e}");
                }
                Err(e) => return Err(e).context("initialize the cell"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails if a replica exited without being asked to (with its log tail).
    pub fn check_no_crash(&self) -> Result<()> {
        for r in &self.replicas {
            if let Some(status) = r.unexpected_exit() {
                bail!(
                    "node {} exited unexpectedly ({status}); log tail:\n{}",
                    r.node_id,
                    r.log_tail(40)
                );
            }
        }
        Ok(())
    }

    pub fn options(&self) -> &CellOptions {
        &self.opts
    }

    pub fn layout(&self) -> &CellLayout {
        &self.layout
    }

    pub fn cell_id(&self) -> CellId {
        self.layout.cell_id
    }

    /// The directory holding the replicas' directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Replica `i` (node id `i + 1`). Panics if out of range.
    pub fn replica(&self, i: usize) -> &ReplicaProc {
        &self.replicas[i]
    }

    pub fn replicas(&self) -> &[ReplicaProc] {
        &self.replicas
    }

    /// The index of the replica with node id `node`.
    pub fn index_of(&self, node: NodeId) -> Option<usize> {
        self.replicas.iter().position(|r| r.node_id == node)
    }

    /// The index of the replica whose API listens on `api_addr` (as in leader hints).
    pub fn index_of_api_addr(&self, api_addr: &str) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.api_addr.to_string() == api_addr)
    }

    /// The API base URLs of all replicas, by index.
    pub fn api_urls(&self) -> Vec<String> {
        self.replicas.iter().map(ReplicaProc::api_url).collect()
    }

    /// `Bearer <api_token>`.
    pub fn api_auth(&self) -> String {
        format!("Bearer {}", self.opts.config.api_token)
    }

    /// `Bearer <admin_token>`.
    pub fn admin_auth(&self) -> String {
        format!("Bearer {}", self.opts.config.admin_token)
    }

    /// The harness's own HTTP client (short deadlines, for probes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn cell_spec(&self) -> common::CellSpec {
        self.layout.cell_spec()
    }

    /// Replica `i`'s `/health` JSON, whatever its status (200 ready, 503 not).
    pub async fn health(&self, i: usize) -> Result<serde_json::Value> {
        let url = format!("{}/health", self.replicas[i].api_url());
        let (_, v) = self.client.get_json(&url, &[]).await?;
        Ok(v)
    }

    /// Every running replica's `/health`, probed concurrently (`None`: not
    /// running or no answer).
    pub async fn health_all(&self) -> Vec<Option<serde_json::Value>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if !r.is_running() {
                continue;
            }
            let client = self.client.clone();
            let url = format!("{}/health", r.api_url());
            set.spawn(async move {
                let v = client.get_json::<serde_json::Value>(&url, &[]).await.ok();
                (i, v.map(|(_, v)| v))
            });
        }
        let mut out = vec![None; self.replicas.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, v)) = joined {
                out[i] = v;
            }
        }
        out
    }

    /// The index of the replica that reports itself leader (the highest term
    /// wins if a deposed one has not noticed yet), if any.
    pub async fn leader(&self) -> Option<usize> {
        leader_of(&self.health_all().await)
    }

    /// Polls until some replica is leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_no_crash()?;
            let health = self.health_all().await;
            if let Some(l) = leader_of(&health) {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader after {timeout:?}; health: {}",
                    summarize(&health)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until there is a leader and every running replica reports ready.
    /// Returns the leader's index.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_no_crash()?;
            let health = self.health_all().await;
            let running: Vec<usize> = (0..self.len())
                .filter(|&i| self.replicas[i].is_running())
                .collect();
            let all_ready = running
                .iter()
                .all(|&i| health[i].as_ref().is_some_and(|h| h["ready"] == true));
            if let (true, Some(l)) = (all_ready, leader_of(&health)) {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                bail!(
                    "cell not ready after {timeout:?}; health: {}",
                    summarize(&health)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until replica `i` has applied everything the leader has applied
    /// and is not installing a snapshot. Meant for a quiet cell (no writes).
    pub async fn wait_caught_up(&self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_no_crash()?;
            let health = self.health_all().await;
            if let (Some(l), Some(h)) = (leader_of(&health), health[i].as_ref()) {
                let target = health[l]
                    .as_ref()
                    .map_or(u64::MAX, |lh| index(lh, "applied_index"));
                if index(h, "applied_index") >= target && h["installing_snapshot"] == false {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} did not catch up within {timeout:?}; health: {}",
                    self.replicas[i].node_id,
                    summarize(&health)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs every running replica.
    pub fn kill_all(&self) -> Result<()> {
        for r in &self.replicas {
            if r.is_running() {
                r.kill()?;
            }
        }
        Ok(())
    }

    /// The last `n` log lines of every replica, labelled.
    pub fn log_tails(&self, n: usize) -> String {
        self.replicas
            .iter()
            .map(|r| format!("---- node {} ----\n{}\n", r.node_id, r.log_tail(n)))
            .collect()
    }

    /// ERROR-level log lines of every replica, prefixed with the node id.
    pub fn error_lines(&self) -> Vec<String> {
        self.replicas
            .iter()
            .flat_map(|r| {
                r.error_lines()
                    .into_iter()
                    .map(move |l| format!("node {}: {l}", r.node_id))
            })
            .collect()
    }
}

impl Drop for LocalCell {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== cell {} in {} failed; replica logs follow ====",
                self.layout.cell_id,
                self.dir.display()
            );
        }
        // The replicas' own Drop prints their tails and kills them.
    }
}

fn index(h: &serde_json::Value, field: &str) -> u64 {
    h[field].as_u64().unwrap_or(0)
}

pub(crate) fn leader_of(health: &[Option<serde_json::Value>]) -> Option<usize> {
    health
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
        .filter(|(_, h)| h["role"] == "leader")
        .max_by_key(|(_, h)| index(h, "term"))
        .map(|(i, _)| i)
}

/// One line per replica: the fields that explain "not ready" and "no leader".
fn summarize(health: &[Option<serde_json::Value>]) -> String {
    health
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            None => format!("\n  [{i}] no answer"),
            Some(h) => format!(
                "\n  [{i}] node={} role={} term={} leader={} ready={} reasons={} applied={} last_log={}",
                h["node_id"], h["role"], h["term"], h["leader"], h["ready"], h["reasons"],
                h["applied_index"], h["last_log_index"]
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> CellLayout {
        CellLayout::allocate(CellId(7), 3).unwrap()
    }

    /// The generated file, read back with the replica's own schema, is the
    /// template with this replica's identity, addresses and peers, and valid.
    #[test]
    fn config_round_trips_through_the_cell_schema() {
        let mut opts = CellOptions::default();
        opts.config.durability = Durability::UnsafeNoFsync;
        opts.config.raft.snapshot_logs_since_last = 100;
        opts.config.raft.heartbeat_interval = Duration::from_micros(1500);
        opts.config.raft.heartbeat_elide_window = Duration::from_micros(700);
        let layout = layout();
        let text =
            replica_config_toml(&opts, &layout, NodeId(2), Path::new("/tmp/x/data")).unwrap();
        let parsed = CellConfig::from_toml_str(&text, Path::new("config.toml")).unwrap();
        parsed.validate().unwrap();
        let me = &layout.peers[1];
        let expected = CellConfig {
            cell_id: CellId(7),
            node_id: NodeId(2),
            api_listen: me.api_addr,
            raft_listen: me.raft_addr,
            data_dir: PathBuf::from("/tmp/x/data"),
            peers: layout.peer_configs(),
            ..opts.config.clone()
        };
        assert_eq!(parsed, expected);
        assert_eq!(parsed.peers.len(), 3);
        assert_eq!(parsed.peers[1].raft_addr, me.raft_addr.to_string());

        // The shape the cell reads: humantime strings, a `[raft]` table, `[[peers]]`.
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["durability"].as_str(), Some("unsafe_no_fsync"));
        assert_eq!(v["request_timeout"].as_str(), Some("5s"));
        assert_eq!(v["raft"]["heartbeat_interval"].as_str(), Some("1ms 500us"));
        assert_eq!(v["raft"]["election_timeout_min"].as_str(), Some("250ms"));
        assert_eq!(v["peers"][0]["node_id"].as_integer(), Some(1));
        assert!(v.get("api_advertise").is_none(), "{text}");
    }

    /// What the launcher sends by default means what the cell's own defaults mean.
    #[test]
    fn default_options_keep_the_cells_defaults_but_the_secrets() {
        let o = CellOptions::default();
        let d = CellConfig::default();
        assert_eq!(
            CellConfig {
                cluster_secret: d.cluster_secret.clone(),
                api_token: d.api_token.clone(),
                admin_token: d.admin_token.clone(),
                ..o.config.clone()
            },
            d
        );
        o.config
            .validate()
            .expect("the local secrets are long enough");
    }

    #[test]
    fn config_for_unknown_node_is_refused() {
        let err = replica_config_toml(
            &CellOptions::default(),
            &layout(),
            NodeId(9),
            Path::new("/d"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("node 9"), "{err}");
    }

    #[test]
    fn layout_numbers_nodes_from_one_and_maps_to_a_cell_spec() {
        let l = layout();
        let ids: Vec<u64> = l.peers.iter().map(|p| p.node_id.0).collect();
        assert_eq!(ids, [1, 2, 3]);
        let spec = l.cell_spec();
        assert_eq!(spec.id, CellId(7));
        assert_eq!(spec.replicas[2].api_addr, l.peers[2].api_addr.to_string());
        assert_eq!(
            spec.replicas[2].control_addr,
            Some(l.peers[2].raft_addr.to_string())
        );
    }

    #[test]
    fn leader_is_the_highest_term_claimant() {
        let h = |role: &str, term: u64| Some(serde_json::json!({"role": role, "term": term}));
        assert_eq!(
            leader_of(&[h("follower", 3), None, h("candidate", 4)]),
            None
        );
        assert_eq!(
            leader_of(&[h("leader", 2), h("leader", 3), h("follower", 3)]),
            Some(1)
        );
    }

    #[tokio::test]
    async fn process_lifecycle_with_a_stand_in_binary() {
        // A shell script stands in for the replica: it ignores `--config`,
        // logs one line and sleeps.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-cell");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"started $RUST_LOG $EXTRA\"\nexec sleep 30\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&script, perm).unwrap();

        let layout = layout();
        let r = ReplicaProc::prepare(
            &script,
            &CellOptions::default(),
            &layout,
            NodeId(1),
            &dir.path().join("n1"),
        )
        .unwrap();
        assert!(r.config_path().is_file());
        r.start().unwrap();
        assert!(r.start().is_err(), "double start must fail");
        assert!(r.is_running());
        r.stop_signal().unwrap();
        r.cont().unwrap();
        let status = r.terminate(Duration::from_secs(5)).await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!r.is_running());

        r.start_with_env(&[("EXTRA", "x1")]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !r.log().contains("started info x1") {
            assert!(
                Instant::now() < deadline,
                "no output from the second run: {}",
                r.log()
            );
            tokio::time::sleep(POLL).await;
        }
        let status = r.kill().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(r.starts(), 2);
        // Both runs are in the log, each after its marker line.
        let log = r.log();
        assert!(
            log.contains("start #1") && log.contains("start #2 of cell 7 node 1 with EXTRA=x1"),
            "{log}"
        );
        assert!(r.log_since_start().contains("x1"));
        assert!(!r.log_since_start().contains("start #1"));
        assert!(r.wait_exit(Duration::from_millis(10)).await.is_ok());
    }
}
