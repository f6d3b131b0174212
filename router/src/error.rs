//! Errors at the router's two edges. `RouteError`: why a request could not be
//! carried to (or back from) a cell. `ApiError`: the one public error type,
//! with the one mapping to an HTTP status, a stable `code` and the JSON body
//! `{"error": {"code", "message", "cell"}}`; cell error bodies are mapped
//! into it too, so no internal code (`not_leader`, ...) reaches clients.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{CellId, ErrorBody, ErrorCode};
use serde::Serialize;

use crate::auth::{AuthError, Denied};
use crate::rate_limit::retry_after_secs;

/// Names the cell that served (or refused) a response.
pub const HEADER_CELL: &str = "x-cellkv-cell";
/// On a cell's 421: the leader's `api_addr`.
pub const HEADER_LEADER: &str = "x-cellkv-leader";
/// The object version (the cell's Raft log index of the write).
pub const HEADER_VERSION: &str = "x-cellkv-version";
/// On every router response: the epoch of the cell map that routed it.
pub const HEADER_EPOCH: &str = "x-cellkv-epoch";
/// On a cell's error answer: its error code (read when there is no JSON
/// body, as in answers to HEAD).
pub const HEADER_ERROR_CODE: &str = "x-cellkv-error-code";
/// On a cell's `moved` answer: the new owner's cell id, when known (read
/// when there is no JSON body).
pub const HEADER_MOVED_OWNER: &str = "x-cellkv-moved-owner";

/// Why a request could not be carried to a cell and back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("cell {cell} is isolated by the operator; its keys are unavailable")]
    Isolated { cell: CellId },
    #[error("cell {cell} is failing (circuit breaker open); retry later")]
    BreakerOpen { cell: CellId, retry_after: Duration },
    #[error("cell {cell} is recovering and a probe request is already in flight; retry later")]
    ProbeInFlight { cell: CellId },
    #[error("cell {cell} has too many requests waiting")]
    QueueFull { cell: CellId },
    #[error("no slot to cell {cell} freed up in time")]
    QueueTimeout { cell: CellId },
    #[error("the router is at its limit of requests in flight")]
    Overloaded { cell: CellId },
    /// Nothing was executed (every attempt was refused before execution).
    #[error("cell {cell} is unavailable: {reason}")]
    Unavailable { cell: CellId, reason: String },
    #[error("cell {cell} did not answer before the deadline{}", if *.write { "; the write's outcome is unknown" } else { "" })]
    Timeout { cell: CellId, write: bool },
    #[error("the connection to cell {cell} failed after the write was sent; the write's outcome is unknown")]
    OutcomeUnknown { cell: CellId },
    #[error("cell {cell} refused the router's credentials (check cell_api_token)")]
    CellAuth { cell: CellId },
    #[error("cell {cell} sent an unusable response: {reason}")]
    BadResponse { cell: CellId, reason: String },
    /// The key's range was being handed between cells for the whole
    /// deadline; nothing was executed.
    #[error("the key's range is moving between cells (last asked: cell {cell}); retry shortly")]
    RangeMoving { cell: CellId },
    /// `moved` answers did not lead to an owner in time; nothing was executed.
    #[error("cell {cell} no longer owns the key's range and no owner was found: {reason}")]
    Moved { cell: CellId, reason: String },
}

impl RouteError {
    pub fn cell(&self) -> CellId {
        match self {
            RouteError::Isolated { cell }
            | RouteError::BreakerOpen { cell, .. }
            | RouteError::ProbeInFlight { cell }
            | RouteError::QueueFull { cell }
            | RouteError::QueueTimeout { cell }
            | RouteError::Overloaded { cell }
            | RouteError::Unavailable { cell, .. }
            | RouteError::Timeout { cell, .. }
            | RouteError::OutcomeUnknown { cell }
            | RouteError::CellAuth { cell }
            | RouteError::BadResponse { cell, .. }
            | RouteError::RangeMoving { cell }
            | RouteError::Moved { cell, .. } => *cell,
        }
    }

