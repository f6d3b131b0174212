//! The Raft type configuration of a cell and the commands its log carries:
//! `Request` (one variant per write operation) and `Response`.

use std::fmt;

use common::ownership::{OwnershipError, OwnershipOp, OwnershipTable};
use common::wire::{v1, IngestBatch, IngestResult, ObjectMeta, S3Attrs};
use common::{CellId, HashRange};
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
    /// Only if the current object's S3 ETag (`ObjectMeta::s3_etag`) is this
    /// one: S3's `If-Match` (ADR 0023). Appended: older entries still decode.
    IfS3Match(String),
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
    /// A put through S3: the value with S3's attributes (ADR 0023). A variant
    /// of its own, appended, so the log entries of older builds still decode.
    PutS3 {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        content_type: Option<String>,
        s3: S3Attrs,
        condition: Condition,
        modified_ms: u64,
    },
}

/// What a put stores, whichever API it came through.
pub struct PutParts<'a> {
    pub value: &'a [u8],
    pub content_type: &'a Option<String>,
    pub modified_ms: u64,
    pub s3: Option<&'a S3Attrs>,
}

impl WriteOp {
    pub fn bucket_key(&self) -> (&str, &str) {
        match self {
            WriteOp::Put { bucket, key, .. }
            | WriteOp::Delete { bucket, key, .. }
            | WriteOp::PutS3 { bucket, key, .. } => (bucket, key),
        }
    }

    pub fn condition(&self) -> &Condition {
        match self {
            WriteOp::Put { condition, .. }
            | WriteOp::Delete { condition, .. }
            | WriteOp::PutS3 { condition, .. } => condition,
        }
    }

    /// What a put stores; `None` for a delete.
    pub fn put_parts(&self) -> Option<PutParts<'_>> {
        match self {
            WriteOp::Put {
                value,
                content_type,
                modified_ms,
                ..
            } => Some(PutParts {
                value,
                content_type,
                modified_ms: *modified_ms,
                s3: None,
            }),
            WriteOp::PutS3 {
                value,
                content_type,
                modified_ms,
                s3,
                ..
            } => Some(PutParts {
                value,
                content_type,
                modified_ms: *modified_ms,
                s3: Some(s3),
            }),
            WriteOp::Delete { .. } => None,
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
                WriteOp::PutS3 {
                    value,
                    content_type,
                    s3,
                    ..
                } => {
                    value.len()
                        + content_type.as_ref().map_or(0, |c| c.len())
                        + 64
                        + s3.user_bytes()
                        + s3.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                }
                WriteOp::Delete { .. } => 0,
            }
    }
}

/// One Raft log entry. Client writes are batched by `proposer` (many ops, one
/// append, one fsync per replica); the control plane's operations on ranges
/// are entries of their own. Applied in log order, so an ownership change
/// takes effect between two client batches, never inside one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Concurrent client writes, each checked against the ownership table when applied.
    Ops(Vec<WriteOp>),
    /// A change of the cell's ownership record (`POST /admin/ownership`).
    Ownership(OwnershipOp),
    /// Objects copied from another cell, as builds before ADR 0023 logged
    /// them (without S3 attributes). Read from old logs; never proposed now.
    Ingest(v1::IngestBatch),
    /// Deletes up to `limit` objects in `range` whose hash the cell `may_purge`.
    Purge { range: HashRange, limit: u64 },
    /// Objects copied from another cell into incoming ranges (`POST /admin/ingest`),
    /// with all their metadata. Appended, so older entries still decode.
    IngestV2(IngestBatch),
}

/// The outcome of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    None,
    /// One result per op of a [`Request::Ops`].
    Ops(Vec<OpResult>),
    /// The table after the op, or why it was refused (nothing changed).
    Ownership(Result<OwnershipTable, OwnershipError>),
    /// What the ingest stored, or the first key that was outside an incoming range
    /// (then nothing was applied).
    Ingest(Result<IngestResult, IngestRefused>),
    Purge {
        deleted: u64,
        more: bool,
    },
}

/// Why an ingest was refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRefused {
    pub bucket: String,
    pub key: String,
    pub hash: u64,
    /// The cell's ownership epoch when it refused.
    pub epoch: u64,
}

/// The outcome of one write operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Stored(ObjectMeta),
    Deleted {
        version: u64,
    },
    NotFound,
    PreconditionFailed {
        current_etag: Option<String>,
    },
    /// The key's range is being handed over (write-fenced or sealed): retry shortly.
    RangeMoving,
    /// The cell does not own the key's range: ask `owner` (if known) or refresh the map.
    Moved {
        owner: Option<CellId>,
        epoch: u64,
    },
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
