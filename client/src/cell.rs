//! [`CellClient`]: a client of one cell's replicas that sends each request to
//! the leader. It follows `not_leader` hints, moves to the next replica when
//! one cannot answer, waits with [`Backoff`] once every replica has failed,
//! and retries only what is safe: any attempt that provably did not execute,
//! and every attempt of an idempotent request, until a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backoff, ErrorBody, ErrorCode};
use http::Method;

use crate::http::{Client, HttpError, Resp};

/// Header in which a replica that is not the leader names the one that is
/// (`host:port` of its API), besides the JSON error body.
pub const LEADER_HEADER: &str = "x-cellkv-leader";

/// Header in which a replica's admin (control) port names the leader's
/// control port (`host:port`): the hint to follow for `/admin/*` calls, see
/// [`CellClient::with_leader_header`].
pub const LEADER_CONTROL_HEADER: &str = "x-cellkv-leader-control";

/// The default back-off once every replica failed in a row.
pub const DEFAULT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(20), Duration::from_millis(500));

/// What may be sent again after an attempt whose outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Sending it twice does no harm (a read, a write of the same value, an
    /// admin call that sets a state): retry after any failure.
    Idempotent,
    /// Executed at most once: retry only attempts that provably did not
    /// execute (no connection, `not_leader`, a `503` before the cell
    /// proposed); a broken exchange or a `504` ends the call as
    /// [`CellCallError::Unknown`].
    AtMostOnce,
}

/// Why a call got no answer to act on.
#[derive(Debug, thiserror::Error)]
pub enum CellCallError {
    /// No replica answered before the deadline with anything but "try
    /// elsewhere"; `last` is the last failure seen.
    #[error("no leader answered within {within:?}: {last}")]
    Unavailable { within: Duration, last: String },
    /// An [`Retry::AtMostOnce`] request may or may not have executed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// The answer to a call, and the replica that gave it.
#[derive(Clone, Debug)]
pub struct Answered {
    pub resp: Resp,
    /// Base URL (`http://host:port`) of the replica that answered.
    pub url: String,
}

/// A client of one cell. Clones share the leader it believes in.
#[derive(Clone)]
pub struct CellClient {
    http: Client,
    /// Base URLs of the replicas' APIs, `http://host:port`.
    urls: Arc<[String]>,
    auth: String,
    /// Index into `urls` of the replica to try first.
    leader: Arc<AtomicUsize>,
    backoff: Backoff,
    /// The header whose `host:port` names the leader among `urls`.
    leader_header: &'static str,
}

impl CellClient {
    /// A client of the replicas at `urls` (`http://host:port` or `host:port`),
    /// sending `Authorization: <auth>` (e.g. `Bearer <token>`).
    pub fn new(http: Client, urls: &[String], auth: impl Into<String>) -> CellClient {
        assert!(!urls.is_empty(), "a cell has at least one replica");
        CellClient {
            http,
            urls: urls.iter().map(|u| base_url(u)).collect(),
            auth: auth.into(),
            leader: Arc::new(AtomicUsize::new(0)),
            backoff: DEFAULT_BACKOFF,
            leader_header: LEADER_HEADER,
        }
    }

    /// The same client following the leader named by header `name` (e.g.
    /// [`LEADER_CONTROL_HEADER`] when `urls` are the replicas' control
    /// ports) instead of [`LEADER_HEADER`]. Without that header a hint is
    /// still read from the error body's API address, which only helps when
    /// `urls` are API addresses.
    pub fn with_leader_header(mut self, name: &'static str) -> CellClient {
        self.leader_header = name;
        self
    }

    /// The same client with another back-off policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> CellClient {
        self.backoff = backoff;
        self
    }

