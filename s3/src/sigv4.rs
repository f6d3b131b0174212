//! AWS Signature Version 4 for S3: parses the `Authorization` header or a
//! presigned query, rebuilds the canonical request, and checks the signature
//! and the clock. What a verified request may touch is the router's business.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use http::request::Parts;
use http::HeaderMap;
use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, S3Error};
use crate::timestamp::{format_amz_date, parse_amz_date};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The only service name an S3 request may be signed for.
pub const SERVICE: &str = "s3";
/// How far a signed request's time may be from ours (S3's own bound).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest a presigned URL may live: seven days, as in S3.
pub const MAX_PRESIGNED_EXPIRES: u64 = 7 * 24 * 3600;
/// The hex SHA-256 of nothing: the payload hash of a GET.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// Characters SigV4 leaves as they are: RFC 3986's unreserved set.
const ENCODE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` (for the path).
const ENCODE_PATH: &AsciiSet = &ENCODE_ALL.remove(b'/');

/// SigV4's `UriEncode`: every byte but the unreserved ones as `%XY`
/// (upper-case), `/` kept only when `keep_slash`.
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let set = if keep_slash { ENCODE_PATH } else { ENCODE_ALL };
    percent_encoding::percent_encode(bytes, set).to_string()
}

/// Percent-decodes a query component, `+` meaning a space as in a form.
pub(crate) fn decode_query_component(s: &str) -> Vec<u8> {
    let plus_as_space = s.replace('+', " ");
    percent_decode(plus_as_space.as_bytes()).collect()
}

/// A secret access key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(secret: impl Into<String>) -> Self {
        SecretKey(secret.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`:
/// the key every signature of one access key, day and region is made with.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

impl SigningKey {
    pub fn derive(secret: &SecretKey, date: &str, region: &str, service: &str) -> Self {
        let k_date = hmac(format!("AWS4{}", secret.0).as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, region.as_bytes());
        let k_service = hmac(&k_region, service.as_bytes());
        SigningKey(hmac(&k_service, b"aws4_request"))
    }

    /// The signature of `string_to_sign`.
    pub fn sign(&self, string_to_sign: &str) -> [u8; 32] {
        hmac(&self.0, string_to_sign.as_bytes())
    }

    /// Whether `signature` is the signature of `string_to_sign`, compared in
    /// constant time (hmac's `verify_slice`).
    pub fn verify(&self, string_to_sign: &str, signature: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(signature).is_ok()
    }
}

/// What `x-amz-content-sha256` (or a presigned URL) says about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadMode {
    /// The body's SHA-256 is signed; the caller checks it (`checksum::ChecksumSet`).
    Sha256([u8; 32]),
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: aws-chunked, every chunk signed.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and a signed trailer.
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked without chunk signatures, a trailer.
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        Ok(match value {
            UNSIGNED_PAYLOAD => PayloadMode::Unsigned,
            STREAMING_SIGNED => PayloadMode::StreamingSigned,
            STREAMING_SIGNED_TRAILER => PayloadMode::StreamingSignedTrailer,
            STREAMING_UNSIGNED_TRAILER => PayloadMode::StreamingUnsignedTrailer,
            v if v.len() == 64 && v.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) => {
                let mut h = [0u8; 32];
                hex::decode_to_slice(v, &mut h).map_err(|_| AuthError::BadContentSha256)?;
                PayloadMode::Sha256(h)
            }
            _ => return Err(AuthError::BadContentSha256),
        })
    }

    /// The body is aws-chunked (`chunked::ChunkedDecoder` decodes it).
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingSigned
                | PayloadMode::StreamingSignedTrailer
                | PayloadMode::StreamingUnsignedTrailer
        )
    }

    /// The aws-chunked body ends with trailing headers.
    pub fn has_trailer(self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingSignedTrailer | PayloadMode::StreamingUnsignedTrailer
        )
    }
}

