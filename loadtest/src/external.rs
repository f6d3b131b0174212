//! Faults on a cluster the harness did not start (`ExternalCluster`): one
//! that `cellkv-local` runs, found through its `cluster.json` (router URL,
//! token, and every process's pid, command line, working directory,
//! environment and log). Processes are faulted with signals by pid, each
//! pid checked first against `/proc/<pid>/cmdline` (a reused pid is never
//! signalled), and a killed process is started again exactly as it ran:
//! same command line, directory and environment, output appended to its
//! log. `cluster.json` is rewritten after every change so the next reader
//! (a later run, `cellkv-local` stopping) finds the new pids.
//!
//! A process restarted here is not a child of `cellkv-local`: it runs in a
//! process group of its own, outlives the harness, and `cellkv-local` stops
//! it on exit by the pid `cluster.json` names ([`PidProcess`]).
//!
//! Moves (drain, add) go through the control server `cluster.json` names
//! ([`ExternalCluster::admin`]). What only the launcher can do right is
//! asked of `cellkv-local`'s own API (`local::api`): starting an added
//! cell's processes (it owns `layout.json` and stops them on exit), and
//! setting the delay of the latency proxies it runs (`--latency-proxies`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{CellId, CellSpec};
use http::Method;
use serde_json::json;

use crate::admin::AdminClient;
use crate::cluster::{leader_of, PROBE_TIMEOUT};
use crate::http::{Client, ClientConfig};
use crate::local::{read_cluster_json, write_atomically, ClusterInfo, CommandInfo, CLUSTER_FILE};
use crate::process::{
    all_threads_stopped, send_signal, stat_state, FREEZE_POLL, FREEZE_TIMEOUT, POLL, SCRUBBED_ENV,
};

/// How long a SIGKILLed process may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a call to `cellkv-local`'s API: starting a cell takes seconds.
const LOCAL_API_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// One process known by its pid

/// A running process that is not (necessarily) our child, identified by its
/// pid and the command line it must have.
#[derive(Clone, Debug)]
pub struct PidProcess {
    pub label: String,
    pub pid: u32,
    /// The expected argv; without it, the process must name `config` in its argv.
    pub argv: Option<Vec<String>>,
    pub config: PathBuf,
}

impl PidProcess {
    /// Whether `pid` is alive (not a zombie) and runs the expected command.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        if matches!(stat_state(&stat), Some('Z' | 'X') | None) {
            return false;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let argv: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        match &self.argv {
            // A script shows its interpreter first (`/bin/sh script args`).
            Some(want) => &argv == want || argv.get(1..) == Some(want.as_slice()),
            None => {
                let config = self.config.to_string_lossy();
                argv.iter().any(|a| *a == config)
            }
        }
    }

    /// Sends `sig`, after checking the pid still runs the expected command.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        if !self.is_alive() {
            bail!(
                "{} (pid {}) is not running (or the pid now runs something else)",
                self.label,
                self.pid
            );
        }
        send_signal(self.pid, sig)
            .with_context(|| format!("send signal {sig} to {} (pid {})", self.label, self.pid))
    }

    /// Polls until the process is gone (exited; a zombie counts as gone).
    pub async fn wait_gone(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {timeout:?}",
                    self.label,
                    self.pid
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL (and fail) if it is still there.
    pub async fn terminate(&self, timeout: Duration) -> Result<()> {
        self.signal(libc::SIGTERM)?;
        // A frozen process must run to act on SIGTERM.
        let _ = send_signal(self.pid, libc::SIGCONT);
        match self.wait_gone(timeout).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.signal(libc::SIGKILL);
                let _ = self.wait_gone(KILL_TIMEOUT).await;
                Err(e.context(format!("{} ignored SIGTERM; killed it", self.label)))
            }
        }
    }

    /// SIGKILL and wait until it is gone.
    pub async fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.wait_gone(KILL_TIMEOUT).await
    }

    /// SIGSTOP; returns once every thread is stopped.
    pub fn freeze(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            if all_threads_stopped(self.pid)
                .with_context(|| format!("read the state of {}", self.label))?
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not stop within {FREEZE_TIMEOUT:?} of SIGSTOP",
                    self.label
                );
            }
            std::thread::sleep(FREEZE_POLL);
        }
    }

    /// SIGCONT.
    pub fn thaw(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }
}

