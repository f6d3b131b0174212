//! Outbound Raft RPC: openraft's network factory over HTTP/1.1 (hyper, pooled
//! keep-alive connections, TCP_NODELAY) with bincode bodies. Every request
//! carries the cluster secret and the cell id; the peer refuses anything else.
//! Besides openraft's three RPCs it sends one of ours: a leader's request
//! that a replica of the same cell start an election (`transfer.rs`).
//!
//! A replication stream's client answers an AppendEntries that carries no
//! entries itself when its follower acknowledged the same log position for
//! the same leader in an RPC sent moments before (`heartbeat_elide_window`,
//! ADR 0016): openraft 0.9 sends one after every commit, and while it is in
//! flight the stream cannot send the next entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::CellId;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use prometheus::IntCounter;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::CellConfig;
use crate::transfer::{ElectionReply, ElectionRequest};
use crate::types::{ReplicaNode, TypeConfig};

/// Header naming the cell a Raft RPC belongs to; a replica of another cell refuses it.
pub const CELL_HEADER: &str = "x-cellkv-cell";
/// Largest Raft RPC response accepted (responses are small: a vote, an ack).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP client tuned for RPC: no Nagle, bounded connect time, kept-alive connections.
pub fn http_client(connect_timeout: Duration) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        // Under the peers' idle limit (`service::HEADER_READ_TIMEOUT`).
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(8)
        .build(conn)
}

/// Creates one `PeerClient` per target replica.
#[derive(Clone)]
pub struct Network {
    client: HttpClient,
    secret: Arc<str>,
    cell: CellId,
    self_id: u64,
    /// Upper bound of one AppendEntries or Vote RPC (openraft may ask for less).
    rpc_timeout: Duration,
    /// Upper bound of one snapshot chunk RPC.
    snapshot_timeout: Duration,
    /// Largest request body a peer accepts (`CellConfig::max_raft_body_bytes`).
    max_body: usize,
    /// `RaftConfig::heartbeat_elide_window`; zero sends every heartbeat.
    elide_window: Duration,
    /// Counts the AppendEntries answered from the last acknowledgement.
    elided: IntCounter,
}

impl Network {
    pub fn new(cfg: &CellConfig, elided: IntCounter) -> Network {
        Network {
            client: http_client(cfg.raft.rpc_timeout),
            secret: Arc::from(format!("Bearer {}", cfg.cluster_secret)),
            cell: cfg.cell_id,
            self_id: cfg.node_id.0,
            rpc_timeout: cfg.raft.rpc_timeout,
            snapshot_timeout: cfg.raft.snapshot_rpc_timeout,
            max_body: cfg.max_raft_body_bytes(),
            elide_window: cfg.raft.heartbeat_elide_window,
            elided,
        }
    }
}

impl Network {
    /// Asks replica `target` (control port `raft_addr`) to start an election
    /// now (`POST /raft/elect`), waiting at most `timeout` for its answer.
    pub async fn request_election(
        &self,
        target: u64,
        raft_addr: &str,
        req: &ElectionRequest,
        timeout: Duration,
    ) -> Result<ElectionReply, String> {
        let peer = PeerClient::new(self.clone(), target, raft_addr);
        let body = common::wire::encode(req).map_err(|e| e.to_string())?;
        peer.call("/raft/elect", body, timeout.min(self.rpc_timeout))
            .await
            .map_err(|f| match f {
                Failure::Unreachable(m) => format!("node {target} unreachable: {m}"),
                Failure::Timeout => format!("node {target} did not answer in time"),
                Failure::Other(m) => format!("node {target}: {m}"),
            })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &ReplicaNode) -> PeerClient {
        PeerClient::new(self.clone(), target, &node.raft_addr)
    }
}

/// One client per openraft replication stream (or per one-off RPC: openraft
/// 0.9 makes a new client for each vote and each leadership check, so those
/// are always sent).
pub struct PeerClient {
    net: Network,
    target: u64,
    base: String,
    /// The follower's last `Success` to an AppendEntries of this client.
    last_ack: Option<LastAck>,
}

impl PeerClient {
    fn new(net: Network, target: u64, raft_addr: &str) -> PeerClient {
        PeerClient {
            net,
            target,
            base: format!("http://{raft_addr}"),
            last_ack: None,
        }
    }
}

/// A follower's `Success` to an AppendEntries: it holds `matched` in its log
/// and accepted `vote`, as of no earlier than `sent` (when the RPC left).
#[derive(Debug)]
struct LastAck {
    sent: Instant,
    vote: Vote<u64>,
    matched: Option<LogId<u64>>,
}

/// Whether an AppendEntries can be answered `Success` from `last` instead of
/// being sent: it carries no entries, comes from the same leader (vote) and
/// asks about the log position the follower acknowledged, in an RPC sent
/// less than `window` before `now`. The answer is what the follower would
/// say: its log only changes through this leader's AppendEntries, and
/// openraft 0.9 makes it refuse every vote request for a lease
/// (`election_timeout_max`, longer than any valid window) after each one.
/// Nothing can advance from it: the follower's matched position is
/// unchanged, so commit cannot move.
fn answerable(
    last: Option<&LastAck>,
    vote: &Vote<u64>,
    prev: Option<&LogId<u64>>,
    entries: usize,
    now: Instant,
    window: Duration,
) -> bool {
    let Some(last) = last else { return false };
    entries == 0
        && !window.is_zero()
        && now.saturating_duration_since(last.sent) < window
        && last.vote == *vote
        && last.matched.as_ref() == prev
}

