//! S3's XML: the response documents (written by hand, escaping every key) and
//! the three request documents a client sends (CompleteMultipartUpload,
//! Delete, CreateBucketConfiguration), parsed with quick-xml under size limits.

use std::borrow::Cow;
use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::checksum::ChecksumAlgorithm;
use crate::error::{ErrorCode, S3Error};
use crate::sigv4::uri_encode;
use crate::timestamp::format_iso8601;

const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Escapes text for an element's content. Besides the five XML entities, C0
/// control characters (which XML 1.0 cannot carry raw, and `\r`, `\n`, `\t`,
/// which a parser would normalise) become character references, as S3 writes
/// them. A client that cannot read those asks for `encoding-type=url`.
pub fn escape(s: &str) -> Cow<'_, str> {
    let needs =
        |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || (c as u32) < 0x20 || c == '\u{7f}';
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("&#x{:X};", c as u32));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A minimal XML writer: S3's documents are flat and few, so a string with
/// escaping is all they need.
pub struct XmlWriter {
    out: String,
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        XmlWriter {
            out: String::from(DECLARATION),
        }
    }
    /// Opens the root element in S3's namespace.
    pub fn open_root(&mut self, tag: &str) {
        self.out.push_str(&format!("<{tag} xmlns=\"{NAMESPACE}\">"));
    }
    pub fn open(&mut self, tag: &str) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
    }
    pub fn close(&mut self, tag: &str) {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }
    pub fn elem(&mut self, tag: &str, text: &str) {
        self.open(tag);
        self.out.push_str(&escape(text));
        self.close(tag);
    }
    pub fn elem_opt(&mut self, tag: &str, text: Option<&str>) {
        if let Some(t) = text {
            self.elem(tag, t);
        }
    }
    pub fn finish(self) -> String {
        self.out
    }
}

/// `encoding-type` of a listing: `url` asks for keys, prefixes and markers
/// percent-encoded (SigV4's encoding, `/` kept), so any key survives any XML parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Plain,
    Url,
}

impl Encoding {
    fn apply<'a>(self, s: &'a str) -> Cow<'a, str> {
        match self {
            Encoding::Plain => Cow::Borrowed(s),
            Encoding::Url => Cow::Owned(uri_encode(s.as_bytes(), true)),
        }
    }
    fn write_type(self, w: &mut XmlWriter) {
        if self == Encoding::Url {
            w.elem("EncodingType", "url");
        }
    }
}

/// An ETag as S3 writes it: in double quotes.
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub display_name: String,
}

