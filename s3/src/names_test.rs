//! Bucket names, keys, paths, and the dispatch table.

use http::{HeaderMap, Method, Uri};

use super::*;

#[test]
fn bucket_names() {
    for ok in ["abc", "my-bucket.1", "a.b-c", "123", &"a".repeat(63)] {
        validate_bucket_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "ab",
        &"a".repeat(64),
        "Upper",
        "under_score",
        "-start",
        "end-",
        ".dot",
        "a..b",
        "192.168.1.1",
        "xn--punycode",
        "sthree-x",
        "bucket-s3alias",
        "bucket--ol-s3",
        "spa ce",
        "ünï",
    ] {
        let e = validate_bucket_name(bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidBucketName, "{bad}");
    }
    // Four groups that are not all bytes is a name, not an address.
    validate_bucket_name("1.2.3.999").unwrap();
}

#[test]
fn keys() {
    validate_key(&"k".repeat(1024)).unwrap();
    validate_key(&"é".repeat(512)).unwrap();
    assert_eq!(
        validate_key(&"é".repeat(513)).unwrap_err().code,
        ErrorCode::KeyTooLongError
    );
    assert_eq!(
        validate_key("").unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

#[test]
fn paths() {
    let obj = |b: &str, k: &str| Target::Object {
        bucket: b.into(),
        key: k.into(),
    };
    let cases: &[(&str, Target)] = &[
        ("/", Target::Service),
        ("/b", Target::Bucket("b".into())),
        ("/b/", Target::Bucket("b".into())),
        ("/b/k", obj("b", "k")),
        ("/b/dir/sub/file.txt", obj("b", "dir/sub/file.txt")),
        ("/b//", obj("b", "/")),
        ("/b///x//", obj("b", "//x//")),
        ("/b/a%20b+c", obj("b", "a b+c")),
        ("/b/%25%2B%3F%23", obj("b", "%+?#")),
        ("/b/%E6%97%A5%E6%9C%AC", obj("b", "日本")),
        ("/b/a%2Fb", obj("b", "a/b")),
    ];
    for (path, want) in cases {
        assert_eq!(&parse_path(path).unwrap(), want, "{path}");
    }
    assert_eq!(
        parse_path("/b/%FF").unwrap_err().code,
        ErrorCode::InvalidURI
    );
    assert_eq!(
        parse_path("no-slash").unwrap_err().code,
        ErrorCode::InvalidURI
    );
    let long = format!("/b/{}", "k".repeat(1025));
    assert_eq!(
        parse_path(&long).unwrap_err().code,
        ErrorCode::KeyTooLongError
    );
}

fn op(method: Method, uri: &str, headers: &[(&str, &str)]) -> Result<Operation, S3Error> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    parse_operation(&method, &uri.parse::<Uri>().unwrap(), &h)
}

fn list(prefix: &str, delimiter: Option<&str>, max_keys: u32, encoding: Encoding) -> ListParams {
    ListParams {
        prefix: prefix.into(),
        delimiter: delimiter.map(str::to_string),
        max_keys,
        encoding,
    }
}

/// Method, URI, headers, and what they should give.
type Case<'a, T> = (Method, &'a str, &'a [(&'a str, &'a str)], T);

#[test]
fn dispatch_table() {
    let b = || "bkt".to_string();
    let k = || "dir/key".to_string();
    let src = CopySource {
        bucket: "src".into(),
        key: "a b/c".into(),
        version_id: None,
    };
    let copy = [("x-amz-copy-source", "/src/a%20b/c")];
    let cases: Vec<Case<Operation>> = vec![
        (Method::GET, "/", &[], Operation::ListBuckets),
        (Method::PUT, "/bkt", &[], Operation::CreateBucket { bucket: b() }),
        (Method::HEAD, "/bkt", &[], Operation::HeadBucket { bucket: b() }),
        (Method::DELETE, "/bkt/", &[], Operation::DeleteBucket { bucket: b() }),
        (Method::GET, "/bkt?location", &[], Operation::GetBucketLocation { bucket: b() }),
        (
            Method::GET,
            "/bkt?list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5000&continuation-token=t1&start-after=a&encoding-type=url&fetch-owner=true",
            &[],
            Operation::ListObjectsV2 {
                bucket: b(),
                list: list("a/b", Some("/"), 1000, Encoding::Url),
                continuation_token: Some("t1".into()),
                start_after: Some("a".into()),
                fetch_owner: true,
            },
        ),
        (
            Method::GET,
            "/bkt?prefix=J&max-keys=2&marker=J1",
            &[],
            Operation::ListObjects {
                bucket: b(),
                list: list("J", None, 2, Encoding::Plain),
                marker: Some("J1".into()),
            },
        ),
        (
            Method::GET,
            "/bkt?versions&key-marker=k&version-id-marker=null&delimiter=",
            &[],
            Operation::ListObjectVersions {
                bucket: b(),
                list: list("", None, 1000, Encoding::Plain),
                key_marker: Some("k".into()),
                version_id_marker: Some("null".into()),
            },
        ),
        (
            Method::GET,
            "/bkt?uploads&max-uploads=10&prefix=p+q",
            &[],
            Operation::ListMultipartUploads {
                bucket: b(),
                list: list("p q", None, 10, Encoding::Plain),
                key_marker: None,
                upload_id_marker: None,
            },
        ),
        (Method::POST, "/bkt?delete", &[], Operation::DeleteObjects { bucket: b() }),
        (
            Method::GET,
            "/bkt/dir/key",
            &[],
            Operation::GetObject { bucket: b(), key: k(), version_id: None, part_number: None },
        ),
        (
            Method::GET,
            "/bkt/dir/key?versionId=null&partNumber=3&response-content-type=text%2Fplain",
            &[],
            Operation::GetObject { bucket: b(), key: k(), version_id: Some("null".into()), part_number: Some(3) },
        ),
        (
            Method::HEAD,
            "/bkt/dir/key",
            &[],
            Operation::HeadObject { bucket: b(), key: k(), version_id: None, part_number: None },
        ),
        (Method::PUT, "/bkt/dir/key", &[], Operation::PutObject { bucket: b(), key: k() }),
        (
            Method::PUT,
            "/bkt/dir/key",
            &copy,
            Operation::CopyObject { bucket: b(), key: k(), source: src.clone() },
        ),
        (
            Method::DELETE,
            "/bkt/dir/key",
            &[],
            Operation::DeleteObject { bucket: b(), key: k(), version_id: None },
        ),
        (Method::POST, "/bkt/dir/key?uploads", &[], Operation::CreateMultipartUpload { bucket: b(), key: k() }),
        (
            Method::PUT,
            "/bkt/dir/key?partNumber=7&uploadId=u%2B1",
            &[],
            Operation::UploadPart { bucket: b(), key: k(), upload_id: "u+1".into(), part_number: 7 },
        ),
        (
            Method::PUT,
            "/bkt/dir/key?partNumber=7&uploadId=u1",
            &[("x-amz-copy-source", "src/a%20b/c?versionId=v1"), ("x-amz-copy-source-range", "bytes=0-5242879")],
            Operation::UploadPartCopy {
                bucket: b(),
                key: k(),
                upload_id: "u1".into(),
                part_number: 7,
                source: CopySource { version_id: Some("v1".into()), ..src.clone() },
                range: Some((0, 5_242_879)),
            },
        ),
        (
            Method::POST,
            "/bkt/dir/key?uploadId=u1",
            &[],
            Operation::CompleteMultipartUpload { bucket: b(), key: k(), upload_id: "u1".into() },
        ),
        (
            Method::DELETE,
            "/bkt/dir/key?uploadId=u1",
            &[],
            Operation::AbortMultipartUpload { bucket: b(), key: k(), upload_id: "u1".into() },
        ),
        (
            Method::GET,
            "/bkt/dir/key?uploadId=u1&max-parts=3&part-number-marker=2&encoding-type=url",
            &[],
            Operation::ListParts {
                bucket: b(),
                key: k(),
                upload_id: "u1".into(),
                max_parts: 3,
                part_number_marker: 2,
                encoding: Encoding::Url,
            },
        ),
    ];
    for (method, uri, headers, want) in cases {
        let got =
            op(method.clone(), uri, headers).unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
        assert_eq!(got, want, "{method} {uri}");
    }
}

#[test]
fn dispatch_refusals() {
    let cases: Vec<Case<ErrorCode>> = vec![
        (Method::PUT, "/", &[], ErrorCode::MethodNotAllowed),
        (Method::POST, "/bkt", &[], ErrorCode::MethodNotAllowed),
        (Method::PATCH, "/bkt/k", &[], ErrorCode::MethodNotAllowed),
        (Method::POST, "/bkt/k", &[], ErrorCode::MethodNotAllowed),
        (Method::PUT, "/Bad_Name", &[], ErrorCode::InvalidBucketName),
        (Method::GET, "/bkt?acl", &[], ErrorCode::NotImplemented),
        (
            Method::GET,
            "/bkt?versioning",
            &[],
            ErrorCode::NotImplemented,
        ),
        (
            Method::PUT,
            "/bkt/k?tagging",
            &[],
            ErrorCode::NotImplemented,
        ),
        (
            Method::GET,
            "/bkt?list-type=3",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::GET,
            "/bkt?max-keys=-1",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::GET,
            "/bkt?max-keys=ten",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::GET,
            "/bkt?encoding-type=base64",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k?partNumber=0&uploadId=u",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k?partNumber=10001&uploadId=u",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k?uploadId=u",
            &[],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k?partNumber=1&uploadId=",
            &[],
            ErrorCode::NoSuchUpload,
        ),
        (
            Method::PUT,
            "/bkt/k",
            &[("x-amz-copy-source", "nokey")],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k",
            &[("x-amz-copy-source", "/b/")],
            ErrorCode::InvalidArgument,
        ),
        (
            Method::PUT,
            "/bkt/k?partNumber=1&uploadId=u",
            &[
                ("x-amz-copy-source", "b/k"),
                ("x-amz-copy-source-range", "bytes=9-1"),
            ],
            ErrorCode::InvalidArgument,
        ),
    ];
    for (method, uri, headers, want) in cases {
        let e = op(method.clone(), uri, headers).unwrap_err();
        assert_eq!(e.code, want, "{method} {uri}");
    }
    // A name S3 would not create still addresses an existing bucket.
    assert_eq!(
        op(Method::HEAD, "/Legacy_Bucket", &[]).unwrap(),
        Operation::HeadBucket {
            bucket: "Legacy_Bucket".into()
        }
    );
}

#[test]
fn operation_accessors() {
    let o = op(Method::PUT, "/bkt/a/b?partNumber=1&uploadId=u", &[]).unwrap();
    assert_eq!(o.name(), "UploadPart");
    assert_eq!(o.bucket(), Some("bkt"));
    assert_eq!(o.key(), Some("a/b"));
    assert!(o.is_write());
    let o = op(Method::GET, "/bkt?list-type=2", &[]).unwrap();
    assert_eq!(
        (o.name(), o.key(), o.is_write()),
        ("ListObjectsV2", None, false)
    );
    assert_eq!(Operation::ListBuckets.bucket(), None);
}
