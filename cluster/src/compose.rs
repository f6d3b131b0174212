//! [`ComposeCluster`]: a Compose deployment (`deploy/`, described by its
//! `deployment.json`) driven and faulted from the host with the Docker CLI,
//! as `LocalCluster` does with signals: kill and start containers, pause
//! them, delay a cell's answers with `tc netem`, and cut network links with
//! packet filters inside the containers' own network namespaces (`nsenter`
//! + `iptables`), which only a real network can give.
//!
//! The host reaches every container by its address on the deployment's
//! bridge network (Linux routes the bridge), so leaders are found by asking
//! the replicas' `/health` directly, as the routers do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use client::admin::AdminClient;
use client::http::{Client, ClientConfig};
use common::{CellId, CellSpec};
use serde_json::Value;
use tokio::process::Command;

use crate::cell_proc::{leader_of, PROBE_TIMEOUT};
use crate::deploy::{
    bootstrap_cell, DeployLayout, Deployment, CELL_API_PORT, DEPLOYMENT_FILE, FAKETIME_FILE,
};
use crate::drive::{Cluster, Cut, Endpoints, Fut};
use crate::local::{next_free_id, write_atomically, CONTROL_CELL_ID};

/// The packet-filter chain a cut adds its rules to, in a container's own
/// network namespace; a heal flushes it.
const CUT_CHAIN: &str = "CELLKV-CUT";
/// The interface of a container on the deployment's network.
const CONTAINER_IF: &str = "eth0";
/// Longest a new cell may take to start and elect a leader.
const ADD_CELL_TIMEOUT: Duration = Duration::from_secs(120);

/// A running Compose deployment, found through its `deployment.json`.
pub struct ComposeCluster {
    path: PathBuf,
    dep: Mutex<Deployment>,
    compose: Vec<String>,
    http: Client,
    /// Container id by Compose service.
    ids: Mutex<BTreeMap<String, String>>,
    /// Services this driver stopped or paused on purpose: not warnings.
    stopped: Mutex<BTreeSet<String>>,
}

