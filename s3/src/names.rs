//! Names and dispatch: S3's bucket-name and key rules, path-style request
//! parsing, and the one `Operation` a method, path, query and
//! `x-amz-copy-source` make, with its parameters parsed. Running it is the
//! router's job.

use http::{HeaderMap, Method, Uri};
use percent_encoding::percent_decode_str;

use crate::error::{ErrorCode, S3Error};
use crate::sigv4::decode_query_component;
use crate::xml::Encoding;

/// S3's limit on a key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// The most keys (uploads, parts) one listing returns, and the default.
pub const MAX_LIST_KEYS: u32 = 1000;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// S3's rules for a new bucket's name: 3 to 63 characters of lower-case
/// letters, digits, dots and hyphens, starting and ending with a letter or
/// digit, no `..`, not shaped like an IPv4 address, and none of the prefixes
/// and suffixes S3 reserves.
pub fn validate_bucket_name(name: &str) -> Result<(), S3Error> {
    let invalid = |why: &str| {
        S3Error::with_message(
            ErrorCode::InvalidBucketName,
            format!("The specified bucket is not valid: {why}."),
        )
    };
    if !(3..=63).contains(&name.len()) {
        return Err(invalid("a name has 3 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(invalid("only lower-case letters, digits, dots and hyphens"));
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Err(invalid("it starts and ends with a letter or a digit"));
    }
    if name.contains("..") {
        return Err(invalid("no two adjacent dots"));
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
        return Err(invalid("not formatted as an IP address"));
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(invalid("a reserved prefix"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(invalid("a reserved suffix"));
        }
    }
    Ok(())
}

/// A key is 1 to 1024 bytes of UTF-8 (any characters).
pub fn validate_key(key: &str) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::with_message(
            ErrorCode::InvalidArgument,
            "The key is empty.",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::new(ErrorCode::KeyTooLongError));
    }
    Ok(())
}

/// What a path-style path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/`
    Service,
    /// `/bucket` or `/bucket/`
    Bucket(String),
    /// `/bucket/key...`: the key is everything after the bucket's slash,
    /// slashes included (`/b//x/` is key `/x/`).
    Object { bucket: String, key: String },
}

fn decode_path(s: &str) -> Result<String, S3Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| S3Error::new(ErrorCode::InvalidURI))
}

/// Parses a path-style path (`+` is a plus, not a space).
pub fn parse_path(path: &str) -> Result<Target, S3Error> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| S3Error::new(ErrorCode::InvalidURI))?;
    if rest.is_empty() {
        return Ok(Target::Service);
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = decode_path(bucket)?;
    if bucket.is_empty() || bucket.contains('/') {
        return Err(S3Error::new(ErrorCode::InvalidURI));
    }
    if key.is_empty() {
        return Ok(Target::Bucket(bucket));
    }
    let key = decode_path(key)?;
    validate_key(&key)?;
    Ok(Target::Object { bucket, key })
}

/// A request's query parameters, decoded (`+` is a space, as in a form).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, S3Error> {
        let mut pairs = Vec::new();
        for p in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| {
                String::from_utf8(decode_query_component(s))
                    .map_err(|_| S3Error::new(ErrorCode::InvalidURI))
            };
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// A `max-keys`-like count: a non-negative integer, at most 1000 used.
    fn count(&self, name: &str) -> Result<u32, S3Error> {
        match self.get(name) {
            None => Ok(MAX_LIST_KEYS),
            Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).map_or_else(
                || {
                    Err(S3Error::with_message(
                        ErrorCode::InvalidArgument,
                        format!("Provided {name} not an integer or within integer range"),
                    ))
                },
                |n| Ok(n.min(i64::from(MAX_LIST_KEYS)) as u32),
            ),
        }
    }

    fn encoding(&self) -> Result<Encoding, S3Error> {
        match self.get("encoding-type") {
            None => Ok(Encoding::Plain),
            Some(v) if v.eq_ignore_ascii_case("url") => Ok(Encoding::Url),
            Some(_) => Err(S3Error::with_message(
                ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request",
            )),
        }
    }

    fn part_number(&self, name: &str) -> Result<Option<u32>, S3Error> {
        self.get(name)
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
                    .ok_or_else(|| {
                        S3Error::with_message(
                            ErrorCode::InvalidArgument,
                            "Part number must be an integer between 1 and 10000, inclusive",
                        )
                    })
            })
            .transpose()
    }

    fn upload_id(&self) -> Result<Option<String>, S3Error> {
        match self.get("uploadId") {
            Some("") => Err(S3Error::new(ErrorCode::NoSuchUpload)),
            v => Ok(v.map(str::to_string)),
        }
    }
}

