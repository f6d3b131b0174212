//! The stable error codes of every cellkv HTTP API and the JSON error body
//! `{"error": {"code", "message", "cell", ...}}` that carries them.

use serde::{Deserialize, Serialize};

use crate::ids::{CellId, NodeId};

/// Machine-readable error codes. Their serialized names are a public contract:
/// never rename one; add new ones instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    PreconditionFailed,
    InvalidBucket,
    InvalidKey,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    RateLimited,
    CellUnavailable,
    Timeout,
    /// This replica is not the leader; `leader` names the one to ask.
    NotLeader,
    /// The cell has no leader right now (election in progress or no quorum).
    NoLeader,
    ShuttingDown,
    StorageError,
    Internal,
    MethodNotAllowed,
    AlreadyInitialized,
    /// The cell does not own the key's range (any more): retry at `moved.owner`
    /// if given, else refresh the cell map. Never reaches router clients.
    Moved,
    /// The key's range is being handed to another cell this very moment:
    /// retry shortly (Retry-After). Writes only, except in the final sealed instant.
    RangeMoving,
    /// The client sent its request body too slowly (past the server's body
    /// read deadline). Nothing was executed.
    RequestTimeout,
}

impl ErrorCode {
    /// The HTTP status every API answers this code with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidBucket | ErrorCode::InvalidKey => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::AlreadyInitialized => 409,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::NotLeader | ErrorCode::Moved => 421,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal | ErrorCode::StorageError => 500,
            ErrorCode::CellUnavailable
            | ErrorCode::NoLeader
            | ErrorCode::ShuttingDown
            | ErrorCode::RangeMoving => 503,
            ErrorCode::Timeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::InvalidBucket => "invalid_bucket",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::CellUnavailable => "cell_unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::Internal => "internal",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyInitialized => "already_initialized",
            ErrorCode::Moved => "moved",
            ErrorCode::RangeMoving => "range_moving",
            ErrorCode::RequestTimeout => "request_timeout",
        }
    }
}

/// Where to find a cell's leader, carried by `not_leader` errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub node_id: NodeId,
    pub api_addr: String,
}

/// The `error` object of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub cell: Option<CellId>,
    #[serde(default)]
    pub leader: Option<LeaderHint>,
    /// Set on `moved` errors: who owns the range now, as of which epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<MovedHint>,
}

/// Where a range went, carried by `moved` errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedHint {
    /// The new owner, when the refusing cell knows it.
    pub owner: Option<CellId>,
    /// The ownership epoch of the refusing cell's record.
    pub epoch: u64,
}

/// The whole JSON body of an error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::PreconditionFailed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::NotLeader,
            ErrorCode::CellUnavailable,
            ErrorCode::RequestTimeout,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_body_shape() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::NotLeader,
                message: "ask node 2".into(),
                cell: Some(CellId(3)),
                leader: Some(LeaderHint {
                    node_id: NodeId(2),
                    api_addr: "127.0.0.1:1".into(),
                }),
                moved: None,
            },
        };
        let v: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_leader");
        assert_eq!(v["error"]["cell"], 3);
        assert_eq!(v["error"]["leader"]["node_id"], 2);
        assert_eq!(http_status_of(&body), 421);
        assert_eq!(ErrorCode::RequestTimeout.http_status(), 408);
    }

    fn http_status_of(b: &ErrorBody) -> u16 {
        b.error.code.http_status()
    }
}
