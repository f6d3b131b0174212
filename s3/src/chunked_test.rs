//! The aws-chunked decoder against AWS's two published examples, then
//! broken bodies.
//!
//! Sources (65 KiB of 'a' in chunks of 64 KiB, 1 KiB and 0, signed with the
//! example credentials at 20130524T000000Z):
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>

use bytes::Bytes;

use super::*;
use crate::checksum::{checksum_base64, ChecksumAlgorithm, ChecksumSet};
use crate::sigv4::tests::{chunked_example_parts, example_time, lookup};
use crate::sigv4::{verify, PayloadMode, Verified};

const CHUNK1: &str = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
const CHUNK2: &str = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
const CHUNK3: &str = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9";

const T_CHUNK1: &str = "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2";
const T_CHUNK2: &str = "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7";
const T_CHUNK3: &str = "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992";
const T_TRAILER: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

fn signed_body(sigs: [&str; 3]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(format!("10000;chunk-signature={}\r\n", sigs[0]).as_bytes());
    b.extend(std::iter::repeat_n(b'a', 65_536));
    b.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", sigs[1]).as_bytes());
    b.extend(std::iter::repeat_n(b'a', 1024));
    b.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n", sigs[2]).as_bytes());
    b
}

/// The streaming example's body exactly as AWS frames it (66,824 bytes).
fn example_body() -> Vec<u8> {
    let mut b = signed_body([CHUNK1, CHUNK2, CHUNK3]);
    b.extend_from_slice(b"\r\n");
    b
}

/// The trailer example's body: the chunks, the CRC32C trailer, its signature.
fn trailer_body(trailer: &str, signature: &str) -> Vec<u8> {
    let mut b = signed_body([T_CHUNK1, T_CHUNK2, T_CHUNK3]);
    b.extend_from_slice(
        format!("{trailer}\r\nx-amz-trailer-signature:{signature}\r\n\r\n").as_bytes(),
    );
    b
}

fn verified(trailer: bool) -> (Verified, http::request::Parts) {
    let p = chunked_example_parts(trailer);
    (verify(&p, example_time(), lookup).unwrap(), p)
}

fn decoder(trailer: bool, limits: ChunkedLimits) -> ChunkedDecoder {
    let (v, p) = verified(trailer);
    ChunkedDecoder::from_request(&v, &p.headers, limits).unwrap()
}

type Trailers = Vec<(String, String)>;

/// Feeds `body` in pieces of `step` bytes; returns the payload and the trailers.
fn run(
    dec: &mut ChunkedDecoder,
    body: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Trailers), ChunkedError> {
    let mut out = Vec::new();
    for piece in body.chunks(step.max(1)) {
        let mut input = Bytes::copy_from_slice(piece);
        while let Some(data) = dec.decode(&mut input)? {
            out.extend_from_slice(&data);
        }
        assert!(input.is_empty());
    }
    let trailers = dec.finish()?;
    Ok((out, trailers))
}

#[test]
fn aws_streaming_example_decodes() {
    let body = example_body();
    assert_eq!(body.len(), 66_824, "the example's Content-Length");
    let mut dec = decoder(false, ChunkedLimits::default());
    let (payload, trailers) = run(&mut dec, &body, body.len()).unwrap();
    assert_eq!(payload, vec![b'a'; 66_560]);
    assert!(trailers.is_empty());
    assert!(dec.is_done());
}

#[test]
fn aws_trailer_example_decodes_and_its_checksum_holds() {
    let body = trailer_body("x-amz-checksum-crc32c:sOO8/Q==", T_TRAILER);
    assert_eq!(body.len(), 66_946);
    let (v, p) = verified(true);
    let mut dec = ChunkedDecoder::from_request(&v, &p.headers, ChunkedLimits::default()).unwrap();
    let mut sums = ChecksumSet::from_request(&p.headers, v.payload).unwrap();
    let (payload, trailers) = run(&mut dec, &body, 4096).unwrap();
    assert_eq!(payload, vec![b'a'; 66_560]);
    assert_eq!(
        trailers,
        vec![("x-amz-checksum-crc32c".to_string(), "sOO8/Q==".to_string())]
    );
    sums.update(&payload);
    let digests = sums.finish(&trailers).unwrap();
    assert_eq!(
        digests.checksum,
        Some((ChecksumAlgorithm::Crc32c, "sOO8/Q==".into()))
    );
}

#[test]
fn trailer_forms_seen_in_the_wild_decode() {
    // An empty line between the final chunk and the trailers, and no last CRLF.
    let mut body = signed_body([T_CHUNK1, T_CHUNK2, T_CHUNK3]);
    body.extend_from_slice(
        format!("\r\nx-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{T_TRAILER}\r\n")
            .as_bytes(),
    );
    let (payload, trailers) =
        run(&mut decoder(true, ChunkedLimits::default()), &body, 1000).unwrap();
    assert_eq!(payload.len(), 66_560);
    assert_eq!(trailers.len(), 1);
}