/// A request whose signature holds.
#[derive(Clone, Debug)]
pub struct Verified {
    pub access_key: String,
    pub region: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// The request's time, `YYYYMMDDTHHMMSSZ`, as signed.
    pub amz_date: String,
    /// `date/region/s3/aws4_request`.
    pub scope: String,
    /// The request's own signature: the seed of an aws-chunked body's chain.
    pub seed_signature: [u8; 32],
    pub signing_key: SigningKey,
    pub payload: PayloadMode,
    /// Signed in the query string (a presigned URL) rather than a header.
    pub presigned: bool,
}

/// Why a request is not authenticated. `S3Error::from` gives the answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no signature")]
    Missing,
    #[error("signing method not supported: {0}")]
    UnsupportedAlgorithm(String),
    #[error("both an Authorization header and a query signature")]
    TwoSignatures,
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    #[error("malformed query authentication: {0}")]
    MalformedQuery(&'static str),
    #[error("unknown access key {0}")]
    UnknownAccessKey(String),
    #[error("credential scope for region {got:?}, expected {expected:?}")]
    WrongRegion { got: String, expected: String },
    #[error("request time is more than 15 minutes from the server's")]
    Skewed,
    #[error("presigned URL has expired")]
    Expired,
    #[error("presigned URL is not valid yet")]
    NotYetValid,
    #[error("X-Amz-Expires is more than 7 days")]
    ExpiresTooLong,
    #[error("x-amz-content-sha256 is missing")]
    MissingContentSha256,
    #[error("x-amz-content-sha256 is neither a SHA-256 nor a known mode")]
    BadContentSha256,
    #[error("headers present but not signed: {0}")]
    UnsignedHeaders(String),
    #[error("signature does not match")]
    SignatureMismatch,
}

impl From<AuthError> for S3Error {
    fn from(e: AuthError) -> Self {
        use AuthError::*;
        use ErrorCode as C;
        match e {
            Missing => S3Error::new(C::AccessDenied),
            UnsupportedAlgorithm(_) => S3Error::with_message(
                C::InvalidRequest,
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
            ),
            TwoSignatures => S3Error::with_message(
                C::InvalidArgument,
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified",
            ),
            MalformedHeader(what) => S3Error::with_message(
                C::AuthorizationHeaderMalformed,
                format!("The authorization header is malformed; {what}."),
            ),
            MalformedQuery(what) => S3Error::with_message(
                C::AuthorizationQueryParametersError,
                format!("Query-string authentication is malformed; {what}."),
            ),
            UnknownAccessKey(_) => S3Error::new(C::InvalidAccessKeyId),
            WrongRegion { got, expected } => S3Error::with_message(
                C::AuthorizationHeaderMalformed,
                format!("The authorization header is malformed; the region '{got}' is wrong; expecting '{expected}'"),
            ),
            Skewed => S3Error::new(C::RequestTimeTooSkewed),
            Expired => S3Error::with_message(C::AccessDenied, "Request has expired"),
            NotYetValid => S3Error::with_message(C::AccessDenied, "Request is not valid yet"),
            ExpiresTooLong => S3Error::with_message(
                C::AuthorizationQueryParametersError,
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ),
            MissingContentSha256 => S3Error::with_message(
                C::InvalidRequest,
                "Missing required header for this request: x-amz-content-sha256",
            ),
            BadContentSha256 => S3Error::with_message(
                C::InvalidArgument,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value, or a valid sha256 value.",
            ),
            UnsignedHeaders(names) => S3Error::with_message(
                C::AccessDenied,
                format!("There were headers present in the request which were not signed: {names}"),
            ),
            SignatureMismatch => S3Error::new(C::SignatureDoesNotMatch),
        }
    }
}

/// The parts of a signature, from the header or the query.
struct Claim {
    access_key: String,
    date: String,
    region: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    /// `X-Amz-Expires`, for a presigned URL.
    expires: Option<u64>,
    payload_hash: String,
}

