//! The object rules of a cell, free of Raft and RocksDB: how a write request
//! and the current object decide the outcome, and how an object is laid out
//! on disk. `state_machine` applies what `decide` returns.

use common::wire::ObjectMeta;
use common::CellId;

use crate::types::{Condition, Request, Response};

/// First byte of a stored object; bump it (and keep a decoder for the old one) to change the layout.
const OBJECT_FORMAT_V1: u8 = 1;

/// What applying one request does to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Mutation {
    None,
    Put { meta: ObjectMeta },
    Delete,
}

/// The entity tag of the version written at log `index` of `cell`. Unique in the
/// cluster while cell ids are never reused; kept unchanged when the object moves.
pub fn etag_for(cell: CellId, index: u64) -> String {
    format!("{}-{}", cell.0, index)
}

fn condition_holds(cond: &Condition, current: Option<&ObjectMeta>) -> bool {
    match cond {
        Condition::None => true,
        Condition::IfAbsent => current.is_none(),
        Condition::IfMatch(etag) => current.is_some_and(|m| &m.etag == etag),
    }
}

/// Decides the outcome of `req`, applied as log entry `index`, given the object's current metadata.
pub fn decide(
    req: &Request,
    current: Option<&ObjectMeta>,
    index: u64,
    cell: CellId,
) -> (Response, Mutation) {
    let (cond, is_delete) = match req {
        Request::Put { condition, .. } => (condition, false),
        Request::Delete { condition, .. } => (condition, true),
    };
    if !condition_holds(cond, current) {
        // A delete with no precondition of a missing object is "not found", not a failed precondition.
        if is_delete && current.is_none() && !matches!(cond, Condition::IfAbsent) {
            return (Response::NotFound, Mutation::None);
        }
        return (
            Response::PreconditionFailed {
                current_etag: current.map(|m| m.etag.clone()),
            },
            Mutation::None,
        );
    }
    match req {
        Request::Put {
            value,
            content_type,
            modified_ms,
            ..
        } => {
            let meta = ObjectMeta {
                version: index,
                etag: etag_for(cell, index),
                size: value.len() as u64,
                content_type: content_type.clone(),
                modified_ms: *modified_ms,
            };
            (Response::Stored(meta.clone()), Mutation::Put { meta })
        }
        Request::Delete { .. } => match current {
            None => (Response::NotFound, Mutation::None),
            Some(_) => (Response::Deleted { version: index }, Mutation::Delete),
        },
    }
}

/// Stored layout: `[format=1][meta len u32 LE][bincode meta][value bytes]`.
pub fn encode_object(meta: &ObjectMeta, value: &[u8]) -> Vec<u8> {
    let m = bincode::serde::encode_to_vec(meta, bincode::config::standard())
        .expect("object metadata always encodes");
    let mut out = Vec::with_capacity(5 + m.len() + value.len());
    out.push(OBJECT_FORMAT_V1);
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(value);
    out
}

#[derive(Debug, thiserror::Error)]
#[error("stored object is corrupt: {0}")]
pub struct CorruptObject(String);

