//! `cellkv-control`: parses flags, loads the config file, applies the
//! environment and flag overrides, validates, binds the admin listener and
//! hands over to `control::server::run` until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use control::config::{ControlConfig, LoadConfig};

#[derive(Parser, Debug)]
#[command(
    name = "cellkv-control",
    version,
    about = "The cellkv control server: cell map store, migration jobs, admin API"
)]
struct Cli {
    /// TOML config file (see config/control.example.toml).
    #[arg(long, env = "CELLKV_CONTROL_CONFIG")]
    config: PathBuf,
    /// Admin API listen address (overrides `admin_listen`; port 0 picks one).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Initial map file (overrides `initial_map`).
    #[arg(long)]
    initial_map: Option<PathBuf>,
}

fn load(cli: &Cli) -> anyhow::Result<ControlConfig> {
    let mut cfg = ControlConfig::from_toml_file(&cli.config)?;
    cfg.apply_env();
    if let Some(a) = cli.admin_listen {
        cfg.admin_listen = a;
    }
    if let Some(m) = &cli.initial_map {
        cfg.initial_map = Some(m.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    service::init_tracing("info");
    let cfg = load(&Cli::parse()).context("load configuration")?;
    service::run_server(None, [("the admin API", cfg.admin_listen)], |[listener]| {
        control::server::run(cfg, listener, service::shutdown_signal())
    })
}
