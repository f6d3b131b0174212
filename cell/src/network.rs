//! Outbound Raft RPC: openraft's network factory over HTTP/1.1 (hyper,
//! keep-alive, TCP_NODELAY) with bincode bodies. Every request carries the
//! cluster secret and the cell id; the peer refuses anything else. Besides
//! openraft's three RPCs it sends one of ours: a leader's request that a
//! replica of the same cell start an election (`transfer.rs`).
//!
//! Each `PeerClient` (openraft makes one per replication stream and one per
//! heartbeat or vote sender) owns one connection and drives it inside the
//! calling task: openraft 0.9 has at most one RPC in flight per client, so a
//! pool and a connection task per socket would only add two task wake-ups to
//! every round trip. A connection that fails or times out is dropped, and the
//! next call dials again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::CellId;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::transfer::{ElectionReply, ElectionRequest};
use crate::types::{ReplicaNode, TypeConfig};

/// Header naming the cell a Raft RPC belongs to; a replica of another cell refuses it.
pub const CELL_HEADER: &str = "x-cellkv-cell";
/// Largest Raft RPC response accepted (responses are small: a vote, an ack).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Creates one `PeerClient` per target replica.
#[derive(Clone)]
pub struct Network {
    /// Longest wait for a TCP connection to a peer.
    connect_timeout: Duration,
    secret: Arc<str>,
    cell: CellId,
    self_id: u64,
    /// Upper bound of one AppendEntries or Vote RPC (openraft may ask for less).
    rpc_timeout: Duration,
    /// Upper bound of one snapshot chunk RPC.
    snapshot_timeout: Duration,
    /// Largest request body a peer accepts (`CellConfig::max_raft_body_bytes`).
    max_body: usize,
}

