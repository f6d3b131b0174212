//! Load generation against cellkv and the machinery to run it locally: a lean
//! HTTP/1.1 client (`http`), one managed child process (`process`), real
//! replica processes and cells (`cluster`), a real router (`router_proc`), a
//! real control server (`control_proc`) and a client of its admin API
//! (`admin`), a whole cluster in one directory (`local`, the `cellkv-local`
//! launcher), faults on a cluster found through its `cluster.json`
//! (`external`), a latency-injecting TCP proxy (`proxy`, for `slow_cell`),
//! and the moves a scenario runs through the control server (`migration`).
//! It speaks only HTTP, TOML and `common`'s types; it never links the cell,
//! the router or the control plane.

pub mod admin;
pub mod analysis;
pub mod cluster;
pub mod control_proc;
pub mod driver;
pub mod external;
pub mod http;
pub mod ledger;
pub mod local;
pub mod migration;
pub mod process;
pub mod proxy;
pub mod report;
pub mod router_proc;
pub mod scenario;
pub mod stats;
pub mod workload;