/// The parameters every object listing shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub encoding: Encoding,
}

impl ListParams {
    fn parse(q: &Query, max_name: &str) -> Result<Self, S3Error> {
        Ok(ListParams {
            prefix: q.string("prefix").unwrap_or_default(),
            delimiter: q.string("delimiter").filter(|d| !d.is_empty()),
            max_keys: q.count(max_name)?,
            encoding: q.encoding()?,
        })
    }
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=v]`, percent-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

impl CopySource {
    pub fn parse(value: &str) -> Result<Self, S3Error> {
        let bad = || {
            S3Error::with_message(
                ErrorCode::InvalidArgument,
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            )
        };
        let (path, query) = value.split_once('?').unwrap_or((value, ""));
        let path = path.strip_prefix('/').unwrap_or(path);
        let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
        let bucket = decode_path(bucket).map_err(|_| bad())?;
        let key = decode_path(key).map_err(|_| bad())?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad());
        }
        validate_key(&key)?;
        let version_id = Query::parse(Some(query))?.string("versionId");
        Ok(CopySource {
            bucket,
            key,
            version_id,
        })
    }
}

/// `x-amz-copy-source-range: bytes=first-last`, both inclusive.
fn parse_copy_range(value: &str) -> Result<(u64, u64), S3Error> {
    let bad = || {
        S3Error::with_message(
            ErrorCode::InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )
    };
    let (first, last) = value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok((first, last))
}

/// One S3 operation with what it needs from the URL and headers. The body,
/// conditional headers, metadata and ranges stay with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    CreateBucket {
        bucket: String,
    },
    HeadBucket {
        bucket: String,
    },
    DeleteBucket {
        bucket: String,
    },
    GetBucketLocation {
        bucket: String,
    },
    ListObjectsV2 {
        bucket: String,
        list: ListParams,
        continuation_token: Option<String>,
        start_after: Option<String>,
        fetch_owner: bool,
    },
    ListObjects {
        bucket: String,
        list: ListParams,
        marker: Option<String>,
    },
    ListObjectVersions {
        bucket: String,
        list: ListParams,
        key_marker: Option<String>,
        version_id_marker: Option<String>,
    },
    ListMultipartUploads {
        bucket: String,
        list: ListParams,
        key_marker: Option<String>,
        upload_id_marker: Option<String>,
    },
    DeleteObjects {
        bucket: String,
    },
    GetObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
        part_number: Option<u32>,
    },
    HeadObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
        part_number: Option<u32>,
    },
    PutObject {
        bucket: String,
        key: String,
    },
    CopyObject {
        bucket: String,
        key: String,
        source: CopySource,
    },
    DeleteObject {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    CreateMultipartUpload {
        bucket: String,
        key: String,
    },
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
    },
    UploadPartCopy {
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        source: CopySource,
        /// `x-amz-copy-source-range`, inclusive.
        range: Option<(u64, u64)>,
    },
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    AbortMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    ListParts {
        bucket: String,
        key: String,
        upload_id: String,
        max_parts: u32,
        part_number_marker: u32,
        encoding: Encoding,
    },
}

impl Operation {
    /// A bounded label for metrics and logs: S3's operation name.
    pub fn name(&self) -> &'static str {
        use Operation::*;
        match self {
            ListBuckets => "ListBuckets",
            CreateBucket { .. } => "CreateBucket",
            HeadBucket { .. } => "HeadBucket",
            DeleteBucket { .. } => "DeleteBucket",
            GetBucketLocation { .. } => "GetBucketLocation",
            ListObjectsV2 { .. } => "ListObjectsV2",
            ListObjects { .. } => "ListObjects",
            ListObjectVersions { .. } => "ListObjectVersions",
            ListMultipartUploads { .. } => "ListMultipartUploads",
            DeleteObjects { .. } => "DeleteObjects",
            GetObject { .. } => "GetObject",
            HeadObject { .. } => "HeadObject",
            PutObject { .. } => "PutObject",
            CopyObject { .. } => "CopyObject",
            DeleteObject { .. } => "DeleteObject",
            CreateMultipartUpload { .. } => "CreateMultipartUpload",
            UploadPart { .. } => "UploadPart",
            UploadPartCopy { .. } => "UploadPartCopy",
            CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            AbortMultipartUpload { .. } => "AbortMultipartUpload",
            ListParts { .. } => "ListParts",
        }
    }

    /// The bucket it addresses (none for ListBuckets).
    pub fn bucket(&self) -> Option<&str> {
        use Operation::*;
        match self {
            ListBuckets => None,
            CreateBucket { bucket }
            | HeadBucket { bucket }
            | DeleteBucket { bucket }
            | GetBucketLocation { bucket }
            | ListObjectsV2 { bucket, .. }
            | ListObjects { bucket, .. }
            | ListObjectVersions { bucket, .. }
            | ListMultipartUploads { bucket, .. }
            | DeleteObjects { bucket }
            | GetObject { bucket, .. }
            | HeadObject { bucket, .. }
            | PutObject { bucket, .. }
            | CopyObject { bucket, .. }
            | DeleteObject { bucket, .. }
            | CreateMultipartUpload { bucket, .. }
            | UploadPart { bucket, .. }
            | UploadPartCopy { bucket, .. }
            | CompleteMultipartUpload { bucket, .. }
            | AbortMultipartUpload { bucket, .. }
            | ListParts { bucket, .. } => Some(bucket),
        }
    }

    /// The key it addresses, for object operations.
    pub fn key(&self) -> Option<&str> {
        use Operation::*;
        match self {
            GetObject { key, .. }
            | HeadObject { key, .. }
            | PutObject { key, .. }
            | CopyObject { key, .. }
            | DeleteObject { key, .. }
            | CreateMultipartUpload { key, .. }
            | UploadPart { key, .. }
            | UploadPartCopy { key, .. }
            | CompleteMultipartUpload { key, .. }
            | AbortMultipartUpload { key, .. }
            | ListParts { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether it changes anything (needs a read-write credential). A copy
    /// also reads its source, which the router authorizes too.
    pub fn is_write(&self) -> bool {
        use Operation::*;
        matches!(
            self,
            CreateBucket { .. }
                | DeleteBucket { .. }
                | DeleteObjects { .. }
                | PutObject { .. }
                | CopyObject { .. }
                | DeleteObject { .. }
                | CreateMultipartUpload { .. }
                | UploadPart { .. }
                | UploadPartCopy { .. }
                | CompleteMultipartUpload { .. }
                | AbortMultipartUpload { .. }
        )
    }
}

/// Subresources S3 has and cellkv does not: NotImplemented, never a silent
/// GetObject or ListObjects in their place.
const UNSUPPORTED: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "tagging",
    "torrent",
    "versioning",
    "website",
];

fn not_allowed() -> S3Error {
    S3Error::new(ErrorCode::MethodNotAllowed)
}

/// The operation a path-style request asks for.
pub fn parse_operation(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Operation, S3Error> {
    let q = Query::parse(uri.query())?;
    if let Some(sub) = UNSUPPORTED.iter().find(|s| q.has(s)) {
        return Err(S3Error::with_message(
            ErrorCode::NotImplemented,
            format!("The ?{sub} subresource is not implemented"),
        ));
    }
    let copy_source = headers
        .get("x-amz-copy-source")
        .map(|v| {
            v.to_str()
                .map_err(|_| S3Error::new(ErrorCode::InvalidArgument))
                .and_then(CopySource::parse)
        })
        .transpose()?;
    match parse_path(uri.path())? {
        Target::Service => match *method {
            Method::GET => Ok(Operation::ListBuckets),
            _ => Err(not_allowed()),
        },
        Target::Bucket(bucket) => bucket_operation(method, bucket, &q),
        Target::Object { bucket, key } => {
            object_operation(method, bucket, key, &q, copy_source, headers)
        }
    }
}

fn bucket_operation(method: &Method, bucket: String, q: &Query) -> Result<Operation, S3Error> {
    Ok(match *method {
        Method::PUT => {
            validate_bucket_name(&bucket)?;
            Operation::CreateBucket { bucket }
        }
        Method::HEAD => Operation::HeadBucket { bucket },
        Method::DELETE => Operation::DeleteBucket { bucket },
        Method::POST if q.has("delete") => Operation::DeleteObjects { bucket },
        Method::GET if q.has("location") => Operation::GetBucketLocation { bucket },
        Method::GET if q.has("versions") => Operation::ListObjectVersions {
            bucket,
            list: ListParams::parse(q, "max-keys")?,
            key_marker: q.string("key-marker"),
            version_id_marker: q.string("version-id-marker"),
        },
        Method::GET if q.has("uploads") => Operation::ListMultipartUploads {
            bucket,
            list: ListParams::parse(q, "max-uploads")?,
            key_marker: q.string("key-marker"),
            upload_id_marker: q.string("upload-id-marker"),
        },
        Method::GET => match q.get("list-type") {
            Some("2") => Operation::ListObjectsV2 {
                bucket,
                list: ListParams::parse(q, "max-keys")?,
                continuation_token: q.string("continuation-token"),
                start_after: q.string("start-after"),
                fetch_owner: q.get("fetch-owner") == Some("true"),
            },
            None => Operation::ListObjects {
                bucket,
                list: ListParams::parse(q, "max-keys")?,
                marker: q.string("marker"),
            },
            Some(_) => {
                return Err(S3Error::with_message(
                    ErrorCode::InvalidArgument,
                    "Invalid List Type specified in Request",
                ))
            }
        },
        _ => return Err(not_allowed()),
    })
}

fn object_operation(
    method: &Method,
    bucket: String,
    key: String,
    q: &Query,
    copy_source: Option<CopySource>,
    headers: &HeaderMap,
) -> Result<Operation, S3Error> {
    let upload_id = q.upload_id()?;
    let part_number = q.part_number("partNumber")?;
    Ok(match (method.clone(), upload_id) {
        (Method::GET, Some(upload_id)) => Operation::ListParts {
            bucket,
            key,
            upload_id,
            max_parts: q.count("max-parts")?,
            part_number_marker: q.get("part-number-marker").map_or(Ok(0), |v| {
                v.parse::<u32>().map_err(|_| {
                    S3Error::with_message(
                        ErrorCode::InvalidArgument,
                        "part-number-marker is not a number",
                    )
                })
            })?,
            encoding: q.encoding()?,
        },
        (Method::GET, None) => Operation::GetObject {
            bucket,
            key,
            version_id: q.string("versionId"),
            part_number,
        },
        (Method::HEAD, None) => Operation::HeadObject {
            bucket,
            key,
            version_id: q.string("versionId"),
            part_number,
        },
        (Method::PUT, Some(upload_id)) => {
            let part_number = part_number.ok_or_else(|| {
                S3Error::with_message(
                    ErrorCode::InvalidArgument,
                    "partNumber is required with uploadId",
                )
            })?;
            match copy_source {
                Some(source) => {
                    let range = headers
                        .get("x-amz-copy-source-range")
                        .map(|v| {
                            v.to_str()
                                .map_err(|_| S3Error::new(ErrorCode::InvalidArgument))
                                .and_then(parse_copy_range)
                        })
                        .transpose()?;
                    Operation::UploadPartCopy {
                        bucket,
                        key,
                        upload_id,
                        part_number,
                        source,
                        range,
                    }
                }
                None => Operation::UploadPart {
                    bucket,
                    key,
                    upload_id,
                    part_number,
                },
            }
        }
        (Method::PUT, None) => match copy_source {
            Some(source) => Operation::CopyObject {
                bucket,
                key,
                source,
            },
            None => Operation::PutObject { bucket, key },
        },
        (Method::POST, None) if q.has("uploads") => {
            Operation::CreateMultipartUpload { bucket, key }
        }
        (Method::POST, Some(upload_id)) => Operation::CompleteMultipartUpload {
            bucket,
            key,
            upload_id,
        },
        (Method::DELETE, Some(upload_id)) => Operation::AbortMultipartUpload {
            bucket,
            key,
            upload_id,
        },
        (Method::DELETE, None) => Operation::DeleteObject {
            bucket,
            key,
            version_id: q.string("versionId"),
        },
        _ => return Err(not_allowed()),
    })
}

#[cfg(test)]
#[path = "names_test.rs"]
mod tests;
