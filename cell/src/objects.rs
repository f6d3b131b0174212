//! The object rules of a cell, free of Raft and RocksDB: how a write request
//! and the current object decide the outcome, and how an object is laid out
//! on disk. `state_machine` applies what `decide` returns.

use common::ownership::Access;
use common::wire::ObjectMeta;
use common::CellId;

use crate::types::{Condition, OpResult, WriteOp};

/// First byte of a stored object; bump it (and keep a decoder for the old one) to change the layout.
/// Format 1: `wire::v1::ObjectMeta` (before ADR 0023), still read.
const OBJECT_FORMAT_V1: u8 = 1;
/// Format 2: `ObjectMeta` with `s3`.
const OBJECT_FORMAT_V2: u8 = 2;

/// What applying one request does to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Mutation {
    None,
    Put { meta: ObjectMeta },
    Delete,
}

/// The entity tag of the version written by op `sub` of log entry `index` of
/// `cell`. Unique in the cluster while cell ids are never reused; kept
/// unchanged when the object moves.
pub fn etag_for(cell: CellId, index: u64, sub: usize) -> String {
    format!("{}-{}-{}", cell.0, index, sub)
}

fn condition_holds(cond: &Condition, current: Option<&ObjectMeta>) -> bool {
    match cond {
        Condition::None => true,
        Condition::IfAbsent => current.is_none(),
        Condition::IfMatch(etag) => current.is_some_and(|m| &m.etag == etag),
        Condition::IfS3Match(etag) => current.is_some_and(|m| m.s3_etag() == etag),
    }
}

/// Whether deciding `op` needs the object's current metadata. An unconditional
/// put does not, which saves a RocksDB point lookup per write.
pub fn needs_current(op: &WriteOp) -> bool {
    !(op.put_parts().is_some() && *op.condition() == Condition::None)
}

/// Decides the outcome of `op`, the `sub`-th op of log entry `index`, given
/// the object's current metadata.
pub fn decide(
    op: &WriteOp,
    current: Option<&ObjectMeta>,
    index: u64,
    sub: usize,
    cell: CellId,
) -> (OpResult, Mutation) {
    let cond = op.condition();
    let is_delete = op.put_parts().is_none();
    if !condition_holds(cond, current) {
        // A delete with no precondition of a missing object is "not found", not a failed precondition.
        if is_delete && current.is_none() && !matches!(cond, Condition::IfAbsent) {
            return (OpResult::NotFound, Mutation::None);
        }
        return (
            OpResult::PreconditionFailed {
                current_etag: current.map(|m| m.etag.clone()),
            },
            Mutation::None,
        );
    }
    match op.put_parts() {
        Some(put) => {
            let meta = ObjectMeta {
                version: index,
                etag: etag_for(cell, index, sub),
                size: put.value.len() as u64,
                content_type: put.content_type.clone(),
                modified_ms: put.modified_ms,
                s3: put.s3.map(|a| Box::new(a.clone())),
            };
            (OpResult::Stored(meta.clone()), Mutation::Put { meta })
        }
        None => match current {
            None => (OpResult::NotFound, Mutation::None),
            Some(_) => (OpResult::Deleted { version: index }, Mutation::Delete),
        },
    }
}

/// Whether a client write may be applied under `access` (checked at apply
/// time, so it is deterministic on every replica): `None` when it may, else
/// the refusal to answer with.
pub fn write_refusal(access: Access) -> Option<OpResult> {
    match access {
        Access::Serve => None,
        Access::ReadOnly | Access::Moving => Some(OpResult::RangeMoving),
        Access::Moved { to, epoch } => Some(OpResult::Moved { owner: to, epoch }),
    }
}

/// Stored layout: `[format=2][meta len u32 LE][bincode meta][value bytes]`.
pub fn encode_object(meta: &ObjectMeta, value: &[u8]) -> Vec<u8> {
    let m = bincode::serde::encode_to_vec(meta, bincode::config::standard())
        .expect("object metadata always encodes");
    let mut out = Vec::with_capacity(5 + m.len() + value.len());
    out.push(OBJECT_FORMAT_V2);
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(value);
    out
}

