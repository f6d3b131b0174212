//! One pooled HTTP/1.1 client for every outbound call (control cell, data
//! cells, and cellkvctl → control server): TCP_NODELAY, connect and request
//! timeouts, bounded response bodies, and a transport error that says
//! whether the request could have reached the peer.

use std::time::Duration;

use bytes::Bytes;
use common::ErrorBody;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;

/// Largest response body read: a 64 MiB scan page plus framing.
pub const MAX_RESPONSE_BYTES: usize = 80 << 20;

#[derive(Debug, Error, Clone)]
pub enum TransportError {
    /// The connection could not be made: nothing was sent.
    #[error("connect to {addr}: {msg}")]
    Connect { addr: String, msg: String },
    /// Sent (or maybe sent), then the exchange broke: the outcome is unknown.
    #[error("request to {addr} failed: {msg}")]
    Broken { addr: String, msg: String },
    #[error("request to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("bad request to {addr}: {msg}")]
    Build { addr: String, msg: String },
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The JSON error body, if the response carries one.
    pub fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "undecodable JSON answer ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// `code: message` of an error answer, for messages.
    pub fn describe(&self) -> String {
        match self.error() {
            Some(b) => format!(
                "{} {}: {}",
                self.status.as_u16(),
                b.error.code.as_str(),
                b.error.message
            ),
            None => format!(
                "{} {}",
                self.status.as_u16(),
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ),
        }
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(connect_timeout: Duration) -> HttpClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_keepalive(Some(Duration::from_secs(30)));
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                // Under the servers' idle limit (`service::HEADER_READ_TIMEOUT`):
                // a request never goes out on a connection being closed.
                .pool_idle_timeout(Duration::from_secs(5))
                .build(conn),
        }
    }

    /// Sends one request to `addr` (`host:port`) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        headers: &[(http::header::HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let uri = format!("http://{addr}{path_and_query}");
        let mut b = Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        let req = b.body(Full::new(body)).map_err(|e| TransportError::Build {
            addr: addr.to_string(),
            msg: e.to_string(),
        })?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Connect {
                        addr: addr.to_string(),
                        msg: format!("{e:#}: {}", source_chain(&e)),
                    }
                } else {
                    TransportError::Broken {
                        addr: addr.to_string(),
                        msg: format!("{e}: {}", source_chain(&e)),
                    }
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| TransportError::Broken {
                    addr: addr.to_string(),
                    msg: format!("read response body: {e}"),
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_string(),
                after: timeout,
            }),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// `Authorization: Bearer <token>`, marked sensitive so it is never logged.
pub fn bearer(token: &str) -> (http::header::HeaderName, HeaderValue) {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
    v.set_sensitive(true);
    (http::header::AUTHORIZATION, v)
}

/// Percent-encodes a query parameter value.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("jobs/a b"), "jobs%2Fa%20b");
    }
}
