//! [`Cluster`]: a cluster the load harness can drive and fault, whoever runs
//! its processes. `LocalCluster` (processes this program started) and
//! `AttachedCluster` (a cluster `cellkv-local` runs, asked through its API)
//! and `ComposeCluster` (a Compose deployment, faulted with the Docker CLI)
//! implement it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Result;
use client::admin::AdminClient;
use common::{CellId, CellSpec};

/// A boxed, sendable future of a fallible result: what every fault returns,
/// so a driver can hold any cluster as a `Box<dyn Cluster>`.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A network fault: which links of one cell a [`Cluster::cut`] drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The leader loses its followers (both ways); routers still reach it.
    LeaderFromFollowers,
    /// One follower loses everyone: its cell's other replicas and the routers.
    OneFollower,
    /// Every router loses the cell (the replicas still reach each other).
    RouterFromCell,
}

/// Where a driver sends its load, and what it may fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The router's public API, `http://host:port` without a trailing `/`.
    pub router_url: String,
    /// The client's `Authorization` header value (`Bearer <token>`).
    pub auth: String,
    /// The data cells, in id order.
    pub cells: Vec<CellId>,
    /// Cells the router reaches through latency proxies (the ones
    /// [`Cluster::set_cell_delay`] can slow).
    pub proxied_cells: Vec<CellId>,
    /// The id the next added cell should get (ids of removed cells are not reused).
    pub next_cell_id: CellId,
}

/// A running cellkv cluster whose processes can be faulted. Every method
/// acts on one process group (a cell, a replica, the router), waits until
/// the fault has taken effect, and keeps the cluster's description
/// (`cluster.json`) current.
pub trait Cluster: Send + Sync {
    /// Where to send load, as the cluster stands now.
    fn endpoints(&self) -> Endpoints;

    /// A client of the cluster's control server.
    fn admin(&self) -> Result<AdminClient>;

    /// Starts the processes of a new data cell `id` (it gets no keys until it
    /// is registered with the control server); its spec, to register it with.
    fn add_cell(&mut self, id: CellId) -> Fut<'_, CellSpec>;

    /// SIGKILLs `cell`'s current leader; returns its replica index.
    fn kill_leader(&self, cell: CellId) -> Fut<'_, usize>;

    /// SIGKILLs every replica of `cell`.
    fn kill_cell(&self, cell: CellId) -> Fut<'_, ()>;

    /// Starts replica `i` of `cell` again, unless it runs.
    fn restart_replica(&self, cell: CellId, i: usize) -> Fut<'_, ()>;

    /// Starts every replica of `cell` that is not running.
    fn restart_cell(&self, cell: CellId) -> Fut<'_, ()>;

    /// Stops (SIGSTOP) every replica of `cell`; returns once all are stopped.
    fn freeze_cell(&self, cell: CellId) -> Fut<'_, ()>;

    /// Lets every replica of `cell` run again (SIGCONT).
    fn thaw_cell(&self, cell: CellId) -> Fut<'_, ()>;

    /// Adds `round_trip` to every exchange between the router and `cell`
    /// (zero removes it). Only for [`Endpoints::proxied_cells`].
    fn set_cell_delay(&self, cell: CellId, round_trip: Duration) -> Fut<'_, ()>;

    /// Stops the router gracefully (SIGTERM, then waits for it to drain and exit).
    fn stop_router(&self) -> Fut<'_, ()>;

    /// Starts the router again, unless it runs.
    fn start_router(&self) -> Fut<'_, ()>;

    /// What went wrong with the processes behind the driver's back (a
    /// process that exited without being asked to), one line each.
    fn warnings(&self) -> Fut<'_, Vec<String>>;

    /// Drops the packets of `cell`'s links that `cut` names until [`heal`];
    /// says what was cut. Only clusters on a real network can: processes
    /// sharing one loopback cannot be partitioned.
    ///
    /// [`heal`]: Cluster::heal
    fn cut(&self, cell: CellId, cut: Cut) -> Fut<'_, String> {
        let _ = (cell, cut);
        Box::pin(async {
            anyhow::bail!(
                "network faults need a cluster on a real network: a Compose deployment \
                 (deploy/up.sh, then --cluster deploy/run/deployment.json)"
            )
        })
    }

    /// Moves the wall clock of `cell`'s leader `by_ms` away from the true
    /// time (0 restores every replica's; monotonic clocks keep their pace);
    /// says what it did. Only clusters whose replicas have clocks of their
    /// own can.
    fn skew_clock(&self, cell: CellId, by_ms: i64) -> Fut<'_, String> {
        let _ = (cell, by_ms);
        Box::pin(async {
            anyhow::bail!(
                "a clock skew needs replicas with clocks of their own: a Compose deployment \
                 (deploy/up.sh, then --cluster deploy/run/deployment.json)"
            )
        })
    }

    /// Restores every link of `cell` that [`Cluster::cut`] dropped.
    fn heal(&self, cell: CellId) -> Fut<'_, ()> {
        let _ = cell;
        Box::pin(async { Ok(()) })
    }
}
