//! A whole cellkv cluster on loopback in one directory (`LocalCluster`): a
//! router in front of N cells of 3 replicas each. The first start allocates
//! ports and secrets and persists them in `layout.json`; a later start on the
//! same directory brings the same cluster back on its data. Once everything
//! serves, `cluster.json` tells people and scripts where everything is.
//! Process control is `cluster` (cells) and `router_proc` (router).
//!
//! ```text
//! dir/
//!   lock            flock'ed while a LocalCluster runs the directory
//!   layout.json     ports + secrets, written once, reused by every later start
//!   cluster.json    written when the cluster serves: router url + pid + command,
//!                   token, replicas (pid, command, urls); rewritten by whoever
//!                   restarts a process (the load harness, `external`)
//!   router/         config.toml, router.log
//!   c<cell>-n<node>/ config.toml, replica.log, data/
//! ```

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap, NodeId};
use serde::{Deserialize, Serialize};

use crate::cluster::{CellLayout, CellOptions, LocalCell, ReplicaProc, CELL_BIN};
use crate::external::{ExternalCluster, PidProcess};
use crate::process::{bin_path, free_port, ProcessSpec};
use crate::proxy::LatencyProxy;
use crate::router_proc::{RouterOptions, RouterProc, TokenOptions, ROUTER_BIN};

/// Name of the launcher binary (`src/bin/cellkv-local.rs`).
pub const LOCAL_BIN: &str = "cellkv-local";
/// Ports and secrets of a cluster directory.
pub const LAYOUT_FILE: &str = "layout.json";
/// Where everything is, written once the cluster serves.
pub const CLUSTER_FILE: &str = "cluster.json";
/// Held (flock) by the one `LocalCluster` running the directory.
pub const LOCK_FILE: &str = "lock";
/// Version of `layout.json`; a different one is refused, never guessed at.
pub const LAYOUT_VERSION: u32 = 1;
/// Name of the client token the cluster creates (the first `[[tokens]]`).
pub const CLIENT_TOKEN_NAME: &str = "local";
/// Time a process gets beyond its own shutdown grace before `stop` SIGKILLs it.
const STOP_SLACK: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// layout.json

/// The secrets of a cluster: generated once, persisted, reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub cluster_secret: String,
    /// Router → cell bearer token (every cell's `api_token`).
    pub cell_api_token: String,
    /// Every cell's `/admin` token.
    pub admin_token: String,
    /// The client token of the router (`Authorization: Bearer ...`).
    pub client_token: String,
}

impl Secrets {
    /// Fresh, distinct secrets of 40+ characters (32 hex digits from a
    /// randomly seeded hasher over time, pid and a counter; loopback only).
    pub fn generate() -> Secrets {
        Secrets {
            cluster_secret: secret("cluster"),
            cell_api_token: secret("cell-api"),
            admin_token: secret("admin"),
            client_token: secret("client"),
        }
    }
}

fn secret(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = format!("{prefix}-");
    for _ in 0..2 {
        // `RandomState` is seeded from the OS once per thread and then varies per instance.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Where everything of a cluster listens, and its secrets (`layout.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLayout {
    pub version: u32,
    pub router_listen: SocketAddr,
    pub secrets: Secrets,
    pub cells: Vec<CellLayout>,
}

impl LocalLayout {
    /// Cells `1..=cells` of `replicas` replicas each on fresh loopback ports,
    /// the router on `router_port` (or a fresh one), fresh secrets.
    pub fn allocate(
        cells: usize,
        replicas: usize,
        router_port: Option<u16>,
    ) -> Result<LocalLayout> {
        if cells == 0 || replicas == 0 {
            bail!("a cluster needs at least one cell of at least one replica");
        }
        let port = match router_port {
            Some(p) => p,
            None => free_port().context("allocate the router's port")?,
        };
        let cells = (1..=cells)
            .map(|id| {
                let id = u32::try_from(id).context("too many cells")?;
                CellLayout::allocate(CellId(id), replicas).context("allocate the cells' ports")
            })
            .collect::<Result<_>>()?;
        Ok(LocalLayout {
            version: LAYOUT_VERSION,
            router_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            secrets: Secrets::generate(),
            cells,
        })
    }

    /// The layout persisted in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<LocalLayout>> {
        let path = dir.join(LAYOUT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let layout: LocalLayout =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        if layout.version != LAYOUT_VERSION {
            bail!(
                "{} has version {}; this harness reads version {LAYOUT_VERSION}",
                path.display(),
                layout.version
            );
        }
        Ok(Some(layout))
    }

    /// Writes `dir/layout.json` (atomically: a crash never leaves half a file).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("serialize the layout")?;
        write_atomically(&dir.join(LAYOUT_FILE), text.as_bytes())
    }

    /// The cell map the router is given: every cell active, weight 1, epoch 1.
    pub fn cell_map(&self) -> CellMap {
        CellMap {
            epoch: 1,
            cells: self.cells.iter().map(CellLayout::cell_spec).collect(),
            ..CellMap::default()
        }
    }
}