/// Splits `AK/YYYYMMDD/region/s3/aws4_request`.
fn parse_credential(c: &str) -> Option<(String, String, String)> {
    let mut parts = c.rsplitn(5, '/');
    let (term, service, region, date, key) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    if term != "aws4_request" || service != SERVICE || !date_ok || key.is_empty() {
        return None;
    }
    Some((key.to_string(), date.to_string(), region.to_string()))
}

fn parse_signed_headers(s: &str) -> Option<Vec<String>> {
    let names: Vec<String> = s.split(';').map(str::to_string).collect();
    let well_formed = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
    });
    (well_formed && names.iter().any(|n| n == "host")).then_some(names)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request time from `x-amz-date`, or else from `Date`.
fn request_time(headers: &HeaderMap) -> Result<String, AuthError> {
    if let Some(d) = header_str(headers, "x-amz-date") {
        return Ok(d.to_string());
    }
    let date = header_str(headers, "date").ok_or(AuthError::MalformedHeader(
        "the request has neither x-amz-date nor Date",
    ))?;
    let t = httpdate::parse_http_date(date)
        .map_err(|_| AuthError::MalformedHeader("the Date header is not an HTTP date"))?;
    Ok(format_amz_date(t))
}

fn claim_from_header(auth: &str, headers: &HeaderMap) -> Result<Claim, AuthError> {
    let rest = match auth.strip_prefix(ALGORITHM) {
        Some(rest) if rest.starts_with([' ', '\t']) => rest,
        _ => {
            let algorithm = auth.split_whitespace().next().unwrap_or("").to_string();
            return Err(AuthError::UnsupportedAlgorithm(algorithm));
        }
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for item in rest.split(',') {
        let (k, v) = item
            .trim()
            .split_once('=')
            .ok_or(AuthError::MalformedHeader("a component is not name=value"))?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => return Err(AuthError::MalformedHeader("unknown component")),
        }
    }
    let credential = credential.ok_or(AuthError::MalformedHeader("missing Credential"))?;
    let (access_key, date, region) = parse_credential(credential).ok_or(
        AuthError::MalformedHeader("the Credential is not AK/YYYYMMDD/region/s3/aws4_request"),
    )?;
    let signed_headers =
        parse_signed_headers(signed.ok_or(AuthError::MalformedHeader("missing SignedHeaders"))?)
            .ok_or(AuthError::MalformedHeader(
                "SignedHeaders must be lower-case names including host",
            ))?;
    let signature = signature
        .ok_or(AuthError::MalformedHeader("missing Signature"))?
        .to_string();
    let payload_hash = header_str(headers, "x-amz-content-sha256")
        .ok_or(AuthError::MissingContentSha256)?
        .to_string();
    Ok(Claim {
        access_key,
        date,
        region,
        signed_headers,
        signature,
        amz_date: request_time(headers)?,
        expires: None,
        payload_hash,
    })
}

/// The decoded query pairs, in order.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&decode_query_component(k)).into_owned(),
                String::from_utf8_lossy(&decode_query_component(v)).into_owned(),
            )
        })
        .collect()
}

fn claim_from_query(pairs: &[(String, String)]) -> Result<Claim, AuthError> {
    let get = |name: &'static str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(AuthError::MalformedQuery(name))
    };
    let algorithm = get("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(AuthError::UnsupportedAlgorithm(algorithm.to_string()));
    }
    let (access_key, date, region) = parse_credential(get("X-Amz-Credential")?).ok_or(
        AuthError::MalformedQuery("X-Amz-Credential is not AK/YYYYMMDD/region/s3/aws4_request"),
    )?;
    let signed_headers = parse_signed_headers(get("X-Amz-SignedHeaders")?).ok_or(
        AuthError::MalformedQuery("X-Amz-SignedHeaders must be lower-case names including host"),
    )?;
    let expires: u64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| AuthError::MalformedQuery("X-Amz-Expires is not a number of seconds"))?;
    if expires > MAX_PRESIGNED_EXPIRES {
        return Err(AuthError::ExpiresTooLong);
    }
    let payload_hash = get("X-Amz-Content-Sha256").unwrap_or(UNSIGNED_PAYLOAD);
    Ok(Claim {
        access_key,
        date,
        region,
        signed_headers,
        signature: get("X-Amz-Signature")?.to_string(),
        amz_date: get("X-Amz-Date")?.to_string(),
        expires: Some(expires),
        payload_hash: payload_hash.to_string(),
    })
}

