//! The control plane's endpoints on the control port (`/admin/*`, admin
//! token): the cell's range ownership (read, change), ingest of objects
//! copied from another cell, purge of ranges moved away, per-range
//! statistics, and replica management (learners, voters, leadership:
//! `transfer-leader` on the leader, `elect` on the target).
//! Changes go through this cell's Raft log; answers are JSON (ingest bodies
//! are wire bincode). See `docs/control-plane.md` for the contract.
//!
//! Every refusal is the JSON error body of every other cellkv API, with a
//! stable code: `bad_request` (invalid input), `not_leader` (421, with the
//! leader's node id and API address, and its control address in
//! `X-Cellkv-Leader-Control`), `precondition_failed` (an ownership op the
//! record refuses, a learner as transfer target, a transfer already
//! running), `moved` (ingest outside an incoming range), `timeout`.

// Handlers' errors are ready responses, built once per refused request: size is irrelevant.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::ownership::OwnershipOp;
use common::wire::{IngestBatch, RangeStats};
use common::{ErrorCode, HashRange, LeaderHint, MovedHint, NodeId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use rocksdb::ReadOptions;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{error_response_moved, HEADER_CELL};
use crate::db::{self, CF_BY_HASH, CF_OBJECTS};
use crate::objects;
use crate::read_barrier::ReadError;
use crate::replica::Replica;
use crate::state_machine::MAX_PURGE_LIMIT;
use crate::transfer::{self, TransferError};
use crate::types::{ReplicaNode, Request, Response as SmResponse};

/// Header of a `not_leader` answer on the control port: the leader's control address.
pub const HEADER_LEADER_CONTROL: &str = "x-cellkv-leader-control";
/// Largest JSON body of an admin request (ownership ops, purge, stats, membership).
const MAX_JSON_BYTES: usize = 256 << 10;
/// Most ranges in one ownership op or stats request.
const MAX_RANGES: usize = 4096;
/// Default objects deleted by one purge call.
const DEFAULT_PURGE_LIMIT: u64 = 1000;
/// How long `POST /admin/learner` waits for the learner to catch up, by default and at most.
const DEFAULT_LEARNER_WAIT: Duration = Duration::from_secs(60);
const MAX_LEARNER_WAIT: Duration = Duration::from_secs(600);
/// Bound of a membership change (two log entries: joint, then uniform).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `POST /admin/elect` keeps trying, by default and at most.
const DEFAULT_ELECT_WAIT: Duration = Duration::from_secs(10);
const MAX_ELECT_WAIT: Duration = Duration::from_secs(60);

/// The admin routes (the caller adds the admin-token layer).
pub fn routes(rep: &Replica) -> Router<Arc<Replica>> {
    // An ingest entry must fit one AppendEntries body on every replica
    // (`CellConfig::max_raft_body_bytes` leaves room for this and more).
    let max_ingest = crate::proposer::MAX_BATCH_BYTES + rep.cfg.max_object_bytes as usize;
    let json = Router::new()
        .route("/admin/ownership", get(get_ownership).post(post_ownership))
        .route("/admin/purge", post(purge))
        .route("/admin/range-stats", post(range_stats))
        .route("/admin/learner", post(add_learner))
        .route("/admin/voters", post(set_voters))
        .route("/admin/elect", post(elect))
        .route("/admin/transfer-leader", post(transfer_leader))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES));
    let ingest = Router::new()
        .route("/admin/ingest", post(ingest))
        .layer(DefaultBodyLimit::max(max_ingest));
    json.merge(ingest)
}

type AdminResult = Result<Response, Response>;

/// The JSON error of every cellkv API, with the `X-Cellkv-Cell` header the API port adds too.
fn error(
    rep: &Replica,
    code: ErrorCode,
    message: String,
    leader: Option<LeaderHint>,
    moved: Option<MovedHint>,
) -> Response {
    let mut resp = error_response_moved(code, message, Some(rep.cfg.cell_id), leader, moved);
    resp.headers_mut()
        .insert(HEADER_CELL, HeaderValue::from(rep.cfg.cell_id.0));
    resp
}

