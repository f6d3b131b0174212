//! Running cellkv clusters. [`drive::Cluster`] is a cluster a driver can
//! load and fault; its implementations are a whole cluster in one directory
//! (`local`: the `cellkv-local` launcher, its `cluster.json` and its API) and
//! a cluster a running `cellkv-local` owns (`attach`), and a Compose
//! deployment faulted with the Docker CLI (`compose`). Beneath them: one
//! managed child process (`process`), real replica processes and cells
//! (`cell_proc`), a real router (`router_proc`) and control server
//! (`control_proc`), and a latency-injecting TCP proxy (`proxy`). Beside
//! them, `deploy`: the files and bootstrap of a Docker Compose deployment
//! (`cellkv-deploy`). The load harness and the tests
//! reach processes only through this crate. It speaks HTTP, TOML and
//! `common`'s types; it never links the cell, the router or the control plane.

pub mod attach;
pub mod cell_proc;
pub mod compose;
pub mod control_proc;
pub mod deploy;
pub mod drive;
pub mod local;
pub mod process;
pub mod proxy;
pub mod router_proc;

pub use drive::{Cluster, Cut, Endpoints};

/// The cluster a description file names: a Compose deployment's
/// `deployment.json`, or the `cluster.json` of a running `cellkv-local`
/// (either file, or the directory holding it).
pub fn open(path: &std::path::Path) -> anyhow::Result<Box<dyn Cluster>> {
    if compose::ComposeCluster::is_deployment(path) {
        Ok(Box::new(compose::ComposeCluster::open(path)?))
    } else {
        Ok(Box::new(attach::AttachedCluster::open(path)?))
    }
}
