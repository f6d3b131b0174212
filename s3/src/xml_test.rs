//! XML documents: escaping of awkward keys, `encoding-type=url`, what the
//! writers produce read back by quick-xml, and the parsers' limits.

use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn t() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_255_369_830)
}

fn entry(key: &str) -> ObjectEntry {
    ObjectEntry {
        key: key.to_string(),
        last_modified: t(),
        etag: "fba9dede5f27731c9771645a39863328".into(),
        size: 434_234,
    }
}

/// Every text node of a document, in order, as a reader sees it.
fn texts(doc: &str) -> Vec<(String, String)> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<String> = Vec::new();
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                stack.push(e.name().as_ref().to_string());
                out.push((stack.last().unwrap().clone(), String::new()));
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(x) if stack.is_empty() => assert!(x.trim().is_empty()),
            Event::Text(x) => out.last_mut().unwrap().1.push_str(&x.xml10_content()),
            Event::GeneralRef(r) => {
                let c = r
                    .resolve_char_ref()
                    .unwrap()
                    .or_else(|| resolve_entity(&r))
                    .unwrap();
                out.last_mut().unwrap().1.push(c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

fn text_of(doc: &str, tag: &str) -> Vec<String> {
    texts(doc)
        .into_iter()
        .filter(|(n, _)| n == tag)
        .map(|(_, v)| v)
        .collect()
}

const AWKWARD: &[&str] = &[
    "a&b<c>d\"e'f",
    "spaces and + plus % percent",
    "//double//slashes/",
    "unicode ünïcödé 日本語 🎉",
    "tab\tnewline\ncr\rend",
    "control\u{1}\u{1f}\u{7f}",
    "]]>",
];

#[test]
fn awkward_keys_survive_a_listing() {
    let result = ListObjectsV2Result {
        bucket: "b".into(),
        prefix: "".into(),
        max_keys: 1000,
        contents: AWKWARD.iter().map(|k| entry(k)).collect(),
        ..Default::default()
    };
    let doc = result.to_xml();
    assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
    assert!(doc.contains("&#x1;") && doc.contains("&#xD;") && doc.contains("&amp;b&lt;c&gt;"));
    assert_eq!(text_of(&doc, "Key"), AWKWARD.to_vec());
    assert_eq!(text_of(&doc, "KeyCount"), vec!["7"]);
    assert_eq!(
        text_of(&doc, "ETag")[0],
        "\"fba9dede5f27731c9771645a39863328\""
    );
    assert_eq!(text_of(&doc, "LastModified")[0], "2009-10-12T17:50:30.000Z");
}

#[test]
fn encoding_type_url_encodes_keys_prefixes_and_markers() {
    let result = ListObjectsV1Result {
        bucket: "b".into(),
        prefix: "dir one/".into(),
        marker: "dir one/a+b".into(),
        next_marker: Some("dir one/z&z".into()),
        delimiter: Some("/".into()),
        max_keys: 2,
        is_truncated: true,
        encoding: Encoding::Url,
        contents: vec![entry("dir one/ü+%?")],
        common_prefixes: vec!["dir one/sub dir/".into()],
        ..Default::default()
    };
    let doc = result.to_xml();
    assert_eq!(
        text_of(&doc, "Prefix"),
        vec!["dir%20one/", "dir%20one/sub%20dir/"]
    );
    assert_eq!(text_of(&doc, "Marker"), vec!["dir%20one/a%2Bb"]);
    assert_eq!(text_of(&doc, "NextMarker"), vec!["dir%20one/z%26z"]);
    assert_eq!(text_of(&doc, "Key"), vec!["dir%20one/%C3%BC%2B%25%3F"]);
    assert_eq!(text_of(&doc, "EncodingType"), vec!["url"]);
    assert_eq!(text_of(&doc, "IsTruncated"), vec!["true"]);
    // Decoding gives the key back.
    let decoded = percent_encoding::percent_decode_str(&text_of(&doc, "Key")[0])
        .decode_utf8()
        .unwrap()
        .into_owned();
    assert_eq!(decoded, "dir one/ü+%?");
    // Plain: no EncodingType element.
    let plain = ListObjectsV1Result {
        encoding: Encoding::Plain,
        ..result
    }
    .to_xml();
    assert!(text_of(&plain, "EncodingType").is_empty());
    assert_eq!(text_of(&plain, "Key"), vec!["dir one/ü+%?"]);
}

#[test]
fn v2_continuation_and_owner() {
    let owner = Owner {
        id: "id1".into(),
        display_name: "cellkv".into(),
    };
    let doc = ListObjectsV2Result {
        bucket: "b".into(),
        prefix: "p/".into(),
        delimiter: Some("/".into()),
        max_keys: 1,
        start_after: Some("p/a".into()),
        continuation_token: Some("tok1".into()),
        next_continuation_token: Some("tok2".into()),
        is_truncated: true,
        owner: Some(owner),
        contents: vec![entry("p/b")],
        common_prefixes: vec!["p/c/".into()],
        ..Default::default()
    }
    .to_xml();
    assert_eq!(text_of(&doc, "KeyCount"), vec!["2"]);
    assert_eq!(text_of(&doc, "ContinuationToken"), vec!["tok1"]);
    assert_eq!(text_of(&doc, "NextContinuationToken"), vec!["tok2"]);
    assert_eq!(text_of(&doc, "StartAfter"), vec!["p/a"]);
    assert_eq!(text_of(&doc, "DisplayName"), vec!["cellkv"]);
    assert_eq!(text_of(&doc, "StorageClass"), vec!["STANDARD"]);
}

#[test]
fn the_other_documents() {
    let doc = list_buckets(
        &Owner {
            id: "o".into(),
            display_name: "d".into(),
        },
        &[BucketEntry {
            name: "b1".into(),
            created: t(),
        }],
    );
    assert_eq!(text_of(&doc, "Name"), vec!["b1"]);
    assert_eq!(
        text_of(&doc, "CreationDate"),
        vec!["2009-10-12T17:50:30.000Z"]
    );

    let doc = initiate_multipart_upload("b", "k&1", "up-1");
    assert_eq!(text_of(&doc, "Key"), vec!["k&1"]);
    assert_eq!(text_of(&doc, "UploadId"), vec!["up-1"]);

    let doc = complete_multipart_upload(
        "/b/k",
        "b",
        "k",
        "3858f62230ac3c915f300c664312c11f-9",
        Some((ChecksumAlgorithm::Crc32, "AAAAAA==")),
    );
    assert_eq!(
        text_of(&doc, "ETag"),
        vec!["\"3858f62230ac3c915f300c664312c11f-9\""]
    );
    assert_eq!(text_of(&doc, "ChecksumCRC32"), vec!["AAAAAA=="]);

    let doc = copy_object_result("abc", t());
    assert!(doc.contains("<CopyObjectResult xmlns="));
    assert_eq!(text_of(&doc, "ETag"), vec!["\"abc\""]);
    assert!(copy_part_result("abc", t()).contains("<CopyPartResult xmlns="));

    let doc = ListPartsResult {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u".into(),
        max_parts: 2,
        next_part_number_marker: Some(2),
        is_truncated: true,
        parts: vec![
            PartEntry {
                part_number: 1,
                last_modified: t(),
                etag: "e1".into(),
                size: 5 << 20,
            },
            PartEntry {
                part_number: 2,
                last_modified: t(),
                etag: "e2".into(),
                size: 1,
            },
        ],
        ..Default::default()
    }
    .to_xml();
    assert_eq!(text_of(&doc, "PartNumber"), vec!["1", "2"]);
    assert_eq!(text_of(&doc, "NextPartNumberMarker"), vec!["2"]);
    assert_eq!(text_of(&doc, "Size"), vec!["5242880", "1"]);

    let doc = ListMultipartUploadsResult {
        bucket: "b".into(),
        max_uploads: 1000,
        uploads: vec![UploadEntry {
            key: "a b".into(),
            upload_id: "u1".into(),
            initiated: t(),
        }],
        encoding: Encoding::Url,
        ..Default::default()
    }
    .to_xml();
    assert_eq!(text_of(&doc, "Key"), vec!["a%20b"]);
    assert_eq!(text_of(&doc, "Initiated"), vec!["2009-10-12T17:50:30.000Z"]);

    let doc = ListVersionsResult {
        bucket: "b".into(),
        max_keys: 1000,
        versions: vec![entry("k")],
        ..Default::default()
    }
    .to_xml();
    assert_eq!(text_of(&doc, "VersionId"), vec!["null"]);
    assert_eq!(text_of(&doc, "IsLatest"), vec!["true"]);

    assert_eq!(
        location_constraint("us-east-1"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"
    );
    assert_eq!(
        text_of(&location_constraint("eu-west-1"), "LocationConstraint"),
        vec!["eu-west-1"]
    );
}

#[test]
fn delete_result_quiet_lists_only_errors() {
    let r = DeleteResult {
        deleted: vec![ObjectIdentifier {
            key: "a<b".into(),
            version_id: None,
        }],
        errors: vec![DeleteError {
            key: "c".into(),
            version_id: None,
            code: ErrorCode::AccessDenied,
            message: "Access Denied".into(),
        }],
    };
    let doc = r.to_xml(false);
    assert_eq!(text_of(&doc, "Key"), vec!["a<b", "c"]);
    assert_eq!(text_of(&doc, "Code"), vec!["AccessDenied"]);
    let quiet = r.to_xml(true);
    assert_eq!(text_of(&quiet, "Key"), vec!["c"]);
}

fn delete_body(keys: &[&str], quiet: bool) -> String {
    let mut w = XmlWriter::new();
    w.open_root("Delete");
    if quiet {
        w.elem("Quiet", "true");
    }
    for k in keys {
        w.open("Object");
        w.elem("Key", k);
        w.close("Object");
    }
    w.close("Delete");
    w.finish()
}

#[test]
fn delete_round_trips_awkward_keys() {
    let req = parse_delete(delete_body(AWKWARD, true).as_bytes()).unwrap();
    assert!(req.quiet);
    let keys: Vec<&str> = req.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, AWKWARD.to_vec());
    // As boto3 sends it: no declaration, a namespace, a version, CDATA.
    let body = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key><![CDATA[x&y]]></Key>\
                <VersionId>null</VersionId></Object><Object><Key> spaced </Key></Object></Delete>";
    let req = parse_delete(body.as_bytes()).unwrap();
    assert!(!req.quiet);
    assert_eq!(
        req.objects[0],
        ObjectIdentifier {
            key: "x&y".into(),
            version_id: Some("null".into())
        }
    );
    assert_eq!(req.objects[1].key, " spaced ");
}

#[test]
fn delete_limits() {
    let keys: Vec<String> = (0..MAX_DELETE_KEYS).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(
        parse_delete(delete_body(&refs, false).as_bytes())
            .unwrap()
            .objects
            .len(),
        1000
    );
    let mut more = refs.clone();
    more.push("one too many");
    assert_eq!(
        parse_delete(delete_body(&more, false).as_bytes())
            .unwrap_err()
            .code,
        ErrorCode::MalformedXML
    );
    assert_eq!(
        parse_delete(delete_body(&[], false).as_bytes())
            .unwrap_err()
            .code,
        ErrorCode::MalformedXML
    );
    let huge = vec![b' '; MAX_DELETE_BODY + 1];
    assert_eq!(
        parse_delete(&huge).unwrap_err().code,
        ErrorCode::MaxMessageLengthExceeded
    );
}

#[test]
fn malformed_documents_are_malformed_xml() {
    for body in [
        "",
        "not xml",
        "<Delete><Object><Key>a</Key></Object>",
        "<Delete><Object><Key>a</Object></Key></Delete>",
        "<Delete><Object><Key>a</Key></Object></Delete><Delete/>",
        "<Other><Object><Key>a</Key></Object></Other>",
        "<Delete><Object><Key>a&unknown;</Key></Object></Delete>",
        "<!DOCTYPE d [<!ENTITY e \"x\">]><Delete><Object><Key>&e;</Key></Object></Delete>",
        "<Delete><Quiet>yes</Quiet><Object><Key>a</Key></Object></Delete>",
        "<Delete><Object><NoKey>a</NoKey></Object></Delete>",
        "<a><b><c><d><e><f><g><h><i>deep</i></h></g></f></e></d></c></b></a>",
    ] {
        assert_eq!(
            parse_delete(body.as_bytes()).unwrap_err().code,
            ErrorCode::MalformedXML,
            "{body}"
        );
    }
    assert_eq!(
        parse_delete(b"<Delete>\xff</Delete>").unwrap_err().code,
        ErrorCode::MalformedXML
    );
}

fn complete_body(parts: &[(u32, &str)]) -> String {
    let mut s = String::from("<CompleteMultipartUpload>");
    for (n, e) in parts {
        s.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        ));
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

#[test]
fn complete_multipart_upload_parts() {
    let body = complete_body(&[
        (1, "\"a54357aff0632cce46d942af68356b38\""),
        (2, "&quot;0c78aef83f66abc1fa1e8477f296d394&quot;"),
        (5, "acbd18db4cc2f85cedef654fccc4a4d8"),
    ]);
    let parts = parse_complete_multipart_upload(body.as_bytes()).unwrap();
    assert_eq!(
        parts,
        vec![
            CompletedPart {
                part_number: 1,
                etag: "a54357aff0632cce46d942af68356b38".into()
            },
            CompletedPart {
                part_number: 2,
                etag: "0c78aef83f66abc1fa1e8477f296d394".into()
            },
            CompletedPart {
                part_number: 5,
                etag: "acbd18db4cc2f85cedef654fccc4a4d8".into()
            },
        ]
    );
    let e = parse_complete_multipart_upload(complete_body(&[(2, "a"), (1, "b")]).as_bytes())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidPartOrder);
    let e = parse_complete_multipart_upload(complete_body(&[(1, "a"), (1, "b")]).as_bytes())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidPartOrder);
    let e =
        parse_complete_multipart_upload(complete_body(&[(10_001, "a")]).as_bytes()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = parse_complete_multipart_upload(complete_body(&[]).as_bytes()).unwrap_err();
    assert_eq!(e.code, ErrorCode::MalformedXML);
    let all: Vec<(u32, &str)> = (1..=10_000)
        .map(|n| (n, "\"a54357aff0632cce46d942af68356b38\""))
        .collect();
    assert_eq!(
        parse_complete_multipart_upload(complete_body(&all).as_bytes())
            .unwrap()
            .len(),
        10_000
    );
}

#[test]
fn create_bucket_configuration() {
    assert_eq!(parse_create_bucket_configuration(b"").unwrap(), None);
    assert_eq!(parse_create_bucket_configuration(b"  \n").unwrap(), None);
    let body = b"<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>";
    assert_eq!(
        parse_create_bucket_configuration(body).unwrap(),
        Some("eu-west-1".into())
    );
    assert_eq!(
        parse_create_bucket_configuration(b"<CreateBucketConfiguration/>").unwrap(),
        None
    );
    assert_eq!(
        parse_create_bucket_configuration(b"<Bad/>")
            .unwrap_err()
            .code,
        ErrorCode::MalformedXML
    );
}