impl Network {
    pub fn new(
        cell: CellId,
        self_id: u64,
        secret: &str,
        rpc_timeout: Duration,
        snapshot_timeout: Duration,
        max_body: usize,
    ) -> Network {
        Network {
            connect_timeout: rpc_timeout,
            secret: Arc::from(format!("Bearer {secret}")),
            cell,
            self_id,
            rpc_timeout,
            snapshot_timeout,
            max_body,
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
        let mut peer = PeerClient::new(self.clone(), target, raft_addr);
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

type Io = TokioIo<TcpStream>;

/// One kept-alive HTTP/1.1 connection to a peer, driven by whoever calls.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<http1::Connection<Io, Full<Bytes>>>>,
}

impl Conn {
    async fn dial(addr: &str, timeout: Duration) -> Result<Conn, Failure> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Unreachable(format!("connect to {addr}: timed out")))?
            .map_err(|e| Failure::Unreachable(format!("connect to {addr}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Failure::Unreachable(format!("connect to {addr}: {e}")))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Unreachable(format!("connect to {addr}: {e}")))?;
        Ok(Conn {
            sender,
            conn: Box::pin(conn),
        })
    }

    /// Whether the peer closed the connection while it sat idle (polls it
    /// once without waiting: an idle HTTP/1 connection notices EOF then).
    async fn closed(&mut self) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(self.conn.as_mut().poll(cx).is_ready())).await
    }

    /// Sends one request and reads the whole response (at most `limit`
    /// bytes), polling the connection meanwhile.
    async fn exchange(
        &mut self,
        request: http::Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(http::StatusCode, Bytes), Failure> {
        let Conn { sender, conn } = self;
        let work = async {
            sender
                .ready()
                .await
                .map_err(|e| Failure::Other(format!("connection: {e}")))?;
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| Failure::Other(format!("{e:?}")))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| Failure::Other(format!("read response: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::select! {
            biased;
            r = work => r,
            r = conn.as_mut() => Err(Failure::Other(match r {
                Ok(()) => "connection closed by the peer".to_string(),
                Err(e) => format!("connection: {e}"),
            })),
        }
    }
}

pub struct PeerClient {
    net: Network,
    target: u64,
    addr: String,
    /// The connection, when one is open. A `Mutex` only to make the client
    /// `Sync` as openraft requires: it is reached through `&mut self`
    /// (`get_mut`), never locked.
    conn: Mutex<Option<Conn>>,
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
    fn new(net: Network, target: u64, addr: &str) -> PeerClient {
        PeerClient {
            net,
            target,
            addr: addr.to_string(),
            conn: Mutex::new(None),
        }
    }

    /// The open connection if the peer has not closed it, else a new one.
    async fn connection(&mut self) -> Result<Conn, Failure> {
        let slot = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = slot.take() {
            if !c.closed().await {
                return Ok(c);
            }
        }
        Conn::dial(&self.addr, self.net.connect_timeout).await
    }

    async fn call<Resp: DeserializeOwned>(
        &mut self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, Failure> {
        let request = http::Request::post(path)
            .header(http::header::HOST, &self.addr)
            .header(http::header::AUTHORIZATION, &*self.net.secret)
            .header(CELL_HEADER, self.net.cell.0.to_string())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Other(e.to_string()))?;
        let fut = async {
            let mut conn = self.connection().await?;
            let (status, bytes) = conn.exchange(request, MAX_RESPONSE_BYTES).await?;
            // Kept only after a complete exchange: a failed or timed-out call
            // drops its connection, whose state is unknown.
            *self.conn.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(conn);
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
        &mut self,
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
        &mut self,
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
        self.send("/raft/append", RPCTypes::AppendEntries, body, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ReplicaNode, RaftError<u64, InstallSnapshotError>>,
    > {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Bytes as AxumBytes;
    use axum::routing::post;
    use axum::serve::ListenerExt;
    use openraft::Vote;

    use super::*;

    /// A peer answering `/raft/vote` by granting it; counts the TCP
    /// connections it accepted. Stops (closing idle connections) when `stop`
    /// fires.
    async fn peer(
        listener: tokio::net::TcpListener,
        accepted: Arc<AtomicUsize>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new().route(
            "/raft/vote",
            post(|body: AxumBytes| async move {
                let req: VoteRequest<u64> = common::wire::decode(&body).unwrap();
                let reply: Result<VoteResponse<u64>, RaftError<u64>> =
                    Ok(VoteResponse::new(req.vote, None, true));
                common::wire::encode(&reply).unwrap()
            }),
        );
        let listener = listener.tap_io(move |_| {
            accepted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
        })
    }

    fn client(addr: &str) -> PeerClient {
        let net = Network::new(
            CellId(1),
            1,
            "test-secret",
            Duration::from_secs(2),
            Duration::from_secs(2),
            1 << 20,
        );
        PeerClient::new(net, 2, addr)
    }

    async fn vote(c: &mut PeerClient, term: u64) -> Result<VoteResponse<u64>, String> {
        let req = VoteRequest::new(Vote::new(term, 1), None);
        c.vote(req, RPCOption::new(Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn keeps_one_connection_and_redials_after_the_peer_restarts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let first = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = peer(listener, first.clone(), stopped).await;

        let mut c = client(&addr);
        for term in 1..=5 {
            let r = vote(&mut c, term).await.unwrap();
            assert!(r.vote_granted);
            assert_eq!(r.vote, Vote::new(term, 1));
        }
        assert_eq!(
            first.load(Ordering::SeqCst),
            1,
            "calls share one connection"
        );

        // The peer restarts on the same port: the idle connection is closed
        // under the client, which must notice and dial again.
        stop.send(()).unwrap();
        server.await.unwrap();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let second = Arc::new(AtomicUsize::new(0));
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let _server = peer(listener, second.clone(), stopped).await;
        let r = vote(&mut c, 6).await.unwrap();
        assert!(r.vote_granted);
        assert_eq!(second.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_or_silent_peer_is_an_error_not_a_hang() {
        // Nothing listens: the port of a listener just dropped.
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut c = client(&addr);
        let e = vote(&mut c, 1).await.unwrap_err();
        assert!(e.contains("connect to"), "{e}");

        // A peer that accepts and never answers: the call times out.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = client(&silent.local_addr().unwrap().to_string());
        let req = VoteRequest::new(Vote::new(1, 1), None);
        let e = c
            .vote(req, RPCOption::new(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(matches!(e, RPCError::Timeout(_)), "{e}");
    }
}
