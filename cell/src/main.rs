//! `cellkv-cell`: runs one replica. Parses flags, loads the config file,
//! applies environment secrets and flag overrides, binds the listeners, and
//! hands over to `cell::run` until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cell::config::{CellConfig, LoadConfig, PeerConfig};
use clap::Parser;
use common::{CellId, NodeId};

/// glibc malloc fragments under the mix of small RPC and 1 MiB snapshot buffers; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "cellkv-cell", version, about = "One replica of a cellkv cell")]
struct Cli {
    /// TOML config file (see config/cell.example.toml).
    #[arg(long, env = "CELLKV_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    cell_id: Option<u32>,
    #[arg(long)]
    node_id: Option<u64>,
    /// Cell API listen address (router traffic, /health, /metrics).
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// Raft RPC and admin listen address.
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A cell member, `NODE_ID=API_ADDR,RAFT_ADDR`; repeat for each (this replica included).
    #[arg(long = "peer")]
    peers: Vec<String>,
}

fn parse_peer(s: &str) -> anyhow::Result<PeerConfig> {
    let (id, addrs) = s
        .split_once('=')
        .context("expected NODE_ID=API_ADDR,RAFT_ADDR")?;
    let (api, raft) = addrs
        .split_once(',')
        .context("expected NODE_ID=API_ADDR,RAFT_ADDR")?;
    Ok(PeerConfig {
        node_id: NodeId(id.parse().context("node id is not a number")?),
        api_addr: api.to_string(),
        raft_addr: raft.to_string(),
    })
}

fn load(cli: &Cli) -> anyhow::Result<CellConfig> {
    let mut cfg = match &cli.config {
        Some(p) => CellConfig::from_toml_file(p)?,
        None => CellConfig::default(),
    };
    cfg.apply_env();
    if let Some(v) = cli.cell_id {
        cfg.cell_id = CellId(v);
    }
    if let Some(v) = cli.node_id {
        cfg.node_id = NodeId(v);
    }
    if let Some(v) = cli.api_listen {
        cfg.api_listen = v;
    }
    if let Some(v) = cli.raft_listen {
        cfg.raft_listen = v;
    }
    if let Ok(v) = std::env::var("CELLKV_WORKER_THREADS") {
        cfg.worker_threads = Some(v.parse().context("CELLKV_WORKER_THREADS is not a number")?);
    }
    if let Some(v) = &cli.data_dir {
        cfg.data_dir = v.clone();
    }
    if !cli.peers.is_empty() {
        cfg.peers = cli
            .peers
            .iter()
            .map(|p| parse_peer(p).with_context(|| format!("--peer {p}")))
            .collect::<Result<_, _>>()?;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    service::init_tracing("info,openraft=warn");
    // A half-alive replica is worse than a dead one: log the panic and abort.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default_hook(info);
        std::process::abort();
    }));
    let cfg = load(&Cli::parse()).context("load configuration")?;
    let listen = [
        ("the cell API", cfg.api_listen),
        ("Raft RPC", cfg.raft_listen),
    ];
    service::run_server(cfg.worker_threads, listen, |[api, raft]| {
        cell::run(
            cfg,
            cell::Listeners { api, raft },
            service::shutdown_signal(),
        )
    })
}
