//! The messages the router exchanges with a cell: `CellRequest` (an operation,
//! its path and forwarded headers, a buffered body) and `CellResponse`, plus
//! `Op`, the bounded operation label of every request and metric.

use bytes::Bytes;
use common::{CellId, ErrorBody, ErrorCode, ErrorDetail, MovedHint, NodeId};
use http::{HeaderMap, Method, StatusCode};

use crate::error::{HEADER_ERROR_CODE, HEADER_MOVED_OWNER};

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

impl CellResponse {
    /// The cell's JSON error detail, if the body is one (HEAD answers have no body).
    pub fn error_detail(&self) -> Option<ErrorDetail> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return None;
        }
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .map(|b| b.error)
    }

    /// The error code of an error answer: from the JSON body, else from the
    /// `X-Cellkv-Error-Code` header (the only place a HEAD answer can carry it).
    pub fn error_code(&self) -> Option<ErrorCode> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return None;
        }
        if let Some(d) = self.error_detail() {
            return Some(d.code);
        }
        let v = self.headers.get(HEADER_ERROR_CODE)?.to_str().ok()?;
        serde_json::from_value(serde_json::Value::String(v.to_string())).ok()
    }

    /// Where a `moved` answer says the range went: from the JSON body, else
    /// from the `X-Cellkv-Moved-Owner` header (HEAD answers; epoch unknown: 0).
    pub fn moved_hint(&self) -> Option<MovedHint> {
        if let Some(d) = self.error_detail() {
            return d.moved;
        }
        let owner = self
            .headers
            .get(HEADER_MOVED_OWNER)?
            .to_str()
            .ok()?
            .parse()
            .ok()
            .map(CellId);
        Some(MovedHint { owner, epoch: 0 })
    }
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

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> CellResponse {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        CellResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::from(body.to_string()),
            node: NodeId(1),
        }
    }

    #[test]
    fn error_code_from_body_or_header() {
        let moved = r#"{"error":{"code":"moved","message":"m","cell":1,"leader":null,"moved":{"owner":3,"epoch":9}}}"#;
        let r = resp(421, &[], moved);
        assert_eq!(r.error_code(), Some(ErrorCode::Moved));
        let hint = r.error_detail().unwrap().moved.unwrap();
        assert_eq!((hint.owner, hint.epoch), (Some(common::CellId(3)), 9));
        let nl = r#"{"error":{"code":"not_leader","message":"m","cell":1,"leader":null}}"#;
        assert_eq!(resp(421, &[], nl).error_code(), Some(ErrorCode::NotLeader));
        // HEAD: no body, the headers name the code and the owner.
        let r = resp(503, &[("x-cellkv-error-code", "range_moving")], "");
        assert_eq!(r.error_code(), Some(ErrorCode::RangeMoving));
        let r = resp(
            421,
            &[
                ("x-cellkv-error-code", "moved"),
                ("x-cellkv-moved-owner", "4"),
            ],
            "",
        );
        assert_eq!(r.error_code(), Some(ErrorCode::Moved));
        assert_eq!(
            r.moved_hint().and_then(|h| h.owner),
            Some(common::CellId(4))
        );
        assert_eq!(resp(421, &[], "").error_code(), None);
        assert_eq!(
            resp(421, &[("x-cellkv-error-code", "bogus")], "").error_code(),
            None
        );
        // Success answers have no error code, whatever their body.
        assert_eq!(resp(200, &[], moved).error_code(), None);
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
