//! `CellClient`: the control server's calls to data cells — admin ops on the
//! control port (`/admin/*`, cell admin token) and scans/health on the API
//! port (API token). Finds each cell's leader by trying replicas and
//! following `not_leader` hints (a hint's node id is mapped to that
//! replica's `control_addr` for control-port calls).
//!
//! Every op the control plane sends is idempotent, so a call whose outcome
//! is unknown (timeout, broken connection) is simply retried by the job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ownership::{OwnershipOp, OwnershipTable};
use common::wire::{IngestBatch, IngestResult, RangeStats, ScanPage};
use common::{CellId, CellSpec, ErrorCode, HashRange, NodeId, ReplicaSpec};
use http::{HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use common::wire::hex;

use crate::http::{bearer, HttpClient, Reply};

/// How long a new learner may take to catch up.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(110);

#[derive(Debug, Error, Clone)]
pub enum CellError {
    /// Worth retrying later: no leader, unreachable, timed out, outcome unknown.
    #[error("cell {cell}: {msg}")]
    Transient { cell: CellId, msg: String },
    /// The cell refused: retrying the same call will not help.
    #[error("cell {cell} refused: {status} {code}: {msg}")]
    Refused {
        cell: CellId,
        status: u16,
        code: String,
        msg: String,
    },
}

impl CellError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CellError::Transient { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Api,
    Control,
}

/// `POST /admin/purge` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReply {
    pub deleted: u64,
    pub more: bool,
}

/// `GET /admin/membership` answer (the fields the control server uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
}

pub struct CellClient {
    http: HttpClient,
    api_token: String,
    admin_token: String,
    timeout: Duration,
    /// Last known leader per cell. A std mutex: never held across an await.
    leaders: Mutex<HashMap<CellId, NodeId>>,
}

