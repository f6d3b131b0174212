//! The Raft type configuration of a cell and the commands its log carries:
//! `Request` (one variant per write operation) and `Response`.

use std::fmt;

use common::wire::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A replica as the cell's membership records it: where its API and Raft RPC live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNode {
    pub api_addr: String,
    pub raft_addr: String,
}

impl fmt::Display for ReplicaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api={} raft={}", self.api_addr, self.raft_addr)
    }
}

/// Precondition of a write, checked against the object's current version when
/// the entry is applied (so it is atomic with the write).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    None,
    /// Only if no object exists (`If-None-Match: *`).
    IfAbsent,
    /// Only if the current object has this etag (`If-Match`).
    IfMatch(String),
}

/// One write operation of a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        content_type: Option<String>,
        condition: Condition,
        /// Wall-clock time chosen by the leader, so every replica stores the same value.
        modified_ms: u64,
    },
    Delete {
        bucket: String,
        key: String,
        condition: Condition,
    },
}

impl WriteOp {
    pub fn bucket_key(&self) -> (&str, &str) {
        match self {
            WriteOp::Put { bucket, key, .. } | WriteOp::Delete { bucket, key, .. } => (bucket, key),
        }
    }

    /// Approximate encoded size, for bounding batches.
    pub fn size_hint(&self) -> usize {
        let (b, k) = self.bucket_key();
        64 + b.len()
            + k.len()
            + match self {
                WriteOp::Put {
                    value,
                    content_type,
                    ..
                } => value.len() + content_type.as_ref().map_or(0, |c| c.len()),
                WriteOp::Delete { .. } => 0,
            }
    }
}

/// One Raft log entry: concurrent client writes batched by `proposer` so that
/// one append (one fsync per replica) commits all of them. Applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub ops: Vec<WriteOp>,
}

/// The outcome of applying one log entry: one result per op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    None,
    Ops(Vec<OpResult>),
}

/// The outcome of one write operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Stored(ObjectMeta),
    Deleted { version: u64 },
    NotFound,
    PreconditionFailed { current_etag: Option<String> },
}

pub type SnapshotData = crate::snapshot::SnapshotFile;

openraft::declare_raft_types!(
    /// openraft's view of a cell.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = ReplicaNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, ReplicaNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, ReplicaNode>;
