//! `cellkv-loadtest run <scenario.toml>`: offers a scenario's load to a
//! cellkv cluster, injects its faults, checks its SLOs and writes
//! `report.json` + `report.html`. Exit code 0: every SLO passed; 1: an SLO
//! failed; 2: a usage or setup error (nothing was judged). The work is
//! `loadtest::driver`'s; this is the CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::driver::{run, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "cellkv-loadtest",
    version,
    about = "Load and fault scenarios against cellkv, judged by their SLOs.",
    after_help = "Exit code: 0 every SLO passed, 1 an SLO failed, 2 usage or setup error.\n\
                  A `start_local` target finds cellkv-cell and cellkv-router next to this \
                  executable, or in $CELLKV_BIN_DIR. slow_cell with --cluster needs a cluster \
                  started by `cellkv-local --latency-proxies`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario file.
    Run {
        scenario: PathBuf,
        /// Directory for report.json, report.html (and a started cluster, in
        /// `cluster/`). Default: a new directory under the system temp dir.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replaces the scenario's seed.
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Run against the cluster `cellkv-local` runs in DIR (or the one
        /// this cluster.json describes) instead of the scenario's target:
        /// faults act on its processes by pid and restart them as they ran.
        #[arg(long, value_name = "DIR|cluster.json")]
        cluster: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let Command::Run {
        scenario,
        out,
        seed,
        cluster,
    } = cli.command;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cellkv-loadtest: failed to start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Processes of a started cluster are spawned from this (main) thread,
    // which outlives them: they die with it (see `process::ManagedProcess`).
    let result = rt.block_on(run(RunOptions {
        scenario,
        out,
        seed,
        cluster,
    }));
    match result {
        Err(e) => {
            eprintln!("cellkv-loadtest: {e:#}");
            ExitCode::from(2)
        }
        Ok(o) if !o.fault_errors.is_empty() => {
            eprintln!(
                "cellkv-loadtest: the run is not the scenario: {} fault step(s) failed:\n  {}",
                o.fault_errors.len(),
                o.fault_errors.join("\n  ")
            );
            ExitCode::from(2)
        }
        Ok(o) if o.report.passed => {
            println!("cellkv-loadtest: PASSED ({})", o.out.display());
            ExitCode::SUCCESS
        }
        Ok(o) => {
            println!("cellkv-loadtest: FAILED an SLO ({})", o.out.display());
            ExitCode::from(1)
        }
    }
}