/// Starts `cmd` as it ran before, detached from the caller: its own process
/// group, no death signal, output appended to `log` after a marker line.
pub fn spawn_detached(label: &str, cmd: &CommandInfo, log: &Path) -> Result<Child> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    writeln!(
        file,
        "==== harness: restart of {label} by cellkv-loadtest (pid {}) ====",
        std::process::id()
    )?;
    let mut c = Command::new(&cmd.bin);
    c.args(&cmd.args)
        .current_dir(&cmd.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .process_group(0);
    for k in SCRUBBED_ENV {
        c.env_remove(k);
    }
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    c.spawn()
        .with_context(|| format!("spawn {} for {label}", cmd.bin.display()))
}

// ---------------------------------------------------------------------------
// A cluster described by cluster.json

/// A cluster known only through its `cluster.json`.
pub struct ExternalCluster {
    path: PathBuf,
    info: Mutex<ClusterInfo>,
    client: Client,
    /// Processes this harness started again: reaped when they exit.
    restarted: Mutex<Vec<Child>>,
}

impl ExternalCluster {
    /// `path` may be the cluster directory or its `cluster.json`.
    pub fn resolve(path: &Path) -> PathBuf {
        if path.is_dir() {
            path.join(CLUSTER_FILE)
        } else {
            path.to_owned()
        }
    }

