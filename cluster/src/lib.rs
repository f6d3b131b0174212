//! Running cellkv clusters. [`drive::Cluster`] is a cluster a driver can
//! load and fault; its implementations are a whole cluster in one directory
//! (`local`: the `cellkv-local` launcher, its `cluster.json` and its API) and
//! a cluster a running `cellkv-local` owns (`attach`). Beneath them: one
//! managed child process (`process`), real replica processes and cells
//! (`cell_proc`), a real router (`router_proc`) and control server
//! (`control_proc`), and a latency-injecting TCP proxy (`proxy`). Beside
//! them, `deploy`: the files and bootstrap of a Docker Compose deployment
//! (`cellkv-deploy`). The load harness and the tests
//! reach processes only through this crate. It speaks HTTP, TOML and
//! `common`'s types; it never links the cell, the router or the control plane.

pub mod attach;
pub mod cell_proc;
pub mod control_proc;
pub mod deploy;
pub mod drive;
pub mod local;
pub mod process;
pub mod proxy;
pub mod router_proc;

pub use drive::{Cluster, Endpoints};