fn write_owner(w: &mut XmlWriter, tag: &str, owner: &Owner) {
    w.open(tag);
    w.elem("ID", &owner.id);
    w.elem("DisplayName", &owner.display_name);
    w.close(tag);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketEntry {
    pub name: String,
    pub created: SystemTime,
}

/// `ListAllMyBucketsResult`.
pub fn list_buckets(owner: &Owner, buckets: &[BucketEntry]) -> String {
    let mut w = XmlWriter::new();
    w.open_root("ListAllMyBucketsResult");
    write_owner(&mut w, "Owner", owner);
    w.open("Buckets");
    for b in buckets {
        w.open("Bucket");
        w.elem("Name", &b.name);
        w.elem("CreationDate", &format_iso8601(b.created));
        w.close("Bucket");
    }
    w.close("Buckets");
    w.close("ListAllMyBucketsResult");
    w.finish()
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub last_modified: SystemTime,
    /// Hex MD5, or the multipart `hex-N`; quoted when written.
    pub etag: String,
    pub size: u64,
}

fn write_object_fields(w: &mut XmlWriter, o: &ObjectEntry, enc: Encoding) {
    w.elem("Key", &enc.apply(&o.key));
    w.elem("LastModified", &format_iso8601(o.last_modified));
    w.elem("ETag", &quoted(&o.etag));
    w.elem("Size", &o.size.to_string());
}

fn write_common_prefixes(w: &mut XmlWriter, prefixes: &[String], enc: Encoding) {
    for p in prefixes {
        w.open("CommonPrefixes");
        w.elem("Prefix", &enc.apply(p));
        w.close("CommonPrefixes");
    }
}

/// `ListBucketResult` of ListObjectsV2.
#[derive(Clone, Debug, Default)]
pub struct ListObjectsV2Result {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub start_after: Option<String>,
    pub continuation_token: Option<String>,
    pub next_continuation_token: Option<String>,
    pub is_truncated: bool,
    pub encoding: Encoding,
    /// Given when the request had `fetch-owner=true`.
    pub owner: Option<Owner>,
    pub contents: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
}

impl ListObjectsV2Result {
    pub fn to_xml(&self) -> String {
        let enc = self.encoding;
        let mut w = XmlWriter::new();
        w.open_root("ListBucketResult");
        w.elem("Name", &self.bucket);
        w.elem("Prefix", &enc.apply(&self.prefix));
        w.elem_opt(
            "Delimiter",
            self.delimiter.as_deref().map(|d| enc.apply(d)).as_deref(),
        );
        w.elem("MaxKeys", &self.max_keys.to_string());
        w.elem(
            "KeyCount",
            &(self.contents.len() + self.common_prefixes.len()).to_string(),
        );
        w.elem_opt(
            "StartAfter",
            self.start_after.as_deref().map(|s| enc.apply(s)).as_deref(),
        );
        w.elem_opt("ContinuationToken", self.continuation_token.as_deref());
        w.elem_opt(
            "NextContinuationToken",
            self.next_continuation_token.as_deref(),
        );
        w.elem("IsTruncated", bool_str(self.is_truncated));
        enc.write_type(&mut w);
        for o in &self.contents {
            w.open("Contents");
            write_object_fields(&mut w, o, enc);
            if let Some(owner) = &self.owner {
                write_owner(&mut w, "Owner", owner);
            }
            w.elem("StorageClass", "STANDARD");
            w.close("Contents");
        }
        write_common_prefixes(&mut w, &self.common_prefixes, enc);
        w.close("ListBucketResult");
        w.finish()
    }
}

/// `ListBucketResult` of ListObjects (V1, with markers).
#[derive(Clone, Debug, Default)]
pub struct ListObjectsV1Result {
    pub bucket: String,
    pub prefix: String,
    pub marker: String,
    /// S3 gives it only with a delimiter; without one the client continues
    /// from the last key.
    pub next_marker: Option<String>,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub is_truncated: bool,
    pub encoding: Encoding,
    pub owner: Option<Owner>,
    pub contents: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
}

impl ListObjectsV1Result {
    pub fn to_xml(&self) -> String {
        let enc = self.encoding;
        let mut w = XmlWriter::new();
        w.open_root("ListBucketResult");
        w.elem("Name", &self.bucket);
        w.elem("Prefix", &enc.apply(&self.prefix));
        w.elem("Marker", &enc.apply(&self.marker));
        w.elem_opt(
            "NextMarker",
            self.next_marker.as_deref().map(|m| enc.apply(m)).as_deref(),
        );
        w.elem("MaxKeys", &self.max_keys.to_string());
        w.elem_opt(
            "Delimiter",
            self.delimiter.as_deref().map(|d| enc.apply(d)).as_deref(),
        );
        w.elem("IsTruncated", bool_str(self.is_truncated));
        enc.write_type(&mut w);
        for o in &self.contents {
            w.open("Contents");
            write_object_fields(&mut w, o, enc);
            if let Some(owner) = &self.owner {
                write_owner(&mut w, "Owner", owner);
            }
            w.elem("StorageClass", "STANDARD");
            w.close("Contents");
        }
        write_common_prefixes(&mut w, &self.common_prefixes, enc);
        w.close("ListBucketResult");
        w.finish()
    }
}

/// `ListVersionsResult` for an unversioned bucket: each object is its one
/// version, `null`, and the latest.
#[derive(Clone, Debug, Default)]
pub struct ListVersionsResult {
    pub bucket: String,
    pub prefix: String,
    pub key_marker: String,
    pub version_id_marker: String,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
    pub delimiter: Option<String>,
    pub max_keys: u32,
    pub is_truncated: bool,
    pub encoding: Encoding,
    pub owner: Option<Owner>,
    pub versions: Vec<ObjectEntry>,
    pub common_prefixes: Vec<String>,
}

impl ListVersionsResult {
    pub fn to_xml(&self) -> String {
        let enc = self.encoding;
        let mut w = XmlWriter::new();
        w.open_root("ListVersionsResult");
        w.elem("Name", &self.bucket);
        w.elem("Prefix", &enc.apply(&self.prefix));
        w.elem("KeyMarker", &enc.apply(&self.key_marker));
        w.elem("VersionIdMarker", &self.version_id_marker);
        w.elem_opt(
            "NextKeyMarker",
            self.next_key_marker
                .as_deref()
                .map(|m| enc.apply(m))
                .as_deref(),
        );
        w.elem_opt(
            "NextVersionIdMarker",
            self.next_version_id_marker.as_deref(),
        );
        w.elem("MaxKeys", &self.max_keys.to_string());
        w.elem_opt(
            "Delimiter",
            self.delimiter.as_deref().map(|d| enc.apply(d)).as_deref(),
        );
        w.elem("IsTruncated", bool_str(self.is_truncated));
        enc.write_type(&mut w);
        for o in &self.versions {
            w.open("Version");
            w.elem("Key", &enc.apply(&o.key));
            w.elem("VersionId", "null");
            w.elem("IsLatest", "true");
            w.elem("LastModified", &format_iso8601(o.last_modified));
            w.elem("ETag", &quoted(&o.etag));
            w.elem("Size", &o.size.to_string());
            if let Some(owner) = &self.owner {
                write_owner(&mut w, "Owner", owner);
            }
            w.elem("StorageClass", "STANDARD");
            w.close("Version");
        }
        write_common_prefixes(&mut w, &self.common_prefixes, enc);
        w.close("ListVersionsResult");
        w.finish()
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// `InitiateMultipartUploadResult`.
pub fn initiate_multipart_upload(bucket: &str, key: &str, upload_id: &str) -> String {
    let mut w = XmlWriter::new();
    w.open_root("InitiateMultipartUploadResult");
    w.elem("Bucket", bucket);
    w.elem("Key", key);
    w.elem("UploadId", upload_id);
    w.close("InitiateMultipartUploadResult");
    w.finish()
}

/// `CompleteMultipartUploadResult`. `etag` is the multipart form `hex-N`;
/// `checksum` the object's checksum when one was asked for.
pub fn complete_multipart_upload(
    location: &str,
    bucket: &str,
    key: &str,
    etag: &str,
    checksum: Option<(ChecksumAlgorithm, &str)>,
) -> String {
    let mut w = XmlWriter::new();
    w.open_root("CompleteMultipartUploadResult");
    w.elem("Location", location);
    w.elem("Bucket", bucket);
    w.elem("Key", key);
    w.elem("ETag", &quoted(etag));
    if let Some((alg, value)) = checksum {
        w.elem(alg.xml_element(), value);
    }
    w.close("CompleteMultipartUploadResult");
    w.finish()
}

/// `CopyObjectResult`.
pub fn copy_object_result(etag: &str, last_modified: SystemTime) -> String {
    copy_result("CopyObjectResult", etag, last_modified)
}

/// `CopyPartResult` (UploadPartCopy).
pub fn copy_part_result(etag: &str, last_modified: SystemTime) -> String {
    copy_result("CopyPartResult", etag, last_modified)
}

fn copy_result(root: &str, etag: &str, last_modified: SystemTime) -> String {
    let mut w = XmlWriter::new();
    w.open_root(root);
    w.elem("LastModified", &format_iso8601(last_modified));
    w.elem("ETag", &quoted(etag));
    w.close(root);
    w.finish()
}

/// One part of a `ListPartsResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartEntry {
    pub part_number: u32,
    pub last_modified: SystemTime,
    pub etag: String,
    pub size: u64,
}

/// `ListPartsResult`.
#[derive(Clone, Debug, Default)]
pub struct ListPartsResult {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number_marker: u32,
    pub next_part_number_marker: Option<u32>,
    pub max_parts: u32,
    pub is_truncated: bool,
    pub encoding: Encoding,
    pub owner: Option<Owner>,
    pub parts: Vec<PartEntry>,
}

impl ListPartsResult {
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.open_root("ListPartsResult");
        w.elem("Bucket", &self.bucket);
        w.elem("Key", &self.encoding.apply(&self.key));
        w.elem("UploadId", &self.upload_id);
        if let Some(owner) = &self.owner {
            write_owner(&mut w, "Initiator", owner);
            write_owner(&mut w, "Owner", owner);
        }
        w.elem("StorageClass", "STANDARD");
        w.elem("PartNumberMarker", &self.part_number_marker.to_string());
        if let Some(n) = self.next_part_number_marker {
            w.elem("NextPartNumberMarker", &n.to_string());
        }
        w.elem("MaxParts", &self.max_parts.to_string());
        w.elem("IsTruncated", bool_str(self.is_truncated));
        self.encoding.write_type(&mut w);
        for p in &self.parts {
            w.open("Part");
            w.elem("PartNumber", &p.part_number.to_string());
            w.elem("LastModified", &format_iso8601(p.last_modified));
            w.elem("ETag", &quoted(&p.etag));
            w.elem("Size", &p.size.to_string());
            w.close("Part");
        }
        w.close("ListPartsResult");
        w.finish()
    }
}

/// One upload of a `ListMultipartUploadsResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// `ListMultipartUploadsResult`.
#[derive(Clone, Debug, Default)]
pub struct ListMultipartUploadsResult {
    pub bucket: String,
    pub key_marker: String,
    pub upload_id_marker: String,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_uploads: u32,
    pub is_truncated: bool,
    pub encoding: Encoding,
    pub owner: Option<Owner>,
    pub uploads: Vec<UploadEntry>,
    pub common_prefixes: Vec<String>,
}

impl ListMultipartUploadsResult {
    pub fn to_xml(&self) -> String {
        let enc = self.encoding;
        let mut w = XmlWriter::new();
        w.open_root("ListMultipartUploadsResult");
        w.elem("Bucket", &self.bucket);
        w.elem("KeyMarker", &enc.apply(&self.key_marker));
        w.elem("UploadIdMarker", &self.upload_id_marker);
        w.elem_opt(
            "NextKeyMarker",
            self.next_key_marker
                .as_deref()
                .map(|m| enc.apply(m))
                .as_deref(),
        );
        w.elem_opt("NextUploadIdMarker", self.next_upload_id_marker.as_deref());
        w.elem("Prefix", &enc.apply(&self.prefix));
        w.elem_opt(
            "Delimiter",
            self.delimiter.as_deref().map(|d| enc.apply(d)).as_deref(),
        );
        w.elem("MaxUploads", &self.max_uploads.to_string());
        w.elem("IsTruncated", bool_str(self.is_truncated));
        enc.write_type(&mut w);
        for u in &self.uploads {
            w.open("Upload");
            w.elem("Key", &enc.apply(&u.key));
            w.elem("UploadId", &u.upload_id);
            if let Some(owner) = &self.owner {
                write_owner(&mut w, "Initiator", owner);
                write_owner(&mut w, "Owner", owner);
            }
            w.elem("StorageClass", "STANDARD");
            w.elem("Initiated", &format_iso8601(u.initiated));
            w.close("Upload");
        }
        write_common_prefixes(&mut w, &self.common_prefixes, enc);
        w.close("ListMultipartUploadsResult");
        w.finish()
    }
}

/// One refused key of a DeleteObjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteError {
    pub key: String,
    pub version_id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

/// `DeleteResult`; with `quiet` only the errors are listed.
#[derive(Clone, Debug, Default)]
pub struct DeleteResult {
    pub deleted: Vec<ObjectIdentifier>,
    pub errors: Vec<DeleteError>,
}

impl DeleteResult {
    pub fn to_xml(&self, quiet: bool) -> String {
        let mut w = XmlWriter::new();
        w.open_root("DeleteResult");
        if !quiet {
            for d in &self.deleted {
                w.open("Deleted");
                w.elem("Key", &d.key);
                w.elem_opt("VersionId", d.version_id.as_deref());
                w.close("Deleted");
            }
        }
        for e in &self.errors {
            w.open("Error");
            w.elem("Key", &e.key);
            w.elem_opt("VersionId", e.version_id.as_deref());
            w.elem("Code", e.code.code());
            w.elem("Message", &e.message);
            w.close("Error");
        }
        w.close("DeleteResult");
        w.finish()
    }
}

/// `LocationConstraint`: empty for us-east-1, as S3 answers.
pub fn location_constraint(region: &str) -> String {
    let mut w = XmlWriter::new();
    if region == "us-east-1" {
        w.out
            .push_str(&format!("<LocationConstraint xmlns=\"{NAMESPACE}\"/>"));
    } else {
        w.open_root("LocationConstraint");
        w.out.push_str(&escape(region));
        w.close("LocationConstraint");
    }
    w.finish()
}

// ---- request documents ----

/// The largest CompleteMultipartUpload body: 10,000 parts with a checksum
/// each fit in about 2 MiB.
pub const MAX_COMPLETE_BODY: usize = 4 << 20;
/// The largest Delete body: 1,000 keys of 1,024 bytes, generously escaped.
pub const MAX_DELETE_BODY: usize = 6 << 20;
/// The largest CreateBucketConfiguration body.
pub const MAX_CREATE_BUCKET_BODY: usize = 64 << 10;
/// S3's limits on the lists inside them.
pub const MAX_PARTS: usize = 10_000;
pub const MAX_DELETE_KEYS: usize = 1_000;
/// Deeper than any S3 request document nests; bounds the parser's stack.
const MAX_DEPTH: usize = 8;

/// An element of a parsed request document: local name, its direct text,
/// and its children. Enough for S3's few flat documents.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn malformed() -> S3Error {
    S3Error::new(ErrorCode::MalformedXML)
}