fn fail(rep: &Replica, code: ErrorCode, message: impl Into<String>) -> Response {
    error(rep, code, message.into(), None, None)
}

fn bad(rep: &Replica, message: impl Into<String>) -> Response {
    fail(rep, ErrorCode::BadRequest, message)
}

/// 421 `not_leader` naming the leader (or 503 `no_leader` when none is known).
fn not_leader(rep: &Replica, leader: Option<(u64, ReplicaNode)>) -> Response {
    let Some((id, node)) = leader else {
        return fail(
            rep,
            ErrorCode::NoLeader,
            "the cell has no leader right now; retry shortly",
        );
    };
    let mut resp = error(
        rep,
        ErrorCode::NotLeader,
        format!(
            "this replica is not the leader; ask node {id} (control port {})",
            node.raft_addr
        ),
        Some(LeaderHint {
            node_id: NodeId(id),
            api_addr: node.api_addr.clone(),
        }),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(&node.raft_addr) {
        resp.headers_mut().insert(HEADER_LEADER_CONTROL, v);
    }
    resp
}

fn read_error(rep: &Replica, e: ReadError) -> Response {
    match e {
        ReadError::NotLeader { leader } => not_leader(rep, leader),
        ReadError::NoQuorum(m) => fail(
            rep,
            ErrorCode::NoLeader,
            format!("leadership not confirmed by a quorum: {m}"),
        ),
        ReadError::ShuttingDown => fail(rep, ErrorCode::ShuttingDown, "replica is shutting down"),
    }
}

/// A read barrier: afterwards the local state holds every entry committed before the call.
async fn barrier(rep: &Replica) -> Result<(), Response> {
    match tokio::time::timeout(rep.cfg.request_timeout, rep.reads.wait()).await {
        Err(_) => Err(fail(
            rep,
            ErrorCode::Timeout,
            "timed out confirming leadership",
        )),
        Ok(Err(e)) => Err(read_error(rep, e)),
        Ok(Ok(())) => Ok(()),
    }
}

fn parse_json<T: DeserializeOwned>(rep: &Replica, body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad(rep, format!("invalid JSON body: {e}")))
}

/// Maps a Raft client-write failure: `not_leader`, or the entry was not executed.
fn write_error(rep: &Replica, e: RaftError<u64, ClientWriteError<u64, ReplicaNode>>) -> Response {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            not_leader(rep, f.leader_id.zip(f.leader_node))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => fail(
            rep,
            ErrorCode::PreconditionFailed,
            format!("membership change refused: {e}"),
        ),
        RaftError::Fatal(e) => fail(rep, ErrorCode::ShuttingDown, format!("Raft stopped: {e}")),
    }
}

/// Proposes one entry and waits until it is applied (or the request deadline).
/// The entry goes through the write gate like client writes, so a
/// leadership transfer holds it back too.
async fn propose(rep: &Replica, req: Request) -> Result<SmResponse, Response> {
    let write = async {
        let sent = {
            let _submitting = rep.writes.enter().await;
            rep.raft.client_write_ff(req).await
        };
        let rx = match sent {
            Ok(rx) => rx,
            Err(fatal) => return Err(RaftError::Fatal(fatal)),
        };
        match rx.await {
            Ok(res) => res.map_err(RaftError::APIError),
            // The core dropped the reply: it is stopping.
            Err(_) => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
        }
    };
    match tokio::time::timeout(rep.cfg.request_timeout, write).await {
        Err(_) => Err(fail(
            rep,
            ErrorCode::Timeout,
            "not applied before the deadline; the outcome is unknown (the operation is idempotent: retry it)",
        )),
        Ok(Err(e)) => Err(write_error(rep, e)),
        Ok(Ok(resp)) => Ok(resp.data),
    }
}