    /// The replicas' base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The base URL of the replica believed to lead.
    pub fn leader_url(&self) -> &str {
        &self.urls[self.leader.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// Sends `method path` (with `headers` and `body`) to the leader and
    /// returns the first answer that is not "try elsewhere": any 2xx, and any
    /// other status the cell decided on (a 404, a 412, a 413 …), which the
    /// caller interprets. Retries as `retry` allows until `within` passes.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        retry: Retry,
        within: Duration,
    ) -> Result<Answered, CellCallError> {
        let deadline = Instant::now() + within;
        let mut hdrs: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        hdrs.push(("authorization", self.auth.as_str()));
        hdrs.extend_from_slice(headers);
        let mut backoff = self.backoff;
        let mut at = self.leader.load(Ordering::Relaxed) % self.urls.len();
        let mut failed_in_a_row = 0usize;
        let mut last = String::from("no attempt");
        loop {
            if Instant::now() >= deadline {
                return Err(CellCallError::Unavailable { within, last });
            }
            let url = &self.urls[at];
            let full = format!("{url}{path}");
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = tokio::time::timeout(
                left,
                self.http
                    .request(method.clone(), &full, &hdrs, body.clone()),
            )
            .await;
            let next = match sent {
                Err(_) => {
                    last = format!("{method} {full}: no answer within the deadline");
                    if retry == Retry::AtMostOnce {
                        return Err(CellCallError::Unknown(last));
                    }
                    Next::Elsewhere
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    if retry == Retry::AtMostOnce && !not_sent(&e) {
                        return Err(CellCallError::Unknown(last));
                    }
                    Next::Elsewhere
                }
                Ok(Ok(resp)) => match classify(&resp, retry, self.leader_header) {
                    Verdict::Answer => {
                        self.leader.store(at, Ordering::Relaxed);
                        return Ok(Answered {
                            resp,
                            url: url.clone(),
                        });
                    }
                    Verdict::Unknown => {
                        return Err(CellCallError::Unknown(format!(
                            "{method} {full} answered {}",
                            resp.describe()
                        )))
                    }
                    Verdict::FollowHint(hint) => {
                        last = format!("{url}: {}", resp.describe());
                        match self.index_of(&hint).filter(|&i| i != at) {
                            Some(i) => Next::Go(i),
                            None => Next::Elsewhere,
                        }
                    }
                    Verdict::Elsewhere => {
                        last = format!("{url}: {}", resp.describe());
                        Next::Elsewhere
                    }
                },
            };
            match next {
                Next::Go(i) => {
                    // A hint is progress: the leader is known, ask it now.
                    at = i;
                    self.leader.store(i, Ordering::Relaxed);
                }
                Next::Elsewhere => {
                    at = (at + 1) % self.urls.len();
                    failed_in_a_row += 1;
                    if failed_in_a_row.is_multiple_of(self.urls.len()) {
                        tokio::time::sleep(backoff.next_delay_within(deadline)).await;
                    }
                }
            }
        }
    }

    fn index_of(&self, addr: &str) -> Option<usize> {
        let want = base_url(addr);
        self.urls.iter().position(|u| *u == want)
    }
}

enum Next {
    Go(usize),
    Elsewhere,
}

/// What an answer means for the call.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The cell decided: hand it to the caller.
    Answer,
    /// Not the leader, and it names one (`host:port`).
    FollowHint(String),
    /// This replica cannot serve it now; nothing was executed.
    Elsewhere,
    /// The cell may have executed it and then failed to say so.
    Unknown,
}

/// `leader_header` names the header carrying a `not_leader` hint.
fn classify(resp: &Resp, retry: Retry, leader_header: &str) -> Verdict {
    let body: Option<ErrorBody> = if resp.is_success() {
        None
    } else {
        serde_json::from_slice(&resp.body).ok()
    };
    let code = body.as_ref().map(|b| b.error.code);
    match (resp.status, code) {
        // A 421 with another code (`moved`) is the cell's decision.
        (421, None) | (_, Some(ErrorCode::NotLeader)) => {
            let hint = resp.header(leader_header).map(str::to_owned).or_else(|| {
                body.and_then(|b| b.error.leader)
                    .map(|l| l.api_addr.to_string())
            });
            hint.map_or(Verdict::Elsewhere, Verdict::FollowHint)
        }
        (
            503,
            None | Some(ErrorCode::NoLeader | ErrorCode::ShuttingDown | ErrorCode::CellUnavailable),
        ) => Verdict::Elsewhere,
        (504, _) | (_, Some(ErrorCode::Timeout)) => match retry {
            Retry::Idempotent => Verdict::Elsewhere,
            Retry::AtMostOnce => Verdict::Unknown,
        },
        _ => Verdict::Answer,
    }
}

/// Whether a failed attempt provably never reached the replica.
fn not_sent(e: &HttpError) -> bool {
    matches!(
        e,
        HttpError::Connect { .. } | HttpError::InvalidRequest { .. }
    )
}

