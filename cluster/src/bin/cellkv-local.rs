//! `cellkv-local`: a whole cellkv cluster on loopback (a router in front of N
//! cells × 3 replicas, and the control plane it follows: a control cell and
//! `cellkv-control`) in one directory, until Ctrl-C or SIGTERM. Started
//! again on the same `--data-dir`, it brings the same cluster (ports, tokens,
//! data, cell map, cells added meanwhile) back. The work is
//! `cluster::local::LocalCluster`'s; this is the CLI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use cluster::control_proc::CTL_BIN;
use cluster::local::api::SharedCluster;
use cluster::local::{LocalCluster, LocalClusterOptions, LocalLayout, CONTROL_ENV_FILE};
use cluster::process::bin_dir;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

/// Cells of a fresh cluster when `--cells` is not given.
const DEFAULT_CELLS: usize = 3;
/// How often a running cluster is checked for processes that died.
const CRASH_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How long stopping waits for the API server (and a cell start it runs).
const API_STOP_TIMEOUT: Duration = Duration::from_secs(100);

#[derive(Parser, Debug)]
#[command(
    name = "cellkv-local",
    version,
    about = "Run a cellkv cluster on loopback: a router in front of N cells of 3 replicas, \
             and its control plane (control cell + cellkv-control).",
    after_help = "Finds cellkv-cell, cellkv-router and cellkv-control next to its own executable, \
                  or in $CELLKV_BIN_DIR. DIR/control.env holds CELLKV_CONTROL_URL and \
                  CELLKV_ADMIN_TOKEN for cellkvctl."
)]
struct Cli {
    /// Directory of the cluster (layout, logs, data). If it holds a cluster
    /// already, that cluster is restarted with its data. Default: a fresh
    /// temporary directory, kept after exit.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of cells [default: 3, or the number --data-dir holds].
    #[arg(long, value_name = "N")]
    cells: Option<usize>,
    /// The router's port [default: the one --data-dir used before, else a free one].
    #[arg(long, value_name = "ROUTER_PORT")]
    port: Option<u16>,
    /// Put a latency proxy in front of every replica of every cell, in the
    /// router's path only (zero delay until set through cellkv-local's API,
    /// e.g. by `cellkv-loadtest --cluster DIR` for `slow_cell`). Costs an
    /// extra loopback hop on every request.
    #[arg(long)]
    latency_proxies: bool,
    /// The largest object, in MiB (router and cells) [default: 4, the
    /// servers' default]. Above 4 the cells' Raft heartbeat and election
    /// timeouts grow with it (25 ms of heartbeat per MiB): a leader's
    /// AppendEntries must carry one such object within a heartbeat. S3
    /// clients upload files below their multipart threshold in one PUT
    /// (aws-cli and boto3: 8 MiB), so `--max-object-mib 8` takes those.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=64))]
    max_object_mib: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cellkv-local: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The cluster's processes are spawned from this (main) thread, which
    // lives as long as they do: they die with it (see `process::ManagedProcess`).
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellkv-local: failed to {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    // Installed first: a signal during start-up must not kill us half-way.
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;

    let dir = match cli.data_dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("cellkv-local-")
            .tempdir()
            .context("create a temporary directory")?
            .keep(),
    };
    let existing = LocalLayout::load(&dir)?;
    let cells = cli
        .cells
        .or(existing.as_ref().map(|l| l.cells.len()))
        .unwrap_or(DEFAULT_CELLS);
    println!(
        "cellkv-local: {} {cells} cell(s) × 3 replicas, a control plane and a router in {}",
        if existing.is_some() {
            "restarting"
        } else {
            "starting"
        },
        dir.display()
    );
    // cellkv-local's own API (local::api): bound first so cluster.json can name it.
    let api_listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("bind cellkv-local's API")?;
    let api_url = format!(
        "http://{}",
        api_listener
            .local_addr()
            .context("read the API's address")?
    );
    let opts = LocalClusterOptions {
        cells,
        router_port: cli.port,
        proxied_cells: match (cli.latency_proxies, &existing) {
            (false, _) => Vec::new(),
            (true, Some(l)) => l.cells.iter().map(|c| c.cell_id).collect(),
            (true, None) => (1..=u32::try_from(cells).unwrap_or(u32::MAX))
                .map(common::CellId)
                .collect(),
        },
        local_api_url: Some(api_url.clone()),
        ..LocalClusterOptions::default()
    };
    let mut opts = opts;
    if let Some(mib) = cli.max_object_mib {
        size_for_objects(&mut opts, mib);
    }
    let t0 = Instant::now();
    let cluster = tokio::select! {
        r = LocalCluster::start(opts, &dir) => r.context("start the cluster")?,
        // Dropping the half-started cluster kills what it had started.
        _ = term.recv() => bail!("start the cluster: interrupted by SIGTERM"),
        _ = int.recv() => bail!("start the cluster: interrupted by SIGINT"),
    };
    print_banner(&cluster, t0.elapsed(), &api_url);
    let token = cluster.secrets().control_admin_token.clone();
    let cluster: SharedCluster = Arc::new(Mutex::new(cluster));
    let mut api = service::Server::start(
        api_listener,
        cluster::local::api::router(cluster.clone(), token),
    );