/// Splits a stored object into its metadata and value.
pub fn decode_object(buf: &[u8]) -> Result<(ObjectMeta, &[u8]), CorruptObject> {
    let (&fmt, rest) = buf.split_first().ok_or(CorruptObject("empty".into()))?;
    if fmt != OBJECT_FORMAT_V1 {
        return Err(CorruptObject(format!("unknown format {fmt}")));
    }
    if rest.len() < 4 {
        return Err(CorruptObject("short header".into()));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let rest = &rest[4..];
    if rest.len() < len {
        return Err(CorruptObject("metadata truncated".into()));
    }
    let (meta, _) = bincode::serde::decode_from_slice(&rest[..len], bincode::config::standard())
        .map_err(|e| CorruptObject(e.to_string()))?;
    Ok((meta, &rest[len..]))
}

/// Splits a placement key `[bucket len][bucket][key]` back into bucket and key.
pub fn split_placement_key(pkey: &[u8]) -> Option<(&str, &str)> {
    let (&n, rest) = pkey.split_first()?;
    let n = n as usize;
    if rest.len() < n {
        return None;
    }
    let bucket = std::str::from_utf8(&rest[..n]).ok()?;
    let key = std::str::from_utf8(&rest[n..]).ok()?;
    Some((bucket, key))
}

/// The `by_hash` index key of an object: `[hash BE][placement key]`.
pub fn hash_index_key(hash: u64, pkey: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + pkey.len());
    k.extend_from_slice(&hash.to_be_bytes());
    k.extend_from_slice(pkey);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cond: Condition) -> Request {
        Request::Put {
            bucket: "b".into(),
            key: "k".into(),
            value: b"hello".to_vec(),
            content_type: Some("text/plain".into()),
            condition: cond,
            modified_ms: 42,
        }
    }

    fn del(cond: Condition) -> Request {
        Request::Delete {
            bucket: "b".into(),
            key: "k".into(),
            condition: cond,
        }
    }

    fn meta(etag: &str) -> ObjectMeta {
        ObjectMeta {
            version: 7,
            etag: etag.into(),
            size: 1,
            content_type: None,
            modified_ms: 1,
        }
    }

    #[test]
    fn unconditional_put_stores_with_index_as_version() {
        let (resp, m) = decide(&put(Condition::None), None, 10, CellId(2));
        let Response::Stored(meta) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!(meta.version, 10);
        assert_eq!(meta.etag, "2-10");
        assert_eq!(meta.size, 5);
        assert_eq!(meta.modified_ms, 42);
        assert_eq!(m, Mutation::Put { meta });
    }

    #[test]
    fn if_absent_and_if_match() {
        let cur = meta("1-7");
        assert!(matches!(
            decide(&put(Condition::IfAbsent), None, 3, CellId(1)).0,
            Response::Stored(_)
        ));
        assert_eq!(
            decide(&put(Condition::IfAbsent), Some(&cur), 3, CellId(1)),
            (
                Response::PreconditionFailed {
                    current_etag: Some("1-7".into())
                },
                Mutation::None
            )
        );
        assert!(matches!(
            decide(
                &put(Condition::IfMatch("1-7".into())),
                Some(&cur),
                3,
                CellId(1)
            )
            .0,
            Response::Stored(_)
        ));
        assert!(matches!(
            decide(
                &put(Condition::IfMatch("1-6".into())),
                Some(&cur),
                3,
                CellId(1)
            )
            .0,
            Response::PreconditionFailed { .. }
        ));
        assert!(matches!(
            decide(&put(Condition::IfMatch("1-7".into())), None, 3, CellId(1)).0,
            Response::PreconditionFailed { current_etag: None }
        ));
    }

    #[test]
    fn deletes() {
        let cur = meta("1-7");
        assert_eq!(
            decide(&del(Condition::None), None, 3, CellId(1)),
            (Response::NotFound, Mutation::None)
        );
        assert_eq!(
            decide(&del(Condition::None), Some(&cur), 3, CellId(1)),
            (Response::Deleted { version: 3 }, Mutation::Delete)
        );
        assert_eq!(
            decide(
                &del(Condition::IfMatch("1-7".into())),
                Some(&cur),
                3,
                CellId(1)
            )
            .1,
            Mutation::Delete
        );
        assert!(matches!(
            decide(
                &del(Condition::IfMatch("nope".into())),
                Some(&cur),
                3,
                CellId(1)
            )
            .0,
            Response::PreconditionFailed { .. }
        ));
        assert_eq!(
            decide(&del(Condition::IfMatch("x".into())), None, 3, CellId(1)).0,
            Response::NotFound
        );
    }

    #[test]
    fn object_layout_round_trips_and_detects_corruption() {
        let m = meta("3-9");
        let buf = encode_object(&m, b"value bytes");
        let (m2, v) = decode_object(&buf).unwrap();
        assert_eq!(m2, m);
        assert_eq!(v, b"value bytes");
        assert!(decode_object(&[]).is_err());
        assert!(decode_object(&[9, 0, 0, 0, 0]).is_err());
        assert!(decode_object(&buf[..6]).is_err());
    }

    #[test]
    fn placement_key_splits() {
        let pk = common::ring::placement_key("bucket", "a/b/ü");
        assert_eq!(split_placement_key(&pk), Some(("bucket", "a/b/ü")));
        assert_eq!(split_placement_key(&[5, b'a']), None);
    }
}