/// Takes `dir/lock` exclusively, or fails at once if another cluster holds it:
/// two harnesses on one directory would fight over ports, data and cluster.json.
/// The kernel releases it when the holder exits, however it exits.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock(2) takes a file descriptor and flags; the descriptor is
    // valid for the duration of the call because `file` owns it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another cellkv-local (or test) is running the cluster in {}",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("lock {}", path.display()));
    }
    Ok(file)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {}", tmp.display()))
}

// ---------------------------------------------------------------------------
// cluster.json

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
    pub cells: Vec<CellInfo>,
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

// ---------------------------------------------------------------------------
// The cluster

/// How to run a local cluster. The secrets and ids in the templates are
/// replaced by the cluster's own.
#[derive(Clone, Debug)]
pub struct LocalClusterOptions {
    /// Number of cells (ids `1..=cells`). Must match a reused layout.
    pub cells: usize,
    /// The router's port; `None`: the layout's, or a fresh one. A port given
    /// here replaces the layout's (the router is stateless).
    pub router_port: Option<u16>,
    /// Template of every cell: `cell_id` and the three secrets are replaced,
    /// `replicas` counts only for a fresh layout.
    pub cell: CellOptions,
    /// Template of the router: `cell_api_token` is replaced, and the cluster's
    /// client token (named [`CLIENT_TOKEN_NAME`]) is put before `tokens`,
    /// which therefore lists only extra tokens.
    pub router: RouterOptions,
    /// Deadline for [`LocalCluster::start`] to have everything serving.
    pub start_timeout: Duration,
    /// Cells the router reaches through a [`LatencyProxy`] per replica (for
    /// `slow_cell`; Raft traffic between the replicas stays direct). The
    /// proxies run on the runtime that starts the cluster, for as long as it lives.
    pub proxied_cells: Vec<CellId>,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        LocalClusterOptions {
            cells: 3,
            router_port: None,
            cell: CellOptions::default(),
            router: RouterOptions {
                tokens: Vec::new(),
                ..RouterOptions::default()
            },
            start_timeout: Duration::from_secs(60),
            proxied_cells: Vec::new(),
        }
    }
}

/// A router and its cells as real processes on loopback, in one directory.
/// Dropping it SIGKILLs every process (router first); [`stop`](Self::stop)
/// stops them gracefully.
pub struct LocalCluster {
    // Fields drop in order: the router goes before the cells.
    router: RouterProc,
    cells: Vec<LocalCell>,
    /// Per proxied cell, one proxy per replica (in replica order).
    proxies: Vec<(CellId, Vec<LatencyProxy>)>,
    layout: LocalLayout,
    dir: PathBuf,
    /// The directory's lock, released last (when every process is gone).
    _lock: std::fs::File,
}