#[test]
fn any_feeding_gives_the_same_output() {
    let body = example_body();
    let whole = run(
        &mut decoder(false, ChunkedLimits::default()),
        &body,
        body.len(),
    )
    .unwrap();
    for step in [1, 2, 3, 7, 85, 86, 87, 1000, 65_622] {
        let got = run(&mut decoder(false, ChunkedLimits::default()), &body, step).unwrap();
        assert_eq!(got, whole, "step {step}");
    }
    let body = trailer_body("x-amz-checksum-crc32c:sOO8/Q==", T_TRAILER);
    let whole = run(
        &mut decoder(true, ChunkedLimits::default()),
        &body,
        body.len(),
    )
    .unwrap();
    let bytewise = run(&mut decoder(true, ChunkedLimits::default()), &body, 1).unwrap();
    assert_eq!(bytewise, whole);
}

#[test]
fn a_wrong_chunk_signature_is_refused() {
    let wrong = CHUNK2.replace("0055", "0056");
    let mut body = signed_body([CHUNK1, &wrong, CHUNK3]);
    body.extend_from_slice(b"\r\n");
    let e = run(&mut decoder(false, ChunkedLimits::default()), &body, 4096).unwrap_err();
    assert_eq!(e, ChunkedError::ChunkSignatureMismatch);
    assert_eq!(S3Error::from(e).code, ErrorCode::SignatureDoesNotMatch);
    // Chunks in another order break the chain.
    let mut body = signed_body([CHUNK2, CHUNK1, CHUNK3]);
    body.extend_from_slice(b"\r\n");
    assert!(run(&mut decoder(false, ChunkedLimits::default()), &body, 4096).is_err());
    // A changed byte of data.
    let mut body = example_body();
    body[100] = b'b';
    assert_eq!(
        run(&mut decoder(false, ChunkedLimits::default()), &body, 4096).unwrap_err(),
        ChunkedError::ChunkSignatureMismatch
    );
}

#[test]
fn a_changed_or_missing_trailer_is_refused() {
    // Another value: the trailer signature no longer holds.
    let body = trailer_body("x-amz-checksum-crc32c:AAAAAA==", T_TRAILER);
    assert_eq!(
        run(&mut decoder(true, ChunkedLimits::default()), &body, 4096).unwrap_err(),
        ChunkedError::TrailerSignatureMismatch
    );
    // No signature at all.
    let mut body = signed_body([T_CHUNK1, T_CHUNK2, T_CHUNK3]);
    body.extend_from_slice(b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n");
    assert_eq!(
        run(&mut decoder(true, ChunkedLimits::default()), &body, 4096).unwrap_err(),
        ChunkedError::MissingTrailerSignature
    );
    // A trailer x-amz-trailer did not declare.
    let body = trailer_body(
        "x-amz-checksum-sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        T_TRAILER,
    );
    assert_eq!(
        run(&mut decoder(true, ChunkedLimits::default()), &body, 4096).unwrap_err(),
        ChunkedError::UndeclaredTrailer("x-amz-checksum-sha1".into())
    );
}

#[test]
fn a_truncated_body_is_refused_wherever_it_stops() {
    let body = example_body();
    for cut in [
        0,
        10,
        88,
        30_000,
        65_624,
        65_626,
        66_700,
        66_822 - 84,
        66_821,
    ] {
        let e = run(
            &mut decoder(false, ChunkedLimits::default()),
            &body[..cut],
            4096,
        )
        .unwrap_err();
        assert_eq!(e, ChunkedError::Truncated, "cut at {cut}");
        assert_eq!(S3Error::from(e).code, ErrorCode::IncompleteBody);
    }
    // Without only the last CRLF, everything signed has been seen: accepted.
    run(
        &mut decoder(false, ChunkedLimits::default()),
        &body[..66_822],
        4096,
    )
    .unwrap();
}

#[test]
fn limits_hold() {
    let body = example_body();
    let small = ChunkedLimits {
        max_chunk_size: 1024,
        ..ChunkedLimits::default()
    };
    assert_eq!(
        run(&mut decoder(false, small), &body, 4096).unwrap_err(),
        ChunkedError::ChunkTooLarge {
            size: 65_536,
            limit: 1024
        }
    );
    let short_lines = ChunkedLimits {
        max_line: 32,
        ..ChunkedLimits::default()
    };
    assert_eq!(
        run(&mut decoder(false, short_lines), &body, 1).unwrap_err(),
        ChunkedError::LineTooLong(32)
    );
    // A header line that never ends does not grow without bound.
    let endless = vec![b'1'; 10_000];
    assert_eq!(
        run(&mut decoder(false, ChunkedLimits::default()), &endless, 100).unwrap_err(),
        ChunkedError::LineTooLong(4096)
    );
}

#[test]
fn decoded_length_must_match() {
    let body = example_body();
    let (v, _) = verified(false);
    let mut short = ChunkedDecoder::new(&v, 66_559, vec![], ChunkedLimits::default());
    assert!(matches!(
        run(&mut short, &body, 4096).unwrap_err(),
        ChunkedError::LengthMismatch {
            declared: 66_559,
            ..
        }
    ));
    let mut long = ChunkedDecoder::new(&v, 66_561, vec![], ChunkedLimits::default());
    let e = run(&mut long, &body, 4096).unwrap_err();
    assert_eq!(
        e,
        ChunkedError::LengthMismatch {
            declared: 66_561,
            actual: 66_560
        }
    );
    assert_eq!(S3Error::from(e).code, ErrorCode::IncompleteBody);
    // The header is required.
    let mut p = chunked_example_parts(false);
    p.headers.remove("x-amz-decoded-content-length");
    let e = ChunkedDecoder::from_request(&v, &p.headers, ChunkedLimits::default())
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::MissingContentLength);
}

