//! The S3 API of a whole cluster (`cellkv-local`'s processes), spoken over
//! real HTTP with SigV4-signed requests: buckets, objects, metadata,
//! conditions, listings, copies, deletes, checksums that store nothing when
//! wrong, signatures that do not hold, an object read through both APIs, and
//! a dead cell whose keys fail fast with 503 while the others' succeed.
//!
//! Requests are signed here with `cellkv-s3`'s canonicalization (the server's
//! own); `tests/s3-clients.sh` runs real clients (aws-cli, boto3, s3cmd,
//! rclone) against it, and `s3/tests/botocore.rs` checks botocore's signatures.

use std::time::{Duration, Instant, SystemTime};

use crate::support::*;
use bytes::Bytes;
use cellkv_s3::checksum::{checksum_base64, md5_hex, Hasher};
use cellkv_s3::sigv4::{canonical_request, string_to_sign, SigningKey};
use cellkv_s3::{format_iso8601, ChecksumAlgorithm, SecretKey};
use client::http::{Client, Resp};
use cluster::local::{LocalCluster, LocalClusterOptions, S3Info};
use common::{CellId, CellMap, Ring};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

fn sha256_hex(data: &[u8]) -> String {
    let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
    h.update(data);
    common::wire::hex(&h.finalize())
}

fn base64_md5(data: &[u8]) -> String {
    // Content-MD5 is the base64 of the digest: re-encode the hex.
    let raw = common::wire::unhex(&md5_hex(data)).unwrap();
    base64(&raw)
}

fn base64(raw: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in raw.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What an aws-chunked body's signature chain starts from.
struct Signed {
    amz_date: String,
    scope: String,
    seed: [u8; 32],
    key: SigningKey,
}

/// A minimal SigV4 client for one credential.
struct S3Client {
    http: Client,
    info: S3Info,
    host: String,
}

/// `YYYYMMDDTHHMMSSZ` of now.
fn amz_now() -> String {
    let iso = format_iso8601(SystemTime::now()); // 2026-01-02T03:04:05.678Z
    let digits: String = iso[..19].chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{}T{}Z", &digits[..8], &digits[8..])
}

impl S3Client {
    fn new(info: S3Info) -> S3Client {
        let host = info.url.trim_start_matches("http://").to_string();
        S3Client {
            http: http_client(),
            info,
            host,
        }
    }

    /// Signs `method path?query` with `headers`: the headers to send (the
    /// signature included) and what an aws-chunked body's chain needs.
    fn sign(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        payload_hash: &str,
        secret: &str,
    ) -> (Vec<(String, String)>, Signed) {
        let amz_date = amz_now();
        let date = amz_date[..8].to_string();
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_str(&self.host).unwrap());
        map.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
        map.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(payload_hash).unwrap(),
        );
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut signed: Vec<String> = map.keys().map(|k| k.as_str().to_string()).collect();
        signed.sort();
        signed.dedup();
        let uri: http::Uri = format!("{}{path_and_query}", self.info.url)
            .parse()
            .unwrap();
        let scope = format!("{date}/{}/s3/aws4_request", self.info.region);
        let canonical =
            canonical_request(method.as_str(), &uri, &map, &signed, payload_hash, false);
        let sts = string_to_sign(&amz_date, &scope, &canonical);
        let key = SigningKey::derive(&SecretKey::new(secret), &date, &self.info.region, "s3");
        let seed = key.sign(&sts);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
            self.info.access_key,
            signed.join(";"),
            common::wire::hex(&seed)
        );
        let mut all: Vec<(String, String)> = map
            .iter()
            .filter(|(k, _)| k.as_str() != "host")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        all.push(("authorization".into(), auth));
        (
            all,
            Signed {
                amz_date,
                scope,
                seed,
                key,
            },
        )
    }

    async fn send_signed(
        &self,
        method: Method,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Resp {
        let url = format!("{}{path_and_query}", self.info.url);
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.http
            .request(method, &url, &refs, body)
            .await
            .unwrap_or_else(|e| panic!("send {path_and_query}: {e}"))
    }

    /// Signs and sends `method path?query` with `headers` and `body`;
    /// `payload`: the `x-amz-content-sha256` value (the body's hash when None).
    async fn send_with(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        payload: Option<&str>,
        secret: &str,
    ) -> Resp {
        let payload_hash = payload.map_or_else(|| sha256_hex(&body), str::to_string);
        let (all, _) = self.sign(&method, path_and_query, headers, &payload_hash, secret);
        self.send_signed(method, path_and_query, all, body).await
    }

    /// PutObject with `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every chunk
    /// signed, chained from the request's signature. `tamper` flips a byte of
    /// the second chunk after signing it.
    async fn put_signed_chunks(&self, pq: &str, data: &[u8], chunk: usize, tamper: bool) -> Resp {
        let len = data.len().to_string();
        let (headers, s) = self.sign(
            &Method::PUT,
            pq,
            &[
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", &len),
            ],
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            &self.info.secret_key,
        );
        let mut prev = s.seed;
        let mut body = Vec::new();
        let pieces: Vec<&[u8]> = data.chunks(chunk).chain(std::iter::once(&[][..])).collect();
        for (i, piece) in pieces.into_iter().enumerate() {
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
                s.amz_date,
                s.scope,
                common::wire::hex(&prev),
                cellkv_s3::sigv4::EMPTY_SHA256,
                sha256_hex(piece)
            );
            prev = s.key.sign(&sts);
            body.extend_from_slice(
                format!(
                    "{:x};chunk-signature={}\r\n",
                    piece.len(),
                    common::wire::hex(&prev)
                )
                .as_bytes(),
            );
            let mut piece = piece.to_vec();
            if tamper && i == 1 {
                piece[0] ^= 1;
            }
            body.extend_from_slice(&piece);
            body.extend_from_slice(b"\r\n");
        }
        self.send_signed(Method::PUT, pq, headers, body.into())
            .await
    }

    async fn send(
        &self,
        method: Method,
        pq: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let secret = self.info.secret_key.clone();
        self.send_with(method, pq, headers, body.into(), None, &secret)
            .await
    }

    async fn get(&self, pq: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, pq, headers, Bytes::new()).await
    }
}

