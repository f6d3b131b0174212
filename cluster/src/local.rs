//! A whole cellkv cluster on loopback in one directory (`LocalCluster`): a
//! router in front of N data cells of 3 replicas each, and the control plane
//! the router follows (a 3-replica control cell holding the cell map and the
//! migration jobs, and `cellkv-control` serving the admin API). The first
//! start allocates ports and secrets and persists them in `layout.json`
//! (`layout`); a later start on the same directory brings the same cluster
//! back on its data, its map and the cells added meanwhile. Once everything
//! serves, `cluster.json` (`info`) tells people and scripts where everything
//! is. Process control is `cell_proc`, `router_proc` and `control_proc`; the
//! faults a driver asks for are its [`Cluster`] implementation.
//!
//! ```text
//! dir/
//!   lock            flock'ed while a LocalCluster runs the directory
//!   layout.json     ports + secrets, written once (and when a cell is added)
//!   cluster.json    written when the cluster serves: router, control server,
//!                   control cell and data cells (pids, commands, urls); rewritten
//!                   by this cluster (its only writer) after every fault
//!   control.env     CELLKV_CONTROL_URL + CELLKV_ADMIN_TOKEN for cellkvctl
//!   router/         config.toml ([control] section), router.log, map-cache.json
//!   control/        config.toml, initial-map.toml, control.log, c100-n<node>/
//!   c<cell>-n<node>/ config.toml, replica.log, data/
//! ```
//!
//! Start order: every cell (control cell included) bootstraps, then the
//! control server stores the initial map if the control cell holds none and
//! takes the job lease, then the router starts and follows the map. Stop
//! order: router, control server, then every replica.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellMap, CellSpec};

use crate::cell_proc::{CellConfig, CellLayout, CellOptions, LocalCell, ReplicaProc, CELL_BIN};
use crate::control_proc::{ControlConfig, ControlProc, ControlServerOptions, CONTROL_BIN};
use crate::drive::{Cluster, Endpoints, Fut};
use crate::process::{bin_path, free_port};
use crate::proxy::LatencyProxy;
use crate::router_proc::{
    unlimited_token, Access, RouterConfig, RouterControlOptions, RouterOptions, RouterProc,
    S3Config, S3CredentialConfig, ROUTER_BIN,
};
use client::admin::AdminClient;

pub mod api;
mod info;
mod layout;

pub use info::{
    read_cluster_json, CellInfo, ClusterInfo, CommandInfo, ControlInfo, LocalApiInfo, ReplicaInfo,
    RouterInfo, S3Info, CLUSTER_FILE, CONTROL_ENV_FILE,
};
pub use layout::{
    next_free_id, ControlLayout, LocalLayout, Secrets, CONTROL_CELL_ID, CONTROL_REPLICAS,
    LAYOUT_FILE, LAYOUT_VERSION,
};

/// Name of the launcher binary (`src/bin/cellkv-local.rs`).
pub const LOCAL_BIN: &str = "cellkv-local";
/// Held (flock) by the one `LocalCluster` running the directory.
pub const LOCK_FILE: &str = "lock";
/// Name of the client token the cluster creates (the first `[[tokens]]`).
pub const CLIENT_TOKEN_NAME: &str = "local";
/// How often the router polls the control cell for a new map: well under a
/// second, so a job's map change reaches it before most requests notice.
pub const MAP_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The region of the cluster's S3 API (clients sign for it).
pub const S3_REGION: &str = "us-east-1";
/// Time a process gets beyond its own shutdown grace before `stop` SIGKILLs it.
const STOP_SLACK: Duration = Duration::from_secs(5);

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

/// Replaces `path` whole and durably (`service::write_file_durably`): a reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    service::write_file_durably(path, bytes).with_context(|| format!("write {}", path.display()))
}

// ---------------------------------------------------------------------------
// The cluster

/// Why a cell id cannot name a new data cell.
#[derive(Debug, thiserror::Error)]
pub enum NewCellIdError {
    #[error("cell id {0} is not available for a data cell")]
    Reserved(CellId),
    #[error("the cluster has a cell {0} already")]
    Exists(CellId),
}