fn local_name(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn resolve_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// Parses a request document into elements. Refuses a body over `limit`
/// (MaxMessageLengthExceeded), a DOCTYPE (no entity tricks), more than
/// `max_elements` elements, and anything not well-formed (MalformedXML).
fn parse_document(body: &[u8], limit: usize, max_elements: usize) -> Result<Element, S3Error> {
    if body.len() > limit {
        return Err(S3Error::new(ErrorCode::MaxMessageLengthExceeded));
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed())?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|_| malformed())?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => return Err(malformed()),
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > max_elements || stack.len() >= MAX_DEPTH {
                    return Err(malformed());
                }
                let element = Element {
                    name: local_name(e.name().as_ref()),
                    ..Element::default()
                };
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or_else(malformed)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None if t.trim().is_empty() => {}
                None => return Err(malformed()),
            },
            Event::CData(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None => return Err(malformed()),
            },
            Event::GeneralRef(r) => {
                let el = stack.last_mut().ok_or_else(malformed)?;
                let c = match r.resolve_char_ref().map_err(|_| malformed())? {
                    Some(c) => c,
                    None => resolve_entity(&r).ok_or_else(malformed)?,
                };
                el.text.push(c);
            }
            Event::DocType(_) => return Err(malformed()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed());
    }
    root.ok_or_else(malformed)
}

