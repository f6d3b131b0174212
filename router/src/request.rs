//! The messages the router exchanges with a cell: `CellRequest` (an operation,
//! its path and forwarded headers, a buffered body) and `CellResponse`, plus
//! `Op`, the bounded operation label of every request and metric.

use bytes::Bytes;
use common::NodeId;
use http::{HeaderMap, Method, StatusCode};

/// Public API operations (metric `op` label; decides what may be retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    Head,
    Delete,
    List,
    Healthz,
    Readyz,
    Metrics,
    Other,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Healthz => "healthz",
            Op::Readyz => "readyz",
            Op::Metrics => "metrics",
            Op::Other => "other",
        }
    }

    /// Reads may be retried on another replica whatever happened to an
    /// earlier attempt; writes only when the cell provably did not execute them.
    pub fn is_read(self) -> bool {
        matches!(self, Op::Get | Op::Head | Op::List)
    }

    /// The operation of a public request, from its method and path.
    pub fn of(method: &Method, path: &str) -> Op {
        if let Some(rest) = path.strip_prefix("/v1/buckets/") {
            let is_list = match rest.split_once('/') {
                Some((_, tail)) => tail == "objects" || tail == "objects/",
                None => false,
            };
            return match (method, is_list) {
                (&Method::GET, true) => Op::List,
                (&Method::GET, false) => Op::Get,
                (&Method::HEAD, false) => Op::Head,
                (&Method::PUT, false) => Op::Put,
                (&Method::DELETE, false) => Op::Delete,
                _ => Op::Other,
            };
        }
        match path {
            "/healthz" => Op::Healthz,
            "/readyz" => Op::Readyz,
            "/metrics" => Op::Metrics,
            _ => Op::Other,
        }
    }
}

/// One request to a cell; cheap to resend (the body is shared `Bytes`).
#[derive(Clone, Debug)]
pub struct CellRequest {
    pub op: Op,
    pub method: Method,
    /// Path and query on the cell API, already percent-encoded.
    pub path_and_query: String,
    /// Headers forwarded as they are (conditions, content type); the router
    /// adds its own `Authorization`.
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A cell's answer, body fully read.
#[derive(Debug)]
pub struct CellResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The replica that answered.
    pub node: NodeId,
}

/// Percent-encodes `s` for a URL path segment or query value: everything but
/// RFC 3986 unreserved characters is escaped (and `/` too when `keep_slash` is false).
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_from_method_and_path() {
        let cases = [
            (Method::GET, "/v1/buckets/b/objects", Op::List),
            (Method::GET, "/v1/buckets/b/objects/", Op::List),
            (Method::GET, "/v1/buckets/b/objects/k", Op::Get),
            (Method::GET, "/v1/buckets/b/objects/objects", Op::Get),
            (Method::HEAD, "/v1/buckets/b/objects/k/x", Op::Head),
            (Method::PUT, "/v1/buckets/b/objects/k", Op::Put),
            (Method::DELETE, "/v1/buckets/b/objects/k", Op::Delete),
            (Method::POST, "/v1/buckets/b/objects/k", Op::Other),
            (Method::GET, "/healthz", Op::Healthz),
            (Method::GET, "/readyz", Op::Readyz),
            (Method::GET, "/metrics", Op::Metrics),
            (Method::GET, "/nope", Op::Other),
        ];
        for (m, p, op) in cases {
            assert_eq!(Op::of(&m, p), op, "{m} {p}");
        }
        assert!(Op::Get.is_read() && Op::Head.is_read() && Op::List.is_read());
        assert!(!Op::Put.is_read() && !Op::Delete.is_read());
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("a-b_c.d~e", false), "a-b_c.d~e");
        assert_eq!(percent_encode("a/b c", false), "a%2Fb%20c");
        assert_eq!(percent_encode("a/b c", true), "a/b%20c");
        assert_eq!(percent_encode("é&=?#%+", false), "%C3%A9%26%3D%3F%23%25%2B");
        assert_eq!(percent_encode("", false), "");
    }
}
