//! A lean async HTTP/1.1 client for talking to cellkv processes: pooled
//! keep-alive connections (hyper-util's legacy `Client`, `TCP_NODELAY`), a
//! connect timeout and one deadline per request covering headers and body.
//! It knows nothing of cellkv's API beyond reading the `error.code` of a JSON
//! error body; URLs, tokens and retries are the caller's business.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

/// Tuning of a [`Client`]. `Default` suits tests and the local launcher.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline for establishing one TCP connection.
    pub connect_timeout: Duration,
    /// Deadline for one whole request: connect, send, response headers and body.
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept before it is closed. Keep
    /// it under the servers' idle limit (10 s by default): a request sent on
    /// a connection the server is closing fails, and a write's outcome is
    /// then unknown.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host; above this, finished connections are closed.
    /// A load generator with N concurrent workers per host wants at least N.
    pub pool_max_idle_per_host: usize,
    /// Largest response body read; larger ones fail with [`HttpError::TooLarge`]
    /// (a scan page is at most 64 MiB plus framing).
    pub max_response_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(5),
            pool_max_idle_per_host: 64,
            max_response_bytes: 80 << 20,
        }
    }
}

/// What went wrong with one request. A response with any status is *not* an
/// error: callers inspect [`Resp::status`].
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The method, URL or a header could not form a request; nothing was sent.
    #[error("invalid request {method} {url}: {message}")]
    InvalidRequest {
        method: Method,
        url: String,
        message: String,
    },
    /// No connection could be established (refused, unreachable, connect timeout).
    /// The request was not sent, so retrying it elsewhere is safe.
    #[error("connect for {method} {url}: {message}")]
    Connect {
        method: Method,
        url: String,
        message: String,
    },
    /// The whole request did not finish within its deadline; a write's outcome is unknown.
    #[error("{method} {url} timed out after {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    /// The connection failed after it was established (reset, closed early, bad
    /// HTTP); a write's outcome is unknown.
    #[error("{method} {url}: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
    },
    /// The response body exceeded [`ClientConfig::max_response_bytes`].
    #[error("{method} {url}: response body larger than {limit} bytes")]
    TooLarge {
        method: Method,
        url: String,
        limit: usize,
    },
    /// A body expected to be JSON did not decode.
    #[error("decode JSON body (status {status}): {message}")]
    Json { status: u16, message: String },
}

impl HttpError {
    /// True when the request never reached the server (safe to retry anywhere).
    pub fn is_connect(&self) -> bool {
        matches!(self, HttpError::Connect { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Timeout { .. })
    }
}

/// A complete response: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The value of header `name` if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as (lossy) UTF-8, for messages and assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Decodes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Json {
            status: self.status,
            message: format!("{e}; body starts {:?}", self.text_prefix(200)),
        })
    }

    /// `error.code` of a cellkv JSON error body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.get("code")?.as_str().map(str::to_owned)
    }

    /// `status code: message` of a cellkv error answer, else `status` and the
    /// start of the body: one line for error messages.
    pub fn describe(&self) -> String {
        let v: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let err = v.as_ref().and_then(|v| v.get("error"));
        match (
            err.and_then(|e| e.get("code")?.as_str()),
            err.and_then(|e| e.get("message")?.as_str()),
        ) {
            (Some(code), Some(message)) => format!("{} {code}: {message}", self.status),
            _ => format!("{} {}", self.status, self.text_prefix(200)),
        }
    }

    fn text_prefix(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(n)]).into_owned()
    }
}

/// A request body: either one buffer sent with `Content-Length`, or a sequence
/// of chunks sent with `Transfer-Encoding: chunked` (no length up front).
#[derive(Debug)]
pub struct ReqBody {
    chunks: VecDeque<Bytes>,
    /// `Some(len)` for a sized body, `None` for a chunked one.
    exact_len: Option<u64>,
}

impl ReqBody {
    fn sized(b: Bytes) -> ReqBody {
        let exact_len = Some(b.len() as u64);
        let chunks = if b.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([b])
        };
        ReqBody { chunks, exact_len }
    }

    fn chunked(chunks: Vec<Bytes>) -> ReqBody {
        ReqBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            exact_len: None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            // Unknown length: hyper sends the body chunked.
            None => SizeHint::default(),
        }
    }
}

