//! SigV4 against AWS's published S3 examples (known inputs, known
//! signatures), then the refusals.
//!
//! Sources:
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>
//!   ("Examples: Signature Calculations": GET Object, PUT Object, GET Bucket
//!   Lifecycle, Get Bucket (List Objects))
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>
//!   (presigned GET /test.txt, X-Amz-Expires=86400)
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html> and
//!   <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>
//!   (the seed signatures of the chunked examples)

use std::time::{Duration, SystemTime};

use http::request::Parts;
use http::Request;

use super::*;

pub(crate) const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub(crate) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

pub(crate) fn example_time() -> SystemTime {
    parse_amz_date("20130524T000000Z").unwrap()
}

pub(crate) fn lookup(key: &str) -> Option<SecretKey> {
    (key == ACCESS_KEY).then(|| SecretKey::new(SECRET))
}

pub(crate) fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn auth(signed: &str, signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20130524/us-east-1/s3/aws4_request,\
         SignedHeaders={signed},Signature={signature}"
    )
}

fn canonical_hash(p: &Parts, signed: &str, payload: &str, presigned: bool) -> String {
    let names: Vec<String> = signed.split(';').map(str::to_string).collect();
    let c = canonical_request(
        p.method.as_str(),
        &p.uri,
        &p.headers,
        &names,
        payload,
        presigned,
    );
    hex::encode(Sha256::digest(c.as_bytes()))
}

const HOST: &str = "examplebucket.s3.amazonaws.com";

