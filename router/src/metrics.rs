//! `RouterMetrics`: every Prometheus metric of the router, registered into a
//! registry passed in (never the global one, so several routers can share a
//! test process). Names follow `cellkv_router_<thing>_<unit>`; labels are
//! bounded: cell ids come from the cell map, ops and reasons from enums.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use service::register as reg;

/// Latencies from 250 µs (a fast-failed request) to 10 s (past every
/// timeout), dense around the milliseconds a healthy cell answers in.
const REQUEST_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The router's own share of a request, from 10 µs up: dense below the
/// millisecond, where a router that is not queueing stays.
const ADDED_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// `cell` label of requests not tied to one cell.
pub const CELL_NONE: &str = "none";
/// `cell` label of listings, which ask every cell.
pub const CELL_ALL: &str = "all";

pub struct RouterMetrics {
    /// Served on `/metrics`.
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub added_seconds: HistogramVec,
    pub breaker_state: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub global_in_flight: IntGauge,
    pub retries_total: IntCounterVec,
    pub fast_fail_total: IntCounterVec,
    pub health_checks_total: IntCounterVec,
    pub moved_total: IntCounterVec,
    pub map_epoch: IntGauge,
    pub map_refresh_errors_total: IntCounterVec,
    pub map_poll_age_seconds: Gauge,
}

impl RouterMetrics {
    pub fn new(registry: Registry) -> prometheus::Result<RouterMetrics> {
        let r = &registry;
        let m = RouterMetrics {
            requests_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_requests_total",
                        "Public API requests by serving cell, operation and status code",
                    ),
                    &["cell", "op", "status"],
                )?,
            )?,
            request_duration_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cellkv_router_request_duration_seconds",
                        "Public API request latency",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["cell", "op"],
                )?,
            )?,
            added_seconds: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cellkv_router_added_seconds",
                        "Time a request served by one cell spent in the router, outside \
                         its exchanges with the cell (auth, bulkhead queueing, back-off, \
                         relaying the bodies)",
                    )
                    .buckets(ADDED_BUCKETS.to_vec()),
                    &["op"],
                )?,
            )?,
            breaker_state: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_router_breaker_state",
                        "Circuit breaker state per cell: 0 closed, 1 half-open, 2 open",
                    ),
                    &["cell"],
                )?,
            )?,
            queue_depth: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_router_queue_depth",
                        "Requests waiting for a cell's bulkhead",
                    ),
                    &["cell"],
                )?,
            )?,
            in_flight: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "cellkv_router_in_flight",
                        "Requests holding a slot of a cell's bulkhead",
                    ),
                    &["cell"],
                )?,
            )?,
            global_in_flight: reg(
                r,
                IntGauge::new(
                    "cellkv_router_global_in_flight",
                    "Requests holding a slot of the global bulkhead",
                )?,
            )?,
            retries_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_retries_total",
                        "Extra attempts at a cell (leader hops, elections, refused connections)",
                    ),
                    &["cell", "reason"],
                )?,
            )?,
            fast_fail_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_fast_fail_total",
                        "Requests refused without contacting the cell, by reason",
                    ),
                    &["cell", "reason"],
                )?,
            )?,
            health_checks_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_health_checks_total",
                        "Health check rounds per cell by outcome",
                    ),
                    &["cell", "outcome"],
                )?,
            )?,
            moved_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_moved_total",
                        "Requests a cell answered `moved` (the range has another owner), by that cell",
                    ),
                    &["cell"],
                )?,
            )?,
            map_epoch: reg(
                r,
                IntGauge::new(
                    "cellkv_router_map_epoch",
                    "Epoch of the cell map the router routes with",
                )?,
            )?,
            map_refresh_errors_total: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "cellkv_router_map_refresh_errors_total",
                        "Failed polls of the cell map in the control cell, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            map_poll_age_seconds: reg(
                r,
                Gauge::new(
                    "cellkv_router_map_poll_age_seconds",
                    "Seconds since the last successful poll of the control cell (0 right after one); \
                     grows while the control cell is unreachable and the router serves its last map",
                )?,
            )?,
            registry: registry.clone(),
        };
        service::register_build_info(&registry, "cellkv_router")?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = RouterMetrics::new(Registry::new()).unwrap();
        m.requests_total
            .with_label_values(&["1", "get", "200"])
            .inc();
        m.breaker_state.with_label_values(&["1"]).set(2);
        let text = service::render(&m.registry);
        assert!(
            text.contains("cellkv_router_requests_total{cell=\"1\",op=\"get\",status=\"200\"} 1")
        );
        assert!(text.contains("cellkv_router_breaker_state{cell=\"1\"} 2"));
        assert!(text.contains("cellkv_router_build_info"));
        // A second router in the same process gets its own registry.
        RouterMetrics::new(Registry::new()).unwrap();
    }
}