/// How to run a local cluster. The secrets and ids in the templates are
/// replaced by the cluster's own.
#[derive(Clone, Debug)]
pub struct LocalClusterOptions {
    /// Number of cells (ids `1..=cells`). Must match a reused layout.
    pub cells: usize,
    /// The router's port; `None`: the layout's, or a fresh one. A port given
    /// here replaces the layout's (the router is stateless).
    pub router_port: Option<u16>,
    /// Template of every cell (the control cell and cells added later too):
    /// `cell_id` and the secrets are replaced, `replicas` counts only for a
    /// fresh layout and added cells.
    pub cell: CellOptions,
    /// Template of the router: `cell_api_token` and `control` are replaced,
    /// and the cluster's client token (named [`CLIENT_TOKEN_NAME`]) is put
    /// before `tokens`, which therefore lists only extra tokens.
    pub router: RouterOptions,
    /// Template of the control server (its addresses and secrets are the cluster's).
    pub control: ControlServerOptions,
    /// Deadline for [`LocalCluster::start`] to have everything serving.
    pub start_timeout: Duration,
    /// Cells the router reaches through a [`LatencyProxy`] per replica (for
    /// `slow_cell`; Raft traffic between the replicas and the control
    /// server's calls stay direct). The proxies run on the runtime that
    /// starts the cluster, for as long as it lives. The router dials them
    /// through its `connect_to` table, so they stay in its path whatever map
    /// it follows (a cell added later has none).
    pub proxied_cells: Vec<CellId>,
    /// `http://host:port` of `cellkv-local`'s own API (`api`) when it serves
    /// one, recorded in `cluster.json` for other programs to find.
    pub local_api_url: Option<String>,
}

impl Default for LocalClusterOptions {
    fn default() -> Self {
        LocalClusterOptions {
            cells: 3,
            router_port: None,
            cell: CellOptions::default(),
            router: RouterOptions {
                config: RouterConfig {
                    tokens: Vec::new(),
                    ..RouterOptions::default().config
                },
                ..RouterOptions::default()
            },
            control: ControlServerOptions::default(),
            start_timeout: Duration::from_secs(90),
            proxied_cells: Vec::new(),
            local_api_url: None,
        }
    }
}

/// A router, a control plane and data cells as real processes on loopback,
/// in one directory. Dropping it SIGKILLs every process (router first);
/// [`stop`](Self::stop) stops them gracefully.
pub struct LocalCluster {
    // Fields drop in order: the router, then the control server, then the cells.
    router: RouterProc,
    control: ControlProc,
    cells: Vec<LocalCell>,
    control_cell: LocalCell,
    /// Per proxied cell, one proxy per replica (in replica order).
    proxies: Vec<(CellId, Vec<LatencyProxy>)>,
    /// Options of a cell added later (secrets filled in, id replaced).
    cell_template: CellOptions,
    cell_bin: PathBuf,
    layout: LocalLayout,
    dir: PathBuf,
    local_api_url: Option<String>,
    /// The directory's lock, released last (when every process is gone).
    _lock: std::fs::File,
}