    let mut check = tokio::time::interval(CRASH_CHECK_PERIOD);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            e = api.failed() => {
                eprintln!("cellkv-local: warning: its API server stopped: {e}; faults through it fail until restart");
            }
            _ = check.tick() => {
                let cluster = cluster.lock().await;
                if let Err(e) = cluster.check_no_crash() {
                    eprintln!("cellkv-local: warning: {e:#}");
                }
            }
        }
    }
    println!("cellkv-local: stopping (router first, then the control server, then the replicas)");
    // A cell start in progress holds the cluster; it finishes within its timeout.
    if !api.drain(API_STOP_TIMEOUT).await {
        eprintln!("cellkv-local: warning: the API server did not stop in {API_STOP_TIMEOUT:?}");
    }
    cluster
        .lock()
        .await
        .stop()
        .await
        .context("stop the cluster")?;
    println!(
        "cellkv-local: stopped. `cellkv-local --data-dir {}` brings it back with its data.",
        dir.display()
    );
    Ok(())
}

/// Objects up to `mib` MiB on the router and the cells; above 4 MiB, Raft
/// timing that lets one such object replicate within a heartbeat (openraft
/// bounds an AppendEntries by the heartbeat interval).
fn size_for_objects(opts: &mut LocalClusterOptions, mib: u64) {
    let bytes = mib << 20;
    opts.cell.config.max_object_bytes = bytes;
    opts.router.config.max_object_bytes = bytes;
    if mib > 4 {
        let raft = &mut opts.cell.config.raft;
        raft.heartbeat_interval = Duration::from_millis(25 * mib);
        raft.election_timeout_min = raft.heartbeat_interval * 5;
        raft.election_timeout_max = raft.heartbeat_interval * 10;
    }
}

fn print_banner(cluster: &LocalCluster, took: Duration, api_url: &str) {
    let url = cluster.router_url();
    let token = cluster.token();
    let object = format!("{url}/v1/buckets/demo/objects/hello.txt");
    let dir = cluster.dir();
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let control_url = cluster.control_url();
    let admin_token = &cluster.secrets().control_admin_token;
    // The full path when it was built next to us, so the example works as printed.
    let ctl = bin_dir()
        .map(|d| d.join(CTL_BIN))
        .ok()
        .filter(|p| p.is_file())
        .map_or_else(|| CTL_BIN.to_owned(), |p| p.display().to_string());
    println!("cellkv-local: ready in {took:.1?}");
    println!("  router        {url}");
    println!("  token         {token}");
    let s3 = cluster.s3_info();
    if let Some(s3) = &s3 {
        println!(
            "  S3            {} (path-style, region {})",
            s3.url, s3.region
        );
        println!("  S3 access key {}", s3.access_key);
        println!("  S3 secret key {}", s3.secret_key);
    }
    println!("  control       {control_url} (cellkv-control admin API)");
    println!("  admin token   {admin_token}");
    println!("  cluster.json  {}", cluster.cluster_json_path().display());
    println!("  local API     {api_url} (faults, restarts, add a cell, proxy delays; admin token)");
    println!("  data dir      {}", dir.display());
    println!(
        "  logs          {}, {} and <cell>/replica.log, e.g. {}",
        rel(cluster.router().log_path()),
        rel(cluster.control().log_path()),
        cluster
            .cells()
            .first()
            .map(|c| rel(c.replica(0).log_path()))
            .unwrap_or_default()
    );
    println!();
    println!("Try it:");
    println!(
        "  curl -sS -X PUT -H 'Authorization: Bearer {token}' -H 'Content-Type: text/plain' --data-binary 'hello, cellkv' {object}"
    );
    println!("  curl -sS -H 'Authorization: Bearer {token}' {object}");
    if let Some(s3) = &s3 {
        println!(
            "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={} aws --endpoint-url {} s3 ls",
            s3.access_key, s3.secret_key, s3.region, s3.url
        );
    }
    println!();
    println!(
        "Operate it (or `set -a; . {}` first):",
        dir.join(CONTROL_ENV_FILE).display()
    );
    println!("  CELLKV_CONTROL_URL={control_url} CELLKV_ADMIN_TOKEN={admin_token} {ctl} status");
    println!();
    println!("Ctrl-C or SIGTERM stops the cluster.");
}
