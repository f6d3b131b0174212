//! The cellkv control plane: the control server (`cellkv-control`: cell map
//! store, migration jobs, admin API) and the operator CLI (`cellkvctl`).
//! The contract with cells and routers is docs/control-plane.md.

pub mod api;
pub mod backend;
pub mod cells;
pub mod cli;
pub mod config;
pub mod http;
pub mod job;
pub mod limiter;
pub mod manager;
pub mod metrics;
pub mod plan;
pub mod server;
pub mod store;

pub use config::ControlConfig;
