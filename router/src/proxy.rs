//! `Proxy`: places a (bucket, key) on the ring and forwards a request to its
//! cell through that cell's isolation layers, cheapest refusal first:
//!
//! ```text
//!  isolated? ─▶ breaker ─▶ cell bulkhead (bounded queue) ─▶ global bulkhead ─▶ CellClient::send
//!  (no I/O)     (no I/O)   (waits ≤ queue_timeout)           (waits ≤ what is left of it)
//! ```
//!
//! A dead or slow cell can hold at most its own bulkhead's slots and queue;
//! once its breaker opens it costs nothing at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{CellId, Ring, RingError};
use tokio::time::Instant;

use crate::breaker::Admit;
use crate::bulkhead::{Bulkhead, BulkheadError, BulkheadGauges};
use crate::cell_client::{http_client, CellClient, HttpClient, Outcome};
use crate::config::RouterConfig;
use crate::error::RouteError;
use crate::metrics::RouterMetrics;
use crate::request::{CellRequest, CellResponse};

pub struct Proxy {
    ring: Ring,
    cells: BTreeMap<CellId, Arc<CellClient>>,
    /// Bounds the router's total in-flight work. Its waiters need no bound of
    /// their own: each already holds a slot of its cell's bulkhead.
    global: Bulkhead,
    pub http: HttpClient,
    request_timeout: Duration,
    queue_timeout: Duration,
    metrics: Arc<RouterMetrics>,
}

/// Reports `Cancelled` to the breaker if the request is dropped before its
/// outcome is known (client gone), so a half-open probe slot is never leaked.
struct AdmitGuard<'a> {
    cell: &'a CellClient,
    admit: Admit,
    outcome: Outcome,
}

impl Drop for AdmitGuard<'_> {
    fn drop(&mut self) {
        self.cell.report(self.admit, self.outcome);
    }
}

impl Proxy {
    /// Builds the ring and one `CellClient` per cell of a validated config.
    pub fn new(cfg: &RouterConfig, metrics: Arc<RouterMetrics>) -> Result<Proxy, RingError> {
        let ring = cfg.cell_map.ring()?;
        let cells = cfg
            .cell_map
            .cells
            .iter()
            .map(|spec| {
                (
                    spec.id,
                    Arc::new(CellClient::new(spec, cfg, metrics.clone())),
                )
            })
            .collect();
        let global_gauges = BulkheadGauges {
            in_flight: Some(metrics.global_in_flight.clone()),
            // No gauge for the global queue: its waiters show in the per-cell ones.
            queue_depth: None,
        };
        Ok(Proxy {
            ring,
            cells,
            global: Bulkhead::new(cfg.max_in_flight, usize::MAX, global_gauges),
            http: http_client(cfg),
            request_timeout: cfg.cell_request_timeout,
            queue_timeout: cfg.queue_timeout,
            metrics,
        })
    }

    /// The cell owning `key` in `bucket`.
    pub fn cell_for(&self, bucket: &str, key: &str) -> CellId {
        self.ring.cell_for(bucket, key)
    }

    pub fn cell(&self, id: CellId) -> Option<&Arc<CellClient>> {
        self.cells.get(&id)
    }

    /// Every cell, by id.
    pub fn cells(&self) -> impl Iterator<Item = &Arc<CellClient>> {
        self.cells.values()
    }

    pub fn global_in_flight(&self) -> usize {
        self.global.in_flight()
    }

    /// Forwards `req` to cell `id` through its isolation layers.
    pub async fn forward(&self, id: CellId, req: &CellRequest) -> Result<CellResponse, RouteError> {
        let Some(cell) = self.cells.get(&id) else {
            return Err(RouteError::Unavailable {
                cell: id,
                reason: "the cell is not in the cell map".into(),
            });
        };
        let res = self.forward_to(cell, req).await;
        if let Err(e) = &res {
            if let Some(reason) = e.fast_fail_reason() {
                self.metrics
                    .fast_fail_total
                    .with_label_values(&[&cell.label, reason])
                    .inc();
            }
        }
        res
    }

    async fn forward_to(
        &self,
        cell: &CellClient,
        req: &CellRequest,
    ) -> Result<CellResponse, RouteError> {
        let admit = cell.admit()?;
        let mut guard = AdmitGuard {
            cell,
            admit,
            outcome: Outcome::Cancelled,
        };
        let queued_at = Instant::now();
        let _slot = cell
            .bulkhead
            .acquire(self.queue_timeout)
            .await
            .map_err(|e| match e {
                BulkheadError::QueueFull => RouteError::QueueFull { cell: cell.id },
                BulkheadError::QueueTimeout => RouteError::QueueTimeout { cell: cell.id },
            })?;
        let left = self.queue_timeout.saturating_sub(queued_at.elapsed());
        let _global = self
            .global
            .acquire(left)
            .await
            .map_err(|_| RouteError::Overloaded { cell: cell.id })?;
        let res = cell
            .send(&self.http, req, Instant::now() + self.request_timeout)
            .await;
        guard.outcome = match &res {
            Ok(resp) if resp.status.is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) if e.is_cell_failure() => Outcome::Failure,
            Err(_) => Outcome::Cancelled,
        };
        res
    }
}