impl LocalCluster {
    /// Starts the cluster of `dir`: the one `dir/layout.json` describes (same
    /// ports, secrets, data and map), or a fresh one. Returns once every cell
    /// is ready, the control server holds the job lease and the router serves
    /// every cell of the live map, after writing `cluster.json`.
    pub async fn start(opts: LocalClusterOptions, dir: &Path) -> Result<LocalCluster> {
        let deadline = Instant::now() + opts.start_timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
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
        let control_bin = bin_path(CONTROL_BIN)?;
        let layout = Self::layout_for(&opts, &dir)?;
        let secrets = layout.secrets.clone();
        let cell_template = CellOptions {
            config: CellConfig {
                cluster_secret: secrets.cluster_secret.clone(),
                api_token: secrets.cell_api_token.clone(),
                admin_token: secrets.admin_token.clone(),
                ..opts.cell.config.clone()
            },
            ..opts.cell.clone()
        };

        // Every cell at once; the control cell has its own API token.
        let control_cell = LocalCell::spawn_with_binary(
            &cell_bin,
            CellOptions {
                cell_id: CONTROL_CELL_ID,
                replicas: layout.control.cell.peers.len(),
                config: CellConfig {
                    api_token: secrets.control_cell_token.clone(),
                    ..cell_template.config.clone()
                },
                start_timeout: left(),
                ..cell_template.clone()
            },
            layout.control.cell.clone(),
            &dir.join("control"),
        )?;
        let mut cells = Vec::with_capacity(layout.cells.len());
        for cl in &layout.cells {
            let cell_opts = CellOptions {
                cell_id: cl.cell_id,
                replicas: cl.peers.len(),
                start_timeout: left(),
                ..cell_template.clone()
            };
            // Pushed one by one: if a later spawn fails, Drop kills the earlier ones.
            cells.push(LocalCell::spawn_with_binary(
                &cell_bin,
                cell_opts,
                cl.clone(),
                &dir,
            )?);
        }
        let all: Vec<&LocalCell> = std::iter::once(&control_cell).chain(&cells).collect();
        for (cell, r) in all
            .iter()
            .zip(join_all(all.iter().map(|c| c.bootstrap()).collect()).await)
        {
            r.with_context(|| format!("start cell {}", cell.cell_id()))?;
        }

        // The control server: stores the map if the control cell has none,
        // tells every data cell what it owns, takes the job lease.
        let control = ControlProc::prepare(
            &control_bin,
            &ControlServerOptions {
                config: ControlConfig {
                    admin_listen: layout.control.admin_listen,
                    admin_token: secrets.control_admin_token.clone(),
                    control_cell: layout.control.endpoints(),
                    control_token: secrets.control_cell_token.clone(),
                    cell_api_token: secrets.cell_api_token.clone(),
                    cell_admin_token: secrets.admin_token.clone(),
                    ..opts.control.config.clone()
                },
                ..opts.control.clone()
            },
            Some(&layout.cell_map()),
            &dir.join("control"),
        )?;
        control.start()?;
        control.wait_ready(left()).await?;
        let live_epoch = control.admin().map().await?.epoch;

        let mut router_opts = opts.router.clone();
        let router_config = &mut router_opts.config;
        router_config.cell_api_token = secrets.cell_api_token.clone();
        router_config
            .tokens
            .insert(0, unlimited_token(CLIENT_TOKEN_NAME, &secrets.client_token));
        router_config.s3 = S3Config {
            listen: layout.s3_listen,
            region: S3_REGION.to_string(),
            credentials: vec![S3CredentialConfig {
                access_key: secrets.s3_access_key.clone(),
                secret_key: secrets.s3_secret_key.clone(),
                secret_key_env: None,
                buckets: vec!["*".to_string()],
                access: Access::ReadWrite,
            }],
        };
        router_config.control = Some(RouterControlOptions {
            endpoints: layout.control.endpoints(),
            token: secrets.control_cell_token.clone(),
            poll_interval: MAP_POLL_INTERVAL,
            cache_file: Some(dir.join("router").join("map-cache.json")),
            ..RouterControlOptions::default()
        });
        let mut proxies = Vec::new();
        for &id in &opts.proxied_cells {
            let Some(cl) = layout.cells.iter().find(|c| c.cell_id == id) else {
                bail!("cannot proxy cell {id}: the cluster has no such cell");
            };
            let mut ps = Vec::with_capacity(cl.peers.len());
            for peer in &cl.peers {
                let listen = SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    free_port().context("allocate a proxy port")?,
                ));
                let p = LatencyProxy::start(listen, peer.api_addr)
                    .await
                    .with_context(|| {
                        format!("start the proxy of cell {id} node {}", peer.node_id)
                    })?;
                router_opts
                    .config
                    .connect_to
                    .insert(peer.api_addr.to_string(), p.listen_addr().to_string());
                ps.push(p);
            }
            proxies.push((id, ps));
        }
        let router = RouterProc::prepare(
            &router_bin,
            &router_opts,
            layout.router_listen,
            &layout.cell_map(),
            &dir.join("router"),
        )?;
        router.start()?;
        let cluster = LocalCluster {
            router,
            control,
            cells,
            control_cell,
            proxies,
            cell_template,
            cell_bin,
            layout,
            dir,
            local_api_url: opts.local_api_url.clone(),
            _lock: lock,
        };
        cluster.router.wait_alive(left()).await?;
        cluster
            .router
            .wait_readyz(
                left(),
                "following the live map and serving every cell",
                |s, v| {
                    s == 200
                        && v["epoch"].as_u64().is_some_and(|e| e >= live_epoch)
                        && crate::router_proc::all_cells_serving(v)
                },
            )
            .await?;
        cluster.write_cluster_json()?;
        cluster.write_control_env()?;
        Ok(cluster)
    }

    /// The persisted layout (a version-1 one migrated and saved), checked
    /// against `opts`, or a fresh one (saved).
    fn layout_for(opts: &LocalClusterOptions, dir: &Path) -> Result<LocalLayout> {
        let Some((mut layout, version)) = LocalLayout::load_versioned(dir)? else {
            if let Some(p) = opts.router_port {
                TcpListener::bind((Ipv4Addr::LOCALHOST, p))
                    .with_context(|| format!("router port {p} is not free"))?;
            }
            let layout = LocalLayout::allocate(opts.cells, opts.cell.replicas, opts.router_port)?;
            layout.save(dir)?;
            return Ok(layout);
        };
        if version != LAYOUT_VERSION {
            eprintln!(
                "cellkv-local: {} was version {version} (no control plane); migrated to \
                 version {LAYOUT_VERSION}: a control cell and a control server join the cluster",
                dir.join(LAYOUT_FILE).display()
            );
            layout.save(dir)?;
        }
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
        // A layout from before S3: give it an S3 port and credential.
        let new_secrets = layout.secrets.complete();
        if layout.s3_listen.is_none() || new_secrets {
            if layout.s3_listen.is_none() {
                layout.s3_listen = Some(SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    free_port().context("allocate the S3 port")?,
                )));
            }
            layout.save(dir)?;
        }
        Ok(layout)
    }

    /// Starts a new data cell `id` (3 replicas on fresh ports, like the
    /// others), persisted in `layout.json` first so a restart brings it back,
    /// and waits until it is ready. It is not in the map yet: register it
    /// with the control server (`AdminClient::add_cell`) to give it keys.
    pub async fn add_cell(&mut self, id: CellId) -> Result<CellSpec> {
        self.check_new_cell_id(id)?;
        let cl = CellLayout::allocate(id, self.cell_template.replicas)
            .context("allocate the new cell's ports")?;
        self.layout.cells.push(cl.clone());
        self.layout.save(&self.dir)?;
        let opts = CellOptions {
            cell_id: id,
            ..self.cell_template.clone()
        };
        let started = async {
            let cell = LocalCell::spawn_with_binary(&self.cell_bin, opts, cl.clone(), &self.dir)?;
            cell.bootstrap().await?;
            anyhow::Ok(cell)
        }
        .await;
        match started {
            Ok(cell) => {
                self.cells.push(cell);
                self.write_cluster_json()?;
                Ok(cl.cell_spec())
            }
            Err(e) => {
                self.layout.cells.retain(|c| c.cell_id != id);
                self.layout.save(&self.dir)?;
                Err(e.context(format!("start the new cell {id}")))
            }
        }
    }

    /// What `cluster.json` says now (pids of the processes running now).
    pub fn info(&self) -> ClusterInfo {
        let control = &self.control;
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
                .map(|c| CellInfo::of(c, self.proxies_of(c.cell_id())))
                .collect(),
            control: Some(ControlInfo {
                url: control.url(),
                admin_token: self.layout.secrets.control_admin_token.clone(),
                pid: control.pid(),
                config: control.config_path().to_owned(),
                log: control.log_path().to_owned(),
                command: Some(CommandInfo::of(control.spec())),
                cell_token: self.layout.secrets.control_cell_token.clone(),
                cell: CellInfo::of(&self.control_cell, &[]),
            }),
            local_api: self.local_api_url.as_ref().map(|url| LocalApiInfo {
                url: url.clone(),
                proxied_cells: self.proxies.iter().map(|(id, _)| *id).collect(),
            }),
            s3: self.s3_info(),
        }
    }

    /// The S3 endpoint and credential (none for a layout without S3).
    pub fn s3_info(&self) -> Option<S3Info> {
        let listen = self.layout.s3_listen?;
        Some(S3Info {
            url: format!("http://{listen}"),
            access_key: self.layout.secrets.s3_access_key.clone(),
            secret_key: self.layout.secrets.s3_secret_key.clone(),
            region: S3_REGION.to_string(),
        })
    }

    /// (Re)writes `cluster.json` from [`info`](Self::info). This cluster is
    /// its only writer: every fault on its processes goes through it (or
    /// through `cellkv-local`'s API, which acts on it).
    pub fn write_cluster_json(&self) -> Result<PathBuf> {
        let path = self.cluster_json_path();
        let text = serde_json::to_string_pretty(&self.info()).context("serialize cluster.json")?;
        write_atomically(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Whether [`add_cell`](Self::add_cell) may start a cell `id`.
    pub fn check_new_cell_id(&self, id: CellId) -> Result<(), NewCellIdError> {
        if id == CONTROL_CELL_ID || id.0 == 0 {
            return Err(NewCellIdError::Reserved(id));
        }
        if self.layout.cells.iter().any(|c| c.cell_id == id) {
            return Err(NewCellIdError::Exists(id));
        }
        Ok(())
    }

    /// The id [`add_cell`](Self::add_cell) should get next.
    pub fn next_cell_id(&self) -> CellId {
        self.layout.next_cell_id()
    }

    /// Writes `control.env`: what `cellkvctl` needs, sourceable by a shell.
    fn write_control_env(&self) -> Result<()> {
        let text = format!(
            "CELLKV_CONTROL_URL={}\nCELLKV_ADMIN_TOKEN={}\n",
            self.control.url(),
            self.layout.secrets.control_admin_token
        );
        write_atomically(&self.dir.join(CONTROL_ENV_FILE), text.as_bytes())
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

    /// The starting map: every data cell of the layout with the replicas' own
    /// addresses, epoch 1 (the router's names the proxies of proxied cells).
    /// The live map, changed by drains and adds, is [`AdminClient::map`].
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

    /// The control server.
    pub fn control(&self) -> &ControlProc {
        &self.control
    }

    /// A client of the control server's admin API.
    pub fn admin(&self) -> &AdminClient {
        self.control.admin()
    }

    /// `http://<control server admin API>`, no trailing slash.
    pub fn control_url(&self) -> String {
        self.control.url()
    }

    /// The control cell (3 replicas holding the map and the jobs).
    pub fn control_cell(&self) -> &LocalCell {
        &self.control_cell
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

    /// The data cells (including cells added since the start).
    pub fn cells(&self) -> &[LocalCell] {
        &self.cells
    }

    /// The data cell with id `id`. Panics if there is none.
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
        if let Some(status) = self.control.unexpected_exit() {
            bail!(
                "the control server exited unexpectedly ({status}); log tail:\n{}",
                self.control.log_tail(40)
            );
        }
        self.control_cell
            .check_no_crash()
            .context("the control cell")?;
        for c in &self.cells {
            c.check_no_crash()?;
        }
        Ok(())
    }

    /// Polls until every cell is ready, the control server holds the job
    /// lease and the router serves every cell (after restarting processes).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        self.control_cell
            .wait_ready(left())
            .await
            .context("the control cell")?;
        for c in &self.cells {
            c.wait_ready(left())
                .await
                .with_context(|| format!("cell {}", c.cell_id()))?;
        }
        self.control.wait_ready(left()).await?;
        self.router.wait_serving_all(left()).await?;
        Ok(())
    }

    /// Stops everything gracefully: SIGTERM to the router, then to the
    /// control server (which finishes its job step), then to every replica
    /// at once (SIGCONT too, so a frozen one can act on it), each with its
    /// shutdown grace plus a margin, SIGKILL for stragglers. Fails, after
    /// stopping everything, if a process did not exit 0 on its own.
    pub async fn stop(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (label, p, grace) in [
            (
                "the router",
                self.router.process(),
                self.router.shutdown_grace(),
            ),
            (
                "the control server",
                self.control.process(),
                self.control.shutdown_grace(),
            ),
        ] {
            if p.is_running() {
                let _ = p.cont();
                match p.terminate(grace + STOP_SLACK).await {
                    Ok(s) if s.success() => {}
                    Ok(s) => problems.push(format!("{label} exited with {s}")),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
        }
        let running: Vec<&ReplicaProc> = std::iter::once(&self.control_cell)
            .chain(&self.cells)
            .flat_map(|c| c.replicas())
            .filter(|r| r.is_running())
            .collect();
        for r in &running {
            if let Err(e) = r.send_term() {
                problems.push(format!("{e:#}"));
            }
            let _ = r.cont();
        }
        let grace = std::iter::once(&self.control_cell)
            .chain(&self.cells)
            .map(|c| c.options().config.shutdown_grace)
            .max()
            .unwrap_or_default();
        let deadline = Instant::now() + grace + STOP_SLACK;
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

    /// SIGKILLs every running process: router, control server, cells.
    pub fn kill_all(&self) -> Result<()> {
        if self.router.is_running() {
            self.router.kill()?;
        }
        if self.control.is_running() {
            self.control.kill()?;
        }
        for c in &self.cells {
            c.kill_all()?;
        }
        self.control_cell.kill_all()
    }
}

/// Time the router gets to drain on SIGTERM, beyond its shutdown grace.
const ROUTER_STOP_SLACK: Duration = Duration::from_secs(5);

impl LocalCluster {
    fn data_cell(&self, id: CellId) -> Result<&LocalCell> {
        self.cells
            .iter()
            .find(|c| c.cell_id() == id)
            .with_context(|| format!("the cluster has no data cell {id}"))
    }

    /// Runs `f` on `cell`, then rewrites `cluster.json` (pids changed).
    fn on_cell<T>(&self, cell: CellId, f: impl FnOnce(&LocalCell) -> Result<T>) -> Result<T> {
        let out = f(self.data_cell(cell)?)?;
        self.write_cluster_json()?;
        Ok(out)
    }
}

impl Cluster for LocalCluster {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            router_url: self.router_url(),
            auth: self.auth(),
            cells: self.cells.iter().map(|c| c.cell_id()).collect(),
            proxied_cells: self.proxies.iter().map(|(id, _)| *id).collect(),
            next_cell_id: self.layout.next_cell_id(),
        }
    }

    fn admin(&self) -> Result<AdminClient> {
        Ok(self.control.admin().clone())
    }

    fn add_cell(&mut self, id: CellId) -> Fut<'_, CellSpec> {
        Box::pin(LocalCluster::add_cell(self, id))
    }

    fn kill_leader(&self, cell: CellId) -> Fut<'_, usize> {
        Box::pin(async move {
            let c = self.data_cell(cell)?;
            let l = c
                .leader()
                .await
                .with_context(|| format!("no replica of cell {cell} reports itself leader"))?;
            self.on_cell(cell, |c| c.replica(l).kill().map(|_| l))
        })
    }

    fn kill_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move { self.on_cell(cell, LocalCell::kill_all) })
    }

    fn restart_replica(&self, cell: CellId, i: usize) -> Fut<'_, ()> {
        Box::pin(async move {
            self.on_cell(cell, |c| {
                let r = c
                    .replicas()
                    .get(i)
                    .with_context(|| format!("cell {cell} has no replica {i}"))?;
                if !r.is_running() {
                    r.restart()?;
                }
                Ok(())
            })
        })
    }

    fn restart_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            self.on_cell(cell, |c| {
                for r in c.replicas().iter().filter(|r| !r.is_running()) {
                    r.restart()?;
                }
                Ok(())
            })
        })
    }

    fn freeze_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            self.on_cell(cell, |c| {
                c.replicas().iter().try_for_each(|r| r.stop_signal())
            })
        })
    }

    fn thaw_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(
            async move { self.on_cell(cell, |c| c.replicas().iter().try_for_each(|r| r.cont())) },
        )
    }

    fn set_cell_delay(&self, cell: CellId, round_trip: Duration) -> Fut<'_, ()> {
        Box::pin(async move { LocalCluster::set_cell_delay(self, cell, round_trip) })
    }

    fn stop_router(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            let router = self.router();
            if router.is_running() {
                router
                    .terminate(router.shutdown_grace() + ROUTER_STOP_SLACK)
                    .await?;
            }
            self.write_cluster_json()?;
            Ok(())
        })
    }

    fn start_router(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            if !self.router().is_running() {
                self.router().start()?;
            }
            self.write_cluster_json()?;
            Ok(())
        })
    }

    fn warnings(&self) -> Fut<'_, Vec<String>> {
        Box::pin(async move {
            Ok(self
                .check_no_crash()
                .err()
                .map(|e| format!("{e:#}"))
                .into_iter()
                .collect())
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== cluster in {} failed; router, control server and replica logs follow ====",
                self.dir.display()
            );
        }
        // The processes' own Drop prints their tails and kills them.
    }
}

/// Awaits every future concurrently (on this task) and returns their outputs in order.
pub(crate) async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
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
    fn a_directory_is_run_by_one_cluster_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("another cellkv-local"), "{err}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTROL_ENV_FILE);
        write_atomically(&path, b"A=1\n").unwrap();
        write_atomically(&path, b"A=2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
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