fn unexpected(rep: &Replica, r: &SmResponse) -> Response {
    fail(
        rep,
        ErrorCode::Internal,
        format!("unexpected state machine response {r:?}"),
    )
}

fn check_ranges(rep: &Replica, ranges: &[HashRange]) -> Result<(), Response> {
    if ranges.len() > MAX_RANGES {
        return Err(bad(rep, format!("at most {MAX_RANGES} ranges per request")));
    }
    match ranges.iter().find(|r| r.start > r.end) {
        Some(r) => Err(bad(
            rep,
            format!("range {:#x}..={:#x} has start > end", r.start, r.end),
        )),
        None => Ok(()),
    }
}

fn op_ranges(op: &OwnershipOp) -> &[HashRange] {
    match op {
        OwnershipOp::Assign { owned, .. } => owned,
        OwnershipOp::Fence { ranges, .. }
        | OwnershipOp::Unfence { ranges, .. }
        | OwnershipOp::Release { ranges, .. }
        | OwnershipOp::Prepare { ranges, .. }
        | OwnershipOp::Abort { ranges, .. }
        | OwnershipOp::Own { ranges, .. } => ranges,
    }
}

/// `GET /admin/ownership`: the applied table, after a read barrier (leader only).
async fn get_ownership(State(rep): State<Arc<Replica>>) -> AdminResult {
    barrier(&rep).await?;
    Ok(Json(&*rep.sm.ownership()).into_response())
}

/// `POST /admin/ownership`: applies an `OwnershipOp` through the log.
async fn post_ownership(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let op: OwnershipOp = parse_json(&rep, &body)?;
    check_ranges(&rep, op_ranges(&op))?;
    match propose(&rep, Request::Ownership(op)).await? {
        SmResponse::Ownership(Ok(table)) => Ok(Json(table).into_response()),
        SmResponse::Ownership(Err(e)) => Err(fail(
            &rep,
            ErrorCode::PreconditionFailed,
            format!("ownership op refused: {e}"),
        )),
        other => Err(unexpected(&rep, &other)),
    }
}