/// Trims a header value and folds each run of whitespace into one space.
fn fold_value(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SigV4 canonical request of an S3 request.
///
/// - the path is percent-decoded and encoded once with `uri_encode` (S3 does
///   not double-encode), so `/a%20b` and a raw `/a b` sign alike;
/// - the query's pairs are decoded, encoded, and sorted by name then value;
///   a presigned request leaves its `X-Amz-Signature` out;
/// - each signed header's values are joined by `,`, trimmed and folded; a
///   missing `host` comes from the URI's authority (HTTP/2).
pub fn canonical_request(
    method: &str,
    uri: &http::Uri,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
    presigned: bool,
) -> String {
    let path = uri.path();
    let decoded: Vec<u8> = percent_decode(path.as_bytes()).collect();
    let mut canonical_uri = uri_encode(&decoded, true);
    if canonical_uri.is_empty() {
        canonical_uri.push('/');
    }
    let mut query: Vec<(String, String)> = query_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                uri_encode(k.as_bytes(), false),
                uri_encode(v.as_bytes(), false),
            )
        })
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut out = format!("{method}\n{canonical_uri}\n{canonical_query}\n");
    for name in signed_headers {
        let mut values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| fold_value(v.as_bytes()))
            .collect();
        if values.is_empty() && name == "host" {
            if let Some(a) = uri.authority() {
                values.push(a.as_str().to_string());
            }
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// `AWS4-HMAC-SHA256\n<time>\n<scope>\n<hex sha256(canonical request)>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Checks SigV4 signatures; holds the region policy and a cache of signing
/// keys (one per access key, day and region: a key changes once a day).
pub struct Verifier {
    /// The region credentials must be scoped to; `None` accepts any.
    region: Option<String>,
    max_skew: Duration,
    cache: Mutex<HashMap<KeyScope, (SecretKey, SigningKey)>>,
}

/// Access key, date and region: what a signing key is derived for.
type KeyScope = (String, String, String);

/// Entries beyond this empty the cache: a bound on memory, never on correctness.
const KEY_CACHE_CAPACITY: usize = 1024;

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(None)
    }
}

