//! The active health checker: one task per cell polls every replica's
//! `/health` each `health_interval` (each call bounded by `health_timeout`)
//! and feeds the verdict to the cell's breaker and leader cache. A cell is
//! healthy when some replica reports itself leader, ready, with a quorum.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::NodeId;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cell_client::{CellClient, HttpClient};
use crate::metrics::RouterMetrics;

/// Largest `/health` body read; real ones are well under 4 KiB.
const HEALTH_BODY_MAX_BYTES: usize = 64 << 10;
/// A round that finds no serving leader is repeated this much later before
/// the cell counts as unhealthy. A leadership transfer leaves the cell
/// without a serving leader for a few milliseconds (the old one has stepped
/// down, the new one has no quorum acknowledgement yet); one round landing
/// there must not open the breaker, which would fail every request of the
/// cell for `open_duration`. A dead cell is isolated this much later.
const RECHECK_DELAY: Duration = Duration::from_millis(100);

/// The fields of a replica's `/health` answer the router uses; the rest is ignored.
#[derive(Debug, Deserialize)]
pub struct HealthReport {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub quorum_reachable: bool,
}

impl HealthReport {
    /// A leader that can commit and serve.
    pub fn is_serving_leader(&self) -> bool {
        self.role == "leader" && self.quorum_reachable && self.ready
    }
}

/// Asks one replica for its health. `None` when it cannot answer in time or
/// answers something that is not a health report (the 503 body counts).
pub async fn probe(http: &HttpClient, api_addr: &str, timeout: Duration) -> Option<HealthReport> {
    let req = http::Request::get(format!("http://{api_addr}/health"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let exchange = async {
        let resp = http.request(req).await.ok()?;
        let body = Limited::new(resp.into_body(), HEALTH_BODY_MAX_BYTES)
            .collect()
            .await
            .ok()?;
        serde_json::from_slice::<HealthReport>(&body.to_bytes()).ok()
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// One round over every replica of `cell` (its list as of now), in
/// parallel: the node id of a serving leader, if any. Cancellation-safe:
/// dropping it aborts the probes.
pub async fn check(http: &HttpClient, cell: &CellClient, timeout: Duration) -> Option<NodeId> {
    let mut set = JoinSet::new();
    for r in cell.replicas().iter() {
        let (http, addr, node) = (
            http.clone(),
            cell.dial_addr(&r.api_addr).to_owned(),
            r.node_id,
        );
        set.spawn(async move { (node, probe(&http, &addr, timeout).await) });
    }
    let mut leader = None;
    while let Some(res) = set.join_next().await {
        if let Ok((i, Some(report))) = res {
            if report.is_serving_leader() && leader.is_none() {
                leader = Some(i);
            }
        }
    }
    leader
}

/// Polls `cell` until `stop` turns true (or the task is aborted: a map swap
/// removed the cell). The first round runs at once, so a dead cell is known
/// within `health_timeout` of start-up (or of its arrival in the map).
pub async fn run_checker(
    cell: Arc<CellClient>,
    http: HttpClient,
    metrics: Arc<RouterMetrics>,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let round = async {
            match check(&http, &cell, timeout).await {
                Some(l) => Some(l),
                None => {
                    tokio::time::sleep(RECHECK_DELAY).await;
                    check(&http, &cell, timeout).await
                }
            }
        };
        let leader = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            l = round => l,
        };
        let outcome = if leader.is_some() {
            "healthy"
        } else {
            "unhealthy"
        };
        metrics
            .health_checks_total
            .with_label_values(&[&cell.label, outcome])
            .inc();
        if leader.is_none() && cell.last_health() != Some(false) {
            tracing::warn!(cell = %cell.id, "health check found no serving leader");
        }
        cell.on_health(leader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ready_leader_with_quorum_serves() {
        let parse = |s: &str| serde_json::from_str::<HealthReport>(s).unwrap();
        assert!(parse(
            r#"{"ready":true,"role":"leader","quorum_reachable":true,"term":3,"disk":{"ok":true}}"#
        )
        .is_serving_leader());
        assert!(
            !parse(r#"{"ready":true,"role":"follower","quorum_reachable":true}"#)
                .is_serving_leader()
        );
        assert!(
            !parse(r#"{"ready":true,"role":"leader","quorum_reachable":false}"#)
                .is_serving_leader()
        );
        assert!(
            !parse(r#"{"ready":false,"role":"leader","quorum_reachable":true}"#)
                .is_serving_leader()
        );
        assert!(!parse("{}").is_serving_leader());
    }
}
