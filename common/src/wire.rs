//! Wire types of the internal cell API (router ↔ cell): object metadata, listing
//! and hash-range scan pages. Binary bodies are bincode 2 (standard config) behind
//! a one-byte version marker so the layout can change without ambiguity.

use serde::{Deserialize, Serialize};

use crate::ring::HashRange;

/// First byte of every bincode body this crate encodes.
pub const WIRE_VERSION: u8 = 1;
/// First byte of the bodies that carry objects with their metadata (scan
/// pages, ingest batches): 2 since `ObjectMeta` has `s3` (ADR 0023). A peer
/// of an older build refuses them by this byte rather than misreading them.
pub const OBJECTS_WIRE_VERSION: u8 = 2;

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
    /// What S3 stores beside the value; `None` for an object written through
    /// the native API (ADR 0023). Boxed: most objects have none, and the
    /// state machine clones metadata per write.
    pub s3: Option<Box<S3Attrs>>,
}

/// S3's view of an object, stored with it (ADR 0023): its S3 ETag and the
/// headers S3 clients set and read back. Names are lower-case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Attrs {
    /// Hex MD5 of the value (a single-part object), or `hex-N` (multipart).
    pub etag: String,
    /// Stored standard headers (`content-encoding`, `content-disposition`,
    /// `cache-control`, `content-language`, `expires`), as sent.
    pub headers: Vec<(String, String)>,
    /// User metadata: `x-amz-meta-*` names without the prefix, and values.
    pub user: Vec<(String, String)>,
    /// The checksum the client sent or asked for: algorithm (`CRC32`, ...)
    /// and base64 value, answered on GET with `x-amz-checksum-mode: ENABLED`.
    pub checksum: Option<(String, String)>,
}

/// S3's limit on user metadata: names and values of `x-amz-meta-*`, in bytes.
pub const MAX_S3_USER_METADATA: usize = 2 << 10;
/// Limit on the stored standard headers together, in bytes.
pub const MAX_S3_HEADERS: usize = 8 << 10;

/// Cell API header carrying an object's `S3Attrs` (router ↔ cell): on a PUT
/// it makes the write a `PutS3`; GET and HEAD answers carry it when the
/// object has them. Value: `hex(encode(attrs))`.
pub const HEADER_S3_ATTRS: &str = "x-cellkv-s3";
/// Cell API request header: S3's `If-Match` on a PUT, compared with the
/// object's S3 ETag when the write is applied (ADR 0023).
pub const HEADER_IF_S3_MATCH: &str = "x-cellkv-if-s3-match";

impl S3Attrs {
    /// The value of [`HEADER_S3_ATTRS`].
    pub fn to_header(&self) -> String {
        hex(&encode(self).expect("S3 attributes always encode"))
    }

    /// Parses a [`HEADER_S3_ATTRS`] value.
    pub fn from_header(v: &str) -> Result<S3Attrs, WireError> {
        let bytes = unhex(v).ok_or_else(|| WireError::Decode("not hex".into()))?;
        decode(&bytes)
    }

    /// The bytes of user metadata as S3 counts them (names and values).
    pub fn user_bytes(&self) -> usize {
        self.user.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Whether it is within the limits a cell stores.
    pub fn check(&self) -> Result<(), String> {
        if self.user_bytes() > MAX_S3_USER_METADATA {
            return Err(format!(
                "user metadata is {} bytes, more than {MAX_S3_USER_METADATA}",
                self.user_bytes()
            ));
        }
        let h: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if h > MAX_S3_HEADERS {
            return Err(format!(
                "stored headers are {h} bytes, more than {MAX_S3_HEADERS}"
            ));
        }
        if self.etag.is_empty() || self.etag.len() > 64 {
            return Err("the S3 etag is empty or longer than 64 bytes".into());
        }
        Ok(())
    }
}

impl ObjectMeta {
    /// The ETag S3 answers with: the stored S3 one (MD5), else the native one
    /// (an object written through the native API has no MD5; its native etag
    /// contains dashes, so S3 clients treat it as opaque, as a multipart one).
    pub fn s3_etag(&self) -> &str {
        self.s3.as_deref().map_or(self.etag.as_str(), |a| &a.etag)
    }
}

/// The layouts before ADR 0023, kept to read what older builds wrote: stored
/// objects of format 1 and the `Ingest` entries in Raft logs.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    /// `ObjectMeta` without `s3`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ObjectMeta {
        pub version: u64,
        pub etag: String,
        pub size: u64,
        pub content_type: Option<String>,
        pub modified_ms: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ScanItem {
        pub hash: u64,
        pub bucket: String,
        pub key: String,
        pub meta: ObjectMeta,
        #[serde(with = "serde_bytes")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IngestBatch {
        pub job: String,
        pub items: Vec<ScanItem>,
        pub deletes: Vec<(String, String)>,
    }