#[test]
fn aws_example_get_object() {
    let signed = "host;range;x-amz-content-sha256;x-amz-date";
    let sig = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
    let a = auth(signed, sig);
    let p = parts(
        "GET",
        "/test.txt",
        &[
            ("host", HOST),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", &a),
        ],
    );
    assert_eq!(
        canonical_hash(&p, signed, EMPTY_SHA256, false),
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    let v = verify(&p, example_time(), lookup).unwrap();
    assert_eq!(v.access_key, ACCESS_KEY);
    assert_eq!(v.region, "us-east-1");
    assert_eq!(v.scope, "20130524/us-east-1/s3/aws4_request");
    assert_eq!(hex::encode(v.seed_signature), sig);
    assert!(matches!(v.payload, PayloadMode::Sha256(h) if hex::encode(h) == EMPTY_SHA256));
    assert!(!v.presigned);
}

#[test]
fn aws_example_put_object() {
    let signed = "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class";
    let body_hash = hex::encode(Sha256::digest(b"Welcome to Amazon S3."));
    assert_eq!(
        body_hash,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    let a = auth(
        signed,
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    );
    // The key is `test$file.text`: sent raw or percent-encoded, it signs alike.
    for path in ["/test$file.text", "/test%24file.text"] {
        let p = parts(
            "PUT",
            path,
            &[
                ("host", HOST),
                ("date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("authorization", &a),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &body_hash),
            ],
        );
        assert_eq!(
            canonical_hash(&p, signed, &body_hash, false),
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
        );
        let v = verify(&p, example_time(), lookup).unwrap();
        assert!(matches!(v.payload, PayloadMode::Sha256(h) if hex::encode(h) == body_hash));
    }
}

fn bucket_get(query: &str, signature: &str) -> Parts {
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let a = auth(signed, signature);
    parts(
        "GET",
        &format!("/?{query}"),
        &[
            ("host", HOST),
            ("authorization", &a),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ],
    )
}

#[test]
fn aws_example_get_bucket_lifecycle() {
    let p = bucket_get(
        "lifecycle",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    );
    assert_eq!(
        canonical_hash(
            &p,
            "host;x-amz-content-sha256;x-amz-date",
            EMPTY_SHA256,
            false
        ),
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"
    );
    verify(&p, example_time(), lookup).unwrap();
}

#[test]
fn aws_example_list_objects_in_either_query_order() {
    for query in ["max-keys=2&prefix=J", "prefix=J&max-keys=2"] {
        let p = bucket_get(
            query,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
        assert_eq!(
            canonical_hash(
                &p,
                "host;x-amz-content-sha256;x-amz-date",
                EMPTY_SHA256,
                false
            ),
            "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"
        );
        verify(&p, example_time(), lookup).unwrap();
    }
}

const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
    &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
    &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
    &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

#[test]
fn aws_example_presigned_get() {
    let p = parts("GET", PRESIGNED, &[("host", HOST)]);
    assert_eq!(
        canonical_hash(&p, "host", UNSIGNED_PAYLOAD, true),
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    );
    let v = verify(&p, example_time(), lookup).unwrap();
    assert!(v.presigned);
    assert_eq!(v.payload, PayloadMode::Unsigned);
    // Valid for its whole day, not after.
    let day = Duration::from_secs(86_400);
    verify(&p, example_time() + day, lookup).unwrap();
    assert_eq!(
        verify(&p, example_time() + day + Duration::from_secs(1), lookup).unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(
        verify(&p, example_time() - Duration::from_secs(16 * 60), lookup).unwrap_err(),
        AuthError::NotYetValid
    );
}

pub(crate) fn chunked_example_parts(trailer: bool) -> Parts {
    let (mode, signed, sig) = if trailer {
        (
            STREAMING_SIGNED_TRAILER,
            "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer",
            "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        )
    } else {
        (
            STREAMING_SIGNED,
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        )
    };
    let a = auth(signed, sig);
    let mut headers = vec![
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("authorization", a.as_str()),
        ("x-amz-content-sha256", mode),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ];
    if trailer {
        headers.push(("x-amz-trailer", "x-amz-checksum-crc32c"));
    }
    parts("PUT", "/examplebucket/chunkObject.txt", &headers)
}

#[test]
fn aws_example_chunked_seed_signatures() {
    let p = chunked_example_parts(false);
    assert_eq!(
        canonical_hash(
            &p,
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
            STREAMING_SIGNED,
            false
        ),
        "cee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455"
    );
    let v = verify(&p, example_time(), lookup).unwrap();
    assert_eq!(v.payload, PayloadMode::StreamingSigned);

    let p = chunked_example_parts(true);
    assert_eq!(
        canonical_hash(
            &p,
            "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer",
            STREAMING_SIGNED_TRAILER,
            false
        ),
        "44d48b8c2f70eae815a0198cc73d7a546a73a93359c070abbaa5e6c7de112559"
    );
    let v = verify(&p, example_time(), lookup).unwrap();
    assert_eq!(v.payload, PayloadMode::StreamingSignedTrailer);
}

fn get_object_with(extra: &[(&str, &str)], sig: &str) -> Parts {
    let a = auth("host;range;x-amz-content-sha256;x-amz-date", sig);
    let mut h = vec![
        ("host", HOST),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        ("authorization", a.as_str()),
    ];
    h.extend_from_slice(extra);
    parts("GET", "/test.txt", &h)
}

const GET_SIG: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

#[test]
fn a_changed_request_or_secret_does_not_match() {
    let wrong_secret = |_: &str| Some(SecretKey::new("not the secret"));
    let p = get_object_with(&[], GET_SIG);
    assert_eq!(
        verify(&p, example_time(), wrong_secret).unwrap_err(),
        AuthError::SignatureMismatch
    );
    // One bit of the signature flipped.
    let p = get_object_with(&[], &GET_SIG.replace("f0e8", "f0e9"));
    assert_eq!(
        verify(&p, example_time(), lookup).unwrap_err(),
        AuthError::SignatureMismatch
    );
    // A signed header changed in transit.
    let mut p = get_object_with(&[], GET_SIG);
    p.headers.insert("range", "bytes=0-99".parse().unwrap());
    assert_eq!(
        verify(&p, example_time(), lookup).unwrap_err(),
        AuthError::SignatureMismatch
    );
    // Not hex.
    let p = get_object_with(&[], &"z".repeat(64));
    assert_eq!(
        verify(&p, example_time(), lookup).unwrap_err(),
        AuthError::SignatureMismatch
    );
    assert_eq!(
        S3Error::from(AuthError::SignatureMismatch).code,
        ErrorCode::SignatureDoesNotMatch
    );
}

#[test]
fn refusals_map_to_s3_codes() {
    let p = get_object_with(&[], GET_SIG);
    let none = |_: &str| None;
    let e = verify(&p, example_time(), none).unwrap_err();
    assert_eq!(e, AuthError::UnknownAccessKey(ACCESS_KEY.into()));
    assert_eq!(S3Error::from(e).code, ErrorCode::InvalidAccessKeyId);

    let later = example_time() + Duration::from_secs(15 * 60 + 1);
    let e = verify(&p, later, lookup).unwrap_err();
    assert_eq!(e, AuthError::Skewed);
    assert_eq!(S3Error::from(e).code, ErrorCode::RequestTimeTooSkewed);
    let earlier = example_time() - Duration::from_secs(15 * 60 + 1);
    assert_eq!(verify(&p, earlier, lookup).unwrap_err(), AuthError::Skewed);
    verify(&p, example_time() + Duration::from_secs(15 * 60), lookup).unwrap();

    let e = Verifier::new(Some("eu-west-1".into()))
        .verify(&p, example_time(), lookup)
        .unwrap_err();
    assert!(matches!(e, AuthError::WrongRegion { .. }));
    assert_eq!(
        S3Error::from(e).code,
        ErrorCode::AuthorizationHeaderMalformed
    );
    Verifier::new(Some("us-east-1".into()))
        .verify(&p, example_time(), lookup)
        .unwrap();

    // An x-amz-* header the signature does not cover.
    let p = get_object_with(&[("x-amz-copy-source", "/other/key")], GET_SIG);
    let e = verify(&p, example_time(), lookup).unwrap_err();
    assert_eq!(e, AuthError::UnsignedHeaders("x-amz-copy-source".into()));
    assert_eq!(S3Error::from(e).code, ErrorCode::AccessDenied);

    let p = parts("GET", "/test.txt", &[("host", HOST)]);
    let e = verify(&p, example_time(), lookup).unwrap_err();
    assert_eq!(e, AuthError::Missing);
    assert_eq!(S3Error::from(e).code, ErrorCode::AccessDenied);

    let p = parts(
        "GET",
        "/test.txt",
        &[("host", HOST), ("authorization", "AWS AKIA:c2lnbmF0dXJl")],
    );
    let e = verify(&p, example_time(), lookup).unwrap_err();
    assert!(matches!(e, AuthError::UnsupportedAlgorithm(_)));
    assert_eq!(S3Error::from(e).code, ErrorCode::InvalidRequest);

    let p = parts(
        "GET",
        "/test.txt",
        &[
            ("host", HOST),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIA/2013/us-east-1/s3/aws4_request",
            ),
        ],
    );
    let e = verify(&p, example_time(), lookup).unwrap_err();
    assert!(matches!(e, AuthError::MalformedHeader(_)));
    assert_eq!(
        S3Error::from(e).code,
        ErrorCode::AuthorizationHeaderMalformed
    );

    // Both mechanisms at once.
    let a = auth("host", GET_SIG);
    let p = parts("GET", PRESIGNED, &[("host", HOST), ("authorization", &a)]);
    assert_eq!(
        verify(&p, example_time(), lookup).unwrap_err(),
        AuthError::TwoSignatures
    );
}

#[test]
fn content_sha256_must_be_a_hash_or_a_mode() {
    for v in [
        UNSIGNED_PAYLOAD,
        STREAMING_SIGNED,
        STREAMING_SIGNED_TRAILER,
        STREAMING_UNSIGNED_TRAILER,
        EMPTY_SHA256,
    ] {
        PayloadMode::parse(v).unwrap();
    }
    for v in [
        "",
        "unsigned-payload",
        &EMPTY_SHA256.to_uppercase(),
        &EMPTY_SHA256[1..],
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    ] {
        assert_eq!(
            PayloadMode::parse(v).unwrap_err(),
            AuthError::BadContentSha256,
            "{v}"
        );
    }
    assert!(PayloadMode::StreamingUnsignedTrailer.is_streaming());
    assert!(PayloadMode::StreamingUnsignedTrailer.has_trailer());
    assert!(!PayloadMode::StreamingSigned.has_trailer());
    assert!(!PayloadMode::Unsigned.is_streaming());
}

#[test]
fn presigned_expiry_is_at_most_a_week() {
    let week = PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801");
    let p = parts("GET", &week, &[("host", HOST)]);
    let e = verify(&p, example_time(), lookup).unwrap_err();
    assert_eq!(e, AuthError::ExpiresTooLong);
    assert_eq!(
        S3Error::from(e).code,
        ErrorCode::AuthorizationQueryParametersError
    );
    let missing = PRESIGNED.replace("&X-Amz-SignedHeaders=host", "");
    let p = parts("GET", &missing, &[("host", HOST)]);
    assert_eq!(
        verify(&p, example_time(), lookup).unwrap_err(),
        AuthError::MalformedQuery("X-Amz-SignedHeaders")
    );
}

#[test]
fn canonical_form_trims_folds_and_encodes() {
    let p = parts(
        "GET",
        "/b/a%20b/c+d/%E2%82%AC?z=1&a=x+y&a=%2B&empty",
        &[
            ("host", "h"),
            ("x-amz-meta-a", "  one   two  "),
            ("x-amz-meta-a", "three"),
        ],
    );
    let names = vec!["host".to_string(), "x-amz-meta-a".to_string()];
    let c = canonical_request("GET", &p.uri, &p.headers, &names, UNSIGNED_PAYLOAD, false);
    assert_eq!(
        c,
        "GET\n/b/a%20b/c%2Bd/%E2%82%AC\na=%2B&a=x%20y&empty=&z=1\n\
         host:h\nx-amz-meta-a:one two,three\n\nhost;x-amz-meta-a\nUNSIGNED-PAYLOAD"
    );
}

#[test]
fn signing_keys_are_cached_per_key_day_and_region() {
    let verifier = Verifier::default();
    let p = get_object_with(&[], GET_SIG);
    verifier.verify(&p, example_time(), lookup).unwrap();
    verifier.verify(&p, example_time(), lookup).unwrap();
    assert_eq!(verifier.cache.lock().unwrap().len(), 1);
    // A rotated secret is not hidden by the cache.
    let rotated = |_: &str| Some(SecretKey::new("rotated"));
    assert_eq!(
        verifier.verify(&p, example_time(), rotated).unwrap_err(),
        AuthError::SignatureMismatch
    );
    assert!(format!("{:?}", SecretKey::new(SECRET))
        .find("wJal")
        .is_none());
}
