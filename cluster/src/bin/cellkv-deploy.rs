//! `cellkv-deploy`: the files of a Docker Compose deployment of cellkv, and
//! the steps of bringing it up that need to speak HTTP. `deploy/up.sh` runs
//! `generate` (host), `docker compose up`, `bootstrap` (a container in the
//! deployment's network) and `ready` (host). The work is
//! `cluster::deploy`'s; this is the CLI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cluster::compose::ComposeCluster;
use cluster::deploy::{
    bootstrap, load_or_create, DeployLayout, NewLayout, COMPOSE_FILE, CONTROL_ENV_FILE,
    DEPLOYMENT_FILE,
};
use cluster::Cluster;
use common::CellId;

#[derive(Parser, Debug)]
#[command(
    name = "cellkv-deploy",
    version,
    about = "Generate and bring up a Docker Compose deployment of cellkv (see deploy/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write (or rewrite) a deployment directory: layout.json (ports and
    /// secrets: created once, then kept), config/*.toml, compose.json, control.env.
    Generate {
        /// The deployment directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The Compose project name (recorded; a kept directory must match).
        #[arg(long, default_value = "cellkv")]
        project: String,
        /// The image every container runs (only for a new directory).
        #[arg(long, default_value = "cellkv:dev")]
        image: String,
        /// Data cells of 3 replicas (only for a new directory).
        #[arg(long, default_value_t = 3)]
        cells: usize,
        /// Host loopback ports of the routers, one per router (only for a
        /// new directory) [default: two free ports].
        #[arg(long, value_name = "PORT", value_delimiter = ',')]
        router_ports: Option<Vec<u16>>,
        /// Host loopback port of the control server's admin API (only for a
        /// new directory) [default: a free port].
        #[arg(long, value_name = "PORT")]
        control_port: Option<u16>,
    },
    /// Inside the deployment's network: initialize every cell, wait until
    /// every cell is ready, the control server holds its lease and every
    /// router serves every cell.
    Bootstrap {
        /// The deployment's layout.json.
        #[arg(long, value_name = "FILE")]
        layout: PathBuf,
        #[arg(long, default_value = "180s", value_parser = humantime_arg)]
        timeout: Duration,
    },
    /// On the host, on a running deployment: start a new data cell's three
    /// containers, initialize it, record it in layout.json and
    /// deployment.json, and print the `cellkvctl cell add` that gives it
    /// keys. Run as root (the host reaches the containers directly).
    AddCell {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The new cell's id [default: the next free one].
        #[arg(long)]
        id: Option<u32>,
    },
    /// On the host: stop and delete a data cell's containers and volumes
    /// (its data is gone), once `cellkvctl cell drain` and `cell remove`
    /// took it out of the map.
    RemoveCell {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        id: u32,
    },
    /// On the host: start a new, empty replica container for a cell (the
    /// next node id) and print the `cellkvctl replica replace` (or `add`)
    /// that makes it a member.
    AddReplica {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        cell: u32,
    },
    /// On the host: delete a replica's container and volume once its cell
    /// no longer counts it as a member (after `cellkvctl replica replace`).
    RemoveReplica {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        cell: u32,
        #[arg(long)]
        node: u64,
    },
    /// On the host: wait until the published ports serve, then write
    /// deployment.json and print the endpoints, a token and examples.
    Ready {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "60s", value_parser = humantime_arg)]
        timeout: Duration,
    },
}

