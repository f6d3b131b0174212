//! Requests signed by a real client: boto3/botocore's own SigV4 for a
//! dozen operations, captured by `tests/data/make_botocore_fixtures.py`
//! (clock frozen, nothing sent). Each must verify, dispatch to the operation
//! boto3 meant, and have its body accepted; a changed byte must not pass.

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use cellkv_s3::sigv4::{verify, SecretKey, Verified};
use cellkv_s3::xml::{parse_complete_multipart_upload, parse_delete};
use cellkv_s3::{
    parse_operation, ChecksumSet, ChunkedDecoder, ChunkedLimits, ErrorCode, Operation, PayloadMode,
    S3Error,
};
use http::request::Parts;
use serde_json::Value;

struct Fixture {
    name: String,
    operation: String,
    parts: Parts,
    body: Vec<u8>,
}

fn fixtures() -> (SystemTime, String, String, Vec<Fixture>) {
    let raw = include_str!("data/botocore.json");
    let v: Value = serde_json::from_str(raw).expect("botocore.json is JSON");
    // 20260102T030405Z
    let now = httpdate::parse_http_date("Fri, 02 Jan 2026 03:04:05 GMT").unwrap();
    assert_eq!(v["now"], "20260102T030405Z");
    let list = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let url: http::Uri = r["url"].as_str().unwrap().parse().unwrap();
            let path_and_query = url.path_and_query().unwrap().as_str().to_string();
            let mut b = http::Request::builder()
                .method(r["method"].as_str().unwrap())
                .uri(path_and_query);
            let mut has_host = false;
            for h in r["headers"].as_array().unwrap() {
                let (k, val) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
                has_host |= k.eq_ignore_ascii_case("host");
                b = b.header(k, val);
            }
            if !has_host {
                b = b.header("host", url.authority().unwrap().as_str());
            }
            Fixture {
                name: r["name"].as_str().unwrap().to_string(),
                operation: r["operation"].as_str().unwrap().to_string(),
                parts: b.body(()).unwrap().into_parts().0,
                body: BASE64.decode(r["body"].as_str().unwrap()).unwrap(),
            }
        })
        .collect();
    (
        now,
        v["access_key"].as_str().unwrap().to_string(),
        v["secret_key"].as_str().unwrap().to_string(),
        list,
    )
}

/// Runs the body through what the router will: the aws-chunked decoder when
/// streaming, then the checksums.
fn accept_body(v: &Verified, parts: &Parts, body: &[u8]) -> Result<Vec<u8>, S3Error> {
    let mut sums = ChecksumSet::from_request(&parts.headers, v.payload)?;
    if v.payload.is_streaming() {
        let mut dec = ChunkedDecoder::from_request(v, &parts.headers, ChunkedLimits::default())?;
        let mut out = Vec::new();
        for piece in body.chunks(1000) {
            let mut input = Bytes::copy_from_slice(piece);
            while let Some(data) = dec.decode(&mut input)? {
                sums.update(&data);
                out.extend_from_slice(&data);
            }
        }
        let trailers = dec.finish()?;
        sums.finish(&trailers)?;
        Ok(out)
    } else {
        sums.update(body);
        sums.finish(&[])?;
        Ok(body.to_vec())
    }
}

#[test]
fn botocore_requests_verify_dispatch_and_pass_their_checksums() {
    let (now, access_key, secret, list) = fixtures();
    assert!(list.len() >= 15);
    let lookup = |k: &str| (k == access_key).then(|| SecretKey::new(secret.clone()));
    for f in &list {
        let v = verify(&f.parts, now, lookup).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(v.access_key, access_key);
        let op = parse_operation(&f.parts.method, &f.parts.uri, &f.parts.headers)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(op.name(), f.operation, "{}", f.name);
        let body = accept_body(&v, &f.parts, &f.body).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        match &op {
            Operation::DeleteObjects { .. } => {
                let req = parse_delete(&body).unwrap();
                assert!(req.quiet);
                assert_eq!(req.objects.len(), 2);
                assert_eq!(req.objects[1].key, "dir/a b+c%d ü&<>'\"~!*()=;,:@$.txt");
            }
            Operation::CompleteMultipartUpload { upload_id, .. } => {
                assert_eq!(upload_id, "upload+id/1");
                assert_eq!(parse_complete_multipart_upload(&body).unwrap().len(), 1);
            }
            Operation::GetObject { key, .. } | Operation::CopyObject { key, .. }
                if f.name != "copy object" =>
            {
                assert_eq!(key, "dir/a b+c%d ü&<>'\"~!*()=;,:@$.txt", "{}", f.name);
            }
            Operation::CopyObject { source, .. } => {
                assert_eq!(source.key, "dir/a b+c%d ü&<>'\"~!*()=;,:@$.txt");
            }
            Operation::ListObjectsV2 {
                list, start_after, ..
            } => {
                assert_eq!(list.prefix, "dir/a b");
                assert_eq!(list.delimiter.as_deref(), Some("/"));
                assert_eq!(start_after.as_deref(), Some("dir/"));
            }
            Operation::ListObjects { marker, .. } => assert_eq!(marker.as_deref(), Some("a+b c")),
            Operation::PutObject { .. } | Operation::UploadPart { .. }
                if v.payload.is_streaming() =>
            {
                assert_eq!(
                    v.payload,
                    PayloadMode::StreamingUnsignedTrailer,
                    "{}",
                    f.name
                );
                let declared: usize = f.parts.headers["x-amz-decoded-content-length"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(body.len(), declared);
            }
            _ => {}
        }
    }
}

#[test]
fn botocore_requests_changed_in_transit_are_refused() {
    let (now, access_key, secret, list) = fixtures();
    let lookup = |k: &str| (k == access_key).then(|| SecretKey::new(secret.clone()));
    for f in list.iter().filter(|f| !f.body.is_empty()) {
        let v = verify(&f.parts, now, lookup).unwrap();
        let mut body = f.body.clone();
        let last = body.len() / 2;
        body[last] ^= 1;
        let e = accept_body(&v, &f.parts, &body).expect_err(&f.name);
        let want = match v.payload {
            PayloadMode::Sha256(_) => ErrorCode::XAmzContentSHA256Mismatch,
            _ => ErrorCode::BadDigest,
        };
        assert_eq!(e.code, want, "{}", f.name);
    }
    // A signed header changed: the signature no longer holds.
    let put = list.iter().find(|f| f.name == "put awkward key").unwrap();
    let mut parts = put.parts.clone();
    parts
        .headers
        .insert("x-amz-meta-who", "someone else".parse().unwrap());
    assert_eq!(
        S3Error::from(verify(&parts, now, lookup).unwrap_err()).code,
        ErrorCode::SignatureDoesNotMatch
    );
}