impl ComposeCluster {
    /// Reads `deployment.json` (at `path`, or in the directory `path`).
    pub fn open(path: &Path) -> Result<ComposeCluster> {
        let path = if path.is_dir() {
            path.join(DEPLOYMENT_FILE)
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "read {} (is the deployment up? deploy/up.sh writes it)",
                path.display()
            )
        })?;
        let dep: Deployment =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok(ComposeCluster {
            path,
            dep: Mutex::new(dep),
            compose: compose_command(),
            http: Client::new(ClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: PROBE_TIMEOUT,
                pool_max_idle_per_host: 2,
                ..ClientConfig::default()
            }),
            ids: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(BTreeSet::new()),
        })
    }

    /// Whether `path` (a file or a directory) holds a deployment's description.
    pub fn is_deployment(path: &Path) -> bool {
        if path.is_dir() {
            return path.join(DEPLOYMENT_FILE).is_file();
        }
        path.file_name().is_some_and(|n| n == DEPLOYMENT_FILE)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dep(&self) -> MutexGuard<'_, Deployment> {
        self.dep.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The services of `cell`'s replicas, in node order.
    fn replicas(&self, cell: CellId) -> Result<Vec<String>> {
        let dep = self.dep();
        let mut r: Vec<_> = dep
            .containers
            .iter()
            .filter(|c| c.cell_id == Some(cell))
            .map(|c| (c.node_id, c.service.clone()))
            .collect();
        if r.is_empty() {
            bail!("the deployment has no cell {cell}");
        }
        r.sort();
        Ok(r.into_iter().map(|(_, s)| s).collect())
    }

    fn routers(&self) -> Vec<String> {
        self.dep()
            .containers
            .iter()
            .filter(|c| c.role == "router")
            .map(|c| c.service.clone())
            .collect()
    }

    /// Runs `docker-compose`/`docker compose` on the deployment's file.
    async fn compose(&self, args: &[&str]) -> Result<String> {
        let (project, file) = {
            let d = self.dep();
            (d.project.clone(), d.compose_file.display().to_string())
        };
        let mut all: Vec<&str> = self.compose[1..].iter().map(String::as_str).collect();
        all.extend(["--project-name", &project, "--file", &file]);
        all.extend(args);
        run(&self.compose[0], &all).await
    }

    /// The container id of Compose service `service`. Ids are cached (a
    /// killed or paused container keeps its id); a miss asks Compose for
    /// every container of the project again (one call: `docker-compose` is
    /// slow to start, and a fault must take effect at once).
    async fn container(&self, service: &str) -> Result<String> {
        if let Some(id) = self.ids().get(service) {
            return Ok(id.clone());
        }
        let all = self.compose(&["ps", "-q"]).await?;
        let ids: Vec<&str> = all.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec![
                "inspect",
                "-f",
                "{{.Id}} {{index .Config.Labels \"com.docker.compose.service\"}}",
            ];
            args.extend(&ids);
            let out = run("docker", &args).await?;
            let mut cache = self.ids();
            cache.clear();
            for line in out.lines() {
                if let Some((id, svc)) = line.trim().split_once(' ') {
                    cache.insert(svc.to_owned(), id.to_owned());
                }
            }
        }
        self.ids()
            .get(service)
            .cloned()
            .with_context(|| format!("no container runs service {service}"))
    }

    fn ids(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn containers(&self, services: &[String]) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(services.len());
        for s in services {
            ids.push(self.container(s).await?);
        }
        Ok(ids)
    }

    /// `(pid, address on the deployment's network)` of each service's
    /// container, in one `docker inspect`; pid 0 and no address when it is
    /// not running.
    async fn inspect(&self, services: &[String]) -> Result<Vec<(u32, Option<String>)>> {
        let ids = self.containers(services).await?;
        let mut args = vec![
            "inspect",
            "-f",
            "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        ];
        args.extend(ids.iter().map(String::as_str));
        let out = run("docker", &args).await?;
        let rows: Vec<(u32, Option<String>)> = out
            .lines()
            .map(|line| {
                let mut words = line.split_whitespace();
                let pid = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let ip = words.next().filter(|ip| !ip.is_empty()).map(str::to_owned);
                (pid, ip)
            })
            .collect();
        if rows.len() != services.len() {
            bail!(
                "docker inspect gave {} rows for {} containers: {out:?}",
                rows.len(),
                services.len()
            );
        }
        Ok(rows)
    }

    /// `(pid, address)` of a running container.
    async fn pid_and_ip(&self, service: &str) -> Result<(u32, String)> {
        match self
            .inspect(std::slice::from_ref(&service.to_owned()))
            .await?
            .pop()
        {
            Some((pid, Some(ip))) if pid != 0 => Ok((pid, ip)),
            _ => bail!("{service} is not running"),
        }
    }

    /// The addresses of running containers.
    async fn addresses(&self, services: &[String]) -> Result<Vec<String>> {
        self.inspect(services)
            .await?
            .into_iter()
            .zip(services)
            .map(|((_, ip), s)| ip.with_context(|| format!("{s} has no address (is it running?)")))
            .collect()
    }

    /// Every replica's `/health` (None: no answer), in node order.
    async fn health(&self, cell: CellId) -> Result<Vec<Option<Value>>> {
        let rows = self.inspect(&self.replicas(cell)?).await?;
        let mut out = Vec::new();
        for (_, ip) in rows {
            let h = match ip {
                Some(ip) => self
                    .http
                    .get_json::<Value>(&format!("http://{ip}:{CELL_API_PORT}/health"), &[])
                    .await
                    .ok()
                    .map(|(_, v)| v),
                None => None,
            };
            out.push(h);
        }
        Ok(out)
    }

    /// The index of `cell`'s leader, waiting up to a few seconds for one.
    async fn leader(&self, cell: CellId) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let health = self.health(cell).await?;
            if let Some(l) = leader_of(&health) {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no replica of cell {cell} reports itself leader: {health:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn mark_stopped(&self, services: &[String], stopped: bool) {
        let mut set = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        for s in services {
            if stopped {
                set.insert(s.clone());
            } else {
                set.remove(s);
            }
        }
    }

    async fn docker_on(&self, verb: &[&str], services: &[String]) -> Result<()> {
        let ids = self.containers(services).await?;
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(ids.iter().map(String::as_str));
        run("docker", &args).await.map(drop)
    }

    /// Runs `iptables` (or `tc`) in the network namespace of process `pid`.
    async fn in_netns(pid: u32, cmd: &[&str]) -> Result<String> {
        let target = pid.to_string();
        let mut args = vec!["-t", &target, "-n", "--"];
        args.extend(cmd);
        run("nsenter", &args).await
    }

    /// Sets the cut of each `(service, peers)`: every packet between the
    /// service and those addresses is dropped, both ways, inside its own
    /// namespace; an empty list restores every link. All at once, so a
    /// fault takes effect within a few milliseconds everywhere.
    async fn set_cuts(&self, cuts: Vec<(String, Vec<String>)>) -> Result<()> {
        let services: Vec<String> = cuts.iter().map(|(s, _)| s.clone()).collect();
        let rows = self.inspect(&services).await?;
        let applied = crate::local::join_all(
            cuts.iter()
                .zip(rows)
                .map(|((service, peers), (pid, _))| async move {
                    if pid == 0 {
                        if peers.is_empty() {
                            // Stopped: its next start has a fresh namespace.
                            return Ok(());
                        }
                        bail!("{service} is not running");
                    }
                    set_cut_rules(pid, peers)
                        .await
                        .with_context(|| format!("cut the links of {service}"))
                })
                .collect(),
        )
        .await;
        applied.into_iter().collect()
    }

    /// Sets the wall-clock offset of `service` (libfaketime's file in its
    /// data volume, copied in by the Docker daemon: the image has no shell).
    async fn set_clock(&self, service: &str, offset_ms: i64) -> Result<()> {
        let id = self.container(service).await?;
        let file = tempfile::NamedTempFile::new().context("a temporary file")?;
        let text = format!("{:+.3}\n", offset_ms as f64 / 1000.0);
        std::fs::write(file.path(), text).context("write the clock offset")?;
        let src = file.path().display().to_string();
        run("docker", &["cp", &src, &format!("{id}:{FAKETIME_FILE}")]).await?;
        Ok(())
    }

    /// Removes data cell `id`'s containers and volumes, and the cell from
    /// the layout and the description. Only for a cell the control server
    /// no longer maps (drained, then removed with `cellkvctl cell remove`):
    /// its data is gone.
    pub async fn remove_cell(&self, id: CellId) -> Result<()> {
        let dir = self.dir();
        let mut layout = DeployLayout::load(&dir)?
            .with_context(|| format!("{} holds no deployment layout", dir.display()))?;
        if !layout.cells.contains(&id) {
            bail!("the deployment has no data cell {id}");
        }
        let services = self.replicas(id)?;
        let mut args = vec!["rm", "--stop", "--force"];
        args.extend(services.iter().map(String::as_str));
        self.compose(&args).await?;
        for node in layout.nodes(id) {
            let volume = format!(
                "{}_{}",
                layout.project,
                crate::deploy::data_volume(id, node)
            );
            run("docker", &["volume", "rm", "--force", &volume]).await?;
        }
        layout.cells.retain(|&c| c != id);
        layout.members.remove(&id);
        layout.save(&dir)?;
        layout.write_files(&dir)?;
        self.ids().clear();
        *self.dep() = layout.describe(&dir);
        self.save()
    }

    /// Starts a new, empty replica container for `cell` (the next node id,
    /// never reused) that waits to be added by `cellkvctl replica add` or
    /// `replica replace`; returns its spec.
    pub async fn add_replica(&self, cell: CellId) -> Result<common::ReplicaSpec> {
        let dir = self.dir();
        let mut layout = DeployLayout::load(&dir)?
            .with_context(|| format!("{} holds no deployment layout", dir.display()))?;
        if !layout.cells.contains(&cell) {
            bail!("the deployment has no data cell {cell} (the control cell's members are fixed)");
        }
        let mut nodes = layout.nodes(cell);
        let highest = nodes.iter().map(|n| n.0).max().unwrap_or(0);
        let recorded = layout.highest_node.get(&cell).copied().unwrap_or(0);
        let node = common::NodeId(highest.max(recorded) + 1);
        nodes.push(node);
        layout.members.insert(cell, nodes);
        layout.highest_node.insert(cell, node.0);
        layout.save(&dir)?;
        layout.write_files(&dir)?;
        let service = crate::deploy::replica_host(cell, node);
        self.compose(&["up", "--detach", "--no-deps", &service])
            .await?;
        self.ids().clear();
        *self.dep() = layout.describe(&dir);
        self.save()?;
        Ok(common::ReplicaSpec {
            node_id: node,
            api_addr: crate::deploy::replica_api_addr(cell, node),
            control_addr: Some(crate::deploy::replica_raft_addr(cell, node)),
        })
    }

    /// Removes replica `node` of `cell`: its container and volume, and it
    /// from the layout. Only for a node its cell no longer counts as a
    /// member (`cellkvctl replica replace` or `replica remove` first).
    pub async fn remove_replica(&self, cell: CellId, node: common::NodeId) -> Result<()> {
        let dir = self.dir();
        let mut layout = DeployLayout::load(&dir)?
            .with_context(|| format!("{} holds no deployment layout", dir.display()))?;
        let mut nodes = layout.nodes(cell);
        if !layout.cells.contains(&cell) || !nodes.contains(&node) {
            bail!("cell {cell} has no replica container for node {node}");
        }
        let service = crate::deploy::replica_host(cell, node);
        self.compose(&["rm", "--stop", "--force", &service]).await?;
        let volume = format!(
            "{}_{}",
            layout.project,
            crate::deploy::data_volume(cell, node)
        );
        run("docker", &["volume", "rm", "--force", &volume]).await?;
        nodes.retain(|&n| n != node);
        layout.members.insert(cell, nodes);
        layout.save(&dir)?;
        layout.write_files(&dir)?;
        self.ids().clear();
        *self.dep() = layout.describe(&dir);
        self.save()
    }

    /// Writes `deployment.json` again after the deployment changed.
    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&*self.dep()).context("serialize")?;
        write_atomically(&self.path, text.as_bytes())
    }
}