fn humantime_arg(s: &str) -> Result<Duration, String> {
    let secs = s
        .strip_suffix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds like \"90s\""))?;
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cellkv-deploy: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellkv-deploy: failed to {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Generate {
            dir,
            project,
            image,
            cells,
            router_ports,
            control_port,
        } => {
            let new = NewLayout {
                project,
                image,
                cells,
                routers: router_ports.as_ref().map_or(2, Vec::len),
                router_ports,
                control_port,
            };
            let (layout, fresh) =
                load_or_create(&dir, &new).context("prepare the deployment directory")?;
            layout
                .write_files(&dir)
                .context("write the deployment's files")?;
            eprintln!(
                "cellkv-deploy: {} deployment {:?} in {}: {} data cell(s) + the control cell × {} replicas, \
                 the control server, {} router(s); {}",
                if fresh { "new" } else { "kept" },
                layout.project,
                dir.display(),
                layout.cells.len(),
                layout.replicas,
                layout.router_ports.len(),
                dir.join(COMPOSE_FILE).display(),
            );
            Ok(())
        }
        Command::Bootstrap { layout, timeout } => {
            let text = std::fs::read_to_string(&layout)
                .with_context(|| format!("read {}", layout.display()))?;
            let layout: DeployLayout = serde_json::from_str(&text)
                .with_context(|| format!("parse {}", layout.display()))?;
            bootstrap(&layout, timeout).await.context("bootstrap")
        }
        Command::AddCell { dir, id } => {
            let mut cluster = ComposeCluster::open(&dir)?;
            let id = id.map_or_else(|| cluster.endpoints().next_cell_id, CellId);
            let spec = cluster
                .add_cell(id)
                .await
                .with_context(|| format!("add cell {id}"))?;
            let replicas: Vec<String> = spec
                .replicas
                .iter()
                .map(|r| {
                    format!(
                        "--replica node={},api={},control={}",
                        r.node_id,
                        r.api_addr,
                        r.control_addr.as_deref().unwrap_or("")
                    )
                })
                .collect();
            println!("cellkv-deploy: cell {id} runs (3 containers) and is initialized; give it keys with:");
            println!(
                "  set -a; . {}; set +a",
                dir.join(CONTROL_ENV_FILE).display()
            );
            println!(
                "  cellkvctl cell add --id {id} {} --wait",
                replicas.join(" ")
            );
            Ok(())
        }
        Command::RemoveCell { dir, id } => {
            let cluster = ComposeCluster::open(&dir)?;
            let map = cluster.admin()?.map().await.context("read the cell map")?;
            if map.cells.iter().any(|c| c.id.0 == id) {
                anyhow::bail!(
                    "cell {id} is still in the map (epoch {}): drain it and `cellkvctl cell remove {id}` first",
                    map.epoch
                );
            }
            cluster.remove_cell(CellId(id)).await?;
            println!("cellkv-deploy: cell {id}'s containers and volumes are removed");
            Ok(())
        }
        Command::AddReplica { dir, cell } => {
            let cluster = ComposeCluster::open(&dir)?;
            let r = cluster.add_replica(CellId(cell)).await?;
            let spec = format!(
                "node={},api={},control={}",
                r.node_id,
                r.api_addr,
                r.control_addr.as_deref().unwrap_or("")
            );
            println!(
                "cellkv-deploy: node {} of cell {cell} runs, empty; make it a member with one of:",
                r.node_id
            );
            println!("  cellkvctl replica replace {cell} <old node> {spec}");
            println!("  cellkvctl replica add {cell} {spec}");
            Ok(())
        }
        Command::RemoveReplica { dir, cell, node } => {
            let cluster = ComposeCluster::open(&dir)?;
            let map = cluster.admin()?.map().await.context("read the cell map")?;
            let member = map
                .cells
                .iter()
                .filter(|c| c.id.0 == cell)
                .flat_map(|c| &c.replicas)
                .any(|r| r.node_id.0 == node);
            if member {
                anyhow::bail!(
                    "node {node} is still a replica of cell {cell} in the map: `cellkvctl replica replace` or `replica remove` it first"
                );
            }
            cluster
                .remove_replica(CellId(cell), common::NodeId(node))
                .await?;
            println!("cellkv-deploy: node {node} of cell {cell}: container and volume removed");
            Ok(())
        }
        Command::Ready { dir, timeout } => {
            let layout = DeployLayout::load(&dir)?
                .with_context(|| format!("{} holds no deployment", dir.display()))?;
            layout
                .wait_published(timeout)
                .await
                .context("wait for the published ports")?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("resolve {}", dir.display()))?;
            let info = layout.describe(&dir);
            let text = serde_json::to_string_pretty(&info).context("serialize the description")?;
            let path = dir.join(DEPLOYMENT_FILE);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            print_banner(&layout, &dir, &path);
            Ok(())
        }
    }
}

fn print_banner(layout: &DeployLayout, dir: &Path, description: &Path) {
    let token = &layout.secrets.client_token;
    let routers = layout.router_urls();
    println!(
        "cellkv-deploy: ready (Compose project {:?})",
        layout.project
    );
    for (name, url) in layout.routers().iter().zip(&routers) {
        println!("  {name:<13} {url}");
    }
    println!("  token         {token}");
    println!(
        "  control       {} (cellkv-control admin API)",
        layout.control_url()
    );
    println!("  admin token   {}", layout.secrets.control_admin_token);
    println!("  description   {}", description.display());
    println!("  compose file  {}", dir.join(COMPOSE_FILE).display());
    println!();
    println!("Try it:");
    let object = format!("{}/v1/buckets/demo/objects/hello.txt", routers[0]);
    println!(
        "  curl -sS -X PUT -H 'Authorization: Bearer {token}' -H 'Content-Type: text/plain' --data-binary 'hello, cellkv' {object}"
    );
    println!("  curl -sS -H 'Authorization: Bearer {token}' {object}");
    println!();
    println!(
        "Operate it: `set -a; . {}; cellkvctl status`",
        dir.join(CONTROL_ENV_FILE).display()
    );
    println!(
        "Logs: docker compose -p {} -f {} logs c1-n1   (any service)",
        layout.project,
        dir.join(COMPOSE_FILE).display()
    );
}
