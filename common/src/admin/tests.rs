//! Round trips of the admin API's bodies against JSON shaped as the control
//! server emits it: what parses must serialize back to the same fields.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::*;

/// `v` parses as `T` and serializes back to exactly `v`.
fn round_trip<T: Serialize + DeserializeOwned>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(&serde_json::to_value(&t).unwrap(), v);
    t
}

/// A job in its copy phase, as `GET /v1/jobs/{id}` answers it.
fn job_view() -> Value {
    json!({
        "id": "j-17", "kind": "drain", "cell": 3, "status": "running", "message": null,
        "requested": "pause", "created_ms": 1_000, "updated_ms": 22_000, "finished_ms": null,
        "bandwidth_bytes_per_sec": 268_435_456u64, "batch_max_bytes": 67_108_864u64,
        "batch_max_ranges": 512, "phase": "copy",
        "batch": {"index": 4, "from": 3, "to": 1,
                  "ranges": [{"start": 0, "end": 1023}], "range_keys": [7], "keys": 7, "bytes": 700,
                  "epoch": null, "fence_ms": null, "cursor": {"range": 0, "after": "00ff"}},
        "progress": {"ranges_total": 12, "ranges_done": 3, "batches_done": 4,
                     "keys_copied": 4096, "bytes_copied": 1_048_576, "keys_deleted": 1,
                     "bytes_estimated": 4_194_304, "active_ms": 20_000},
        "pauses_ms": [3, 5, 9], "purges": [{"cell": 3, "range": {"start": 0, "end": 511}}],
        "rate_bytes_per_sec": 52_428.8, "eta_secs": 60.0,
        "pause_max_ms": 9, "pause_p99_ms": 9
    })
}

#[test]
fn job_view_round_trips() {
    let j: JobView = round_trip(&job_view());
    assert_eq!(j.job.kind, JobKind::Drain { cell: CellId(3) });
    assert_eq!(
        (j.job.kind.name(), j.job.kind.cell()),
        ("drain", Some(CellId(3)))
    );
    assert_eq!(
        (j.job.status, j.job.phase),
        (JobStatus::Running, Phase::Copy)
    );
    assert_eq!(j.job.requested, Some(JobRequest::Pause));
    let b = j.job.batch.as_ref().unwrap();
    assert_eq!(
        (b.plan.from, b.plan.to, b.plan.keys),
        (CellId(3), CellId(1), 7)
    );
    assert_eq!(b.cursor.after.as_deref(), Some("00ff"));
    assert_eq!(j.job.progress.ranges_done, 3);
    assert_eq!(j.eta_secs, Some(60.0));
    // A rebalance names no cell; a finished job has no batch.
    let mut v = job_view();
    let o = v.as_object_mut().unwrap();
    o.remove("cell");
    o.insert("kind".into(), json!("rebalance"));
    o.insert("batch".into(), Value::Null);
    o.insert("status".into(), json!("done"));
    let j: JobView = round_trip(&v);
    assert_eq!((j.job.kind, j.job.kind.cell()), (JobKind::Rebalance, None));
    round_trip::<JobList>(&json!({"jobs": [v, job_view()]}));
}

#[test]
fn names_match_the_json() {
    for s in [
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Done,
        JobStatus::Cancelled,
        JobStatus::Failed,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.to_string()));
    }
    for p in [
        Phase::Select,
        Phase::Prepare,
        Phase::Copy,
        Phase::Fence,
        Phase::Delta,
        Phase::Seal,
        Phase::Own,
        Phase::Release,
        Phase::Commit,
        Phase::Finish,
        Phase::Unfence,
        Phase::Abort,
        Phase::PurgeDest,
    ] {
        assert_eq!(serde_json::to_value(p).unwrap(), json!(p.to_string()));
    }
    for k in [
        JobKind::Add { cell: CellId(1) },
        JobKind::Drain { cell: CellId(1) },
        JobKind::Rebalance,
    ] {
        assert_eq!(serde_json::to_value(k).unwrap()["kind"], json!(k.name()));
    }
}

