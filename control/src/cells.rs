//! `CellClient`: the control server's calls to data cells — admin ops on the
//! control port (`/admin/*`, cell admin token) and scans/health on the API
//! port (API token). The leader-following is `client::cell::CellClient`'s:
//! one per cell and port, kept across calls so each remembers its leader;
//! control-port clients follow the `x-cellkv-leader-control` hint.
//!
//! Every op the control plane sends is idempotent, so a call whose outcome
//! is unknown (timeout, broken connection) is simply retried by the job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use client::cell::{self, CellCallError, Retry, LEADER_CONTROL_HEADER};
use client::http::{Client, Resp};
use common::ownership::{OwnershipOp, OwnershipTable};
use common::wire::{IngestBatch, IngestResult, RangeStats, ScanPage};
use common::{Backoff, CellId, CellSpec, ErrorBody, HashRange, NodeId, ReplicaSpec};
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use common::wire::hex;

/// How long a new learner may take to catch up.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(110);

/// Wait after every replica of a cell failed in a row; doubles up to the cap.
const LEADER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(500));

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// The leader-following client of one cell's port, and the addresses it
/// was built from (rebuilt when the map changes them).
struct PortClient {
    addrs: Vec<String>,
    client: cell::CellClient,
}

pub struct CellClient {
    /// Its own request timeout is only a backstop: every call passes its
    /// deadline (`health`, `elect`: a per-request timeout).
    http: Client,
    api_token: String,
    admin_token: String,
    timeout: Duration,
    /// One client per cell and port; each remembers its leader. A std
    /// mutex: never held across an await.
    clients: Mutex<HashMap<(CellId, Port), PortClient>>,
}

impl CellClient {
    pub fn new(
        http: Client,
        api_token: String,
        admin_token: String,
        timeout: Duration,
    ) -> CellClient {
        CellClient {
            http,
            api_token,
            admin_token,
            timeout,
            clients: Mutex::new(HashMap::new()),
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

    /// The leader-following client of `cell`'s `port`, built on first use
    /// and again when the map lists other addresses.
    fn port_client(&self, cell: &CellSpec, port: Port) -> Result<cell::CellClient, CellError> {
        let addrs: Vec<String> = cell
            .replicas
            .iter()
            .filter_map(|r| Self::addr(r, port).map(str::to_string))
            .collect();
        if addrs.is_empty() {
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
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(pc) = clients.get(&(cell.id, port)).filter(|pc| pc.addrs == addrs) {
            return Ok(pc.client.clone());
        }
        let (token, leader_header) = match port {
            Port::Api => (&self.api_token, cell::LEADER_HEADER),
            Port::Control => (&self.admin_token, LEADER_CONTROL_HEADER),
        };
        let client = cell::CellClient::new(self.http.clone(), &addrs, format!("Bearer {token}"))
            .with_backoff(LEADER_BACKOFF)
            .with_leader_header(leader_header);
        clients.insert(
            (cell.id, port),
            PortClient {
                addrs,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// Sends to the cell's leader; returns 2xx answers, retries the
    /// retryable ones until the deadline, turns the rest into `Refused`
    /// (a 503 or 504 the cell client hands back into `Transient`).
    async fn leader_call(
        &self,
        cell: &CellSpec,
        port: Port,
        method: Method,
        path: &str,
        (content_type, body): (&'static str, Bytes),
        timeout: Duration,
    ) -> Result<Resp, CellError> {
        let client = self.port_client(cell, port)?;
        let answered = client
            .call(
                method,
                path,
                &[("content-type", content_type)],
                body,
                Retry::Idempotent,
                timeout,
            )
            .await
            .map_err(|e| CellError::Transient {
                cell: cell.id,
                msg: match e {
                    CellCallError::Unavailable { last, .. } => {
                        format!("no leader answered within {timeout:?}: {last}")
                    }
                    CellCallError::Unknown(m) => m,
                },
            })?;
        let r = answered.resp;
        if r.is_success() {
            return Ok(r);
        }
        if matches!(r.status, 503 | 504) {
            return Err(CellError::Transient {
                cell: cell.id,
                msg: format!("{}: {}", answered.url, r.describe()),
            });
        }
        Err(refused(cell.id, &r))
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
        let body = common::wire::encode_objects(batch).map_err(|e| CellError::Refused {
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
        let auth = format!("Bearer {}", self.admin_token);
        let reply = self
            .http
            .with_timeout(Duration::from_secs(15))
            .post(
                &format!("http://{r}/admin/elect"),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await
            .map_err(|e| CellError::Transient {
                cell: cell.id,
                msg: e.to_string(),
            })?;
        if !reply.is_success() {
            return Err(CellError::Refused {
                cell: cell.id,
                status: reply.status,
                code: reply.error_code().unwrap_or_else(|| "unknown".into()),
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
        common::wire::decode_objects(&r.body).map_err(|e| CellError::Transient {
            cell: cell.id,
            msg: format!("undecodable scan page: {e}"),
        })
    }

    /// `GET /health` of one replica (the JSON, whatever the status), or None if unreachable.
    pub async fn health(&self, replica: &ReplicaSpec, timeout: Duration) -> Option<Value> {
        let r = self
            .http
            .with_timeout(timeout)
            .get(&format!("http://{}/health", replica.api_addr), &[])
            .await
            .ok()?;
        r.json().ok()
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(cell: CellId, r: &Resp) -> Result<T, CellError> {
    r.json().map_err(|e| CellError::Refused {
        cell,
        status: r.status,
        code: "bad_answer".into(),
        msg: e.to_string(),
    })
}

/// A non-2xx answer the cell decided on: its code and message, or the start
/// of the body when it is not a cellkv error.
fn refused(cell: CellId, r: &Resp) -> CellError {
    let err: Option<ErrorBody> = serde_json::from_slice(&r.body).ok();
    CellError::Refused {
        cell,
        status: r.status,
        code: err
            .as_ref()
            .map_or("unknown".into(), |b| b.error.code.as_str().to_string()),
        msg: err.map_or_else(
            || String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned(),
            |b| b.error.message,
        ),
    }
}