/// `docker compose` where the plugin is installed, else `docker-compose`.
fn compose_command() -> Vec<String> {
    let plugin = std::process::Command::new("docker")
        .args(["compose", "version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// Runs `program args`, returning its standard output; a failure carries its
/// standard error.
async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the cut chain's rules in the namespace of `pid` by `DROP`s of
/// `peers` both ways (one `iptables-restore`: it creates or flushes the
/// chain), and hooks the chain into INPUT and OUTPUT once.
async fn set_cut_rules(pid: u32, peers: &[String]) -> Result<()> {
    let mut rules = format!("*filter\n:{CUT_CHAIN} - [0:0]\n");
    for ip in peers {
        rules.push_str(&format!("-A {CUT_CHAIN} -s {ip} -j DROP\n"));
        rules.push_str(&format!("-A {CUT_CHAIN} -d {ip} -j DROP\n"));
    }
    rules.push_str("COMMIT\n");
    let target = pid.to_string();
    let mut child = Command::new("nsenter")
        .args([
            "-t",
            &target,
            "-n",
            "--",
            "iptables-restore",
            "-w",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run nsenter iptables-restore")?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("iptables-restore's stdin")?;
        stdin.write_all(rules.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "iptables-restore failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for hook in ["INPUT", "OUTPUT"] {
        let present =
            ComposeCluster::in_netns(pid, &["iptables", "-w", "-C", hook, "-j", CUT_CHAIN])
                .await
                .is_ok();
        if !present {
            ComposeCluster::in_netns(pid, &["iptables", "-w", "-I", hook, "-j", CUT_CHAIN]).await?;
        }
    }
    Ok(())
}

impl Cluster for ComposeCluster {
    fn endpoints(&self) -> Endpoints {
        let dep = self.dep();
        let cells: BTreeSet<CellId> = dep
            .containers
            .iter()
            .filter_map(|c| c.cell_id)
            .filter(|&c| c != CONTROL_CELL_ID)
            .collect();
        let cells: Vec<CellId> = cells.into_iter().collect();
        Endpoints {
            router_url: dep.routers[0].trim_end_matches('/').to_owned(),
            auth: format!("Bearer {}", dep.token),
            proxied_cells: cells.clone(),
            next_cell_id: next_free_id(cells.iter().map(|c| c.0).max().unwrap_or(0)),
            cells,
        }
    }

    fn admin(&self) -> Result<AdminClient> {
        let dep = self.dep();
        Ok(AdminClient::new(&dep.control_url, &dep.control_admin_token))
    }

    fn add_cell(&mut self, id: CellId) -> Fut<'_, CellSpec> {
        Box::pin(async move {
            let dir = self.dir();
            let mut layout = DeployLayout::load(&dir)?
                .with_context(|| format!("{} holds no deployment layout", dir.display()))?;
            if !layout.cells.contains(&id) {
                layout.cells.push(id);
            }
            layout.save(&dir)?;
            layout.write_files(&dir)?;
            let services: Vec<String> = layout
                .nodes(id)
                .into_iter()
                .map(|n| crate::deploy::replica_host(id, n))
                .collect();
            let mut args = vec!["up", "--detach", "--no-deps"];
            args.extend(services.iter().map(String::as_str));
            self.compose(&args).await?;
            self.ids().clear();
            *self.dep() = layout.describe(&dir);
            self.save()?;
            let ips = self.addresses(&services).await?;
            let deadline = std::time::Instant::now() + ADD_CELL_TIMEOUT;
            bootstrap_cell(&self.http, &layout, id, &ips, deadline)
                .await
                .with_context(|| format!("start cell {id}"))?;
            layout
                .cell_map()
                .cells
                .into_iter()
                .find(|c| c.id == id)
                .context("the new cell is not in the layout's map")
        })
    }

    fn kill_leader(&self, cell: CellId) -> Fut<'_, usize> {
        Box::pin(async move {
            let l = self.leader(cell).await?;
            let service = self.replicas(cell)?[l].clone();
            self.mark_stopped(std::slice::from_ref(&service), true);
            self.docker_on(&["kill"], std::slice::from_ref(&service))
                .await?;
            Ok(l)
        })
    }

    fn kill_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            let services = self.replicas(cell)?;
            self.mark_stopped(&services, true);
            self.docker_on(&["kill"], &services).await
        })
    }

    fn restart_replica(&self, cell: CellId, i: usize) -> Fut<'_, ()> {
        Box::pin(async move {
            let services = self.replicas(cell)?;
            let s = services
                .get(i)
                .with_context(|| format!("cell {cell} has no replica {i}"))?;
            self.docker_on(&["start"], std::slice::from_ref(s)).await?;
            self.mark_stopped(std::slice::from_ref(s), false);
            Ok(())
        })
    }

    fn restart_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            let services = self.replicas(cell)?;
            self.docker_on(&["start"], &services).await?;
            self.mark_stopped(&services, false);
            Ok(())
        })
    }

    fn freeze_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            let services = self.replicas(cell)?;
            self.mark_stopped(&services, true);
            self.docker_on(&["pause"], &services).await
        })
    }

    fn thaw_cell(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            let services = self.replicas(cell)?;
            self.docker_on(&["unpause"], &services).await?;
            self.mark_stopped(&services, false);
            Ok(())
        })
    }

    fn set_cell_delay(&self, cell: CellId, round_trip: Duration) -> Fut<'_, ()> {
        Box::pin(async move {
            let routers = self.addresses(&self.routers()).await?;
            for s in self.replicas(cell)? {
                let (pid, _) = self.pid_and_ip(&s).await?;
                // Replace whatever was there: a prio qdisc whose fourth band
                // delays what this replica sends to a router (the whole round
                // trip, added on the way back).
                let tc = |args: String| async move {
                    let args: Vec<&str> = args.split_whitespace().collect();
                    Self::in_netns(pid, &args).await
                };
                let _ = tc(format!("tc qdisc del dev {CONTAINER_IF} root")).await;
                if round_trip.is_zero() {
                    continue;
                }
                tc(format!(
                    "tc qdisc add dev {CONTAINER_IF} root handle 1: prio bands 4 \
                     priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1"
                ))
                .await?;
                tc(format!(
                    "tc qdisc add dev {CONTAINER_IF} parent 1:4 handle 40: netem delay {}ms",
                    round_trip.as_millis()
                ))
                .await?;
                for ip in &routers {
                    tc(format!(
                        "tc filter add dev {CONTAINER_IF} parent 1:0 protocol ip u32 \
                         match ip dst {ip}/32 flowid 1:4"
                    ))
                    .await?;
                }
            }
            Ok(())
        })
    }

    fn stop_router(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            let router = self.routers()[..1].to_vec();
            self.mark_stopped(&router, true);
            self.docker_on(&["stop", "--time", "30"], &router).await
        })
    }

    fn start_router(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            let router = self.routers()[..1].to_vec();
            self.docker_on(&["start"], &router).await?;
            self.mark_stopped(&router, false);
            Ok(())
        })
    }

    fn warnings(&self) -> Fut<'_, Vec<String>> {
        Box::pin(async move {
            let ids = self.compose(&["ps", "-q"]).await?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                return Ok(vec!["no container of the deployment exists".into()]);
            }
            let mut args = vec![
                "inspect",
                "-f",
                "{{.Id}} {{index .Config.Labels \"com.docker.compose.service\"}} {{.State.Status}}",
            ];
            args.extend(ids);
            let out = run("docker", &args).await?;
            let rows = inspect_rows(&out);
            // The ids serve the next faults without asking Compose again.
            *self.ids() = rows
                .iter()
                .map(|(id, service, _)| (service.clone(), id.clone()))
                .collect();
            let stopped = self
                .stopped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Ok(rows
                .into_iter()
                .filter(|(_, service, state)| state != "running" && !stopped.contains(service))
                .map(|(_, service, state)| format!("container {service} is {state}"))
                .collect())
        })
    }

    fn cut(&self, cell: CellId, cut: Cut) -> Fut<'_, String> {
        Box::pin(async move {
            let replicas = self.replicas(cell)?;
            let ips = self.addresses(&replicas).await?;
            let others = |i: usize| -> Vec<String> {
                (0..ips.len())
                    .filter(|&j| j != i)
                    .map(|j| ips[j].clone())
                    .collect()
            };
            match cut {
                Cut::LeaderFromFollowers => {
                    let l = self.leader(cell).await?;
                    self.set_cuts(vec![(replicas[l].clone(), others(l))])
                        .await?;
                    Ok(format!(
                        "{} (leader) cut from its followers; routers still reach it",
                        replicas[l]
                    ))
                }
                Cut::OneFollower => {
                    let l = self.leader(cell).await?;
                    let f = (l + 1) % replicas.len();
                    let mut everyone = others(f);
                    everyone.extend(self.addresses(&self.routers()).await?);
                    self.set_cuts(vec![(replicas[f].clone(), everyone)]).await?;
                    Ok(format!(
                        "{} (a follower) cut from its cell and the routers",
                        replicas[f]
                    ))
                }
                Cut::RouterFromCell => {
                    let routers = self.addresses(&self.routers()).await?;
                    self.set_cuts(
                        replicas
                            .iter()
                            .map(|r| (r.clone(), routers.clone()))
                            .collect(),
                    )
                    .await?;
                    Ok(format!("every router cut from cell {cell}"))
                }
            }
        })
    }

    fn skew_clock(&self, cell: CellId, by_ms: i64) -> Fut<'_, String> {
        Box::pin(async move {
            let replicas = self.replicas(cell)?;
            if by_ms == 0 {
                for s in &replicas {
                    self.set_clock(s, 0).await?;
                }
                return Ok(format!("the clocks of cell {cell} are the host's again"));
            }
            let l = self.leader(cell).await?;
            self.set_clock(&replicas[l], by_ms).await?;
            Ok(format!(
                "{} (leader) runs its wall clock {by_ms:+} ms off",
                replicas[l]
            ))
        })
    }

    fn heal(&self, cell: CellId) -> Fut<'_, ()> {
        Box::pin(async move {
            let replicas = self.replicas(cell)?;
            self.set_cuts(replicas.into_iter().map(|r| (r, Vec::new())).collect())
                .await
        })
    }
}

/// `(id, service, state)` of every container, from `docker inspect`'s lines.
fn inspect_rows(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            Some((
                w.next()?.to_owned(),
                w.next()?.to_owned(),
                w.next()?.to_lowercase(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_rows_read_id_service_and_state() {
        let rows = inspect_rows("ab12 c1-n1 running\ncd34 router1 Exited\n\nbad\n");
        assert_eq!(
            rows,
            vec![
                ("ab12".into(), "c1-n1".into(), "running".into()),
                ("cd34".into(), "router1".into(), "exited".into()),
            ]
        );
    }
}
