//! Body integrity: the checksums a client may declare (Content-MD5,
//! `x-amz-checksum-*` in a header or a trailer, a signed `x-amz-content-sha256`),
//! computed while the body streams and compared at its end, and the ETags
//! (MD5 of a body, `md5-of-md5s-N` of a multipart object).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use crc_fast::CrcAlgorithm;
use http::HeaderMap;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::error::{ErrorCode, S3Error};
use crate::sigv4::PayloadMode;

/// The `x-amz-checksum-*` algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// The name in `x-amz-sdk-checksum-algorithm`: `CRC32`, `CRC64NVME`, ...
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    /// The header (or trailer) carrying the value: `x-amz-checksum-crc32`, ...
    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The element in XML answers: `ChecksumCRC32`, ...
    pub fn xml_element(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "ChecksumCRC32",
            ChecksumAlgorithm::Crc32c => "ChecksumCRC32C",
            ChecksumAlgorithm::Crc64Nvme => "ChecksumCRC64NVME",
            ChecksumAlgorithm::Sha1 => "ChecksumSHA1",
            ChecksumAlgorithm::Sha256 => "ChecksumSHA256",
        }
    }

    /// Bytes of the digest (before base64).
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.header_name().eq_ignore_ascii_case(name.trim()))
    }
}

/// A streaming hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Crc(crc_fast::Digest, usize),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(alg: ChecksumAlgorithm) -> Self {
        match alg {
            ChecksumAlgorithm::Crc32 => {
                Hasher::Crc(crc_fast::Digest::new(CrcAlgorithm::Crc32IsoHdlc), 4)
            }
            ChecksumAlgorithm::Crc32c => {
                Hasher::Crc(crc_fast::Digest::new(CrcAlgorithm::Crc32Iscsi), 4)
            }
            ChecksumAlgorithm::Crc64Nvme => {
                Hasher::Crc(crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme), 8)
            }
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc(d, _) => d.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The digest bytes; a CRC big-endian, as S3 encodes it.
    pub fn finalize(self) -> Vec<u8> {
        match self {
            Hasher::Crc(d, len) => d.finalize().to_be_bytes()[8 - len..].to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// The base64 checksum of `data`, as in an `x-amz-checksum-*` header.
pub fn checksum_base64(alg: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut h = Hasher::new(alg);
    h.update(data);
    BASE64.encode(h.finalize())
}

/// Hex MD5 of a body: a single-part object's ETag.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// The ETag of a multipart object: `hex(md5(md5(part 1) ++ ... ++ md5(part N)))-N`.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}

/// The MD5 of a part's ETag (`hex` or `"hex"`), for `multipart_etag`.
pub fn parse_etag(etag: &str) -> Option<[u8; 16]> {
    let hex_part = etag.trim().trim_matches('"');
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// Where the value to compare with comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    /// A request header, decoded.
    Header(Vec<u8>),
    /// A trailer of the aws-chunked body.
    Trailer,
    /// Only `x-amz-sdk-checksum-algorithm`: compute it, to store and echo.
    Nothing,
}

/// What the body turned out to be, once every declared value matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyDigests {
    pub md5: [u8; 16],
    /// The checksum the client asked for, base64.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

impl BodyDigests {
    /// The hex MD5: the ETag of a single-part object or of a part.
    pub fn etag(&self) -> String {
        hex::encode(self.md5)
    }
}

/// Every digest a request's body must match, fed as the (decoded) body
/// streams. `finish` says whether it may be stored: on any error, nothing is.
pub struct ChecksumSet {
    md5: Md5,
    content_md5: Option<[u8; 16]>,
    content_sha256: Option<(Sha256, [u8; 32])>,
    checksum: Option<(ChecksumAlgorithm, Hasher, Expected)>,
}

fn invalid(message: String) -> S3Error {
    S3Error::with_message(ErrorCode::InvalidRequest, message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, S3Error> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| invalid(format!("Value for {name} header is invalid.")))
        })
        .transpose()
}

fn decode_value(alg: ChecksumAlgorithm, value: &str) -> Result<Vec<u8>, S3Error> {
    BASE64
        .decode(value.trim())
        .ok()
        .filter(|d| d.len() == alg.digest_len())
        .ok_or_else(|| {
            invalid(format!(
                "Value for {} header is invalid.",
                alg.header_name()
            ))
        })
}