    /// Reads `cluster.json` (at `path`, or in the directory `path`).
    pub fn open(path: &Path) -> Result<ExternalCluster> {
        let path = Self::resolve(path);
        let info = read_cluster_json(&path).context(
            "the cluster's description (is the cluster running? `cellkv-local` writes it once \
             everything serves)",
        )?;
        Ok(ExternalCluster {
            path,
            info: Mutex::new(info),
            client: Client::new(ClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: PROBE_TIMEOUT,
                pool_max_idle_per_host: 2,
                ..ClientConfig::default()
            }),
            restarted: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClusterInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the description lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The description as it stands (pids updated after restarts).
    pub fn info(&self) -> ClusterInfo {
        self.lock().clone()
    }

    pub fn cell_ids(&self) -> Vec<CellId> {
        self.lock().cells.iter().map(|c| c.id).collect()
    }

    /// A client of the control server's admin API, if the cluster has one.
    pub fn admin(&self) -> Result<AdminClient> {
        let info = self.lock();
        let c = info.control.as_ref().with_context(|| {
            format!(
                "{} names no control server (written by a cellkv-local without a control \
                 plane? start the cluster again with this one)",
                self.path.display()
            )
        })?;
        Ok(AdminClient::new(&c.url, &c.admin_token))
    }

    /// The router as a pid process, if it has a pid.
    pub fn router_process(info: &ClusterInfo) -> Option<PidProcess> {
        Some(PidProcess {
            label: "router".to_owned(),
            pid: info.router.pid?,
            argv: info.router.command.as_ref().map(CommandInfo::argv),
            config: info.router.config.clone(),
        })
    }

    /// Replica `i` of `cell` as a pid process, if it has a pid.
    pub fn replica_process(info: &ClusterInfo, cell: CellId, i: usize) -> Option<PidProcess> {
        let r = info.cells.iter().find(|c| c.id == cell)?.replicas.get(i)?;
        Some(PidProcess {
            label: format!("cell {cell} node {}", r.node_id),
            pid: r.pid?,
            argv: r.command.as_ref().map(CommandInfo::argv),
            config: r.config.clone(),
        })
    }

    fn replica_count(&self, cell: CellId) -> Result<usize> {
        self.lock()
            .cells
            .iter()
            .find(|c| c.id == cell)
            .map(|c| c.replicas.len())
            .with_context(|| format!("{} describes no cell {cell}", self.path.display()))
    }

    /// Fails, naming them, if the router or a replica is not running as
    /// described, or if a process cannot be restarted (no command line).
    pub fn check_running(&self) -> Result<()> {
        let info = self.info();
        let mut problems = Vec::new();
        let mut check = |label: String, p: Option<PidProcess>, has_command: bool| {
            match p {
                None => problems.push(format!("{label}: no pid (not running)")),
                Some(p) if !p.is_alive() => problems.push(format!(
                    "{label}: pid {} is not running {}",
                    p.pid,
                    p.argv.map(|a| a.join(" ")).unwrap_or_default()
                )),
                Some(_) => {}
            }
            if !has_command {
                problems.push(format!(
                    "{label}: no command line in the file, so it could not be restarted \
                     (written by an older cellkv-local? start the cluster again)"
                ));
            }
        };
        check(
            "router".to_owned(),
            Self::router_process(&info),
            info.router.command.is_some(),
        );
        for c in &info.cells {
            for (i, r) in c.replicas.iter().enumerate() {
                check(
                    format!("cell {} node {}", c.id, r.node_id),
                    Self::replica_process(&info, c.id, i),
                    r.command.is_some(),
                );
            }
        }
        if !problems.is_empty() {
            bail!(
                "the cluster of {} is not fully running:\n  {}",
                self.path.display(),
                problems.join("\n  ")
            );
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&*self.lock()).context("serialize cluster.json")?;
        write_atomically(&self.path, text.as_bytes())
    }

    /// Reaps restarted processes that exited; returns a line for each.
    pub fn reap(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut kids = self.restarted.lock().unwrap_or_else(|p| p.into_inner());
        kids.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                out.push(format!("pid {} exited ({status})", c.id()));
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        out
    }

    /// Every replica's `/health` (`None`: no answer within the probe deadline).
    async fn health_all(&self, cell: CellId) -> Result<Vec<Option<serde_json::Value>>> {
        let urls: Vec<Option<String>> = {
            let info = self.lock();
            let c = info
                .cells
                .iter()
                .find(|c| c.id == cell)
                .with_context(|| format!("no cell {cell}"))?;
            c.replicas
                .iter()
                .map(|r| r.pid.map(|_| format!("{}/health", r.api_url)))
                .collect()
        };
        let mut set = tokio::task::JoinSet::new();
        for (i, url) in urls.iter().enumerate() {
            let Some(url) = url.clone() else { continue };
            let client = self.client.clone();
            set.spawn(async move {
                let v = client.get_json::<serde_json::Value>(&url, &[]).await.ok();
                (i, v.map(|(_, v)| v))
            });
        }
        let mut out = vec![None; urls.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, v)) = joined {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// The index of `cell`'s leader (the replica that reports itself leader
    /// with the highest term).
    pub async fn leader(&self, cell: CellId) -> Result<usize> {
        let health = self.health_all(cell).await?;
        leader_of(&health)
            .with_context(|| format!("no replica of cell {cell} reports itself leader"))
    }

    /// SIGKILLs replica `i` of `cell` and waits until it is gone.
    pub async fn kill_replica(&self, cell: CellId, i: usize) -> Result<()> {
        let p = Self::replica_process(&self.info(), cell, i)
            .with_context(|| format!("cell {cell} replica {i} has no pid: not running"))?;
        p.kill().await?;
        self.set_replica_pid(cell, i, None);
        self.reap();
        self.save()
    }

    /// SIGKILLs every running replica of `cell`.
    pub async fn kill_cell(&self, cell: CellId) -> Result<()> {
        for i in 0..self.replica_count(cell)? {
            if Self::replica_process(&self.info(), cell, i).is_some() {
                self.kill_replica(cell, i).await?;
            }
        }
        Ok(())
    }

    /// SIGSTOPs every replica of `cell`.
    pub fn freeze_cell(&self, cell: CellId) -> Result<()> {
        let info = self.info();
        for i in 0..self.replica_count(cell)? {
            Self::replica_process(&info, cell, i)
                .with_context(|| format!("cell {cell} replica {i} is not running"))?
                .freeze()?;
        }
        Ok(())
    }

    /// SIGCONTs every replica of `cell`.
    pub fn thaw_cell(&self, cell: CellId) -> Result<()> {
        let info = self.info();
        for i in 0..self.replica_count(cell)? {
            if let Some(p) = Self::replica_process(&info, cell, i) {
                p.thaw()?;
            }
        }
        Ok(())
    }

    fn set_replica_pid(&self, cell: CellId, i: usize, pid: Option<u32>) {
        if let Some(r) = self
            .lock()
            .cells
            .iter_mut()
            .find(|c| c.id == cell)
            .and_then(|c| c.replicas.get_mut(i))
        {
            r.pid = pid;
        }
    }

    /// Starts replica `i` of `cell` again as it ran, unless it runs.
    pub fn restart_replica(&self, cell: CellId, i: usize) -> Result<()> {
        let info = self.info();
        if Self::replica_process(&info, cell, i).is_some_and(|p| p.is_alive()) {
            return Ok(());
        }
        let r = info
            .cells
            .iter()
            .find(|c| c.id == cell)
            .and_then(|c| c.replicas.get(i))
            .with_context(|| format!("no replica {i} in cell {cell}"))?;
        let label = format!("cell {cell} node {}", r.node_id);
        let cmd = r
            .command
            .as_ref()
            .with_context(|| format!("{label}: no command line in cluster.json"))?;
        let child = spawn_detached(&label, cmd, &r.log)?;
        self.set_replica_pid(cell, i, Some(child.id()));
        self.restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        self.save()
    }

    /// Starts every replica of `cell` that is not running.
    pub fn restart_dead_replicas(&self, cell: CellId) -> Result<()> {
        for i in 0..self.replica_count(cell)? {
            self.restart_replica(cell, i)?;
        }
        Ok(())
    }

    /// SIGTERMs the router and waits up to `timeout` for it to exit.
    pub async fn stop_router(&self, timeout: Duration) -> Result<()> {
        let p = Self::router_process(&self.info()).context("the router has no pid: not running")?;
        let r = p.terminate(timeout).await;
        self.lock().router.pid = None;
        self.reap();
        self.save()?;
        r
    }

    /// A client of `cellkv-local`'s own API (`local::api`), with the control
    /// admin token, if `cluster.json` names one; else why `what` cannot be done.
    pub fn local_api(&self, what: &str) -> Result<AdminClient> {
        let info = self.lock();
        let (Some(api), Some(control)) = (&info.local_api, &info.control) else {
            bail!(
                "{what} needs cellkv-local's API, which {} does not name (written by an older \
                 cellkv-local? start the cluster again with this one)",
                self.path.display()
            );
        };
        Ok(AdminClient::new(&api.url, &control.admin_token).with_timeout(LOCAL_API_TIMEOUT))
    }

    /// Asks the `cellkv-local` running the cluster to start a new data cell
    /// `id` (it persists it in its layout and stops it with the rest), then
    /// adds the cell to this description. Returns its spec, to register it
    /// with the control server.
    pub async fn add_cell(&self, id: CellId) -> Result<CellSpec> {
        let api = self.local_api("adding a cell")?;
        let v = api
            .must(Method::POST, "/v1/cells", Some(json!({ "id": id.0 })))
            .await?;
        let spec: CellSpec = serde_json::from_value(v["cell"].clone())
            .with_context(|| format!("cellkv-local answered no cell spec: {v}"))?;
        // cellkv-local rewrote cluster.json with the new cell: take that cell
        // from it (our own view of the other processes stays).
        let on_disk = read_cluster_json(&self.path)?;
        let cell = on_disk
            .cells
            .into_iter()
            .find(|c| c.id == id)
            .with_context(|| format!("{} does not list the new cell {id}", self.path.display()))?;
        {
            let mut info = self.lock();
            info.cells.retain(|c| c.id != id);
            info.cells.push(cell);
        }
        self.save()?;
        Ok(spec)
    }

    /// Sets the round trip the latency proxies in front of `cell` add
    /// between the router and its replicas (zero removes it).
    pub async fn set_cell_delay(&self, cell: CellId, rtt: Duration) -> Result<()> {
        let api = self.local_api("slow_cell")?;
        let ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
        api.must(
            Method::PUT,
            &format!("/v1/cells/{}/delay", cell.0),
            Some(json!({ "round_trip_ms": ms })),
        )
        .await?;
        Ok(())
    }

    /// Cells the router reaches through `cellkv-local`'s latency proxies.
    pub fn proxied_cells(&self) -> Vec<CellId> {
        self.lock()
            .local_api
            .as_ref()
            .map(|a| a.proxied_cells.clone())
            .unwrap_or_default()
    }

    /// Starts the router again as it ran, unless it runs.
    pub fn start_router(&self) -> Result<()> {
        let info = self.info();
        if Self::router_process(&info).is_some_and(|p| p.is_alive()) {
            return Ok(());
        }
        let cmd = info
            .router
            .command
            .as_ref()
            .context("router: no command line in cluster.json")?;
        let child = spawn_detached("router", cmd, &info.router.log)?;
        self.lock().router.pid = Some(child.id());
        self.restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{CellInfo, ReplicaInfo, RouterInfo};
    use common::NodeId;

    /// A shell script standing in for a server: logs, then waits (without
    /// `exec`, which would change its command line); exits 0 on SIGTERM.
    fn script(dir: &Path) -> PathBuf {
        let path = dir.join("fake-server");
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"up $* ${ROLE:-none} ${CELLKV_API_TOKEN:-scrubbed}\"\n\
             trap 'kill $! 2>/dev/null; exit 0' TERM\nsleep 20 &\nwait $!\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
        path
    }

    fn command(bin: &Path, dir: &Path, name: &str) -> CommandInfo {
        CommandInfo {
            bin: bin.to_owned(),
            args: vec!["--config".into(), dir.join(name).to_string_lossy().into()],
            cwd: dir.to_owned(),
            env: vec![("ROLE".into(), name.into())],
        }
    }

    async fn wait_log(path: &Path, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return;
            }
            assert!(Instant::now() < deadline, "{needle:?} not in {text}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// A cluster.json of stand-in processes: faults by pid, restarts from the
    /// command lines, pids rewritten in the file.
    #[tokio::test]
    async fn faults_and_restarts_processes_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = script(d);
        let router_cmd = command(&bin, d, "router.toml");
        let replica_cmd = command(&bin, d, "r1.toml");
        let router_log = d.join("router.log");
        let replica_log = d.join("r1.log");
        let router = spawn_detached("router", &router_cmd, &router_log).unwrap();
        let replica = spawn_detached("r1", &replica_cmd, &replica_log).unwrap();
        let info = ClusterInfo {
            router: RouterInfo {
                url: "http://127.0.0.1:9".into(),
                pid: Some(router.id()),
                config: d.join("router.toml"),
                log: router_log.clone(),
                command: Some(router_cmd.clone()),
            },
            token: "t".into(),
            cell_api_token: "c".into(),
            admin_token: "a".into(),
            dir: d.to_owned(),
            cells: vec![CellInfo {
                id: CellId(1),
                replicas: vec![ReplicaInfo {
                    node_id: NodeId(1),
                    pid: Some(replica.id()),
                    api_url: "http://127.0.0.1:9".into(),
                    raft_url: "http://127.0.0.1:9".into(),
                    data_dir: d.join("data"),
                    config: d.join("r1.toml"),
                    log: replica_log.clone(),
                    command: Some(replica_cmd.clone()),
                    proxy_url: None,
                }],
            }],
            control: None,
            local_api: None,
        };
        std::fs::write(d.join(CLUSTER_FILE), serde_json::to_string(&info).unwrap()).unwrap();
        wait_log(&replica_log, "up --config").await;

        // Opened through its directory; everything runs.
        let c = ExternalCluster::open(d).unwrap();
        c.check_running().unwrap();
        assert_eq!(c.cell_ids(), vec![CellId(1)]);
        let e = c.admin().err().unwrap().to_string();
        assert!(e.contains("names no control server"), "{e}");

        // A pid whose command line differs is not ours: never signalled.
        let imposter = PidProcess {
            label: "imposter".into(),
            pid: replica.id(),
            argv: Some(vec!["something".into(), "else".into()]),
            config: d.join("r1.toml"),
        };
        assert!(!imposter.is_alive());
        assert!(imposter.signal(libc::SIGKILL).is_err());

        // Freeze and thaw.
        c.freeze_cell(CellId(1)).unwrap();
        assert!(all_threads_stopped(replica.id()).unwrap());
        c.thaw_cell(CellId(1)).unwrap();

        // Kill: gone, no pid in the file; restart: a new pid, same command.
        c.kill_cell(CellId(1)).await.unwrap();
        let mut replica = replica;
        replica.wait().unwrap();
        let on_disk: ClusterInfo =
            serde_json::from_str(&std::fs::read_to_string(d.join(CLUSTER_FILE)).unwrap()).unwrap();
        assert_eq!(on_disk.cells[0].replicas[0].pid, None);
        assert!(c.check_running().is_err());
        c.restart_dead_replicas(CellId(1)).unwrap();
        let new_pid = c.info().cells[0].replicas[0].pid.unwrap();
        assert_ne!(new_pid, replica.id());
        wait_log(&replica_log, "restart of cell 1 node 1").await;
        // Same arguments and environment; the caller's secrets are scrubbed.
        wait_log(
            &replica_log,
            &format!(
                "up --config {} r1.toml scrubbed",
                d.join("r1.toml").display()
            ),
        )
        .await;
        let on_disk: ClusterInfo =
            serde_json::from_str(&std::fs::read_to_string(d.join(CLUSTER_FILE)).unwrap()).unwrap();
        assert_eq!(on_disk.cells[0].replicas[0].pid, Some(new_pid));
        // Restarting what runs is a no-op.
        c.restart_replica(CellId(1), 0).unwrap();
        assert_eq!(c.info().cells[0].replicas[0].pid, Some(new_pid));

        // The router: SIGTERM (the script exits 0), then started again.
        c.stop_router(Duration::from_secs(5)).await.unwrap();
        let mut router = router;
        router.wait().unwrap();
        c.start_router().unwrap();
        let router_pid = c.info().router.pid.unwrap();
        assert_ne!(router_pid, router.id());
        c.check_running().unwrap();

        // Leave nothing behind.
        let info = c.info();
        for p in [
            ExternalCluster::router_process(&info).unwrap(),
            ExternalCluster::replica_process(&info, CellId(1), 0).unwrap(),
        ] {
            p.kill().await.unwrap();
        }
        c.reap();
    }
}