/// `http://host:port` without a trailing slash, from either form.
fn base_url(u: &str) -> String {
    let u = u.trim_end_matches('/');
    if u.starts_with("http://") || u.starts_with("https://") {
        u.to_owned()
    } else {
        format!("http://{u}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str, leader: Option<&str>) -> Resp {
        let mut headers = http::HeaderMap::new();
        if let Some(l) = leader {
            headers.insert(LEADER_HEADER, l.parse().unwrap());
        }
        Resp {
            status,
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn err(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#)
    }

    #[test]
    fn not_leader_is_followed_to_the_named_leader() {
        let r = resp(421, &err("not_leader"), Some("127.0.0.1:7002"));
        assert_eq!(
            classify(&r, Retry::AtMostOnce, LEADER_HEADER),
            Verdict::FollowHint("127.0.0.1:7002".into())
        );
        let r = resp(421, &err("not_leader"), None);
        assert_eq!(
            classify(&r, Retry::AtMostOnce, LEADER_HEADER),
            Verdict::Elsewhere
        );
        // The body's hint is the leader's API address.
        let body = r#"{"error":{"code":"not_leader","message":"m","leader":{"node_id":2,"api_addr":"h:2"}}}"#;
        let r = resp(421, body, None);
        assert_eq!(
            classify(&r, Retry::Idempotent, LEADER_HEADER),
            Verdict::FollowHint("h:2".into())
        );
    }

    #[test]
    fn a_control_port_client_follows_the_control_header() {
        let mut r = resp(421, &err("not_leader"), Some("h:7002"));
        r.headers
            .insert(LEADER_CONTROL_HEADER, "h:7102".parse().unwrap());
        assert_eq!(
            classify(&r, Retry::Idempotent, LEADER_CONTROL_HEADER),
            Verdict::FollowHint("h:7102".into())
        );
    }

    #[test]
    fn moved_is_the_cells_decision_not_a_leader_hint() {
        let r = resp(421, &err("moved"), None);
        assert_eq!(
            classify(&r, Retry::Idempotent, LEADER_HEADER),
            Verdict::Answer
        );
    }

    #[test]
    fn only_idempotent_requests_retry_a_timeout() {
        let r = resp(504, &err("timeout"), None);
        assert_eq!(
            classify(&r, Retry::Idempotent, LEADER_HEADER),
            Verdict::Elsewhere
        );
        assert_eq!(
            classify(&r, Retry::AtMostOnce, LEADER_HEADER),
            Verdict::Unknown
        );
    }

    #[test]
    fn the_cells_decisions_go_to_the_caller() {
        for (status, code) in [
            (200, None),
            (404, Some("not_found")),
            (412, Some("precondition_failed")),
            (413, Some("payload_too_large")),
            (500, Some("internal")),
        ] {
            let body = code.map(err).unwrap_or_default();
            assert_eq!(
                classify(&resp(status, &body, None), Retry::AtMostOnce, LEADER_HEADER),
                Verdict::Answer,
                "{status}"
            );
        }
        for code in ["no_leader", "shutting_down", "cell_unavailable"] {
            assert_eq!(
                classify(
                    &resp(503, &err(code), None),
                    Retry::AtMostOnce,
                    LEADER_HEADER
                ),
                Verdict::Elsewhere,
                "{code}"
            );
        }
    }

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(base_url("127.0.0.1:1/"), "http://127.0.0.1:1");
        assert_eq!(base_url("http://h:2"), "http://h:2");
    }

    /// A cell of three loopback "replicas": the first refuses connections,
    /// the second says the third leads, the third answers. The call lands on
    /// the third, and the client remembers it.
    #[tokio::test]
    async fn finds_the_leader_through_a_dead_replica_and_a_hint() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let follower = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let leader = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let leader_addr = leader.local_addr().unwrap().to_string();
        let serve = |l: tokio::net::TcpListener, answer: String| {
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(answer.as_bytes()).await;
                    });
                }
            })
        };
        let body = err("not_leader");
        let hint = format!(
            "HTTP/1.1 421 Misdirected Request\r\ncontent-length: {}\r\n{LEADER_HEADER}: {leader_addr}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned();
        let follower_addr = follower.local_addr().unwrap().to_string();
        let _f = serve(follower, hint);
        let _l = serve(leader, ok);
        let c = CellClient::new(
            Client::new(crate::http::ClientConfig::default()),
            &[dead_addr, follower_addr, leader_addr.clone()],
            "Bearer t",
        );
        let a = c
            .call(
                Method::PUT,
                "/v1/x",
                &[],
                Bytes::from_static(b"v"),
                Retry::AtMostOnce,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(a.resp.status, 200);
        assert_eq!(a.url, format!("http://{leader_addr}"));
        assert_eq!(c.leader_url(), format!("http://{leader_addr}"));
    }
}