impl CellClient {
    pub fn new(
        http: HttpClient,
        api_token: String,
        admin_token: String,
        timeout: Duration,
    ) -> CellClient {
        CellClient {
            http,
            api_token,
            admin_token,
            timeout,
            leaders: Mutex::new(HashMap::new()),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn addr(r: &ReplicaSpec, port: Port) -> Option<&str> {
        match port {
            Port::Api => Some(r.api_addr.as_str()),
            Port::Control => r.control_addr.as_deref(),
        }
    }

    /// Sends to the cell's leader; returns 2xx answers, retries the
    /// retryable ones until the deadline, turns the rest into `Refused`.
    async fn leader_call(
        &self,
        cell: &CellSpec,
        port: Port,
        method: Method,
        path: &str,
        (content_type, body): (&'static str, Bytes),
        timeout: Duration,
    ) -> Result<Reply, CellError> {
        let transient = |msg: String| CellError::Transient { cell: cell.id, msg };
        let usable: Vec<&ReplicaSpec> = cell
            .replicas
            .iter()
            .filter(|r| Self::addr(r, port).is_some())
            .collect();
        if usable.is_empty() {
            return Err(CellError::Refused {
                cell: cell.id,
                status: 0,
                code: "no_control_addr".into(),
                msg: format!(
                    "cell {} has no replica with a control_addr in the map; add control_addr to its replicas",
                    cell.id
                ),
            });
        }
        let token = match port {
            Port::Api => &self.api_token,
            Port::Control => &self.admin_token,
        };
        let headers = vec![
            bearer(token),
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            ),
        ];
        let deadline = Instant::now() + timeout;
        let cached = self
            .leaders
            .lock()
            .expect("leaders lock")
            .get(&cell.id)
            .copied();
        let mut next: Option<String> = cached
            .and_then(|n| usable.iter().find(|r| r.node_id == n))
            .and_then(|r| Self::addr(r, port))
            .map(str::to_string);
        let mut idx = 0usize;
        let mut failed = 0usize;
        let mut backoff = Duration::from_millis(25);
        let mut last = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(transient(format!(
                    "no leader answered within {:?}: {last}",
                    self.timeout
                )));
            }
            let addr = match next.take() {
                Some(a) => a,
                None => {
                    idx += 1;
                    Self::addr(usable[(idx - 1) % usable.len()], port)
                        .expect("filtered")
                        .to_string()
                }
            };
            let node = usable
                .iter()
                .find(|r| Self::addr(r, port) == Some(addr.as_str()))
                .map(|r| r.node_id);
            match self
                .http
                .send(
                    method.clone(),
                    &addr,
                    path,
                    &headers,
                    body.clone(),
                    deadline - now,
                )
                .await
            {
                Ok(r) if r.status.is_success() => {
                    if let Some(n) = node {
                        self.leaders
                            .lock()
                            .expect("leaders lock")
                            .insert(cell.id, n);
                    }
                    return Ok(r);
                }
                Ok(r) => {
                    let err = r.error();
                    let code = err.as_ref().map(|b| b.error.code);
                    last = format!("{addr}: {}", r.describe());
                    match code {
                        Some(ErrorCode::NotLeader) => {
                            let hint = err.and_then(|b| b.error.leader);
                            let target = hint.and_then(|h| match port {
                                Port::Api => Some(h.api_addr),
                                Port::Control => usable
                                    .iter()
                                    .find(|r| r.node_id == h.node_id)
                                    .and_then(|r| r.control_addr.clone()),
                            });
                            if let Some(t) = target.filter(|t| *t != addr) {
                                next = Some(t);
                                continue;
                            }
                        }
                        Some(
                            ErrorCode::NoLeader
                            | ErrorCode::ShuttingDown
                            | ErrorCode::CellUnavailable
                            | ErrorCode::Timeout,
                        ) => {}
                        _ if r.status == StatusCode::SERVICE_UNAVAILABLE
                            || r.status == StatusCode::GATEWAY_TIMEOUT => {}
                        _ => {
                            return Err(CellError::Refused {
                                cell: cell.id,
                                status: r.status.as_u16(),
                                code: code.map_or("unknown".into(), |c| c.as_str().to_string()),
                                msg: err.map_or_else(
                                    || {
                                        String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                                            .into_owned()
                                    },
                                    |b| b.error.message,
                                ),
                            })
                        }
                    }
                }
                Err(e) => last = e.to_string(),
            }
            failed += 1;
            if failed.is_multiple_of(usable.len()) {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    async fn admin_json<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        cell: &CellSpec,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CellError> {
        self.admin_json_within(cell, method, path, body, self.timeout)
            .await
    }

    async fn admin_json_within<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        cell: &CellSpec,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, CellError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).expect("request serializes")),
            None => Bytes::new(),
        };
        let r = self
            .leader_call(
                cell,
                Port::Control,
                method,
                path,
                ("application/json", bytes),
                timeout,
            )
            .await?;
        decode_json(cell.id, &r)
    }

    pub async fn ownership(
        &self,
        cell: &CellSpec,
        op: &OwnershipOp,
    ) -> Result<OwnershipTable, CellError> {
        self.admin_json(cell, Method::POST, "/admin/ownership", Some(op))
            .await
    }

    pub async fn get_ownership(&self, cell: &CellSpec) -> Result<OwnershipTable, CellError> {
        self.admin_json::<(), _>(cell, Method::GET, "/admin/ownership", None)
            .await
    }

    pub async fn ingest(
        &self,
        cell: &CellSpec,
        batch: &IngestBatch,
    ) -> Result<IngestResult, CellError> {
        let body = common::wire::encode(batch).map_err(|e| CellError::Refused {
            cell: cell.id,
            status: 0,
            code: "encode".into(),
            msg: e.to_string(),
        })?;
        let r = self
            .leader_call(
                cell,
                Port::Control,
                Method::POST,
                "/admin/ingest",
                ("application/octet-stream", body.into()),
                self.timeout,
            )
            .await?;
        decode_json(cell.id, &r)
    }

    pub async fn purge(
        &self,
        cell: &CellSpec,
        range: HashRange,
        limit: u64,
    ) -> Result<PurgeReply, CellError> {
        let body = serde_json::json!({"range": range, "limit": limit});
        self.admin_json(cell, Method::POST, "/admin/purge", Some(&body))
            .await
    }

    pub async fn range_stats(
        &self,
        cell: &CellSpec,
        ranges: &[HashRange],
    ) -> Result<Vec<RangeStats>, CellError> {
        let body = serde_json::json!({ "ranges": ranges });
        self.admin_json(cell, Method::POST, "/admin/range-stats", Some(&body))
            .await
    }

    /// Adds `r` as a learner and waits (cell side) until it caught up.
    pub async fn add_learner(&self, cell: &CellSpec, r: &ReplicaSpec) -> Result<Value, CellError> {
        let raft_addr = r.control_addr.clone().ok_or_else(|| CellError::Refused {
            cell: cell.id,
            status: 0,
            code: "no_control_addr".into(),
            msg: format!(
                "replica {} needs a control_addr (its Raft/control port)",
                r.node_id
            ),
        })?;
        // The cell waits for the learner to catch up: give it time.
        let body = serde_json::json!({"node_id": r.node_id, "api_addr": r.api_addr,
            "raft_addr": raft_addr, "timeout_ms": MEMBERSHIP_WAIT.as_millis() as u64});
        self.admin_json_within(
            cell,
            Method::POST,
            "/admin/learner",
            Some(&body),
            MEMBERSHIP_WAIT + Duration::from_secs(10),
        )
        .await
    }

    pub async fn set_voters(&self, cell: &CellSpec, voters: &[u64]) -> Result<Value, CellError> {
        let body = serde_json::json!({ "voters": voters });
        self.admin_json_within(
            cell,
            Method::POST,
            "/admin/voters",
            Some(&body),
            Duration::from_secs(60),
        )
        .await
    }

    pub async fn membership(&self, cell: &CellSpec) -> Result<Membership, CellError> {
        self.admin_json::<(), _>(cell, Method::GET, "/admin/membership", None)
            .await
    }

    /// Asks the cell's leader to hand leadership to voter `to`
    /// (`POST /admin/transfer-leader`), giving the cell `budget`; follows
    /// `not_leader` hints to the leader. A cell without the endpoint (an
    /// older build) answers `Refused` with status 404.
    pub async fn transfer_leader(
        &self,
        cell: &CellSpec,
        to: NodeId,
        budget: Duration,
    ) -> Result<Value, CellError> {
        let body = serde_json::json!({"to": to, "timeout_ms": budget.as_millis() as u64});
        // Room for leader hops and the answer beyond the cell's own budget.
        self.admin_json_within(
            cell,
            Method::POST,
            "/admin/transfer-leader",
            Some(&body),
            budget + Duration::from_secs(5),
        )
        .await
    }

    /// Asks replica `node` of `cell` to start an election now.
    pub async fn elect(&self, cell: &CellSpec, node: NodeId) -> Result<Value, CellError> {
        let r = cell
            .replicas
            .iter()
            .find(|r| r.node_id == node)
            .and_then(|r| r.control_addr.clone())
            .ok_or_else(|| CellError::Refused {
                cell: cell.id,
                status: 0,
                code: "no_control_addr".into(),
                msg: format!(
                    "node {node} is not in cell {} or has no control_addr",
                    cell.id
                ),
            })?;
        let headers = vec![bearer(&self.admin_token)];
        let reply = self
            .http
            .send(
                Method::POST,
                &r,
                "/admin/elect",
                &headers,
                Bytes::new(),
                Duration::from_secs(15),
            )
            .await
            .map_err(|e| CellError::Transient {
                cell: cell.id,
                msg: e.to_string(),
            })?;
        if !reply.status.is_success() {
            return Err(CellError::Refused {
                cell: cell.id,
                status: reply.status.as_u16(),
                code: reply
                    .error()
                    .map_or("unknown".into(), |b| b.error.code.as_str().into()),
                msg: reply.describe(),
            });
        }
        Ok(reply.json().unwrap_or(Value::Null))
    }

    /// One page of the leader's hash-range scan.
    pub async fn scan(
        &self,
        cell: &CellSpec,
        range: HashRange,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: u64,
        values: bool,
    ) -> Result<ScanPage, CellError> {
        let mut path = format!(
            "/internal/v1/scan?start={}&end={}&limit={limit}&max_bytes={max_bytes}",
            range.start, range.end
        );
        if let Some(a) = after {
            path.push_str(&format!("&after={}", hex(a)));
        }
        if !values {
            path.push_str("&values=false");
        }
        let r = self
            .leader_call(
                cell,
                Port::Api,
                Method::GET,
                &path,
                ("application/octet-stream", Bytes::new()),
                self.timeout,
            )
            .await?;
        common::wire::decode(&r.body).map_err(|e| CellError::Transient {
            cell: cell.id,
            msg: format!("undecodable scan page: {e}"),
        })
    }

    /// `GET /health` of one replica (the JSON, whatever the status), or None if unreachable.
    pub async fn health(&self, replica: &ReplicaSpec, timeout: Duration) -> Option<Value> {
        let r = self
            .http
            .send(
                Method::GET,
                &replica.api_addr,
                "/health",
                &[],
                Bytes::new(),
                timeout,
            )
            .await
            .ok()?;
        r.json().ok()
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(cell: CellId, r: &Reply) -> Result<T, CellError> {
    r.json().map_err(|msg| CellError::Refused {
        cell,
        status: r.status.as_u16(),
        code: "bad_answer".into(),
        msg,
    })
}