/// One part named by CompleteMultipartUpload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    /// Without its quotes.
    pub etag: String,
}

/// Parses a CompleteMultipartUpload body: 1 to 10,000 parts, numbered 1 to
/// 10,000, in strictly ascending order (else InvalidPartOrder).
pub fn parse_complete_multipart_upload(body: &[u8]) -> Result<Vec<CompletedPart>, S3Error> {
    // Each part is a Part, a PartNumber, an ETag and perhaps a checksum.
    let root = parse_document(body, MAX_COMPLETE_BODY, 1 + MAX_PARTS * 4)?;
    if root.name != "CompleteMultipartUpload" {
        return Err(malformed());
    }
    let mut parts = Vec::new();
    for p in &root.children {
        if p.name != "Part" {
            return Err(malformed());
        }
        let number = p.child("PartNumber").ok_or_else(malformed)?.text.trim();
        let part_number: u32 = number.parse().map_err(|_| malformed())?;
        if !(1..=MAX_PARTS as u32).contains(&part_number) {
            return Err(S3Error::with_message(
                ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            ));
        }
        let etag = p.child("ETag").ok_or_else(malformed)?.text.trim();
        let etag = etag.trim_matches('"').to_string();
        if let Some(last) = parts.last() {
            let last: &CompletedPart = last;
            if part_number <= last.part_number {
                return Err(S3Error::new(ErrorCode::InvalidPartOrder));
            }
        }
        parts.push(CompletedPart { part_number, etag });
    }
    if parts.is_empty() || parts.len() > MAX_PARTS {
        return Err(malformed());
    }
    Ok(parts)
}