/// A cheaply clonable HTTP/1.1 client; clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    inner: PooledClient<HttpConnector, ReqBody>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl Client {
    /// Builds a client. Building needs no runtime; requests must run inside a
    /// tokio runtime (the pool spawns its connection tasks there).
    pub fn new(cfg: ClientConfig) -> Client {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        let inner = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            // Without a timer the idle timeout is silently not enforced.
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(conn);
        Client {
            inner,
            request_timeout: cfg.request_timeout,
            max_response_bytes: cfg.max_response_bytes,
        }
    }

    /// The same pool with another per-request deadline.
    pub fn with_timeout(&self, request_timeout: Duration) -> Client {
        Client {
            request_timeout,
            ..self.clone()
        }
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends one request with a sized body and reads the whole response.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, HttpError> {
        self.send(method, url, headers, ReqBody::sized(body.into()))
            .await
    }

    /// Sends one request whose body goes out with `Transfer-Encoding: chunked`.
    pub async fn request_chunked(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        chunks: Vec<Bytes>,
    ) -> Result<Resp, HttpError> {
        self.send(method, url, headers, ReqBody::chunked(chunks))
            .await
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp, HttpError> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn head(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp, HttpError> {
        self.request(Method::HEAD, url, headers, Bytes::new()).await
    }

    pub async fn put(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, HttpError> {
        self.request(Method::PUT, url, headers, body).await
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, HttpError> {
        self.request(Method::POST, url, headers, body).await
    }

    pub async fn delete(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp, HttpError> {
        self.request(Method::DELETE, url, headers, Bytes::new())
            .await
    }

    /// `GET url` and decode the body as JSON whatever the status (cellkv
    /// answers `/health` with the same JSON on 200 and 503).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, T), HttpError> {
        let resp = self.get(url, headers).await?;
        let v = resp.json()?;
        Ok((resp.status, v))
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<Resp, HttpError> {
        let req = build_request(&method, url, headers, body)?;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                let message = error_chain(&e);
                if e.is_connect() {
                    HttpError::Connect {
                        method: method.clone(),
                        url: url.to_owned(),
                        message,
                    }
                } else {
                    HttpError::Transport {
                        method: method.clone(),
                        url: url.to_owned(),
                        message,
                    }
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        HttpError::TooLarge {
                            method: method.clone(),
                            url: url.to_owned(),
                            limit: self.max_response_bytes,
                        }
                    } else {
                        HttpError::Transport {
                            method: method.clone(),
                            url: url.to_owned(),
                            message: format!("read response body: {}", error_chain(&*e)),
                        }
                    }
                })?
                .to_bytes();
            Ok(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout {
                method,
                url: url.to_owned(),
                timeout: self.request_timeout,
            }),
        }
    }
}

fn build_request(
    method: &Method,
    url: &str,
    headers: &[(&str, &str)],
    body: ReqBody,
) -> Result<Request<ReqBody>, HttpError> {
    let invalid = |message: String| HttpError::InvalidRequest {
        method: method.clone(),
        url: url.to_owned(),
        message,
    };
    let uri: Uri = url.parse().map_err(|e| invalid(format!("URL: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    let map = req.headers_mut();
    map.reserve(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| invalid(format!("header {name} value: {e}")))?;
        map.append(name, value);
    }
    Ok(req)
}

/// `e` and its sources, joined: hyper's top-level messages alone ("client
/// error (Connect)") do not say what happened.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests_and_refuses_bad_input() {
        let req = build_request(
            &Method::PUT,
            "http://127.0.0.1:1/v1/buckets/b/objects/k",
            &[("authorization", "Bearer x"), ("If-Match", "\"e\"")],
            ReqBody::sized(Bytes::from_static(b"abc")),
        )
        .unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(req.headers()["if-match"], "\"e\"");
        assert_eq!(req.body().size_hint().exact(), Some(3));
        assert!(
            build_request(&Method::GET, "not a url", &[], ReqBody::sized(Bytes::new())).is_err()
        );
        assert!(build_request(
            &Method::GET,
            "http://h/",
            &[("bad header", "v")],
            ReqBody::sized(Bytes::new())
        )
        .is_err());
        let chunked = ReqBody::chunked(vec![Bytes::from_static(b"a"), Bytes::new()]);
        assert_eq!(chunked.size_hint().exact(), None);
        assert_eq!(chunked.chunks.len(), 1);
        assert!(ReqBody::sized(Bytes::new()).is_end_stream());
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = Client::default()
            .get(&format!("http://127.0.0.1:{port}/health"), &[])
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err}");
    }

    /// Serves one canned response on a raw socket and returns the request bytes.
    async fn one_shot_server(response: &'static str) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the end of a chunked body or of headers + a sized body.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_lowercase();
                if n == 0 || text.ends_with("0\r\n\r\n") || text.ends_with("\r\n\r\nabc") {
                    break;
                }
            }
            s.write_all(response.as_bytes()).await.unwrap();
            got
        });
        (url, task)
    }

    #[tokio::test]
    async fn sends_sized_and_chunked_bodies_and_reads_responses() {
        let (url, task) = one_shot_server(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n{\"error\":{\"code\":\"nope\"}}",
        )
        .await;
        let resp = Client::default()
            .put(&format!("{url}/x"), &[("x-a", "1")], &b"abc"[..])
            .await
            .unwrap();
        let req = String::from_utf8(task.await.unwrap())
            .unwrap()
            .to_lowercase();
        assert!(req.starts_with("put /x http/1.1\r\n"), "{req}");
        assert!(req.contains("content-length: 3\r\n"), "{req}");
        assert!(req.contains("x-a: 1\r\n"), "{req}");
        assert_eq!(resp.status, 404);
        assert!(!resp.is_success());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.error_code().as_deref(), Some("nope"));
        assert_eq!(resp.describe(), r#"404 {"error":{"code":"nope"}}"#);

        let (url, task) = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let resp = Client::default()
            .request_chunked(
                Method::PUT,
                &format!("{url}/y"),
                &[],
                vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
            )
            .await
            .unwrap();
        let req = String::from_utf8(task.await.unwrap())
            .unwrap()
            .to_lowercase();
        assert!(req.contains("transfer-encoding: chunked\r\n"), "{req}");
        assert!(!req.contains("content-length"), "{req}");
        assert_eq!((resp.status, &resp.body[..]), (200, &b"ok"[..]));
        let err = Resp {
            status: 503,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"error":{"code":"no_leader","message":"m"}}"#),
        };
        assert_eq!(err.describe(), "503 no_leader: m");
    }

    #[tokio::test]
    async fn times_out_whole_requests() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", l.local_addr().unwrap());
        // Accept and never answer.
        let _hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let client = Client::default().with_timeout(Duration::from_millis(200));
        let err = client.get(&url, &[]).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
}
