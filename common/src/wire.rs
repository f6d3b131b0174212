//! Wire types of the internal cell API (router ↔ cell): object metadata, listing
//! and hash-range scan pages. Binary bodies are bincode 2 (standard config) behind
//! a one-byte version marker so the layout can change without ambiguity.

use serde::{Deserialize, Serialize};

use crate::ring::HashRange;

/// First byte of every bincode body this crate encodes.
pub const WIRE_VERSION: u8 = 1;

/// Metadata stored with every object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The Raft log index (in the cell that holds it) of the write that created this version.
    pub version: u64,
    /// Opaque entity tag, assigned when the object was written and kept when it moves.
    pub etag: String,
    pub size: u64,
    pub content_type: Option<String>,
    /// Milliseconds since the Unix epoch, assigned by the leader that accepted the write.
    pub modified_ms: u64,
}

/// One entry of a bucket listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A page of a bucket listing (JSON on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub objects: Vec<ListEntry>,
    /// Pass as `start_after` to get the next page; absent on the last page.
    pub next_start_after: Option<String>,
}

/// One object in a hash-range scan, with its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    pub hash: u64,
    pub bucket: String,
    pub key: String,
    pub meta: ObjectMeta,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A page of a hash-range scan (bincode on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPage {
    pub range: HashRange,
    pub items: Vec<ScanItem>,
    /// Opaque cursor for the next page; absent when the range is exhausted.
    pub next: Option<Vec<u8>>,
    /// The cell's applied index when the page was read.
    pub applied_index: u64,
}

/// Objects (and deletions) the control plane copies into a cell's incoming
/// ranges (`POST /admin/ingest`, bincode body). Each item keeps the metadata
/// (etag, version, modified time) it had at the source, so a moved object is
/// indistinguishable from the original. Applied through the destination's
/// Raft log as one entry; refused as a whole if any key is outside a range
/// the cell has in state `incoming`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestBatch {
    /// The job doing the copy, for logs.
    pub job: String,
    pub items: Vec<ScanItem>,
    /// `(bucket, key)` to delete (present at the destination, gone at the source).
    pub deletes: Vec<(String, String)>,
}

/// What an ingest did (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    pub stored: u64,
    pub deleted: u64,
}

/// Keys and bytes a cell holds in one hash range (`POST /admin/range-stats`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStats {
    pub range: HashRange,
    pub keys: u64,
    /// Sum of object value sizes.
    pub bytes: u64,
}

/// A scan cursor (`ScanPage::next`) as the `after=` query parameter: lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Inverse of [`hex`]; `None` for an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty body")]
    Empty,
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("decode: {0}")]
    Decode(String),
    #[error("encode: {0}")]
    Encode(String),
}

/// Encodes `v` as `[WIRE_VERSION] ++ bincode(v)`.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_VERSION];
    bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a body written by [`encode`], refusing unknown versions and trailing bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<T, WireError> {
    let (&ver, rest) = buf.split_first().ok_or(WireError::Empty)?;
    if ver != WIRE_VERSION {
        return Err(WireError::Version(ver));
    }
    let (v, used) = bincode::serde::decode_from_slice(rest, bincode::config::standard())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != rest.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes",
            rest.len() - used
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn round_trip_and_refusals() {
        let page = ScanPage {
            range: HashRange { start: 5, end: 99 },
            items: vec![ScanItem {
                hash: 7,
                bucket: "b".into(),
                key: "k".into(),
                meta: ObjectMeta {
                    version: 3,
                    etag: "\"1.3\"".into(),
                    size: 2,
                    content_type: None,
                    modified_ms: 1,
                },
                value: vec![1, 2],
            }],
            next: Some(vec![9]),
            applied_index: 12,
        };
        let buf = encode(&page).unwrap();
        assert_eq!(decode::<ScanPage>(&buf).unwrap(), page);
        assert!(matches!(decode::<ScanPage>(&[]), Err(WireError::Empty)));
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<ScanPage>(&bad),
            Err(WireError::Version(9))
        ));
        let mut trailing = buf.clone();
        trailing.push(0);
        assert!(decode::<ScanPage>(&trailing).is_err());
        assert!(decode::<ScanPage>(&buf[..buf.len() - 1]).is_err());
    }
}