/// `POST /admin/ingest`: stores objects copied from another cell (wire bincode
/// `IngestBatch`) with their metadata unchanged, all or nothing.
async fn ingest(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let batch: IngestBatch = common::wire::decode_objects(&body)
        .map_err(|e| bad(&rep, format!("undecodable ingest batch: {e}")))?;
    let name_err = |e: common::names::NameError| fail(&rep, e.code(), e.to_string());
    for item in &batch.items {
        common::names::validate_bucket(&item.bucket).map_err(name_err)?;
        common::names::validate_key(&item.key).map_err(name_err)?;
        if item.hash != common::ring::key_hash(&item.bucket, &item.key) {
            return Err(bad(
                &rep,
                format!(
                    "item {}/{}: hash does not match the key",
                    item.bucket, item.key
                ),
            ));
        }
        if item.meta.size != item.value.len() as u64 {
            return Err(bad(
                &rep,
                format!(
                    "item {}/{}: meta.size {} but the value has {} bytes",
                    item.bucket,
                    item.key,
                    item.meta.size,
                    item.value.len()
                ),
            ));
        }
        if item.meta.size > rep.cfg.max_object_bytes {
            return Err(fail(
                &rep,
                ErrorCode::PayloadTooLarge,
                format!(
                    "item {}/{} is larger than the limit of {} bytes",
                    item.bucket, item.key, rep.cfg.max_object_bytes
                ),
            ));
        }
    }
    for (bucket, key) in &batch.deletes {
        common::names::validate_bucket(bucket).map_err(name_err)?;
        common::names::validate_key(key).map_err(name_err)?;
    }
    let job = batch.job.clone();
    let (n_items, n_deletes) = (batch.items.len(), batch.deletes.len());
    match propose(&rep, Request::IngestV2(batch)).await? {
        SmResponse::Ingest(Ok(res)) => {
            tracing::debug!(job = %job, items = n_items, deletes = n_deletes, ?res, "ingested");
            Ok(Json(res).into_response())
        }
        SmResponse::Ingest(Err(r)) => Err(error(
            &rep,
            ErrorCode::Moved,
            format!(
                "ingest refused, nothing applied: {}/{} (hash {:#x}) is not in a range this cell has as incoming",
                r.bucket, r.key, r.hash
            ),
            None,
            Some(MovedHint {
                owner: None,
                epoch: r.epoch,
            }),
        )),
        other => Err(unexpected(&rep, &other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    range: HashRange,
    limit: Option<u64>,
}

#[derive(Serialize)]
struct PurgeReply {
    deleted: u64,
    more: bool,
}

/// `POST /admin/purge`: deletes (through the log) up to `limit` objects of
/// `range` that the cell `may_purge`; call again while `more`.
async fn purge(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: PurgeRequest = parse_json(&rep, &body)?;
    check_ranges(&rep, &[req.range])?;
    let limit = req.limit.unwrap_or(DEFAULT_PURGE_LIMIT);
    if limit == 0 || limit > MAX_PURGE_LIMIT {
        return Err(bad(&rep, format!("limit must be 1..={MAX_PURGE_LIMIT}")));
    }
    match propose(
        &rep,
        Request::Purge {
            range: req.range,
            limit,
        },
    )
    .await?
    {
        SmResponse::Purge { deleted, more } => {
            if deleted > 0 {
                tracing::info!(
                    start = req.range.start,
                    end = req.range.end,
                    deleted,
                    more,
                    "purged"
                );
            }
            Ok(Json(PurgeReply { deleted, more }).into_response())
        }
        other => Err(unexpected(&rep, &other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeStatsRequest {
    ranges: Vec<HashRange>,
}

/// `POST /admin/range-stats`: keys and value bytes per range, from one
/// consistent RocksDB snapshot after a read barrier. Ranges are not
/// filtered by ownership (like scans).
async fn range_stats(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: RangeStatsRequest = parse_json(&rep, &body)?;
    check_ranges(&rep, &req.ranges)?;
    barrier(&rep).await?;
    let rep2 = rep.clone();
    let stats = tokio::task::spawn_blocking(move || -> Result<Vec<RangeStats>, String> {
        let db = &rep2.db;
        let snap = db.snapshot();
        let cf_hash = db::cf(db, CF_BY_HASH);
        let cf_obj = db::cf(db, CF_OBJECTS);
        let mut out = Vec::with_capacity(req.ranges.len());
        for range in req.ranges {
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snap);
            let mut it = db.raw_iterator_cf_opt(cf_hash, ro);
            it.seek(range.start.to_be_bytes());
            let (mut keys, mut bytes) = (0u64, 0u64);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let Some(hash) = k
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                else {
                    return Err("short by_hash key".into());
                };
                if hash > range.end {
                    break;
                }
                let size = match objects::decode_hash_index_value(v) {
                    Some(s) => s,
                    // Written before the index recorded sizes: look the object up.
                    None => match snap.get_cf(cf_obj, &k[8..]).map_err(|e| e.to_string())? {
                        Some(buf) => {
                            objects::decode_object(&buf)
                                .map_err(|e| e.to_string())?
                                .0
                                .size
                        }
                        None => 0,
                    },
                };
                keys += 1;
                bytes += size;
                it.next();
            }
            it.status().map_err(|e| e.to_string())?;
            out.push(RangeStats { range, keys, bytes });
        }
        Ok(out)
    })
    .await
    .map_err(|e| fail(&rep, ErrorCode::Internal, e.to_string()))?
    .map_err(|e| fail(&rep, ErrorCode::StorageError, format!("storage error: {e}")))?;
    Ok(Json(stats).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnerRequest {
    node_id: u64,
    api_addr: String,
    raft_addr: String,
    /// How long to wait for the learner to catch up (default 60 s, at most 600 s).
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct MembershipReply {
    log_index: Option<u64>,
    voters: Vec<u64>,
    learners: Vec<u64>,
    nodes: BTreeMap<String, ReplicaNode>,
}

fn membership_reply(rep: &Replica) -> MembershipReply {
    let m = rep.raft.metrics().borrow().membership_config.clone();
    MembershipReply {
        log_index: m.log_id().map(|l| l.index),
        voters: m.membership().voter_ids().collect(),
        learners: m.membership().learner_ids().collect(),
        nodes: m
            .membership()
            .nodes()
            .map(|(id, n)| (id.to_string(), n.clone()))
            .collect(),
    }
}

fn valid_addr(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 256
        && a.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// `POST /admin/learner`: adds a replica as a learner and waits until it has
/// caught up with the log (bounded). Re-adding the same learner is harmless.
async fn add_learner(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: LearnerRequest = parse_json(&rep, &body)?;
    if req.node_id == 0 {
        return Err(bad(&rep, "node_id must be > 0"));
    }
    if !valid_addr(&req.api_addr) || !valid_addr(&req.raft_addr) {
        return Err(bad(&rep, "api_addr and raft_addr must be host:port"));
    }
    let wait = req
        .timeout_ms
        .map_or(DEFAULT_LEARNER_WAIT, Duration::from_millis)
        .min(MAX_LEARNER_WAIT);
    let node = ReplicaNode {
        api_addr: req.api_addr,
        raft_addr: req.raft_addr,
    };
    let id = req.node_id;
    let added = tokio::time::timeout(
        MEMBERSHIP_TIMEOUT,
        rep.raft.add_learner(id, node.clone(), false),
    )
    .await
    .map_err(|_| {
        fail(
            &rep,
            ErrorCode::Timeout,
            "adding the learner was not committed in time; retry",
        )
    })?
    .map_err(|e| write_error(&rep, e))?;
    let target = added.log_id.index;
    tracing::info!(node = id, %node, "added a learner; waiting for it to catch up");
    let caught_up = rep
        .raft
        .wait(Some(wait))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .is_some_and(|matched| matched.is_some_and(|l| l.index >= target))
            },
            "the new learner caught up",
        )
        .await;
    if let Err(e) = caught_up {
        return Err(fail(
            &rep,
            ErrorCode::Timeout,
            format!("learner {id} was added but has not caught up within {wait:?} ({e}); call again to keep waiting"),
        ));
    }
    tracing::info!(node = id, "the learner caught up");
    Ok(Json(membership_reply(&rep)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VotersRequest {
    voters: Vec<u64>,
    /// Keep removed voters as learners (default: remove them from the cell).
    #[serde(default)]
    retain: bool,
}

/// `POST /admin/voters`: makes exactly `voters` the voter set (joint
/// consensus). Every new voter must be a learner already.
async fn set_voters(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: VotersRequest = parse_json(&rep, &body)?;
    let voters: BTreeSet<u64> = req.voters.iter().copied().collect();
    if voters.is_empty() || voters.contains(&0) {
        return Err(bad(&rep, "voters must be a non-empty list of node ids > 0"));
    }
    if voters.len() != req.voters.len() {
        return Err(bad(&rep, "voters lists a node twice"));
    }
    tokio::time::timeout(
        MEMBERSHIP_TIMEOUT,
        rep.raft.change_membership(voters.clone(), req.retain),
    )
    .await
    .map_err(|_| {
        fail(
            &rep,
            ErrorCode::Timeout,
            "the membership change was not committed in time; check /admin/membership and retry",
        )
    })?
    .map_err(|e| write_error(&rep, e))?;
    tracing::info!(?voters, retain = req.retain, "changed the voter set");
    Ok(Json(membership_reply(&rep)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ElectRequest {
    /// How long to keep trying (default 10 s, at most 60 s).
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct ElectReply {
    leader: u64,
    term: u64,
    attempts: u32,
}

/// `POST /admin/elect`: makes this replica the leader (leadership transfer:
/// call it on the target). Starts an election, waits one election timeout,
/// and repeats until this replica leads or the time is up. See ADR 0009 for
/// why this works in openraft 0.9 and what it costs.
async fn elect(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: ElectRequest = if body.is_empty() {
        ElectRequest::default()
    } else {
        parse_json(&rep, &body)?
    };
    let wait = req
        .timeout_ms
        .map_or(DEFAULT_ELECT_WAIT, Duration::from_millis)
        .min(MAX_ELECT_WAIT);
    let deadline = Instant::now() + wait;
    let me = rep.cfg.node_id.0;
    let round = rep.cfg.raft.election_timeout_max * 2;
    let mut attempts = 0u32;
    loop {
        let m = rep.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            tracing::info!(
                term = m.current_term,
                attempts,
                "this replica leads the cell"
            );
            return Ok(Json(ElectReply {
                leader: me,
                term: m.current_term,
                attempts,
            })
            .into_response());
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == me)
        {
            return Err(fail(
                &rep,
                ErrorCode::PreconditionFailed,
                "this replica is not a voter; make it one with /admin/voters first",
            ));
        }
        if Instant::now() >= deadline {
            return Err(fail(
                &rep,
                ErrorCode::Timeout,
                format!(
                    "not elected within {wait:?} after {attempts} attempts; the leader is {:?}",
                    m.current_leader
                ),
            ));
        }
        attempts += 1;
        tracing::info!(attempt = attempts, leader = ?m.current_leader, "starting an election on request");
        rep.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| fail(&rep, ErrorCode::ShuttingDown, format!("Raft stopped: {e}")))?;
        let left = |d: Duration| {
            d.min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(10))
        };
        if rep
            .raft
            .wait(Some(left(round)))
            .state(ServerState::Leader, "elected on request")
            .await
            .is_ok()
        {
            continue;
        }
        // Lost: someone else (usually the old leader, whose log was longer)
        // leads again. Its lease refuses our next vote request for
        // `election_timeout_max` after it won, so wait that out first.
        let _ = rep
            .raft
            .wait(Some(left(round)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another leader",
            )
            .await;
        tokio::time::sleep(left(
            rep.cfg.raft.election_timeout_max + rep.cfg.raft.heartbeat_interval,
        ))
        .await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    /// The voter to hand leadership to.
    to: u64,
    /// The whole transfer's budget (default 10 s, at most 60 s); writes are
    /// held for at most `transfer::pause_cap` of it (2 s by default).
    timeout_ms: Option<u64>,
}

/// `POST /admin/transfer-leader`: on the leader, hands leadership to voter
/// `to` while clients keep writing (`transfer.rs`, ADR 0009): holds new
/// writes, waits until `to` has the whole log, asks it to start an election,
/// and resumes writes once it leads. Queued writes then get `not_leader`
/// naming the new leader.
async fn transfer_leader(State(rep): State<Arc<Replica>>, body: Bytes) -> AdminResult {
    let req: TransferRequest = parse_json(&rep, &body)?;
    if req.timeout_ms == Some(0) {
        return Err(bad(&rep, "timeout_ms must be > 0"));
    }
    let budget = req
        .timeout_ms
        .map_or(transfer::DEFAULT_TIMEOUT, Duration::from_millis)
        .min(transfer::MAX_TIMEOUT);
    match transfer::transfer(&rep, req.to, budget).await {
        Ok(reply) => Ok(Json(reply).into_response()),
        Err(e) => Err(match e {
            TransferError::NotLeader { leader } => not_leader(&rep, leader),
            TransferError::BadTarget(_) => bad(&rep, e.to_string()),
            TransferError::NotVoter(_) | TransferError::Busy => {
                fail(&rep, ErrorCode::PreconditionFailed, e.to_string())
            }
            TransferError::Timeout(_) => fail(&rep, ErrorCode::Timeout, e.to_string()),
            TransferError::Stopped(_) => fail(&rep, ErrorCode::ShuttingDown, e.to_string()),
        }),
    }
}
