//! `GET /health`: the replica's truthful state as JSON — role, term, leader,
//! log/commit/applied indexes, per-follower lag, quorum reachability and disk
//! state. Answers 200 when the replica can serve, 503 otherwise (same body).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ServerState;
use serde::Serialize;

use crate::replica::Replica;

#[derive(Serialize)]
pub struct FollowerLag {
    pub matched_index: Option<u64>,
    pub lag_entries: Option<u64>,
}

#[derive(Serialize)]
pub struct DiskHealth {
    pub ok: bool,
    pub free_bytes: Option<u64>,
    pub min_free_bytes: u64,
    pub rocksdb_background_errors: u64,
}

/// The cell's applied ownership record, summarized.
#[derive(Serialize)]
pub struct OwnershipHealth {
    /// False until the first ownership op: the cell serves every hash.
    pub managed: bool,
    pub epoch: u64,
    /// Fraction of the hash space the cell answers for (owned, fenced or sealed).
    pub owned_share: f64,
    /// Rows of the record (ranges in any state).
    pub ranges: usize,
}

#[derive(Serialize)]
pub struct Health {
    pub cell_id: u32,
    pub node_id: u64,
    pub ready: bool,
    /// Why `ready` is false; empty when ready.
    pub reasons: Vec<String>,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_api_addr: Option<String>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Leader only: how far each follower is behind this replica's log.
    pub followers: BTreeMap<u64, FollowerLag>,
    pub quorum_reachable: bool,
    /// Leader only: milliseconds since a quorum last acknowledged the leader.
    pub millis_since_quorum_ack: Option<u64>,
    pub installing_snapshot: bool,
    pub shutting_down: bool,
    pub disk: DiskHealth,
    pub ownership: OwnershipHealth,
}

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub fn disk_health(rep: &Replica) -> DiskHealth {
    let free = crate::db::free_disk_bytes(&rep.cfg.data_dir).ok();
    let bg = rep
        .db
        .property_int_value("rocksdb.background-errors")
        .ok()
        .flatten()
        .unwrap_or(0);
    DiskHealth {
        ok: free.is_some_and(|f| f >= rep.cfg.min_free_disk_bytes) && bg == 0,
        free_bytes: free,
        min_free_bytes: rep.cfg.min_free_disk_bytes,
        rocksdb_background_errors: bg,
    }
}

pub fn snapshot_health(rep: &Replica) -> Health {
    let m = rep.raft.metrics().borrow().clone();
    let last_log = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let leader_api_addr = m
        .current_leader
        .and_then(|l| membership.get_node(&l).map(|n| n.api_addr.clone()));
    let followers: BTreeMap<u64, FollowerLag> = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| {
                    let mi = matched.map(|l| l.index);
                    (
                        *id,
                        FollowerLag {
                            matched_index: mi,
                            lag_entries: Some(last_log.saturating_sub(mi.unwrap_or(0))),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // A leader knows when a quorum last answered it; a follower trusts that a
    // known leader means a quorum elected one (it clears it when it times out).
    let max_silence = rep.cfg.raft.election_timeout_max.as_millis() as u64 * 2;
    let quorum_reachable = match m.state {
        ServerState::Leader => m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= max_silence),
        ServerState::Follower | ServerState::Learner => m.current_leader.is_some(),
        _ => false,
    };
    let loading = rep.sm.loading.load(Ordering::Acquire);
    let shutting_down = rep.shutting_down.load(Ordering::Acquire);
    let disk = disk_health(rep);
    let mut reasons = Vec::new();
    if let Err(e) = &m.running_state {
        reasons.push(format!("raft stopped: {e}"));
    }
    if !membership.voter_ids().any(|_| true) {
        reasons.push("cell not initialized".into());
    }
    if !quorum_reachable {
        reasons.push("no quorum reachable / no leader".into());
    }
    if loading {
        reasons.push("installing a snapshot".into());
    }
    if shutting_down {
        reasons.push("shutting down".into());
    }
    if !disk.ok {
        reasons.push("disk unhealthy".into());
    }
    Health {
        cell_id: rep.cfg.cell_id.0,
        node_id: rep.cfg.node_id.0,
        ready: reasons.is_empty(),
        reasons,
        role: role(m.state),
        term: m.current_term,
        leader: m.current_leader,
        leader_api_addr,
        last_log_index: last_log,
        committed_index: rep.committed.load(Ordering::Acquire),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        followers,
        quorum_reachable,
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        installing_snapshot: loading,
        shutting_down,
        disk,
        ownership: ownership_health(&rep.sm.ownership()),
    }
}

fn ownership_health(t: &common::ownership::OwnershipTable) -> OwnershipHealth {
    OwnershipHealth {
        managed: t.managed,
        epoch: t.epoch,
        owned_share: t
            .owned_ranges()
            .iter()
            .map(common::HashRange::len_fraction)
            .sum(),
        ranges: t.entries.len(),
    }
}

pub async fn health(State(rep): State<Arc<Replica>>) -> Response {
    let h = snapshot_health(&rep);
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}