    /// The `reason` label when the request was refused without network I/O.
    pub fn fast_fail_reason(&self) -> Option<&'static str> {
        Some(match self {
            RouteError::Isolated { .. } => "isolated",
            RouteError::BreakerOpen { .. } => "breaker_open",
            RouteError::ProbeInFlight { .. } => "half_open",
            RouteError::QueueFull { .. } => "queue_full",
            RouteError::QueueTimeout { .. } => "queue_timeout",
            RouteError::Overloaded { .. } => "global_limit",
            _ => return None,
        })
    }

    /// Whether the cell itself is to blame (feeds its circuit breaker).
    pub fn is_cell_failure(&self) -> bool {
        matches!(
            self,
            RouteError::Unavailable { .. }
                | RouteError::Timeout { .. }
                | RouteError::OutcomeUnknown { .. }
                | RouteError::BadResponse { .. }
        )
    }
}

/// The public error: status, stable code, message and the cell it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub cell: Option<CellId>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Listing only: the cells that could not be asked.
    pub missing_cells: Vec<CellId>,
    /// Add `WWW-Authenticate: Bearer` (401 only).
    pub challenge: bool,
}

impl ApiError {
    /// An error with the status `common::ErrorCode` assigns to `code`
    /// (and `Retry-After: 1` on 503).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: message.into(),
            cell: None,
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
            missing_cells: Vec::new(),
            challenge: false,
        }
    }

    pub fn with_cell(mut self, cell: CellId) -> ApiError {
        self.cell = Some(cell);
        self
    }

    pub fn rate_limited(wait: Duration) -> ApiError {
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            "rate limit exceeded for this token; retry later",
        );
        e.retry_after = Some(retry_after_secs(wait));
        e
    }

    /// Maps a cell's error answer (status >= 400) to the public error.
    /// Codes that only make sense between router and cell become
    /// `cell_unavailable`; a body that is not the cell's JSON falls back to the status.
    pub fn from_cell(cell: CellId, status: StatusCode, body: &[u8]) -> ApiError {
        let parsed = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error);
        let code = match parsed.as_ref().map(|d| d.code) {
            Some(code) => code,
            None => code_for_status(status),
        };
        let message = parsed
            .map(|d| d.message)
            .unwrap_or_else(|| format!("cell answered {status}"));
        let e = match code {
            ErrorCode::BadRequest
            | ErrorCode::NotFound
            | ErrorCode::PreconditionFailed
            | ErrorCode::InvalidBucket
            | ErrorCode::InvalidKey
            | ErrorCode::PayloadTooLarge
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Timeout
            | ErrorCode::StorageError
            | ErrorCode::Internal => ApiError::new(code, message),
            ErrorCode::Unauthorized | ErrorCode::Forbidden => ApiError::new(
                ErrorCode::CellUnavailable,
                RouteError::CellAuth { cell }.to_string(),
            ),
            ErrorCode::RateLimited
            | ErrorCode::CellUnavailable
            | ErrorCode::NotLeader
            | ErrorCode::NoLeader
            | ErrorCode::ShuttingDown
            | ErrorCode::AlreadyInitialized
            | ErrorCode::Moved
            | ErrorCode::RangeMoving
            // The router sends a body it holds whole: a cell timing out on it
            // is the cell's trouble, not the client's (and nothing was executed).
            | ErrorCode::RequestTimeout => ApiError::new(
                ErrorCode::CellUnavailable,
                format!("cell {cell} is unavailable: {message}"),
            ),
        };
        e.with_cell(cell)
    }
}