/// A key (and version) named by DeleteObjects, or deleted by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectIdentifier {
    pub key: String,
    pub version_id: Option<String>,
}

/// A parsed DeleteObjects body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub objects: Vec<ObjectIdentifier>,
}

/// Parses a Delete body: 1 to 1,000 objects (S3 answers MalformedXML beyond).
pub fn parse_delete(body: &[u8]) -> Result<DeleteRequest, S3Error> {
    let root = parse_document(body, MAX_DELETE_BODY, 2 + MAX_DELETE_KEYS * 3 + 3)?;
    if root.name != "Delete" {
        return Err(malformed());
    }
    let mut quiet = false;
    let mut objects = Vec::new();
    for c in &root.children {
        match c.name.as_str() {
            "Quiet" => {
                quiet = match c.text.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(malformed()),
                }
            }
            "Object" => {
                let key = c.child("Key").ok_or_else(malformed)?.text.clone();
                let version_id = c.child("VersionId").map(|v| v.text.trim().to_string());
                objects.push(ObjectIdentifier { key, version_id });
            }
            _ => return Err(malformed()),
        }
    }
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(malformed());
    }
    Ok(DeleteRequest { quiet, objects })
}

/// Parses a CreateBucket body: empty, or a `CreateBucketConfiguration` with
/// perhaps a `LocationConstraint` (returned).
pub fn parse_create_bucket_configuration(body: &[u8]) -> Result<Option<String>, S3Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let root = parse_document(body, MAX_CREATE_BUCKET_BODY, 64)?;
    if root.name != "CreateBucketConfiguration" {
        return Err(malformed());
    }
    Ok(root
        .child("LocationConstraint")
        .map(|l| l.text.trim().to_string())
        .filter(|l| !l.is_empty()))
}

#[cfg(test)]
#[path = "xml_test.rs"]
mod tests;