#[test]
fn malformed_framing_is_refused() {
    let d = || decoder(false, ChunkedLimits::default());
    let cases: Vec<(Vec<u8>, ChunkedError)> = vec![
        (
            b"zz;chunk-signature=00\r\n".to_vec(),
            ChunkedError::Malformed("a chunk size is not hexadecimal"),
        ),
        (
            b"10\r\n".to_vec(),
            ChunkedError::Malformed("a signed chunk has no chunk-signature"),
        ),
        (
            b"10;chunk-signature=abc\r\n".to_vec(),
            ChunkedError::Malformed("a chunk-signature is not 64 hex digits"),
        ),
        (
            format!("0;chunk-signature={CHUNK3}\n").into_bytes(),
            ChunkedError::Malformed("a line does not end with CRLF"),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(run(&mut d(), &body, 4096).unwrap_err(), want);
    }
    // Data longer than its chunk's size.
    let mut body = signed_body([CHUNK1, CHUNK2, CHUNK3]);
    body.insert(22 + 64 + 2 + 65_536, b'a');
    assert!(run(&mut d(), &body, 4096).is_err());
    // Bytes after the end.
    let mut body = example_body();
    body.extend_from_slice(b"extra");
    assert_eq!(
        run(&mut d(), &body, 4096).unwrap_err(),
        ChunkedError::TrailingData
    );
}

/// A verified request in the unsigned-trailer mode, as SDKs send over TLS.
fn unsigned_trailer_verified(decoded_len: u64) -> ChunkedDecoder {
    let (mut v, _) = verified(false);
    v.payload = PayloadMode::StreamingUnsignedTrailer;
    ChunkedDecoder::new(
        &v,
        decoded_len,
        vec!["x-amz-checksum-crc32".into()],
        ChunkedLimits::default(),
    )
}

#[test]
fn unsigned_trailer_mode_and_a_wrong_trailing_checksum() {
    let payload = b"hello, trailer";
    let good = checksum_base64(ChecksumAlgorithm::Crc32, payload);
    let body = |value: &str| {
        format!("8\r\nhello, t\r\n6\r\nrailer\r\n0\r\nx-amz-checksum-crc32:{value}\r\n\r\n")
            .into_bytes()
    };
    let headers = {
        let mut h = http::HeaderMap::new();
        h.insert("x-amz-trailer", "x-amz-checksum-crc32".parse().unwrap());
        h
    };
    let check = |value: &str| {
        let mut dec = unsigned_trailer_verified(payload.len() as u64);
        let (out, trailers) = run(&mut dec, &body(value), 5).unwrap();
        assert_eq!(out, payload);
        let mut sums =
            ChecksumSet::from_request(&headers, PayloadMode::StreamingUnsignedTrailer).unwrap();
        sums.update(&out);
        sums.finish(&trailers)
    };
    assert_eq!(check(&good).unwrap().checksum.unwrap().1, good);
    let wrong = checksum_base64(ChecksumAlgorithm::Crc32, b"something else");
    assert_eq!(check(&wrong).unwrap_err().code, ErrorCode::BadDigest);
    // No trailer signature belongs in an unsigned body.
    let mut dec = unsigned_trailer_verified(payload.len() as u64);
    let signed = format!(
        "8\r\nhello, t\r\n6\r\nrailer\r\n0\r\nx-amz-checksum-crc32:{good}\r\nx-amz-trailer-signature:{T_TRAILER}\r\n\r\n"
    );
    assert!(run(&mut dec, signed.as_bytes(), 64).is_err());
}