impl ChecksumSet {
    /// Reads the declared digests from the headers. A Content-MD5 that is not
    /// a base64 MD5 is InvalidDigest; two checksums, an unknown trailer, or a
    /// trailer without a trailer payload mode is InvalidRequest.
    pub fn from_request(headers: &HeaderMap, payload: PayloadMode) -> Result<Self, S3Error> {
        let content_md5 = match header(headers, "content-md5")? {
            None => None,
            Some(v) => {
                let d = BASE64
                    .decode(v.trim())
                    .ok()
                    .and_then(|d| <[u8; 16]>::try_from(d).ok())
                    .ok_or_else(|| S3Error::new(ErrorCode::InvalidDigest))?;
                Some(d)
            }
        };
        let content_sha256 = match payload {
            PayloadMode::Sha256(h) => Some((Sha256::new(), h)),
            _ => None,
        };
        let mut declared: Vec<(ChecksumAlgorithm, Expected)> = Vec::new();
        for alg in ChecksumAlgorithm::ALL {
            if let Some(v) = header(headers, alg.header_name())? {
                declared.push((alg, Expected::Header(decode_value(alg, v)?)));
            }
        }
        if let Some(trailer) = header(headers, "x-amz-trailer")? {
            for name in trailer.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let alg = ChecksumAlgorithm::from_header_name(name).ok_or_else(|| {
                    invalid(
                        "The value specified in the x-amz-trailer header is not supported".into(),
                    )
                })?;
                if !payload.has_trailer() {
                    return Err(invalid(
                        "x-amz-trailer requires a STREAMING-*-TRAILER x-amz-content-sha256".into(),
                    ));
                }
                declared.push((alg, Expected::Trailer));
            }
        }
        if declared.len() > 1 {
            return Err(invalid(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
                    .into(),
            ));
        }
        let sdk = header(headers, "x-amz-sdk-checksum-algorithm")?
            .map(|v| {
                ChecksumAlgorithm::from_name(v).ok_or_else(|| {
                    invalid("Value for x-amz-sdk-checksum-algorithm header is invalid.".into())
                })
            })
            .transpose()?;
        let checksum = match (declared.pop(), sdk) {
            (Some((alg, _)), Some(sdk)) if alg != sdk => {
                return Err(invalid(format!(
                    "Value for x-amz-sdk-checksum-algorithm header is invalid: {} does not match the {} sent.",
                    sdk.name(),
                    alg.header_name()
                )))
            }
            (Some((alg, expected)), _) => Some((alg, Hasher::new(alg), expected)),
            (None, Some(alg)) => Some((alg, Hasher::new(alg), Expected::Nothing)),
            (None, None) => None,
        };
        Ok(ChecksumSet {
            md5: Md5::new(),
            content_md5,
            content_sha256,
            checksum,
        })
    }

    /// Feeds the next bytes of the body (decoded, for an aws-chunked one).
    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some((h, _)) = &mut self.content_sha256 {
            h.update(data);
        }
        if let Some((_, h, _)) = &mut self.checksum {
            h.update(data);
        }
    }

    /// Compares every declared value, the trailing checksum taken from
    /// `trailers` (the decoder's, names in lower case).
    pub fn finish(self, trailers: &[(String, String)]) -> Result<BodyDigests, S3Error> {
        if let Some((h, expected)) = self.content_sha256 {
            if h.finalize().as_slice() != expected {
                return Err(S3Error::new(ErrorCode::XAmzContentSHA256Mismatch));
            }
        }
        let md5: [u8; 16] = self.md5.finalize().into();
        if self.content_md5.is_some_and(|want| want != md5) {
            return Err(S3Error::new(ErrorCode::BadDigest));
        }
        let checksum = match self.checksum {
            None => None,
            Some((alg, hasher, expected)) => {
                let got = hasher.finalize();
                let want = match expected {
                    Expected::Header(v) => Some(v),
                    Expected::Trailer => {
                        let (_, v) = trailers
                            .iter()
                            .find(|(n, _)| n == alg.header_name())
                            .ok_or_else(|| {
                                invalid(format!(
                                    "The {} trailer declared in x-amz-trailer was not sent.",
                                    alg.header_name()
                                ))
                            })?;
                        Some(decode_value(alg, v)?)
                    }
                    Expected::Nothing => None,
                };
                if want.is_some_and(|w| w != got) {
                    return Err(S3Error::with_message(
                        ErrorCode::BadDigest,
                        format!(
                            "The {} you specified did not match the calculated checksum.",
                            alg.name()
                        ),
                    ));
                }
                Some((alg, BASE64.encode(got)))
            }
        };
        Ok(BodyDigests { md5, checksum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &[u8] = b"123456789";

    fn hex_of(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(alg);
        h.update(data);
        hex::encode(h.finalize())
    }

    #[test]
    fn crc_check_values() {
        // The catalogue's check values: CRC-32/ISO-HDLC, CRC-32/ISCSI, CRC-64/NVME.
        assert_eq!(hex_of(ChecksumAlgorithm::Crc32, CHECK), "cbf43926");
        assert_eq!(hex_of(ChecksumAlgorithm::Crc32c, CHECK), "e3069283");
        assert_eq!(
            hex_of(ChecksumAlgorithm::Crc64Nvme, CHECK),
            "ae8b14860a799888"
        );
        assert_eq!(
            hex_of(ChecksumAlgorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex_of(ChecksumAlgorithm::Sha256, b""),
            crate::sigv4::EMPTY_SHA256
        );
    }

    #[test]
    fn aws_trailer_example_crc32c() {
        // sigv4-streaming-trailers.html: 66,560 bytes of 'a' carry
        // `x-amz-checksum-crc32c:sOO8/Q==`.
        assert_eq!(
            checksum_base64(ChecksumAlgorithm::Crc32c, &vec![b'a'; 66_560]),
            "sOO8/Q=="
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in ChecksumAlgorithm::ALL {
            let mut h = Hasher::new(alg);
            for piece in data.chunks(17) {
                h.update(piece);
            }
            assert_eq!(
                BASE64.encode(h.finalize()),
                checksum_base64(alg, &data),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn etags() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        let a = parse_etag("\"d41d8cd98f00b204e9800998ecf8427e\"").unwrap();
        let b: [u8; 16] = Md5::digest(b"hello").into();
        // hex(md5(md5("") ++ md5("hello")))-2, computed by hand in the test.
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(multipart_etag(&[a, b]), format!("{}-2", md5_hex(&both)));
        assert_eq!(parse_etag("xyz"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn run(
        pairs: &[(&str, &str)],
        mode: PayloadMode,
        body: &[u8],
        trailers: &[(String, String)],
    ) -> Result<BodyDigests, S3Error> {
        let mut set = ChecksumSet::from_request(&headers(pairs), mode)?;
        for piece in body.chunks(3) {
            set.update(piece);
        }
        set.finish(trailers)
    }

    #[test]
    fn declared_values_are_checked() {
        let body = b"Welcome to Amazon S3.";
        let md5 = BASE64.encode(Md5::digest(body));
        let crc = checksum_base64(ChecksumAlgorithm::Crc32, body);
        let d = run(
            &[("content-md5", &md5), ("x-amz-checksum-crc32", &crc)],
            PayloadMode::Unsigned,
            body,
            &[],
        )
        .unwrap();
        assert_eq!(d.etag(), md5_hex(body));
        assert_eq!(d.checksum, Some((ChecksumAlgorithm::Crc32, crc.clone())));

        let e = run(
            &[("content-md5", &md5)],
            PayloadMode::Unsigned,
            b"other",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadDigest);
        let e = run(
            &[("content-md5", "not-md5")],
            PayloadMode::Unsigned,
            body,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidDigest);
        let e = run(
            &[("x-amz-checksum-crc32", &crc)],
            PayloadMode::Unsigned,
            b"other",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadDigest);
        assert_eq!(
            e.message,
            "The CRC32 you specified did not match the calculated checksum."
        );
        let e = run(
            &[("x-amz-checksum-crc32", "AAAA")],
            PayloadMode::Unsigned,
            body,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);

        let sha = crate::sigv4::PayloadMode::parse(&hex::encode(Sha256::digest(body))).unwrap();
        run(&[], sha, body, &[]).unwrap();
        let e = run(&[], sha, b"tampered", &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::XAmzContentSHA256Mismatch);
    }

    #[test]
    fn algorithm_declarations_must_agree() {
        let crc = checksum_base64(ChecksumAlgorithm::Crc32, b"x");
        let sha = checksum_base64(ChecksumAlgorithm::Sha1, b"x");
        let e = run(
            &[
                ("x-amz-checksum-crc32", &crc),
                ("x-amz-checksum-sha1", &sha),
            ],
            PayloadMode::Unsigned,
            b"x",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = run(
            &[
                ("x-amz-checksum-crc32", &crc),
                ("x-amz-sdk-checksum-algorithm", "SHA1"),
            ],
            PayloadMode::Unsigned,
            b"x",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        // Only the algorithm: computed, to be stored and echoed.
        let d = run(
            &[("x-amz-sdk-checksum-algorithm", "crc64nvme")],
            PayloadMode::Unsigned,
            b"x",
            &[],
        )
        .unwrap();
        assert_eq!(d.checksum.unwrap().0, ChecksumAlgorithm::Crc64Nvme);
        // A trailer needs a trailer mode.
        let e = run(
            &[("x-amz-trailer", "x-amz-checksum-crc32")],
            PayloadMode::Unsigned,
            b"x",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = run(
            &[("x-amz-trailer", "x-amz-meta-foo")],
            PayloadMode::StreamingUnsignedTrailer,
            b"x",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn trailing_checksums_are_checked() {
        let body = b"hello world";
        let h = [("x-amz-trailer", "x-amz-checksum-crc32c")];
        let good = vec![(
            "x-amz-checksum-crc32c".to_string(),
            checksum_base64(ChecksumAlgorithm::Crc32c, body),
        )];
        let d = run(&h, PayloadMode::StreamingUnsignedTrailer, body, &good).unwrap();
        assert_eq!(d.checksum.unwrap().1, good[0].1);
        let bad = vec![(
            "x-amz-checksum-crc32c".to_string(),
            checksum_base64(ChecksumAlgorithm::Crc32c, b"other"),
        )];
        let e = run(&h, PayloadMode::StreamingUnsignedTrailer, body, &bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadDigest);
        let e = run(&h, PayloadMode::StreamingUnsignedTrailer, body, &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
}