impl Verifier {
    pub fn new(region: Option<String>) -> Self {
        Verifier {
            region,
            max_skew: MAX_SKEW,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn signing_key(
        &self,
        access_key: &str,
        secret: &SecretKey,
        date: &str,
        region: &str,
    ) -> SigningKey {
        let id = (access_key.to_string(), date.to_string(), region.to_string());
        // A std Mutex: held for a map lookup or insert, never across an await.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, k)) = cache.get(&id) {
            if s == secret {
                return k.clone();
            }
        }
        let key = SigningKey::derive(secret, date, region, SERVICE);
        if cache.len() >= KEY_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(id, (secret.clone(), key.clone()));
        key
    }

    /// Verifies a request's SigV4 signature (header or presigned query) at
    /// time `now`, with `lookup` giving the secret of an access key.
    ///
    /// The body is not read: with `PayloadMode::Sha256` the caller checks the
    /// body's hash, with a streaming mode it decodes the body with
    /// `chunked::ChunkedDecoder`, which checks the chunk signatures.
    pub fn verify(
        &self,
        parts: &Parts,
        now: SystemTime,
        lookup: impl Fn(&str) -> Option<SecretKey>,
    ) -> Result<Verified, AuthError> {
        let headers = &parts.headers;
        let pairs = query_pairs(parts.uri.query().unwrap_or(""));
        let in_query = pairs
            .iter()
            .any(|(k, _)| k == "X-Amz-Algorithm" || k == "X-Amz-Signature");
        let authorization = headers.get(http::header::AUTHORIZATION);
        let (claim, presigned) = match (authorization, in_query) {
            (Some(_), true) => return Err(AuthError::TwoSignatures),
            (Some(a), false) => {
                let a = a
                    .to_str()
                    .map_err(|_| AuthError::MalformedHeader("the header is not ASCII"))?;
                (claim_from_header(a, headers)?, false)
            }
            (None, true) => (claim_from_query(&pairs)?, true),
            (None, false) => {
                if pairs.iter().any(|(k, _)| k == "AWSAccessKeyId") {
                    return Err(AuthError::UnsupportedAlgorithm("AWS (SigV2)".into()));
                }
                return Err(AuthError::Missing);
            }
        };
        let malformed = |what| {
            if presigned {
                AuthError::MalformedQuery(what)
            } else {
                AuthError::MalformedHeader(what)
            }
        };
        if let Some(expected) = &self.region {
            if &claim.region != expected {
                return Err(AuthError::WrongRegion {
                    got: claim.region,
                    expected: expected.clone(),
                });
            }
        }
        let payload = PayloadMode::parse(&claim.payload_hash)?;
        let t = parse_amz_date(&claim.amz_date)
            .ok_or_else(|| malformed("the request time is not YYYYMMDDTHHMMSSZ"))?;
        if !claim.amz_date.starts_with(&claim.date) {
            return Err(malformed("the credential date is not the request's date"));
        }
        if !presigned {
            let unsigned: Vec<&str> = headers
                .keys()
                .map(|n| n.as_str())
                .filter(|n| n.starts_with("x-amz-") && !claim.signed_headers.iter().any(|s| s == n))
                .collect();
            if !unsigned.is_empty() {
                return Err(AuthError::UnsignedHeaders(unsigned.join(",")));
            }
        }
        let secret = lookup(&claim.access_key)
            .ok_or_else(|| AuthError::UnknownAccessKey(claim.access_key.clone()))?;
        match claim.expires {
            None => {
                let skew = now.duration_since(t).unwrap_or_else(|e| e.duration());
                if skew > self.max_skew {
                    return Err(AuthError::Skewed);
                }
            }
            Some(expires) => {
                if t.duration_since(now)
                    .is_ok_and(|ahead| ahead > self.max_skew)
                {
                    return Err(AuthError::NotYetValid);
                }
                if now > t + Duration::from_secs(expires) {
                    return Err(AuthError::Expired);
                }
            }
        }
        let mut signature = [0u8; 32];
        if claim.signature.len() != 64
            || hex::decode_to_slice(&claim.signature, &mut signature).is_err()
        {
            return Err(AuthError::SignatureMismatch);
        }
        let scope = format!("{}/{}/{SERVICE}/aws4_request", claim.date, claim.region);
        let canonical = canonical_request(
            parts.method.as_str(),
            &parts.uri,
            headers,
            &claim.signed_headers,
            &claim.payload_hash,
            presigned,
        );
        let sts = string_to_sign(&claim.amz_date, &scope, &canonical);
        let key = self.signing_key(&claim.access_key, &secret, &claim.date, &claim.region);
        if !key.verify(&sts, &signature) {
            return Err(AuthError::SignatureMismatch);
        }
        Ok(Verified {
            access_key: claim.access_key,
            region: claim.region,
            date: claim.date,
            amz_date: claim.amz_date,
            scope,
            seed_signature: signature,
            signing_key: key,
            payload,
            presigned,
        })
    }
}

/// `Verifier::default().verify(..)`: any region, no key cache.
pub fn verify(
    parts: &Parts,
    now: SystemTime,
    lookup: impl Fn(&str) -> Option<SecretKey>,
) -> Result<Verified, AuthError> {
    Verifier::default().verify(parts, now, lookup)
}

#[cfg(test)]
#[path = "sigv4_test.rs"]
pub(crate) mod tests;
