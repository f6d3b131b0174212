//! Load generation against cellkv and the machinery to run it locally: a lean
//! HTTP/1.1 client (`http`), one managed child process (`process`), real
//! replica processes and cells (`cluster`), a real router (`router_proc`) and
//! a whole cluster in one directory (`local`, the `cellkv-local` launcher),
//! faults on a cluster found through its `cluster.json` (`external`) and a
//! latency-injecting TCP proxy (`proxy`, for `slow_cell`).
//! It speaks only HTTP, TOML and `common`'s types; it never links the cell or the router.

pub mod analysis;
pub mod cluster;
pub mod driver;
pub mod external;
pub mod http;
pub mod ledger;
pub mod local;
pub mod process;
pub mod proxy;
pub mod report;
pub mod router_proc;
pub mod scenario;
pub mod stats;
pub mod workload;