    impl From<ObjectMeta> for super::ObjectMeta {
        fn from(m: ObjectMeta) -> Self {
            super::ObjectMeta {
                version: m.version,
                etag: m.etag,
                size: m.size,
                content_type: m.content_type,
                modified_ms: m.modified_ms,
                s3: None,
            }
        }
    }

    impl From<IngestBatch> for super::IngestBatch {
        fn from(b: IngestBatch) -> Self {
            super::IngestBatch {
                job: b.job,
                items: b
                    .items
                    .into_iter()
                    .map(|i| super::ScanItem {
                        hash: i.hash,
                        bucket: i.bucket,
                        key: i.key,
                        meta: i.meta.into(),
                        value: i.value,
                    })
                    .collect(),
                deletes: b.deletes,
            }
        }
    }
}

/// One entry of a bucket listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
    /// The S3 ETag (MD5) of an object written through S3 (ADR 0023). JSON
    /// only, so an absent field reads as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_etag: Option<String>,
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
    #[error("unsupported wire version {0} (this build speaks {1} here)")]
    Version(u8, u8),
    #[error("decode: {0}")]
    Decode(String),
    #[error("encode: {0}")]
    Encode(String),
}

/// Encodes `v` as `[WIRE_VERSION] ++ bincode(v)`.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    encode_versioned(WIRE_VERSION, v)
}

/// Decodes a body written by [`encode`], refusing unknown versions and trailing bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<T, WireError> {
    decode_versioned(WIRE_VERSION, buf)
}

/// Encodes a body that carries objects (`ScanPage`, `IngestBatch`) as
/// `[OBJECTS_WIRE_VERSION] ++ bincode(v)`.
pub fn encode_objects<T: Serialize>(v: &T) -> Result<Vec<u8>, WireError> {
    encode_versioned(OBJECTS_WIRE_VERSION, v)
}

/// Decodes a body written by [`encode_objects`].
pub fn decode_objects<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<T, WireError> {
    decode_versioned(OBJECTS_WIRE_VERSION, buf)
}

fn encode_versioned<T: Serialize>(version: u8, v: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(out)
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(version: u8, buf: &[u8]) -> Result<T, WireError> {
    let (&ver, rest) = buf.split_first().ok_or(WireError::Empty)?;
    if ver != version {
        return Err(WireError::Version(ver, version));
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
    fn s3_attrs_header_round_trips() {
        let a = S3Attrs {
            etag: "abc".into(),
            headers: vec![("content-encoding".into(), "gzip".into())],
            user: vec![("k".into(), "ü".into())],
            checksum: None,
        };
        assert_eq!(S3Attrs::from_header(&a.to_header()).unwrap(), a);
        assert!(S3Attrs::from_header("zz").is_err());
        assert!(a.check().is_ok());
        let big = S3Attrs {
            user: vec![("k".into(), "v".repeat(MAX_S3_USER_METADATA))],
            ..a
        };
        assert!(big.check().is_err());
    }

    #[test]
    fn v1_ingest_batches_convert() {
        let old = v1::IngestBatch {
            job: "j".into(),
            items: vec![v1::ScanItem {
                hash: 1,
                bucket: "b".into(),
                key: "k".into(),
                meta: v1::ObjectMeta {
                    version: 1,
                    etag: "1-1-0".into(),
                    size: 1,
                    content_type: None,
                    modified_ms: 1,
                },
                value: vec![1],
            }],
            deletes: vec![("b".into(), "x".into())],
        };
        let new: IngestBatch = old.into();
        assert_eq!(new.items[0].meta.s3, None);
        assert_eq!(new.items[0].meta.s3_etag(), "1-1-0");
        assert_eq!(new.deletes.len(), 1);
    }

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
                    s3: Some(Box::new(S3Attrs {
                        etag: "5d41402abc4b2a76b9719d911017c592".into(),
                        headers: vec![("cache-control".into(), "no-cache".into())],
                        user: vec![("a".into(), "b".into())],
                        checksum: Some(("CRC32".into(), "AAAAAA==".into())),
                    })),
                },
                value: vec![1, 2],
            }],
            next: Some(vec![9]),
            applied_index: 12,
        };
        let buf = encode(&page).unwrap();
        assert_eq!(decode::<ScanPage>(&buf).unwrap(), page);
        let objs = encode_objects(&page).unwrap();
        assert_eq!(objs[0], OBJECTS_WIRE_VERSION);
        assert_eq!(decode_objects::<ScanPage>(&objs).unwrap(), page);
        assert!(matches!(
            decode::<ScanPage>(&objs),
            Err(WireError::Version(2, 1))
        ));
        assert!(matches!(decode::<ScanPage>(&[]), Err(WireError::Empty)));
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<ScanPage>(&bad),
            Err(WireError::Version(9, 1))
        ));
        let mut trailing = buf.clone();
        trailing.push(0);
        assert!(decode::<ScanPage>(&trailing).is_err());
        assert!(decode::<ScanPage>(&buf[..buf.len() - 1]).is_err());
    }
}