#[test]
fn status_round_trips() {
    let v = json!({
        "epoch": 3, "moving_ranges": 0, "pending_moves": 2,
        "control": {"lease_held": false, "instance": "c1", "lease_holder": "c2"},
        "cells": [{"id": 1, "state": "active", "weight": 1, "share_pct": 50.0,
                   "target_share_pct": 33.3, "ranges": 12, "leader": 1, "ownership_epoch": 3,
                   "keys": 10, "bytes": 100,
                   "replicas": [
                       {"node_id": 1, "api_addr": "h:1", "control_addr": "h:2", "reachable": true,
                        "ready": true, "role": "leader", "applied_index": 9, "lag_entries": 0},
                       {"node_id": 2, "api_addr": "h:3", "control_addr": null, "reachable": false,
                        "ready": false, "role": null, "applied_index": null, "lag_entries": null}]}],
        "active_job": job_view()
    });
    let s: StatusResponse = round_trip(&v);
    assert_eq!(s.cells[0].replicas[1].role, None);
    assert_eq!(s.control.lease_holder.as_deref(), Some("c2"));
    let mut idle = v;
    idle["active_job"] = Value::Null;
    assert!(round_trip::<StatusResponse>(&idle).active_job.is_none());
}

#[test]
fn cell_answers_round_trip() {
    let added: CellAdded = round_trip(&json!({
        "cell": {"id": 4, "weight": 2, "state": "active",
                 "replicas": [{"node_id": 1, "api_addr": "h:1", "control_addr": "h:2"}]},
        "epoch": 9, "job": null
    }));
    assert_eq!((added.cell.id, added.job), (CellId(4), None));
    round_trip::<JobStarted>(&json!({"epoch": 9, "job": job_view()}));
    round_trip::<CellStateChanged>(&json!({"cell": 2, "state": "isolated", "epoch": 5}));
    // Nothing owned: counts; forced: the counts as text, or why unknown.
    let none: CellRemoved = round_trip(
        &json!({"removed": 3, "forced": false, "lost": {"ranges": 0, "keys": 0, "bytes": 0}}),
    );
    assert_eq!(none.lost.keys, Amount::Count(0));
    let forced: CellRemoved = round_trip(&json!({"removed": 3, "forced": true,
        "lost": {"ranges": 2, "keys": "17", "bytes": "unknown"}}));
    assert_eq!(
        (forced.lost.keys.to_string(), forced.lost.bytes.to_string()),
        ("17".into(), "unknown".into())
    );
}

#[test]
fn plan_and_replica_answers_round_trip() {
    let p: PlanResponse = round_trip(&json!({
        "kind": "drain", "epoch": 4,
        "pairs": [{"from": 3, "to": 1, "ranges": 5, "share_pct": 12.5, "keys": 10, "bytes": 1000}],
        "ranges": 5, "keys": 10, "bytes": 1000, "stats_complete": true, "batches_estimate": 1,
        "bandwidth_bytes_per_sec": 100, "estimated_secs": 10.0
    }));
    assert_eq!(p.pairs[0].to, CellId(1));
    let r: ReplicasChanged =
        round_trip(&json!({"cell": 1, "replaced": 2, "voters": [1, 3, 4], "epoch": 7}));
    assert_eq!(r.replaced, Some(NodeId(2)));
    round_trip::<ReplicasChanged>(&json!({"cell": 1, "voters": [1, 3], "epoch": 7}));
    // A cell's own transfer reports its figures; the other answers do not.
    let t: TransferLeaderResponse = round_trip(&json!({"cell": 1, "leader": 2, "changed": true,
        "term": 5, "attempts": 1, "write_pause_ms": null}));
    assert_eq!(t.transfer.and_then(|f| f.term), Some(5));
    let short = TransferLeaderResponse {
        cell: CellId(1),
        leader: Some(NodeId(2)),
        changed: false,
        transfer: None,
    };
    assert_eq!(
        serde_json::to_value(&short).unwrap(),
        json!({"cell": 1, "leader": 2, "changed": false})
    );
}

#[test]
fn requests_take_defaults_and_refuse_unknown_fields() {
    let a: AddCellRequest = serde_json::from_value(json!({"id": 4, "replicas": []})).unwrap();
    assert_eq!((a.weight, a.rebalance, a.bandwidth), (1, true, None));
    assert!(
        serde_json::from_value::<AddCellRequest>(json!({"id": 4, "replicas": [], "x": 1})).is_err()
    );
    assert_eq!(
        serde_json::from_str::<JobOptions>("{}").unwrap(),
        JobOptions::default()
    );
    assert!(serde_json::from_value::<JobOptions>(json!({"bandwith": 1})).is_err());
    assert!(serde_json::from_value::<PlanRequest>(json!({"kind": "add", "zone": 1})).is_err());
    let t: TransferLeaderRequest = serde_json::from_value(json!({"to": 2})).unwrap();
    assert_eq!((t.to, t.timeout_ms), (Some(NodeId(2)), None));
    assert!(serde_json::from_value::<TransferLeaderRequest>(json!({"node": 2})).is_err());
}
