//! The few things every cellkv server binary (`cellkv-cell`, `cellkv-router`,
//! `cellkv-control`) does identically: set up logging, build its runtime and
//! bind its listeners, wait for the signal that starts a graceful shutdown,
//! serve HTTP within limits that slow clients cannot exhaust ([`Limits`]) and
//! drain it, read a request body within a size limit and a deadline (`body`),
//! expose its Prometheus registry on `/metrics`, and
//! replace a small state file crash-safely. Kept apart from `common`, which
//! stays free of I/O.

pub mod body;
mod metrics;
mod serve;

use std::io::Write;
use std::path::Path;

pub use metrics::{metrics_response, metrics_route, register, register_build_info, render};
pub use serve::{run_server, Limits, Server, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix: write a sibling `<name>.tmp`, fsync it, rename it
/// over `path`, fsync the directory (which makes the rename durable).
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default_filter`.
pub fn init_tracing(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .init();
}

/// Completes on SIGTERM or Ctrl-C (SIGINT): the start of a graceful shutdown.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_write_replaces_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("state.json");
        write_file_durably(&path, b"one").unwrap();
        write_file_durably(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.join("state.json.tmp").exists());
    }
}