enum Failure {
    Unreachable(String),
    Timeout,
    Other(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    async fn call<Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, Failure> {
        let request = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, &*self.net.secret)
            .header(CELL_HEADER, self.net.cell.0.to_string())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Other(e.to_string()))?;
        let fut = async {
            let resp = self.net.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Unreachable(format!("{e:?}"))
                } else {
                    Failure::Other(format!("{e:?}"))
                }
            })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Other(format!("read response: {e}")))?
                .to_bytes();
            if status != http::StatusCode::OK {
                return Err(Failure::Other(format!(
                    "peer answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )));
            }
            common::wire::decode(&bytes)
                .map_err(|e| Failure::Other(format!("decode response: {e}")))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Failure::Timeout)?
    }

    fn map_err<E: std::error::Error>(
        &self,
        f: Failure,
        action: RPCTypes,
        timeout: Duration,
    ) -> RPCError<u64, ReplicaNode, E> {
        match f {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&Msg(m))),
            Failure::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.net.self_id,
                target: self.target,
                timeout,
            }),
            Failure::Other(m) => RPCError::Network(NetworkError::new(&Msg(m))),
        }
    }

    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, ReplicaNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = common::wire::encode(req)
            .map_err(|e| self.map_err(Failure::Other(e.to_string()), action, option.hard_ttl()))?;
        self.send(path, action, body, option).await
    }

    async fn send<Resp, E>(
        &self,
        path: &str,
        action: RPCTypes,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, ReplicaNode, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let cap = match action {
            RPCTypes::InstallSnapshot => self.net.snapshot_timeout,
            _ => self.net.rpc_timeout,
        };
        let timeout = option.hard_ttl().min(cap);
        let res: Result<Resp, RaftError<u64, E>> = self
            .call(path, body, timeout)
            .await
            .map_err(|f| self.map_err(f, action, timeout))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        let now = Instant::now();
        if answerable(
            self.last_ack.as_ref(),
            &req.vote,
            req.prev_log_id.as_ref(),
            req.entries.len(),
            now,
            self.net.elide_window,
        ) {
            self.net.elided.inc();
            return Ok(AppendEntriesResponse::Success);
        }
        let acked = LastAck {
            sent: now,
            vote: req.vote,
            matched: req.entries.last().map(|e| e.log_id).or(req.prev_log_id),
        };
        self.last_ack = None;
        let entries = req.entries.len() as u64;
        let body = common::wire::encode(&req).map_err(|e| {
            self.map_err(
                Failure::Other(e.to_string()),
                RPCTypes::AppendEntries,
                option.hard_ttl(),
            )
        })?;
        if body.len() > self.net.max_body && entries > 1 {
            // Too big for the peer's body limit: openraft retries with fewer entries.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        let res = self
            .send("/raft/append", RPCTypes::AppendEntries, body, &option)
            .await;
        if matches!(res, Ok(AppendEntriesResponse::Success)) {
            self.last_ack = Some(acked);
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.last_ack = None;
        self.rpc("/raft/snapshot", RPCTypes::InstallSnapshot, &req, &option)
            .await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ReplicaNode, RaftError<u64>>> {
        self.rpc("/raft/vote", RPCTypes::Vote, &req, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    const WINDOW: Duration = Duration::from_millis(5);

    fn ack(sent: Instant) -> LastAck {
        LastAck {
            sent,
            vote: Vote::new_committed(3, 1),
            matched: Some(log_id(3, 10)),
        }
    }

    #[test]
    fn answers_an_empty_append_at_the_acknowledged_position_within_the_window() {
        let t0 = Instant::now();
        let last = ack(t0);
        let vote = Vote::new_committed(3, 1);
        let at = Some(log_id(3, 10));
        let soon = t0 + Duration::from_millis(1);
        assert!(answerable(Some(&last), &vote, at.as_ref(), 0, soon, WINDOW));

        // Anything else is sent.
        assert!(
            !answerable(None, &vote, at.as_ref(), 0, soon, WINDOW),
            "nothing acknowledged yet"
        );
        assert!(
            !answerable(Some(&last), &vote, at.as_ref(), 1, soon, WINDOW),
            "carries entries"
        );
        let late = t0 + WINDOW;
        assert!(
            !answerable(Some(&last), &vote, at.as_ref(), 0, late, WINDOW),
            "window over"
        );
        assert!(
            !answerable(Some(&last), &vote, at.as_ref(), 0, soon, Duration::ZERO),
            "disabled"
        );
        let other_leader = Vote::new_committed(4, 2);
        assert!(
            !answerable(Some(&last), &other_leader, at.as_ref(), 0, soon, WINDOW),
            "another vote"
        );
        let uncommitted = Vote::new(3, 1);
        assert!(
            !answerable(Some(&last), &uncommitted, at.as_ref(), 0, soon, WINDOW),
            "vote not committed"
        );
        let elsewhere = Some(log_id(3, 9));
        assert!(
            !answerable(Some(&last), &vote, elsewhere.as_ref(), 0, soon, WINDOW),
            "another position"
        );
        assert!(
            !answerable(Some(&last), &vote, None, 0, soon, WINDOW),
            "empty log"
        );
    }
}