impl LocalCluster {
    /// Starts the cluster of `dir`: the one `dir/layout.json` describes (same
    /// ports, secrets and data), or a fresh one. Returns once every cell is
    /// ready and the router serves every cell, after writing `cluster.json`.
    pub async fn start(opts: LocalClusterOptions, dir: &Path) -> Result<LocalCluster> {
        let deadline = Instant::now() + opts.start_timeout;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolve {}", dir.display()))?;
        let lock = lock_dir(&dir)?;
        // A cluster.json left by an earlier run names dead pids: gone until this one serves.
        match std::fs::remove_file(dir.join(CLUSTER_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("remove the previous cluster.json")
            }
            _ => {}
        }
        let cell_bin = bin_path(CELL_BIN)?;
        let router_bin = bin_path(ROUTER_BIN)?;
        let layout = Self::layout_for(&opts, &dir)?;
        let secrets = &layout.secrets;

        let mut cells = Vec::with_capacity(layout.cells.len());
        for cl in &layout.cells {
            let cell_opts = CellOptions {
                cell_id: cl.cell_id,
                replicas: cl.peers.len(),
                cluster_secret: secrets.cluster_secret.clone(),
                api_token: secrets.cell_api_token.clone(),
                admin_token: secrets.admin_token.clone(),
                start_timeout: deadline.saturating_duration_since(Instant::now()),
                ..opts.cell.clone()
            };
            // Pushed one by one: if a later spawn fails, Drop kills the earlier ones.
            cells.push(LocalCell::spawn_with_binary(
                &cell_bin,
                cell_opts,
                cl.clone(),
                &dir,
            )?);
        }
        for (cell, r) in cells
            .iter()
            .zip(join_all(cells.iter().map(LocalCell::bootstrap).collect()).await)
        {
            r.with_context(|| format!("start cell {}", cell.cell_id()))?;
        }

        let mut router_opts = opts.router.clone();
        router_opts.cell_api_token = secrets.cell_api_token.clone();
        router_opts.tokens.insert(
            0,
            TokenOptions::unlimited(CLIENT_TOKEN_NAME, &secrets.client_token),
        );
        let mut proxies = Vec::new();
        let mut router_map = layout.cell_map();
        for &id in &opts.proxied_cells {
            let (Some(cl), Some(spec)) = (
                layout.cells.iter().find(|c| c.cell_id == id),
                router_map.cells.iter_mut().find(|c| c.id == id),
            ) else {
                bail!("cannot proxy cell {id}: the cluster has no such cell");
            };
            let mut ps = Vec::with_capacity(cl.peers.len());
            for (peer, replica) in cl.peers.iter().zip(spec.replicas.iter_mut()) {
                let listen = SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    free_port().context("allocate a proxy port")?,
                ));
                let p = LatencyProxy::start(listen, peer.api_addr)
                    .await
                    .with_context(|| {
                        format!("start the proxy of cell {id} node {}", peer.node_id)
                    })?;
                replica.api_addr = p.listen_addr().to_string();
                ps.push(p);
            }
            proxies.push((id, ps));
        }
        let router = RouterProc::prepare(
            &router_bin,
            &router_opts,
            layout.router_listen,
            &router_map,
            &dir.join("router"),
        )?;
        router.start()?;
        let cluster = LocalCluster {
            router,
            cells,
            proxies,
            layout,
            dir,
            _lock: lock,
        };
        cluster
            .router
            .wait_alive(deadline.saturating_duration_since(Instant::now()))
            .await?;
        cluster
            .router
            .wait_serving_all(deadline.saturating_duration_since(Instant::now()))
            .await?;
        cluster.write_cluster_json()?;
        Ok(cluster)
    }

    /// The persisted layout, checked against `opts`, or a fresh one (saved).
    fn layout_for(opts: &LocalClusterOptions, dir: &Path) -> Result<LocalLayout> {
        let Some(mut layout) = LocalLayout::load(dir)? else {
            if let Some(p) = opts.router_port {
                TcpListener::bind((Ipv4Addr::LOCALHOST, p))
                    .with_context(|| format!("router port {p} is not free"))?;
            }
            let layout = LocalLayout::allocate(opts.cells, opts.cell.replicas, opts.router_port)?;
            layout.save(dir)?;
            return Ok(layout);
        };
        if layout.cells.len() != opts.cells {
            bail!(
                "{} describes {} cells, not {}: use the same cell count, or a new directory",
                dir.join(LAYOUT_FILE).display(),
                layout.cells.len(),
                opts.cells
            );
        }
        if let Some(p) = opts.router_port {
            if p != layout.router_listen.port() {
                layout.router_listen.set_port(p);
                layout.save(dir)?;
            }
        }
        Ok(layout)
    }

    /// What `cluster.json` says now (pids of the processes running now).
    pub fn info(&self) -> ClusterInfo {
        ClusterInfo {
            router: RouterInfo {
                url: self.router.url(),
                pid: self.router.pid(),
                config: self.router.config_path().to_owned(),
                log: self.router.log_path().to_owned(),
                command: Some(CommandInfo::of(self.router.spec())),
            },
            token: self.layout.secrets.client_token.clone(),
            cell_api_token: self.layout.secrets.cell_api_token.clone(),
            admin_token: self.layout.secrets.admin_token.clone(),
            dir: self.dir.clone(),
            cells: self
                .cells
                .iter()
                .map(|c| {
                    let proxies = self.proxies_of(c.cell_id());
                    CellInfo {
                        id: c.cell_id(),
                        replicas: c
                            .replicas()
                            .iter()
                            .enumerate()
                            .map(|(i, r)| ReplicaInfo::of(r, proxies.get(i)))
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    /// (Re)writes `cluster.json` from [`info`](Self::info), e.g. after restarts.
    pub fn write_cluster_json(&self) -> Result<PathBuf> {
        let path = self.cluster_json_path();
        let text = serde_json::to_string_pretty(&self.info()).context("serialize cluster.json")?;
        write_atomically(&path, text.as_bytes())?;
        Ok(path)
    }

    pub fn cluster_json_path(&self) -> PathBuf {
        self.dir.join(CLUSTER_FILE)
    }

    /// The cluster directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layout(&self) -> &LocalLayout {
        &self.layout
    }

    /// The cell map of the replicas' own addresses (the router's differs
    /// for proxied cells: it names the proxies).
    pub fn cell_map(&self) -> CellMap {
        self.layout.cell_map()
    }

    /// The latency proxies in front of `cell`'s replicas (empty if it has none).
    pub fn proxies_of(&self, cell: CellId) -> &[LatencyProxy] {
        self.proxies
            .iter()
            .find(|(id, _)| *id == cell)
            .map_or(&[], |(_, ps)| ps.as_slice())
    }

    /// Sets the round trip the proxies of `cell` add to every exchange
    /// between the router and its replicas (half each way); zero removes it.
    pub fn set_cell_delay(&self, cell: CellId, rtt: Duration) -> Result<()> {
        let ps = self.proxies_of(cell);
        if ps.is_empty() {
            bail!("cell {cell} was started without latency proxies (LocalClusterOptions::proxied_cells)");
        }
        for p in ps {
            p.delays().set_round_trip(rtt);
        }
        Ok(())
    }

    pub fn router(&self) -> &RouterProc {
        &self.router
    }

    /// `http://<router>`, no trailing slash.
    pub fn router_url(&self) -> String {
        self.router.url()
    }

    /// The client token.
    pub fn token(&self) -> &str {
        &self.layout.secrets.client_token
    }

    /// `Bearer <client token>`.
    pub fn auth(&self) -> String {
        format!("Bearer {}", self.layout.secrets.client_token)
    }

    pub fn secrets(&self) -> &Secrets {
        &self.layout.secrets
    }

    pub fn cells(&self) -> &[LocalCell] {
        &self.cells
    }

    /// The cell with id `id`. Panics if there is none.
    pub fn cell(&self, id: CellId) -> &LocalCell {
        self.cells
            .iter()
            .find(|c| c.cell_id() == id)
            .unwrap_or_else(|| panic!("no cell {id} in this cluster"))
    }

    /// Fails if any process exited without being asked to (with its log tail).
    pub fn check_no_crash(&self) -> Result<()> {
        if let Some(status) = self.router.unexpected_exit() {
            bail!(
                "the router exited unexpectedly ({status}); log tail:\n{}",
                self.router.log_tail(40)
            );
        }
        for c in &self.cells {
            c.check_no_crash()?;
        }
        Ok(())
    }

    /// Polls until every cell is ready and the router serves every cell
    /// (after restarting processes).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for c in &self.cells {
            c.wait_ready(deadline.saturating_duration_since(Instant::now()))
                .await
                .with_context(|| format!("cell {}", c.cell_id()))?;
        }
        self.router
            .wait_serving_all(deadline.saturating_duration_since(Instant::now()))
            .await?;
        Ok(())
    }

    /// Stops everything gracefully: SIGTERM to the router, then to every
    /// replica at once (SIGCONT too, so a frozen one can act on it), each
    /// with its shutdown grace plus a margin, SIGKILL for stragglers. Fails,
    /// after stopping everything, if a process did not exit 0 on its own.
    pub async fn stop(&self) -> Result<()> {
        let mut problems = Vec::new();
        let (router_replacement, replica_replacements) = self.replacements();
        if let Some(p) = router_replacement {
            if let Err(e) = p.terminate(self.router.shutdown_grace() + STOP_SLACK).await {
                problems.push(format!("{e:#}"));
            }
        }
        if self.router.is_running() {
            let _ = self.router.cont();
            match self
                .router
                .terminate(self.router.shutdown_grace() + STOP_SLACK)
                .await
            {
                Ok(s) if s.success() => {}
                Ok(s) => problems.push(format!("the router exited with {s}")),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        let running: Vec<&ReplicaProc> = self
            .cells
            .iter()
            .flat_map(|c| c.replicas())
            .filter(|r| r.is_running())
            .collect();
        for r in &running {
            if let Err(e) = r.send_term() {
                problems.push(format!("{e:#}"));
            }
            let _ = r.cont();
        }
        let grace = self
            .cells
            .iter()
            .map(|c| c.options().shutdown_grace)
            .max()
            .unwrap_or_default();
        for p in &replica_replacements {
            if let Err(e) = p.signal(libc::SIGTERM) {
                problems.push(format!("{e:#}"));
            }
            let _ = p.signal(libc::SIGCONT);
        }
        let deadline = Instant::now() + grace + STOP_SLACK;
        for p in &replica_replacements {
            if let Err(e) = p
                .wait_gone(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                let _ = p.signal(libc::SIGKILL);
                problems.push(format!("{e:#}; killed it"));
            }
        }
        for r in running {
            match r
                .finish_terminate(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Ok(s) if s.success() => {}
                Ok(s) => problems.push(format!("{} exited with {s}", r.label())),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("unclean stop:\n  {}", problems.join("\n  "))
        }
    }

    /// Processes `cluster.json` names that are not this cluster's own
    /// children but run one of its command lines: replacements another
    /// program started after killing ours (the load harness does, see
    /// `external`). `stop` stops them with the rest.
    pub fn replacements(&self) -> (Option<PidProcess>, Vec<PidProcess>) {
        let Some(info) = std::fs::read_to_string(self.cluster_json_path())
            .ok()
            .and_then(|t| serde_json::from_str::<ClusterInfo>(&t).ok())
        else {
            return (None, Vec::new());
        };
        let foreign = |p: Option<PidProcess>, own: Option<u32>| {
            p.filter(|p| Some(p.pid) != own && p.is_alive())
        };
        let router = foreign(ExternalCluster::router_process(&info), self.router.pid());
        let mut replicas = Vec::new();
        for c in &self.cells {
            for (i, r) in c.replicas().iter().enumerate() {
                replicas.extend(foreign(
                    ExternalCluster::replica_process(&info, c.cell_id(), i),
                    r.pid(),
                ));
            }
        }
        (router, replicas)
    }

    /// Whether `cluster.json` names other pids than `written` (what this
    /// cluster wrote there): another program faulted or restarted processes.
    pub fn changed_elsewhere(&self, written: &ClusterInfo) -> bool {
        let Some(on_disk) = std::fs::read_to_string(self.cluster_json_path())
            .ok()
            .and_then(|t| serde_json::from_str::<ClusterInfo>(&t).ok())
        else {
            return true;
        };
        let pids = |i: &ClusterInfo| -> Vec<Option<u32>> {
            std::iter::once(i.router.pid)
                .chain(
                    i.cells
                        .iter()
                        .flat_map(|c| c.replicas.iter().map(|r| r.pid)),
                )
                .collect()
        };
        pids(&on_disk) != pids(written)
    }

    /// SIGKILLs every running process, router first.
    pub fn kill_all(&self) -> Result<()> {
        if self.router.is_running() {
            self.router.kill()?;
        }
        for c in &self.cells {
            c.kill_all()?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== cluster in {} failed; router and replica logs follow ====",
                self.dir.display()
            );
        }
        // The processes' own Drop prints their tails and kills them.
    }
}

/// Awaits every future concurrently (on this task) and returns their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_through_json_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LocalLayout::load(dir.path()).unwrap(), None);
        let layout = LocalLayout::allocate(3, 3, None).unwrap();
        layout.save(dir.path()).unwrap();
        assert_eq!(LocalLayout::load(dir.path()).unwrap(), Some(layout.clone()));

        // The persisted shape: addresses as strings, ids as numbers.
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(LAYOUT_FILE)).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["router_listen"], layout.router_listen.to_string());
        assert_eq!(v["cells"][2]["cell_id"], 3);
        assert_eq!(v["cells"][2]["peers"][0]["node_id"], 1);
        assert_eq!(
            v["cells"][2]["peers"][0]["api_addr"],
            layout.cells[2].peers[0].api_addr.to_string()
        );
        assert_eq!(v["secrets"]["client_token"], layout.secrets.client_token);

        // Every port distinct; the map lists every replica's API address.
        let mut ports: Vec<u16> = layout
            .cells
            .iter()
            .flat_map(|c| &c.peers)
            .flat_map(|p| [p.api_addr.port(), p.raft_addr.port()])
            .collect();
        ports.push(layout.router_listen.port());
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
        let map = layout.cell_map();
        map.validate().unwrap();
        assert_eq!(map.cells.len(), 3);
        assert_eq!(
            map.cells[1].replicas[2].api_addr,
            layout.cells[1].peers[2].api_addr.to_string()
        );

        // Another version is refused, not guessed at.
        let newer = LocalLayout {
            version: 2,
            ..layout
        };
        newer.save(dir.path()).unwrap();
        let err = LocalLayout::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(LocalLayout::allocate(0, 3, None).is_err());
        assert_eq!(
            LocalLayout::allocate(1, 1, Some(4242))
                .unwrap()
                .router_listen
                .port(),
            4242
        );
    }

    #[test]
    fn a_directory_is_run_by_one_cluster_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("another cellkv-local"), "{err}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn secrets_are_long_distinct_and_fresh() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        let all = [
            &a.cluster_secret,
            &a.cell_api_token,
            &a.admin_token,
            &a.client_token,
            &b.cluster_secret,
            &b.cell_api_token,
            &b.admin_token,
            &b.client_token,
        ];
        for s in all {
            assert!(s.len() >= 16, "{s}");
            assert!(s.bytes().all(|c| c.is_ascii_graphic()), "{s}");
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn cluster_json_has_the_documented_shape() {
        let info = ClusterInfo {
            router: RouterInfo {
                url: "http://127.0.0.1:18080".into(),
                pid: Some(42),
                config: "/d/router/config.toml".into(),
                log: "/d/router/router.log".into(),
                command: Some(CommandInfo {
                    bin: "/bin/cellkv-router".into(),
                    args: vec!["--config".into(), "/d/router/config.toml".into()],
                    cwd: "/d/router".into(),
                    env: vec![("RUST_LOG".into(), "info".into())],
                }),
            },
            token: "client-x".into(),
            cell_api_token: "cell-api-x".into(),
            admin_token: "admin-x".into(),
            dir: "/d".into(),
            cells: vec![CellInfo {
                id: CellId(1),
                replicas: vec![ReplicaInfo {
                    node_id: NodeId(2),
                    pid: None,
                    api_url: "http://127.0.0.1:17001".into(),
                    raft_url: "http://127.0.0.1:17101".into(),
                    data_dir: "/d/c1-n2/data".into(),
                    config: "/d/c1-n2/config.toml".into(),
                    log: "/d/c1-n2/replica.log".into(),
                    command: None,
                    proxy_url: Some("http://127.0.0.1:17201".into()),
                }],
            }],
        };
        let v = serde_json::to_value(&info).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            [
                "admin_token",
                "cell_api_token",
                "cells",
                "dir",
                "router",
                "token"
            ]
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
        let back: ClusterInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
    }

    #[tokio::test]
    async fn join_all_keeps_order_and_runs_concurrently() {
        let t0 = Instant::now();
        let out = join_all(
            [30u64, 10, 20]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(Duration::from_millis(ms * 5)).await;
                    ms
                })
                .collect(),
        )
        .await;
        assert_eq!(out, [30, 10, 20]);
        assert!(
            t0.elapsed() < Duration::from_millis(290),
            "{:?}",
            t0.elapsed()
        );
    }
}