#[track_caller]
fn expect(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "{}", resp.text());
}

#[track_caller]
fn expect_code(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert!(
        resp.text().contains(&format!("<Code>{code}</Code>")),
        "expected {code}: {}",
        resp.text()
    );
}

fn etag(resp: &Resp) -> String {
    resp.header("etag")
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// Every `<tag>...</tag>` text of a document, in order.
fn all(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

fn ring_of(cluster: &LocalCluster) -> Ring {
    let text = std::fs::read_to_string(cluster.router().config_path()).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let map: CellMap = v["cell_map"].clone().try_into().unwrap();
    map.ring().unwrap()
}

fn key_on(ring: &Ring, bucket: &str, prefix: &str, cell: CellId) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| ring.cell_for(bucket, k) == cell)
        .expect("some key lands on every cell")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_end_to_end() {
    bounded_by(Duration::from_secs(150), async {
        let dir = TestDir::new("s3");
        let mut o = LocalClusterOptions::default();
        o.router.config.cell_request_timeout = Duration::from_millis(1500);
        o.router.config.connect_timeout = Duration::from_millis(300);
        let cluster = must_start_cluster(o, dir.path()).await;
        let info = cluster.s3_info().expect("cellkv-local serves S3");
        let s3 = S3Client::new(info.clone());
        let ring = ring_of(&cluster);
        let b = "s3-test";

        // ---- Buckets.
        expect(
            &s3.send(Method::PUT, &format!("/{b}"), &[], Bytes::new())
                .await,
            200,
        );
        expect_code(
            &s3.send(Method::PUT, &format!("/{b}"), &[], Bytes::new())
                .await,
            409,
            "BucketAlreadyOwnedByYou",
        );
        let list = s3.get("/", &[]).await;
        expect(&list, 200);
        assert_eq!(all(&list.text(), "Name"), [b]);
        expect(
            &s3.send(Method::HEAD, &format!("/{b}"), &[], Bytes::new())
                .await,
            200,
        );
        let missing = s3
            .send(Method::HEAD, "/no-such-bucket", &[], Bytes::new())
            .await;
        assert_eq!(missing.status, 404);
        assert!(missing.body.is_empty(), "HEAD answers carry no body");
        expect_code(
            &s3.send(Method::PUT, "/no-such-bucket/k", &[], &b"x"[..])
                .await,
            404,
            "NoSuchBucket",
        );
        let loc = s3.get(&format!("/{b}?location"), &[]).await;
        expect(&loc, 200);
        assert!(loc.text().contains("LocationConstraint"), "{}", loc.text());

        // ---- PutObject with metadata and Content-MD5; GetObject, HeadObject.
        let value = b"hello, S3 on cellkv".to_vec();
        let md5 = md5_hex(&value);
        let put = s3
            .send(
                Method::PUT,
                &format!("/{b}/dir/a.txt"),
                &[
                    ("content-type", "text/plain"),
                    ("x-amz-meta-color", "blue"),
                    ("cache-control", "no-cache"),
                    ("content-md5", &base64_md5(&value)),
                ],
                value.clone(),
            )
            .await;
        expect(&put, 200);
        assert_eq!(etag(&put), md5, "a single-part ETag is the MD5");
        let cell: CellId = CellId(put.header("x-cellkv-cell").unwrap().parse().unwrap());
        assert_eq!(cell, ring.cell_for(b, "dir/a.txt"));
        let got = s3.get(&format!("/{b}/dir/a.txt"), &[]).await;
        expect(&got, 200);
        assert_eq!(got.body.as_ref(), &value[..]);
        assert_eq!(etag(&got), md5);
        assert_eq!(got.header("content-type"), Some("text/plain"));
        assert_eq!(got.header("x-amz-meta-color"), Some("blue"));
        assert_eq!(got.header("cache-control"), Some("no-cache"));
        assert!(got.header("last-modified").is_some());
        assert_eq!(got.header("x-cellkv-cell"), Some(cell.to_string().as_str()));
        let head = s3
            .send(Method::HEAD, &format!("/{b}/dir/a.txt"), &[], Bytes::new())
            .await;
        expect(&head, 200);
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            Some(value.len().to_string().as_str())
        );
        let range = s3
            .get(&format!("/{b}/dir/a.txt"), &[("range", "bytes=0-4")])
            .await;
        expect(&range, 206);
        assert_eq!(range.body.as_ref(), b"hello");
        assert_eq!(
            range.header("content-range"),
            Some(format!("bytes 0-4/{}", value.len()).as_str())
        );
        let quoted = format!("\"{md5}\"");
        expect(
            &s3.get(&format!("/{b}/dir/a.txt"), &[("if-none-match", &quoted)])
                .await,
            304,
        );
        expect_code(
            &s3.get(&format!("/{b}/dir/a.txt"), &[("if-match", "\"0000\"")])
                .await,
            412,
            "PreconditionFailed",
        );
        expect_code(&s3.get(&format!("/{b}/nope"), &[]).await, 404, "NoSuchKey");

        // ---- One object, both APIs.
        let native = http_client()
            .get(
                &format!("{}/v1/buckets/{b}/objects/dir/a.txt", cluster.router_url()),
                &[("authorization", &cluster.auth())],
            )
            .await
            .unwrap();
        assert_eq!(native.status, 200);
        assert_eq!(native.body.as_ref(), &value[..]);
        assert_ne!(etag(&native), md5, "the native API keeps its own etag");
        let native_put = http_client()
            .put(
                &format!("{}/v1/buckets/{b}/objects/native.txt", cluster.router_url()),
                &[("authorization", &cluster.auth())],
                Bytes::from_static(b"written natively"),
            )
            .await
            .unwrap();
        assert_eq!(native_put.status, 200, "{}", native_put.text());
        let via_s3 = s3.get(&format!("/{b}/native.txt"), &[]).await;
        expect(&via_s3, 200);
        assert_eq!(via_s3.body.as_ref(), b"written natively");
        assert_eq!(etag(&via_s3), etag(&native_put), "no MD5: the native etag");

        // ---- Wrong checksums store nothing.
        expect_code(
            &s3.send(
                Method::PUT,
                &format!("/{b}/dir/a.txt"),
                &[("content-md5", &base64_md5(b"something else"))],
                &b"replacement"[..],
            )
            .await,
            400,
            "BadDigest",
        );
        assert_eq!(
            s3.get(&format!("/{b}/dir/a.txt"), &[]).await.body.as_ref(),
            &value[..]
        );
        let wrong_crc = checksum_base64(ChecksumAlgorithm::Crc32, b"not the body");
        expect_code(
            &s3.send(
                Method::PUT,
                &format!("/{b}/bad-crc"),
                &[("x-amz-checksum-crc32", &wrong_crc)],
                &b"the body"[..],
            )
            .await,
            400,
            "BadDigest",
        );
        expect_code(
            &s3.get(&format!("/{b}/bad-crc"), &[]).await,
            404,
            "NoSuchKey",
        );
        // aws-chunked, unsigned chunks with a trailing CRC32: right, then wrong.
        let body = b"chunked body".to_vec();
        let chunked = |crc: &str| {
            Bytes::from(format!(
                "{:x}\r\n{}\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n",
                body.len(),
                String::from_utf8_lossy(&body)
            ))
        };
        let len = body.len().to_string();
        let stream_headers = [
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", len.as_str()),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
        ];
        let secret = info.secret_key.clone();
        let good = s3
            .send_with(
                Method::PUT,
                &format!("/{b}/chunked"),
                &stream_headers,
                chunked(&checksum_base64(ChecksumAlgorithm::Crc32, &body)),
                Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
                &secret,
            )
            .await;
        expect(&good, 200);
        assert_eq!(etag(&good), md5_hex(&body));
        let got = s3
            .get(
                &format!("/{b}/chunked"),
                &[("x-amz-checksum-mode", "ENABLED")],
            )
            .await;
        assert_eq!(got.body.as_ref(), &body[..]);
        assert!(
            got.header("content-encoding").is_none(),
            "aws-chunked is not stored"
        );
        assert_eq!(
            got.header("x-amz-checksum-crc32"),
            Some(checksum_base64(ChecksumAlgorithm::Crc32, &body).as_str())
        );
        let bad = s3
            .send_with(
                Method::PUT,
                &format!("/{b}/chunked-bad"),
                &stream_headers,
                chunked(&wrong_crc),
                Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
                &secret,
            )
            .await;
        expect_code(&bad, 400, "BadDigest");
        expect_code(
            &s3.get(&format!("/{b}/chunked-bad"), &[]).await,
            404,
            "NoSuchKey",
        );

        // aws-chunked, every chunk signed: whole, then with a chunk altered.
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let signed = s3
            .put_signed_chunks(&format!("/{b}/signed-chunks"), &data, 8192, false)
            .await;
        expect(&signed, 200);
        assert_eq!(etag(&signed), md5_hex(&data));
        assert_eq!(
            s3.get(&format!("/{b}/signed-chunks"), &[])
                .await
                .body
                .as_ref(),
            &data[..]
        );
        let forged = s3
            .put_signed_chunks(&format!("/{b}/forged-chunks"), &data, 8192, true)
            .await;
        expect_code(&forged, 403, "SignatureDoesNotMatch");
        expect_code(
            &s3.get(&format!("/{b}/forged-chunks"), &[]).await,
            404,
            "NoSuchKey",
        );
        expect(
            &s3.send(
                Method::DELETE,
                &format!("/{b}/signed-chunks"),
                &[],
                Bytes::new(),
            )
            .await,
            204,
        );

        // ---- Signatures.
        let forged = s3
            .send_with(
                Method::GET,
                &format!("/{b}/dir/a.txt"),
                &[],
                Bytes::new(),
                None,
                "wrong-secret-0123456789abcdef",
            )
            .await;
        expect_code(&forged, 403, "SignatureDoesNotMatch");
        let unsigned = http_client()
            .get(&format!("{}/{b}/dir/a.txt", info.url), &[])
            .await
            .unwrap();
        expect_code(&unsigned, 403, "AccessDenied");

        // ---- Conditional puts, decided by the cell.
        let url = format!("/{b}/dir/a.txt");
        expect_code(
            &s3.send(Method::PUT, &url, &[("if-none-match", "*")], &b"x"[..])
                .await,
            412,
            "PreconditionFailed",
        );
        expect(
            &s3.send(
                Method::PUT,
                &format!("/{b}/fresh"),
                &[("if-none-match", "*")],
                &b"x"[..],
            )
            .await,
            200,
        );
        expect_code(
            &s3.send(Method::PUT, &url, &[("if-match", "\"0123\"")], &b"x"[..])
                .await,
            412,
            "PreconditionFailed",
        );
        let v2 = b"hello again".to_vec();
        let replaced = s3
            .send(Method::PUT, &url, &[("if-match", &quoted)], v2.clone())
            .await;
        expect(&replaced, 200);
        assert_eq!(etag(&replaced), md5_hex(&v2));
        expect_code(
            &s3.send(Method::PUT, &url, &[("if-match", &quoted)], &b"x"[..])
                .await,
            412,
            "PreconditionFailed",
        );

        // ---- Listings (across every cell), delimiters, paging.
        for k in ["dir/b.txt", "dir/sub/c.txt", "top.txt", "a b+c%/ü.txt"] {
            expect(
                &s3.send(
                    Method::PUT,
                    &format!("/{b}/{}", cellkv_s3::sigv4::uri_encode(k.as_bytes(), true)),
                    &[],
                    k.as_bytes().to_vec(),
                )
                .await,
                200,
            );
        }
        let l = s3
            .get(&format!("/{b}?list-type=2&delimiter=%2F"), &[])
            .await;
        expect(&l, 200);
        let t = l.text();
        assert_eq!(all(&t, "Prefix")[1..], ["a b+c%/", "dir/"], "{t}");
        assert_eq!(
            all(&t, "Key"),
            ["chunked", "fresh", "native.txt", "top.txt"]
        );
        assert!(
            l.header("x-cellkv-cell").unwrap().contains(','),
            "every cell named"
        );
        let l = s3
            .get(
                &format!("/{b}?list-type=2&prefix=dir%2F&delimiter=%2F"),
                &[],
            )
            .await;
        let t = l.text();
        assert_eq!(all(&t, "Key"), ["dir/a.txt", "dir/b.txt"]);
        assert_eq!(all(&t, "Prefix")[1..], ["dir/sub/"]);
        let l = s3
            .get(
                &format!("/{b}?list-type=2&prefix=dir%2F&encoding-type=url"),
                &[],
            )
            .await;
        assert_eq!(
            all(&l.text(), "Key"),
            ["dir/a.txt", "dir/b.txt", "dir/sub/c.txt"]
        );
        // Paging one key at a time, V2 then V1.
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let q = match &token {
                Some(t) => format!("/{b}?list-type=2&max-keys=1&continuation-token={t}"),
                None => format!("/{b}?list-type=2&max-keys=1"),
            };
            let l = s3.get(&q, &[]).await;
            expect(&l, 200);
            let t = l.text();
            keys.extend(all(&t, "Key"));
            match all(&t, "NextContinuationToken").pop() {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut expected = vec![
            "a b+c%/ü.txt",
            "chunked",
            "dir/a.txt",
            "dir/b.txt",
            "dir/sub/c.txt",
            "fresh",
            "native.txt",
            "top.txt",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        let l = s3
            .get(&format!("/{b}?marker=dir%2Fb.txt&max-keys=2"), &[])
            .await;
        let t = l.text();
        assert_eq!(all(&t, "Key"), ["dir/sub/c.txt", "fresh"]);
        assert_eq!(all(&t, "IsTruncated"), ["true"]);
        let v = s3.get(&format!("/{b}?versions&prefix=top"), &[]).await;
        expect(&v, 200);
        assert_eq!(all(&v.text(), "VersionId"), ["null"]);

        // ---- Copies.
        let c = s3
            .send(
                Method::PUT,
                &format!("/{b}/copy.txt"),
                &[("x-amz-copy-source", &format!("/{b}/dir/a.txt"))],
                Bytes::new(),
            )
            .await;
        expect(&c, 200);
        assert_eq!(
            all(&c.text(), "ETag"),
            [format!("&quot;{}&quot;", md5_hex(&v2))]
        );
        let got = s3.get(&format!("/{b}/copy.txt"), &[]).await;
        assert_eq!(got.body.as_ref(), &v2[..]);
        expect_code(
            &s3.send(
                Method::PUT,
                &format!("/{b}/copy.txt"),
                &[("x-amz-copy-source", &format!("{b}/copy.txt"))],
                Bytes::new(),
            )
            .await,
            400,
            "InvalidRequest",
        );
        let r = s3
            .send(
                Method::PUT,
                &format!("/{b}/copy.txt"),
                &[
                    ("x-amz-copy-source", &format!("{b}/copy.txt")),
                    ("x-amz-metadata-directive", "REPLACE"),
                    ("x-amz-meta-state", "replaced"),
                    ("content-type", "application/json"),
                ],
                Bytes::new(),
            )
            .await;
        expect(&r, 200);
        let h = s3
            .send(Method::HEAD, &format!("/{b}/copy.txt"), &[], Bytes::new())
            .await;
        assert_eq!(h.header("x-amz-meta-state"), Some("replaced"));
        assert_eq!(h.header("content-type"), Some("application/json"));
        assert_eq!(etag(&h), md5_hex(&v2));

        // ---- Deletes; a bucket is deleted only when empty.
        expect(
            &s3.send(Method::DELETE, &format!("/{b}/copy.txt"), &[], Bytes::new())
                .await,
            204,
        );
        expect(
            &s3.send(Method::DELETE, &format!("/{b}/copy.txt"), &[], Bytes::new())
                .await,
            204,
        );
        expect_code(
            &s3.get(&format!("/{b}/copy.txt"), &[]).await,
            404,
            "NoSuchKey",
        );
        expect_code(
            &s3.send(Method::DELETE, &format!("/{b}"), &[], Bytes::new())
                .await,
            409,
            "BucketNotEmpty",
        );
        let mut doc = String::from("<Delete>");
        for k in &expected {
            doc.push_str(&format!(
                "<Object><Key>{}</Key></Object>",
                k.replace('&', "&amp;")
            ));
        }
        doc.push_str("</Delete>");
        let d = s3
            .send(
                Method::POST,
                &format!("/{b}?delete"),
                &[("content-md5", &base64_md5(doc.as_bytes()))],
                doc.clone(),
            )
            .await;
        expect(&d, 200);
        assert_eq!(
            all(&d.text(), "Deleted").len(),
            expected.len(),
            "{}",
            d.text()
        );
        expect(
            &s3.send(Method::DELETE, &format!("/{b}"), &[], Bytes::new())
                .await,
            204,
        );
        expect(
            &s3.send(Method::HEAD, &format!("/{b}"), &[], Bytes::new())
                .await,
            404,
        );

        // ---- Multipart: not in this phase.
        expect_code(
            &s3.send(Method::POST, "/x-bucket/k?uploads", &[], Bytes::new())
                .await,
            501,
            "NotImplemented",
        );

        // ---- A dead cell fails only its own keys, fast, with 503.
        let b = "isolation";
        expect(
            &s3.send(Method::PUT, &format!("/{b}"), &[], Bytes::new())
                .await,
            200,
        );
        let victim = cluster.cells()[0].cell_id();
        let dead_key = key_on(&ring, b, "dead-", victim);
        let live: Vec<String> = cluster
            .cells()
            .iter()
            .map(|c| c.cell_id())
            .filter(|&c| c != victim)
            .map(|c| key_on(&ring, b, "live-", c))
            .collect();
        expect(
            &s3.send(
                Method::PUT,
                &format!("/{b}/{dead_key}"),
                &[],
                &b"before"[..],
            )
            .await,
            200,
        );
        cluster.cell(victim).kill_all().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut saw_fast = false;
        while Instant::now() < deadline && !saw_fast {
            let t0 = Instant::now();
            let r = s3.get(&format!("/{b}/{dead_key}"), &[]).await;
            let took = t0.elapsed();
            assert!(matches!(r.status, 500 | 503), "{} {}", r.status, r.text());
            if r.status == 503 && took < Duration::from_millis(200) {
                expect_code(&r, 503, "ServiceUnavailable");
                assert!(r.header("retry-after").is_some());
                assert_eq!(r.header("x-cellkv-cell"), Some(victim.to_string().as_str()));
                saw_fast = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            saw_fast,
            "the dead cell's keys fail fast once its breaker is open"
        );
        let p = s3
            .send(Method::PUT, &format!("/{b}/{dead_key}"), &[], &b"after"[..])
            .await;
        expect_code(&p, 503, "ServiceUnavailable");
        for k in &live {
            let v = format!("value of {k}");
            expect(
                &s3.send(Method::PUT, &format!("/{b}/{k}"), &[], v.clone())
                    .await,
                200,
            );
            assert_eq!(
                s3.get(&format!("/{b}/{k}"), &[]).await.body.as_ref(),
                v.as_bytes()
            );
        }
        expect_code(
            &s3.get(&format!("/{b}?list-type=2"), &[]).await,
            503,
            "ServiceUnavailable",
        );
    })
    .await;
}
