//! The control port: inbound Raft RPC (`/raft/*`, cluster secret) and cell
//! administration (`/admin/*`, admin token). Kept off the API port so the
//! router's credentials can never reach consensus or membership. Besides
//! openraft's RPCs, `/raft/elect` lets this cell's leader ask a replica to
//! start an election (leadership transfer, `transfer.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::ErrorCode;
use openraft::error::{InitializeError, RaftError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::error_response;
use crate::auth::{check_bearer, Bearer};
use crate::network::CELL_HEADER;
use crate::replica::Replica;
use crate::transfer::ElectionRequest;
use crate::types::ReplicaNode;

pub fn router(rep: Arc<Replica>) -> Router {
    let raft = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/elect", post(elect))
        .layer(middleware::from_fn_with_state(rep.clone(), require_peer));
    let admin = Router::new()
        .route("/admin/init", post(init))
        .route("/admin/membership", get(membership))
        .merge(crate::admin::routes(&rep))
        .layer(middleware::from_fn_with_state(rep.clone(), require_admin));
    // The admin routes set tighter body limits of their own (inner layers win).
    raft.layer(DefaultBodyLimit::max(rep.cfg.max_raft_body_bytes()))
        .merge(admin)
        .with_state(rep)
}

fn refuse(rep: &Replica, status: ErrorCode, reason: &str, msg: &str) -> Response {
    rep.metrics
        .raft_rpc_rejected_total
        .with_label_values(&[reason])
        .inc();
    tracing::warn!(reason, "refused a control-port request: {msg}");
    error_response(status, msg.to_string(), Some(rep.cfg.cell_id), None)
}

async fn require_peer(State(rep): State<Arc<Replica>>, req: Request, next: Next) -> Response {
    match check_bearer(req.headers(), &rep.cfg.cluster_secret) {
        Bearer::Ok => {}
        Bearer::Missing => {
            return refuse(
                &rep,
                ErrorCode::Unauthorized,
                "missing_secret",
                "Raft RPC without the cluster secret",
            )
        }
        Bearer::Wrong => {
            return refuse(
                &rep,
                ErrorCode::Unauthorized,
                "wrong_secret",
                "Raft RPC with a wrong cluster secret",
            )
        }
    }
    let cell = req
        .headers()
        .get(CELL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    if cell != Some(rep.cfg.cell_id.0) {
        return refuse(
            &rep,
            ErrorCode::Forbidden,
            "wrong_cell",
            "Raft RPC addressed to another cell",
        );
    }
    next.run(req).await
}

async fn require_admin(State(rep): State<Arc<Replica>>, req: Request, next: Next) -> Response {
    match check_bearer(req.headers(), &rep.cfg.admin_token) {
        Bearer::Ok => next.run(req).await,
        _ => refuse(
            &rep,
            ErrorCode::Unauthorized,
            "admin_token",
            "admin request without a valid admin token",
        ),
    }
}

fn bincode_reply<T: Serialize>(v: &T) -> Response {
    match common::wire::encode(v) {
        Ok(b) => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(e) => error_response(
            ErrorCode::Internal,
            format!("encode reply: {e}"),
            None,
            None,
        ),
    }
}

// The error is a ready response, returned once per refused request: size is irrelevant.
#[allow(clippy::result_large_err)]
fn decode_or_400<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    common::wire::decode(body).map_err(|e| {
        error_response(
            ErrorCode::BadRequest,
            format!("undecodable Raft RPC: {e}"),
            None,
            None,
        )
    })
}

async fn append(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let req = match decode_or_400(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    rep.metrics
        .raft_rpc_total
        .with_label_values(&["append"])
        .inc();
    bincode_reply(&rep.raft.append_entries(req).await)
}

async fn vote(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let req = match decode_or_400(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    rep.metrics
        .raft_rpc_total
        .with_label_values(&["vote"])
        .inc();
    bincode_reply(&rep.raft.vote(req).await)
}

async fn snapshot(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let req = match decode_or_400(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    rep.metrics
        .raft_rpc_total
        .with_label_values(&["snapshot"])
        .inc();
    bincode_reply(&rep.raft.install_snapshot(req).await)
}

/// `POST /raft/elect`: the leader asks this replica to start an election now.
async fn elect(State(rep): State<Arc<Replica>>, body: Bytes) -> Response {
    let req: ElectionRequest = match decode_or_400(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    rep.metrics
        .raft_rpc_total
        .with_label_values(&["elect"])
        .inc();
    match crate::transfer::on_election_request(&rep, &req).await {
        Ok(reply) => bincode_reply(&reply),
        Err(e) => error_response(
            ErrorCode::ShuttingDown,
            format!("Raft stopped: {e}"),
            Some(rep.cfg.cell_id),
            None,
        ),
    }
}

#[derive(Serialize, Deserialize)]
pub struct InitReply {
    pub members: BTreeMap<u64, ReplicaNode>,
}

/// Initializes a fresh cell with the configured peers as voters. Run it on one
/// replica once; a second call answers 409 `already_initialized`.
async fn init(State(rep): State<Arc<Replica>>) -> Response {
    let members: BTreeMap<u64, ReplicaNode> = rep
        .cfg
        .peers
        .iter()
        .map(|p| {
            (
                p.node_id.0,
                ReplicaNode {
                    api_addr: p.api_addr.clone(),
                    raft_addr: p.raft_addr.clone(),
                },
            )
        })
        .collect();
    if members.is_empty() {
        return error_response(
            ErrorCode::BadRequest,
            "no peers configured: set `peers` in the cell config".into(),
            Some(rep.cfg.cell_id),
            None,
        );
    }
    // Check first: openraft logs an ERROR when asked to initialize twice, and
    // a repeated init is a normal, idempotent operator action.
    if rep.raft.is_initialized().await.unwrap_or(false) {
        return error_response(
            ErrorCode::AlreadyInitialized,
            "this replica already belongs to an initialized cell".into(),
            Some(rep.cfg.cell_id),
            None,
        );
    }
    match rep.raft.initialize(members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialized the cell");
            (StatusCode::OK, Json(InitReply { members })).into_response()
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => error_response(
            ErrorCode::AlreadyInitialized,
            format!("this replica already has Raft state: {e}"),
            Some(rep.cfg.cell_id),
            None,
        ),
        Err(e) => error_response(
            ErrorCode::Internal,
            format!("initialize failed: {e}"),
            Some(rep.cfg.cell_id),
            None,
        ),
    }
}

async fn membership(State(rep): State<Arc<Replica>>) -> Response {
    let m = rep.raft.metrics().borrow().membership_config.clone();
    Json(serde_json::json!({
        "log_id": m.log_id(),
        "voters": m.membership().voter_ids().collect::<Vec<_>>(),
        "learners": m.membership().learner_ids().collect::<Vec<_>>(),
        "nodes": m.membership().nodes().map(|(id, n)| (id.to_string(), n.clone())).collect::<BTreeMap<_, _>>(),
    }))
    .into_response()
}
