//! Load generation against cellkv: workloads (`workload`), the driver that
//! runs a scenario's load, faults and moves (`driver`, `migration`), the
//! ledger of acknowledged writes (`ledger`), the history of every keyed
//! request for the linearizability check (`history`, searched by
//! `cellkv-lincheck`), statistics and their analysis (`stats`, `analysis`),
//! scenarios and their SLOs (`scenario`) and reports (`report`). It reaches
//! processes only through `cellkv-cluster` and speaks to cellkv only over
//! HTTP; it never links the cell, the router or the control plane.

pub mod analysis;
pub mod driver;
pub mod history;
pub mod ledger;
pub mod migration;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod workload;