/// The code of a cell answer whose body is not a cellkv error (e.g. a HEAD).
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        412 => ErrorCode::PreconditionFailed,
        413 => ErrorCode::PayloadTooLarge,
        421 => ErrorCode::NotLeader,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::CellUnavailable,
        504 => ErrorCode::Timeout,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let cell = e.cell();
        let mut api = match &e {
            RouteError::Timeout { .. } => ApiError::new(ErrorCode::Timeout, e.to_string()),
            RouteError::BadResponse { .. } => ApiError::new(ErrorCode::Internal, e.to_string()),
            RouteError::RangeMoving { .. } => ApiError::new(ErrorCode::RangeMoving, e.to_string()),
            RouteError::OutcomeUnknown { .. } => {
                // Not 503: a client must not read this as "retry, nothing happened".
                let mut api = ApiError::new(ErrorCode::CellUnavailable, e.to_string());
                api.status = StatusCode::BAD_GATEWAY;
                api.retry_after = None;
                api
            }
            _ => ApiError::new(ErrorCode::CellUnavailable, e.to_string()),
        };
        if let RouteError::BreakerOpen { retry_after, .. } = e {
            api.retry_after = Some(retry_after_secs(retry_after));
        }
        api.with_cell(cell)
    }
}

impl From<common::names::NameError> for ApiError {
    fn from(e: common::names::NameError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let mut api = ApiError::new(ErrorCode::Unauthorized, e.to_string());
        api.challenge = true;
        api
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: ErrorCode,
    message: &'a str,
    cell: Option<CellId>,
    #[serde(skip_serializing_if = "<[CellId]>::is_empty")]
    missing_cells: &'a [CellId],
}

/// Which cell served a response: read by the metrics wrapper for its `cell` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedBy {
    Cell(CellId),
    AllCells,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson {
            error: ErrorFields {
                code: self.code,
                message: &self.message,
                cell: self.cell,
                missing_cells: &self.missing_cells,
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, json).into_response();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.challenge {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(cell) = self.cell {
            h.insert(HEADER_CELL, HeaderValue::from(cell.0));
            resp.extensions_mut().insert(ServedBy::Cell(cell));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use common::{ErrorDetail, LeaderHint, NodeId};
    use http_body_util::BodyExt;

    use super::*;

    fn cell_body(code: ErrorCode, msg: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code,
                message: msg.into(),
                cell: Some(CellId(9)),
                leader: Some(LeaderHint {
                    node_id: NodeId(2),
                    api_addr: "10.0.0.2:7000".into(),
                }),
                moved: None,
            },
        })
        .unwrap()
    }

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn route_errors_map_to_stable_codes() {
        let c = CellId(3);
        let cases: Vec<(RouteError, u16, ErrorCode, Option<u64>)> = vec![
            (
                RouteError::Isolated { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::BreakerOpen {
                    cell: c,
                    retry_after: Duration::from_millis(1500),
                },
                503,
                ErrorCode::CellUnavailable,
                Some(2),
            ),
            (
                RouteError::ProbeInFlight { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::QueueFull { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::QueueTimeout { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::Overloaded { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::Unavailable {
                    cell: c,
                    reason: "x".into(),
                },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::Timeout {
                    cell: c,
                    write: true,
                },
                504,
                ErrorCode::Timeout,
                None,
            ),
            (
                RouteError::OutcomeUnknown { cell: c },
                502,
                ErrorCode::CellUnavailable,
                None,
            ),
            (
                RouteError::CellAuth { cell: c },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
            (
                RouteError::BadResponse {
                    cell: c,
                    reason: "x".into(),
                },
                500,
                ErrorCode::Internal,
                None,
            ),
            (
                RouteError::RangeMoving { cell: c },
                503,
                ErrorCode::RangeMoving,
                Some(1),
            ),
            (
                RouteError::Moved {
                    cell: c,
                    reason: "x".into(),
                },
                503,
                ErrorCode::CellUnavailable,
                Some(1),
            ),
        ];
        for (route, status, code, retry) in cases {
            let fast = route.fast_fail_reason().is_some();
            let failure = route.is_cell_failure();
            assert!(
                !(fast && failure),
                "{route:?}: a fast-fail never blames the cell"
            );
            let api = ApiError::from(route.clone());
            assert_eq!(api.status.as_u16(), status, "{route:?}");
            assert_eq!(api.code, code, "{route:?}");
            assert_eq!(api.retry_after, retry, "{route:?}");
            assert_eq!(api.cell, Some(c));
        }
        assert!(RouteError::Timeout {
            cell: c,
            write: true
        }
        .to_string()
        .contains("outcome is unknown"));
        assert!(!RouteError::Timeout {
            cell: c,
            write: false
        }
        .to_string()
        .contains("outcome"));
        assert!(RouteError::OutcomeUnknown { cell: c }
            .to_string()
            .contains("outcome is unknown"));
    }

    #[test]
    fn cell_errors_map_without_leaking_internal_codes() {
        let c = CellId(9);
        let e = ApiError::from_cell(
            c,
            StatusCode::NOT_FOUND,
            &cell_body(ErrorCode::NotFound, "no object"),
        );
        assert_eq!(
            (e.status.as_u16(), e.code, e.message.as_str()),
            (404, ErrorCode::NotFound, "no object")
        );
        let e = ApiError::from_cell(
            c,
            StatusCode::PRECONDITION_FAILED,
            &cell_body(ErrorCode::PreconditionFailed, "p"),
        );
        assert_eq!(
            (e.status.as_u16(), e.code),
            (412, ErrorCode::PreconditionFailed)
        );
        let e = ApiError::from_cell(
            c,
            StatusCode::GATEWAY_TIMEOUT,
            &cell_body(ErrorCode::Timeout, "outcome unknown"),
        );
        assert_eq!((e.status.as_u16(), e.code), (504, ErrorCode::Timeout));
        let e = ApiError::from_cell(
            c,
            StatusCode::INTERNAL_SERVER_ERROR,
            &cell_body(ErrorCode::StorageError, "disk"),
        );
        assert_eq!((e.status.as_u16(), e.code), (500, ErrorCode::StorageError));
        for internal in [
            ErrorCode::NotLeader,
            ErrorCode::NoLeader,
            ErrorCode::ShuttingDown,
        ] {
            let e = ApiError::from_cell(
                c,
                StatusCode::SERVICE_UNAVAILABLE,
                &cell_body(internal, "x"),
            );
            assert_eq!(
                (e.status.as_u16(), e.code),
                (503, ErrorCode::CellUnavailable),
                "{internal:?}"
            );
        }
        let e = ApiError::from_cell(
            c,
            StatusCode::UNAUTHORIZED,
            &cell_body(ErrorCode::Unauthorized, "bad"),
        );
        assert_eq!(
            (e.status.as_u16(), e.code),
            (503, ErrorCode::CellUnavailable),
            "not the client's 401"
        );
        // HEAD answers have no body: the status decides.
        let e = ApiError::from_cell(c, StatusCode::NOT_FOUND, b"");
        assert_eq!((e.code, e.cell), (ErrorCode::NotFound, Some(c)));
        let e = ApiError::from_cell(c, StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!((e.status.as_u16(), e.code), (500, ErrorCode::Internal));
    }

    #[tokio::test]
    async fn error_body_and_headers() {
        let resp = ApiError::from(RouteError::BreakerOpen {
            cell: CellId(4),
            retry_after: Duration::from_secs(2),
        })
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()[HEADER_CELL], "4");
        assert_eq!(
            resp.extensions().get::<ServedBy>(),
            Some(&ServedBy::Cell(CellId(4)))
        );
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "cell_unavailable");
        assert_eq!(v["error"]["cell"], 4);
        assert!(v["error"].get("leader").is_none());
        assert!(v["error"].get("missing_cells").is_none());

        let resp = ApiError::from(AuthError::Missing).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert!(resp.headers().get(HEADER_CELL).is_none());
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "unauthorized");
        assert_eq!(v["error"]["cell"], serde_json::Value::Null);

        let resp = ApiError::rate_limited(Duration::from_millis(300)).into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "1");

        let mut e = ApiError::new(ErrorCode::CellUnavailable, "cells 2, 3 unavailable");
        e.missing_cells = vec![CellId(2), CellId(3)];
        let v = body_json(e.into_response()).await;
        assert_eq!(v["error"]["missing_cells"], serde_json::json!([2, 3]));
    }
}