#[derive(Debug, thiserror::Error)]
#[error("stored object is corrupt: {0}")]
pub struct CorruptObject(String);

/// Splits a stored object (format 1 or 2) into its metadata and value.
pub fn decode_object(buf: &[u8]) -> Result<(ObjectMeta, &[u8]), CorruptObject> {
    let (&fmt, rest) = buf.split_first().ok_or(CorruptObject("empty".into()))?;
    if fmt != OBJECT_FORMAT_V1 && fmt != OBJECT_FORMAT_V2 {
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
    let cfg = bincode::config::standard();
    let meta = if fmt == OBJECT_FORMAT_V1 {
        let (m, _): (common::wire::v1::ObjectMeta, _) =
            bincode::serde::decode_from_slice(&rest[..len], cfg)
                .map_err(|e| CorruptObject(e.to_string()))?;
        m.into()
    } else {
        bincode::serde::decode_from_slice(&rest[..len], cfg)
            .map_err(|e| CorruptObject(e.to_string()))?
            .0
    };
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

/// The `by_hash` index value of an object: its value size (u64 LE), so range
/// statistics need no point lookup per key. Older stores wrote an empty value.
pub fn hash_index_value(size: u64) -> [u8; 8] {
    size.to_le_bytes()
}

/// The value size recorded in a `by_hash` index value, if there is one.
pub fn decode_hash_index_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cond: Condition) -> WriteOp {
        WriteOp::Put {
            bucket: "b".into(),
            key: "k".into(),
            value: b"hello".to_vec(),
            content_type: Some("text/plain".into()),
            condition: cond,
            modified_ms: 42,
        }
    }

    fn del(cond: Condition) -> WriteOp {
        WriteOp::Delete {
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
            s3: None,
        }
    }

    fn put_s3(cond: Condition) -> WriteOp {
        WriteOp::PutS3 {
            bucket: "b".into(),
            key: "k".into(),
            value: b"hello".to_vec(),
            content_type: Some("text/plain".into()),
            s3: common::wire::S3Attrs {
                etag: "5d41402abc4b2a76b9719d911017c592".into(),
                user: vec![("color".into(), "blue".into())],
                ..Default::default()
            },
            condition: cond,
            modified_ms: 42,
        }
    }

    #[test]
    fn s3_puts_store_attrs_and_match_on_the_s3_etag() {
        let (OpResult::Stored(m), _) = decide(&put_s3(Condition::None), None, 4, 0, CellId(1))
        else {
            panic!()
        };
        assert_eq!(m.etag, "1-4-0", "the native etag is assigned as ever");
        assert_eq!(m.s3_etag(), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(m.s3.as_ref().unwrap().user[0].1, "blue");
        let md5 = Condition::IfS3Match("5d41402abc4b2a76b9719d911017c592".into());
        assert!(matches!(
            decide(&put_s3(md5.clone()), Some(&m), 5, 0, CellId(1)).0,
            OpResult::Stored(_)
        ));
        // The native etag is not an S3 match for an S3 object, and vice versa.
        assert!(matches!(
            decide(
                &put_s3(Condition::IfS3Match("1-4-0".into())),
                Some(&m),
                5,
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { .. }
        ));
        assert!(matches!(
            decide(&put(md5.clone()), Some(&m), 5, 0, CellId(1)).0,
            OpResult::Stored(_)
        ));
        assert!(matches!(
            decide(
                &put(Condition::IfMatch(
                    "5d41402abc4b2a76b9719d911017c592".into()
                )),
                Some(&m),
                5,
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { .. }
        ));
        // A native object's S3 ETag is its native etag.
        let native = meta("1-7-0");
        assert!(matches!(
            decide(
                &put_s3(Condition::IfS3Match("1-7-0".into())),
                Some(&native),
                5,
                0,
                CellId(1)
            )
            .0,
            OpResult::Stored(_)
        ));
        assert!(matches!(
            decide(
                &put_s3(Condition::IfS3Match("x".into())),
                None,
                5,
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { current_etag: None }
        ));
        // A native put over an S3 object drops the S3 attributes.
        let (OpResult::Stored(n), _) = decide(&put(Condition::None), Some(&m), 6, 0, CellId(1))
        else {
            panic!()
        };
        assert_eq!(n.s3, None);
        assert_eq!(n.s3_etag(), "1-6-0");
    }

    #[test]
    fn format_1_objects_still_read() {
        let old = common::wire::v1::ObjectMeta {
            version: 7,
            etag: "1-7-0".into(),
            size: 3,
            content_type: Some("text/plain".into()),
            modified_ms: 5,
        };
        let m = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let mut buf = vec![1u8];
        buf.extend_from_slice(&(m.len() as u32).to_le_bytes());
        buf.extend_from_slice(&m);
        buf.extend_from_slice(b"abc");
        let (meta, v) = decode_object(&buf).unwrap();
        assert_eq!(meta, ObjectMeta::from(old));
        assert_eq!(v, b"abc");
        let mut s3 = meta.clone();
        s3.s3 = Some(Box::new(common::wire::S3Attrs {
            etag: "900150983cd24fb0d6963f7d28e17f72".into(),
            ..Default::default()
        }));
        let buf2 = encode_object(&s3, b"abc");
        assert_eq!(buf2[0], 2);
        assert_eq!(decode_object(&buf2).unwrap(), (s3, &b"abc"[..]));
    }

    #[test]
    fn unconditional_put_stores_with_index_as_version() {
        let (resp, m) = decide(&put(Condition::None), None, 10, 0, CellId(2));
        let OpResult::Stored(meta) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!(meta.version, 10);
        assert_eq!(meta.etag, "2-10-0");
        let (OpResult::Stored(m2), _) = decide(&put(Condition::None), None, 10, 1, CellId(2))
        else {
            panic!()
        };
        assert_eq!(m2.etag, "2-10-1", "ops of one entry get distinct etags");
        assert_eq!(meta.size, 5);
        assert_eq!(meta.modified_ms, 42);
        assert_eq!(m, Mutation::Put { meta });
    }

    #[test]
    fn if_absent_and_if_match() {
        let cur = meta("1-7");
        assert!(matches!(
            decide(&put(Condition::IfAbsent), None, 3, 0, CellId(1)).0,
            OpResult::Stored(_)
        ));
        assert_eq!(
            decide(&put(Condition::IfAbsent), Some(&cur), 3, 0, CellId(1)),
            (
                OpResult::PreconditionFailed {
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
                0,
                CellId(1)
            )
            .0,
            OpResult::Stored(_)
        ));
        assert!(matches!(
            decide(
                &put(Condition::IfMatch("1-6".into())),
                Some(&cur),
                3,
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { .. }
        ));
        assert!(matches!(
            decide(
                &put(Condition::IfMatch("1-7".into())),
                None,
                3,
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { current_etag: None }
        ));
    }

    #[test]
    fn deletes() {
        let cur = meta("1-7");
        assert_eq!(
            decide(&del(Condition::None), None, 3, 0, CellId(1)),
            (OpResult::NotFound, Mutation::None)
        );
        assert_eq!(
            decide(&del(Condition::None), Some(&cur), 3, 0, CellId(1)),
            (OpResult::Deleted { version: 3 }, Mutation::Delete)
        );
        assert_eq!(
            decide(
                &del(Condition::IfMatch("1-7".into())),
                Some(&cur),
                3,
                0,
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
                0,
                CellId(1)
            )
            .0,
            OpResult::PreconditionFailed { .. }
        ));
        assert_eq!(
            decide(&del(Condition::IfMatch("x".into())), None, 3, 0, CellId(1)).0,
            OpResult::NotFound
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
