//! `cellkv-router`: parses flags, loads the config file, applies the
//! environment and flag overrides, binds the listener, and hands over to
//! `router::run` until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use router::config::{LoadConfig, RouterConfig};

/// glibc malloc was ~10% of the router's CPU under load (fragmentation paths); mimalloc is not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cellkv-router",
    version,
    about = "The cellkv router: public object API in front of the cells"
)]
struct Cli {
    /// TOML config file (see config/router.example.toml).
    #[arg(long, env = "CELLKV_ROUTER_CONFIG")]
    config: PathBuf,
    /// Public API listen address (overrides `listen` in the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn load(cli: &Cli) -> anyhow::Result<RouterConfig> {
    let mut cfg = RouterConfig::from_toml_file(&cli.config)?;
    cfg.apply_env();
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    service::init_tracing("info");
    let cfg = load(&Cli::parse()).context("load configuration")?;
    match cfg.s3.listen {
        None => service::run_server(None, [("the public API", cfg.listen)], |[listener]| {
            router::run(cfg, listener, None, service::shutdown_signal())
        }),
        Some(s3) => service::run_server(
            None,
            [("the public API", cfg.listen), ("the S3 API", s3)],
            |[listener, s3]| router::run(cfg, listener, Some(s3), service::shutdown_signal()),
        ),
    }
}
