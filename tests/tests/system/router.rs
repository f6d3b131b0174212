//! Whole-system tests of the router in front of real cells: one
//! `cellkv-router` and three cells of three `cellkv-cell` replicas each, all
//! real processes on loopback (`cluster::local::LocalCluster`, fresh temp
//! dir and ports per test), driven through the public API and faulted with
//! real signals; plus the `cellkv-local` launcher itself. Build the binaries
//! first: `cargo build --release --bins`. Each test is bounded by
//! `support::CLUSTER_TEST_LIMIT` and prints the processes' log tails when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use client::http::Resp;
use cluster::cell_proc::bin_path;
use cluster::local::{LocalCluster, LocalClusterOptions, CLUSTER_FILE, LOCAL_BIN};
use cluster::process::{ManagedProcess, ProcessSpec};
use cluster::router_proc::{unlimited_token, Access, TokenOptions};
use common::{CellId, CellMap, Ring};
use http::Method;
use serde_json::Value;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The ring the router routes with, rebuilt from the cell map in the router's
/// own generated config file.
fn router_ring(cluster: &LocalCluster) -> Ring {
    let text = std::fs::read_to_string(cluster.router().config_path()).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let map: CellMap = v["cell_map"].clone().try_into().unwrap();
    assert_eq!(map, cluster.cell_map());
    map.ring().unwrap()
}

/// The cell a response names in `X-Cellkv-Cell`.
#[track_caller]
fn cell_header(resp: &Resp) -> CellId {
    let h = resp
        .header("x-cellkv-cell")
        .unwrap_or_else(|| panic!("no X-Cellkv-Cell on {}: {}", resp.status, resp.text()));
    CellId(h.parse().unwrap_or_else(|_| panic!("X-Cellkv-Cell {h:?}")))
}

/// `Retry-After` in whole seconds, which every 503 and 429 must carry.
#[track_caller]
fn retry_after(resp: &Resp) -> u64 {
    let h = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {}: {}", resp.status, resp.text()));
    let s: u64 = h.parse().unwrap_or_else(|_| panic!("Retry-After {h:?}"));
    assert!(s >= 1, "Retry-After {s}");
    s
}

/// The first key `prefix{i}` of `bucket` that the ring places on `cell`.
fn key_on(ring: &Ring, bucket: &str, prefix: &str, cell: CellId) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| ring.cell_for(bucket, k) == cell)
        .expect("some key lands on every cell")
}

fn empty() -> Bytes {
    Bytes::new()
}

// ---------------------------------------------------------------------------
// a. The public API, every answer and error code

/// Router-side object limit of the API test: small, to reach 413 cheaply.
const MAX_OBJECT: usize = 4096;
const READER_TOKEN: &str = "reader-token-0123456789";
const PHOTOS_TOKEN: &str = "photos-only-token-0123456789";
const TINY_TOKEN: &str = "tiny-rate-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_api_end_to_end() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("public_api");
        let mut o = LocalClusterOptions::default();
        o.router.config.max_object_bytes = MAX_OBJECT as u64;
        // Short, so that a frozen cell answers 504 soon.
        o.router.config.cell_request_timeout = ms(1500);
        o.router.config.connect_timeout = ms(500);
        // One health round at start-up and none during the test: the 504 case
        // needs the breaker to let a request through to a frozen cell, and a
        // round would open it within `health_timeout` (then the answer is 503).
        o.router.config.breaker.health_interval = secs(120);
        o.router.config.tokens = vec![
            TokenOptions {
                access: Access::Read,
                ..unlimited_token("reader", READER_TOKEN)
            },
            TokenOptions {
                buckets: vec!["photos".into()],
                ..unlimited_token("photos-only", PHOTOS_TOKEN)
            },
            TokenOptions {
                rate_per_sec: 0.01,
                burst: 1,
                ..unlimited_token("tiny", TINY_TOKEN)
            },
        ];
        let cluster = must_start_cluster(o, dir.path()).await;
        let ring = router_ring(&cluster);
        let api = PublicApi::new(&cluster);

        // ---- PUT, GET, HEAD with every header.
        let (b, k) = ("photos", "trips/2024/a.txt");
        let cell = ring.cell_for(b, k);
        let value = b"hello through the router".to_vec();
        let (s1, put) = api
            .must_put(b, k, value.clone(), &[("content-type", "text/plain")])
            .await;
        assert_eq!(cell_header(&put), cell);
        assert_eq!(put.json::<Value>().unwrap()["size"], value.len());
        let g = api
            .must_send(Method::GET, &obj_path(b, k), &[], empty())
            .await;
        assert_eq!(g.status, 200, "{}", g.text());
        assert_eq!(&g.body[..], &value[..]);
        assert_eq!(g.header("content-type"), Some("text/plain"));
        assert_eq!(g.header("etag"), Some(format!("\"{}\"", s1.etag).as_str()));
        assert_eq!(
            g.header("content-length"),
            Some(value.len().to_string().as_str())
        );
        assert_eq!(
            g.header("x-cellkv-version"),
            Some(s1.version.to_string().as_str())
        );
        assert_eq!(cell_header(&g), cell);
        let lm = g.header("last-modified").expect("Last-Modified").to_owned();
        assert!(lm.ends_with(" GMT"), "{lm}");
        let h = api
            .must_send(Method::HEAD, &obj_path(b, k), &[], empty())
            .await;
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(
            h.header("content-length"),
            Some(value.len().to_string().as_str())
        );
        assert_eq!(h.header("etag"), g.header("etag"));
        assert_eq!(h.header("last-modified"), Some(lm.as_str()));
        assert_eq!(h.header("content-type"), Some("text/plain"));
        assert_eq!(cell_header(&h), cell);

        // ---- `?read=stale` reaches the cell through the router; a bad
        // query is the cell's 400, as on the cell itself.
        for query in ["?read=stale", "?read=linearizable"] {
            let r = api
                .must_send(
                    Method::GET,
                    &format!("{}{query}", obj_path(b, k)),
                    &[],
                    empty(),
                )
                .await;
            assert_eq!(r.status, 200, "{query}: {}", r.text());
            assert_eq!(&r.body[..], &value[..], "{query}");
            assert_eq!(r.header("etag"), g.header("etag"), "{query}");
        }
        for query in ["?read=sometimes", "?reed=stale"] {
            let r = api
                .must_send(
                    Method::GET,
                    &format!("{}{query}", obj_path(b, k)),
                    &[],
                    empty(),
                )
                .await;
            assert_api_error(&r, 400, "bad_request", cell.0);
        }

        // ---- If-None-Match: * creates once.
        let k2 = "trips/2024/b.txt";
        let cell2 = ring.cell_for(b, k2);
        api.must_put(b, k2, &b"first"[..], &[("if-none-match", "*")])
            .await;
        let r = api
            .must_send(
                Method::PUT,
                &obj_path(b, k2),
                &[("if-none-match", "*")],
                &b"second"[..],
            )
            .await;
        assert_api_error(&r, 412, "precondition_failed", cell2.0);

        // ---- If-Match replaces exactly that version.
        let q1 = format!("\"{}\"", s1.etag);
        let (s2, _) = api
            .must_put(b, k, &b"second version"[..], &[("if-match", &q1)])
            .await;
        assert_ne!(s2.etag, s1.etag);
        assert!(s2.version > s1.version);
        let r = api
            .must_send(
                Method::PUT,
                &obj_path(b, k),
                &[("if-match", &q1)],
                &b"lost update"[..],
            )
            .await;
        assert_api_error(&r, 412, "precondition_failed", cell.0);
        let r = api
            .must_send(
                Method::PUT,
                &obj_path(b, k),
                &[("if-match", &q1), ("if-none-match", "*")],
                &b"both"[..],
            )
            .await;
        assert_api_error(&r, 400, "bad_request", cell.0);

        // ---- Conditional GET: 304 for the current etag, 200 for a stale one.
        let q2 = format!("\"{}\"", s2.etag);
        let r = api
            .must_send(
                Method::GET,
                &obj_path(b, k),
                &[("if-none-match", &q2)],
                empty(),
            )
            .await;
        assert_eq!(r.status, 304, "{}", r.text());
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(q2.as_str()));
        assert_eq!(cell_header(&r), cell);
        let r = api
            .must_send(
                Method::GET,
                &obj_path(b, k),
                &[("if-none-match", &q1)],
                empty(),
            )
            .await;
        assert_eq!((r.status, &r.body[..]), (200, &b"second version"[..]));

        // ---- DELETE: conditional, then 204, then 404 everywhere.
        let r = api
            .must_send(
                Method::DELETE,
                &obj_path(b, k),
                &[("if-match", &q1)],
                empty(),
            )
            .await;
        assert_api_error(&r, 412, "precondition_failed", cell.0);
        let r = api
            .must_send(
                Method::DELETE,
                &obj_path(b, k),
                &[("if-match", &q2)],
                empty(),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(cell_header(&r), cell);
        let r = api
            .must_send(Method::GET, &obj_path(b, k), &[], empty())
            .await;
        assert_api_error(&r, 404, "not_found", cell.0);
        let r = api
            .must_send(Method::HEAD, &obj_path(b, k), &[], empty())
            .await;
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
        let r = api
            .must_send(Method::DELETE, &obj_path(b, k), &[], empty())
            .await;
        assert_api_error(&r, 404, "not_found", cell.0);

        // ---- Listing across cells: prefix + pagination give exactly the keys, sorted.
        let lb = "listing";
        let mut want = BTreeSet::new();
        let mut cells_hit = BTreeSet::new();
        for i in 0..30 {
            let key = format!("dir/k{i:02}");
            let (_, r) = api.must_put(lb, &key, key.clone(), &[]).await;
            cells_hit.insert(cell_header(&r));
            want.insert(key);
        }
        for i in 0..5 {
            api.must_put(lb, &format!("other/x{i}"), &b"x"[..], &[])
                .await;
        }
        assert_eq!(cells_hit.len(), 3, "30 keys reach every cell");
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = format!("/v1/buckets/{lb}/objects?prefix=dir/&limit=7");
            if let Some(a) = &after {
                q.push_str(&format!("&start_after={a}"));
            }
            let r = api.must_send(Method::GET, &q, &[], empty()).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-cellkv-cell"), Some("1,2,3"));
            let page: Value = r.json().unwrap();
            assert_eq!(page["partial"], false, "{page}");
            let objects = page["objects"].as_array().unwrap();
            assert!(objects.len() <= 7, "{page}");
            for o in objects {
                let key = o["key"].as_str().unwrap().to_owned();
                assert_eq!(o["size"], key.len(), "{o}");
                assert!(o["etag"].as_str().is_some_and(|e| !e.is_empty()), "{o}");
                got.push(key);
            }
            pages += 1;
            match page["next_start_after"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        assert_eq!(got, want.iter().cloned().collect::<Vec<_>>());
        assert_eq!(pages, 5, "30 keys in pages of 7");
        let r = api
            .must_send(
                Method::GET,
                &format!("/v1/buckets/{lb}/objects"),
                &[],
                empty(),
            )
            .await;
        assert_eq!(
            r.json::<Value>().unwrap()["objects"]
                .as_array()
                .unwrap()
                .len(),
            35
        );
        let r = api
            .must_send(
                Method::GET,
                &format!("/v1/buckets/{lb}/objects?limit=0"),
                &[],
                empty(),
            )
            .await;
        assert_error(&r, 400, "bad_request");
        let r = api
            .must_send(
                Method::GET,
                &format!("/v1/buckets/{lb}/objects?bogus=1"),
                &[],
                empty(),
            )
            .await;
        assert_error(&r, 400, "bad_request");

        // ---- 401: no token, an unknown token (objects and listings).
        let path = obj_path("listing", "dir/k00");
        for (who, a) in [
            ("no token", api.with_token(None)),
            (
                "unknown token",
                api.with_token(Some("not-a-configured-token-42")),
            ),
        ] {
            for p in [path.as_str(), "/v1/buckets/listing/objects"] {
                let r = a.must_send(Method::GET, p, &[], empty()).await;
                assert_error(&r, 401, "unauthorized");
                assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{who}");
            }
            let r = a.must_send(Method::PUT, &path, &[], &b"x"[..]).await;
            assert_error(&r, 401, "unauthorized");
        }

        // ---- 403: a read token writing; a token scoped to another bucket.
        let reader = api.with_token(Some(READER_TOKEN));
        let r = reader.must_send(Method::GET, &path, &[], empty()).await;
        assert_eq!((r.status, &r.body[..]), (200, &b"dir/k00"[..]));
        let r = reader
            .must_send(
                Method::GET,
                "/v1/buckets/listing/objects?limit=1",
                &[],
                empty(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        for m in [Method::PUT, Method::DELETE] {
            let r = reader.must_send(m, &path, &[], &b"x"[..]).await;
            assert_error(&r, 403, "forbidden");
        }
        let photos = api.with_token(Some(PHOTOS_TOKEN));
        photos.must_put("photos", "mine", &b"ok"[..], &[]).await;
        for m in [Method::GET, Method::PUT] {
            let r = photos.must_send(m, &path, &[], &b"x"[..]).await;
            assert_error(&r, 403, "forbidden");
        }
        let r = photos
            .must_send(Method::GET, "/v1/buckets/listing/objects", &[], empty())
            .await;
        assert_error(&r, 403, "forbidden");

        // ---- 429 with Retry-After: a burst of 1 at 0.01/s.
        let tiny = api.with_token(Some(TINY_TOKEN));
        let r = tiny.must_send(Method::GET, &path, &[], empty()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = tiny.must_send(Method::GET, &path, &[], empty()).await;
        assert_error(&r, 429, "rate_limited");
        let wait = retry_after(&r);
        assert!((2..=101).contains(&wait), "Retry-After {wait}");

        // ---- 400: bucket and key names.
        for bad in ["Bad_Bucket", "ab", "192.168.1.1", "xn--abc"] {
            let r = api
                .must_send(Method::GET, &obj_path(bad, "k"), &[], empty())
                .await;
            assert_error(&r, 400, "invalid_bucket");
        }
        let r = api
            .must_send(Method::GET, "/v1/buckets/Bad_Bucket/objects", &[], empty())
            .await;
        assert_error(&r, 400, "invalid_bucket");
        let long = "k".repeat(1025);
        let r = api
            .must_send(Method::PUT, &obj_path("photos", &long), &[], &b"x"[..])
            .await;
        assert_error(&r, 400, "invalid_key");
        let r = api
            .must_send(Method::GET, &obj_path("photos", &long), &[], empty())
            .await;
        assert_error(&r, 400, "invalid_key");
        let r = api
            .must_send(Method::GET, &obj_path("photos", "a%01b"), &[], empty())
            .await;
        assert_error(&r, 400, "invalid_key");
        api.must_put("photos", &"k".repeat(1024), &b"longest key"[..], &[])
            .await;

        // ---- 413: above the router's max_object_bytes, sized and chunked.
        api.must_put("photos", "max", vec![7u8; MAX_OBJECT], &[])
            .await;
        let r = api
            .must_send(
                Method::PUT,
                &obj_path("photos", "big"),
                &[],
                vec![7u8; MAX_OBJECT + 1],
            )
            .await;
        assert_error(&r, 413, "payload_too_large");
        let chunked = api
            .client
            .request_chunked(
                Method::PUT,
                &format!("{}{}", api.base, obj_path("photos", "big")),
                &[("authorization", api.auth.as_deref().unwrap())],
                vec![Bytes::from(vec![1u8; MAX_OBJECT]), Bytes::from_static(b"!")],
            )
            .await
            .unwrap();
        assert_error(&chunked, 413, "payload_too_large");
        let r = api
            .must_send(Method::GET, &obj_path("photos", "big"), &[], empty())
            .await;
        assert_error(&r, 404, "not_found");

        // ---- 404 for an unknown endpoint, 405 for an unknown method.
        let r = api
            .must_send(Method::GET, "/v2/whatever", &[], empty())
            .await;
        assert_error(&r, 404, "not_found");
        let r = api
            .must_send(Method::POST, &obj_path("photos", "mine"), &[], empty())
            .await;
        assert_error(&r, 405, "method_not_allowed");

        // ---- 503 cell_unavailable with Retry-After: every replica of another cell dead.
        let dc = CellId(2);
        let dk = key_on(&ring, "photos", "dead-", dc);
        api.must_put("photos", &dk, &b"before the kill"[..], &[])
            .await;
        cluster.cell(dc).kill_all().unwrap();
        // Reads first: a read is retried on a pooled connection that died with
        // the cell, so by the PUT the router's pool knows the cell is gone.
        let r = api
            .must_send(Method::GET, &obj_path("photos", &dk), &[], empty())
            .await;
        assert_api_error(&r, 503, "cell_unavailable", dc.0);
        retry_after(&r);
        let r = api
            .must_send(Method::HEAD, &obj_path("photos", &dk), &[], empty())
            .await;
        assert_eq!(r.status, 503);
        assert_eq!(cell_header(&r), dc);
        retry_after(&r);
        let r = api
            .must_send(Method::PUT, &obj_path("photos", &dk), &[], &b"x"[..])
            .await;
        assert_api_error(&r, 503, "cell_unavailable", dc.0);
        retry_after(&r);
        // Other cells do not notice.
        for c in [CellId(1), CellId(3)] {
            let k = want.iter().find(|k| ring.cell_for(lb, k) == c).unwrap();
            let r = api
                .must_send(Method::GET, &obj_path(lb, k), &[], empty())
                .await;
            assert_eq!((r.status, cell_header(&r)), (200, c), "{}", r.text());
        }
        // A listing never skips a cell silently...
        let r = api
            .must_send(Method::GET, "/v1/buckets/listing/objects", &[], empty())
            .await;
        assert_error(&r, 503, "cell_unavailable");
        retry_after(&r);
        assert_eq!(
            r.json::<Value>().unwrap()["error"]["missing_cells"],
            serde_json::json!([dc.0])
        );
        // ...unless asked to.
        let r = api
            .must_send(
                Method::GET,
                "/v1/buckets/listing/objects?prefix=dir/&allow_partial=true",
                &[],
                empty(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page: Value = r.json().unwrap();
        assert_eq!(page["partial"], true);
        assert_eq!(page["missing_cells"], serde_json::json!([dc.0]));
        let listed: BTreeSet<String> = page["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect();
        let expected: BTreeSet<String> = want
            .iter()
            .filter(|k| ring.cell_for(lb, k) != dc)
            .cloned()
            .collect();
        assert_eq!(listed, expected);

        // ---- 504 timeout: every replica of another cell frozen (SIGSTOP). Last,
        // because a thawed cell may hold an election at any moment afterwards.
        // The router has this cell's leader cached and a connection to it, so
        // the request is sent and then waits out cell_request_timeout.
        let fc = CellId(1);
        let fk = key_on(&ring, "photos", "frozen-", fc);
        api.must_put("photos", &fk, &b"before the freeze"[..], &[])
            .await;
        let frozen = cluster.cell(fc);
        for r in frozen.replicas() {
            r.stop_signal().unwrap();
        }
        let t0 = Instant::now();
        let r = api
            .must_send(Method::GET, &obj_path("photos", &fk), &[], empty())
            .await;
        let took = t0.elapsed();
        assert_api_error(&r, 504, "timeout", fc.0);
        assert!(took >= ms(1400) && took < secs(5), "504 after {took:?}");
        let r = api
            .must_send(Method::PUT, &obj_path("photos", &fk), &[], &b"x"[..])
            .await;
        assert_api_error(&r, 504, "timeout", fc.0);
        let msg = r.json::<Value>().unwrap()["error"]["message"].to_string();
        assert!(msg.contains("outcome is unknown"), "{msg}");
        for r in frozen.replicas() {
            r.cont().unwrap();
        }
        // Thawed replicas may hold an election a moment later (their timers
        // ran out while frozen): wait until reads are served again.
        frozen.wait_ready(secs(15)).await.unwrap();
        must_eventually(secs(10), "the thawed cell serves again", || {
            let (api, fk) = (&api, &fk);
            async move {
                let r = api
                    .try_send(Method::GET, &obj_path("photos", fk), &[], empty())
                    .await
                    .ok()?;
                (r.status == 200).then_some(())
            }
        })
        .await;

        // Not reachable on purpose from outside, so not covered here:
        // 500 `internal`/`storage_error` (a bug or a failed disk), and 502
        // `cell_unavailable` (a connection broken after a write was sent;
        // `dead_cell_is_isolated` tolerates it for writes in flight at the kill).
        cluster.check_no_crash().unwrap();
        assert_cluster_logs_clean(&cluster);
    })
    .await
}

// ---------------------------------------------------------------------------
// b. Placement

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_ring_cell() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("ring_cell");
        let cluster = must_start_cluster(LocalClusterOptions::default(), dir.path()).await;
        let ring = router_ring(&cluster);
        let api = PublicApi::new(&cluster);
        let cell_api = Api {
            client: api.client.clone(),
            auth: format!("Bearer {}", cluster.secrets().cell_api_token),
        };
        let bucket = "placement";
        let mut per_cell: BTreeMap<CellId, Vec<(String, String)>> = BTreeMap::new();
        for i in 0..200 {
            let key = format!("obj/{i:03}-{}", i * 7919 % 1000);
            let (s, r) = api.must_put(bucket, &key, key.clone(), &[]).await;
            let want = ring.cell_for(bucket, &key);
            assert_eq!(cell_header(&r), want, "{key}");
            per_cell.entry(want).or_default().push((key, s.etag));
        }
        let counts: Vec<usize> = per_cell.values().map(Vec::len).collect();
        eprintln!("keys per cell: {counts:?}");
        assert_eq!(per_cell.len(), 3);
        assert!(counts.iter().all(|&n| n >= 20), "{counts:?}");

        // Straight from the replicas: the owning cell's have it (followers
        // may lag a little), every other cell's answer 421 moved to the owner.
        for (&owner, keys) in &per_cell {
            for c in cluster.cells() {
                for r in c.replicas() {
                    let base = r.api_url();
                    for (key, etag) in keys {
                        if c.cell_id() == owner {
                            let g = must_eventually(
                                secs(5),
                                "a replica of the owner has the key",
                                || {
                                    let (cell_api, base) = (&cell_api, &base);
                                    async move {
                                        let g = cell_api
                                            .try_get_q(base, bucket, key, "read=stale", &[])
                                            .await
                                            .ok()?;
                                        (g.status == 200).then_some(g)
                                    }
                                },
                            )
                            .await;
                            assert_eq!(g.header("etag"), Some(format!("\"{etag}\"").as_str()));
                            assert_eq!(&g.body[..], key.as_bytes());
                        } else {
                            let g = cell_api
                                .try_get_q(&base, bucket, key, "read=stale", &[])
                                .await
                                .unwrap();
                            // The control plane gave every cell its ranges:
                            // a cell that does not own the key refuses it
                            // (it never answers for it). A cell that never
                            // owned the range cannot name the owner; if it
                            // names one, it must be the right one.
                            assert_api_error(&g, 421, "moved", c.cell_id().0);
                            if let Some(named) = g.header("x-cellkv-moved-owner") {
                                assert_eq!(
                                    named,
                                    owner.0.to_string(),
                                    "{key} refused by cell {} naming the wrong owner",
                                    c.cell_id()
                                );
                            }
                        }
                    }
                }
            }
        }
        cluster.check_no_crash().unwrap();
        assert_cluster_logs_clean(&cluster);
    })
    .await
}

// ---------------------------------------------------------------------------
// c. A dead cell is isolated

/// One request of a writer.
#[derive(Clone, Debug)]
struct Sample {
    cell: CellId,
    key: String,
    start: Instant,
    took: Duration,
    /// `None`: no HTTP answer (transport error, in `detail`).
    status: Option<u16>,
    code: Option<String>,
    retry_after: bool,
    detail: String,
}

impl Sample {
    fn end(&self) -> Instant {
        self.start + self.took
    }
}

#[derive(Default)]
struct Record {
    samples: Mutex<Vec<Sample>>,
    /// Every acknowledged write.
    acked: Mutex<Vec<Expect>>,
}

/// `n` tasks PUTting unique keys of `bucket` through the router until
/// stopped; every request goes into `record`, every 200 into its
/// acknowledged writes.
fn spawn_writers(
    api: &PublicApi,
    ring: &Ring,
    bucket: &'static str,
    n: usize,
    record: Arc<Record>,
) -> Writers<()> {
    Writers::spawn(n, |w| {
        let (api, ring, record) = (api.clone(), ring.clone(), record.clone());
        async move {
            let mut i = 0u64;
            while w.running() {
                let key = format!("w{}/k{i:06}", w.id);
                i += 1;
                let value = Bytes::from(format!("value of {key}"));
                let cell = ring.cell_for(bucket, &key);
                let start = Instant::now();
                let res = api
                    .try_send(Method::PUT, &obj_path(bucket, &key), &[], value.clone())
                    .await;
                let took = start.elapsed();
                let mut s = Sample {
                    cell,
                    key: key.clone(),
                    start,
                    took,
                    status: None,
                    code: None,
                    retry_after: false,
                    detail: String::new(),
                };
                match res {
                    Ok(r) => {
                        s.status = Some(r.status);
                        s.code = r.error_code();
                        s.retry_after = r.header("retry-after").is_some();
                        if r.status == 200 {
                            let etag = r.json::<Value>().unwrap()["etag"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            record.acked.lock().unwrap().push(Expect {
                                key,
                                etag,
                                value: Some(value),
                            });
                        } else {
                            s.detail = r.text();
                        }
                    }
                    Err(e) => {
                        s.detail = e.to_string();
                        // A router that is gone refuses at once: do not spin.
                        tokio::time::sleep(ms(5)).await;
                    }
                }
                record.samples.lock().unwrap().push(s);
            }
        }
    })
}

/// Reads every acknowledged write back through the router (4 at a time):
/// each must be there with its acknowledged etag and value.
async fn must_read_back_all(api: &PublicApi, bucket: &'static str, acked: &[Expect]) {
    let api = api.clone();
    must_read_back(acked.to_vec(), 4, move |key| {
        let api = api.clone();
        async move {
            api.must_send(Method::GET, &obj_path(bucket, &key), &[], empty())
                .await
        }
    })
    .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_cell_is_isolated() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("dead_cell");
        let o = LocalClusterOptions::default();
        let breaker = o.router.config.breaker.clone();
        let cluster = must_start_cluster(o, dir.path()).await;
        let ring = router_ring(&cluster);
        let api = PublicApi::new(&cluster);
        let bucket = "isolation";
        let victim = CellId(2);
        let record = Arc::new(Record::default());
        let writers = spawn_writers(&api, &ring, bucket, 4, record.clone());

        // Phase 1: everything serves.
        tokio::time::sleep(secs(2)).await;
        let kill_at = Instant::now();
        cluster.cell(victim).kill_all().unwrap();
        let killed = Instant::now();
        eprintln!("killed every replica of cell {victim} in {:?}", killed - kill_at);

        // Phase 2: the victim's breaker opens by itself (health checks or failures).
        let open_at = must_eventually(secs(5), "the victim's breaker opens", || {
            let cluster = &cluster;
            async move {
                let c = cluster.router().cell_readiness(victim).await.ok()?;
                (c["breaker"] == "open").then(Instant::now)
            }
        })
        .await;
        eprintln!("breaker open {:?} after the kill", open_at - killed);
        let (status, ready) = cluster.router().readiness().await.unwrap();
        assert_eq!(status, 200, "the other cells keep the router ready: {ready}");
        tokio::time::sleep((killed + secs(5)).saturating_duration_since(Instant::now())).await;

        // Phase 3: the cell comes back; traffic to it returns by itself.
        let restart_at = Instant::now();
        for r in cluster.cell(victim).replicas() {
            r.restart().unwrap();
        }
        cluster.cell(victim).wait_ready(secs(20)).await.unwrap();
        let served_again = must_eventually(secs(20), "writes to the victim succeed again", || {
            let record = &record;
            async move {
                let samples = record.samples.lock().unwrap();
                samples
                    .iter()
                    .filter(|s| s.cell == victim && s.start >= restart_at && s.status == Some(200))
                    .map(Sample::end)
                    .min()
            }
        })
        .await;
        cluster.router().wait_serving_all(secs(20)).await.unwrap();
        let closed_at = Instant::now();
        eprintln!(
            "after the restart: first write served in {:?}, breaker closed within {:?}",
            served_again - restart_at,
            closed_at - restart_at
        );
        let bound = breaker.open_duration
            + breaker.health_interval * (breaker.recovery_successes + 2)
            + secs(5);
        assert!(
            served_again - restart_at < bound,
            "the router took {:?} to serve the restarted cell",
            served_again - restart_at
        );
        tokio::time::sleep(ms(500)).await;
        writers.stop().await;

        let samples = record.samples.lock().unwrap().clone();
        let acked = record.acked.lock().unwrap().clone();
        let show = |v: &[&Sample]| -> String {
            v.iter()
                .take(5)
                .map(|s| format!("\n  {} cell {} {:?} {:?} after {:?}: {}", s.key, s.cell, s.status, s.code, s.took, s.detail))
                .collect()
        };

        // The other cells never noticed: not one error, before, during or after.
        let others: Vec<&Sample> = samples.iter().filter(|s| s.cell != victim).collect();
        let bad: Vec<&Sample> = others.iter().copied().filter(|s| s.status != Some(200)).collect();
        assert!(bad.is_empty(), "{} of {} requests to healthy cells failed:{}", bad.len(), others.len(), show(&bad));
        let during = others
            .iter()
            .filter(|s| s.start >= killed && s.end() <= restart_at)
            .count();
        assert!(during >= 100, "only {during} requests to healthy cells while the victim was dead");

        // Before the kill, the victim served too.
        let before: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.cell == victim && s.end() <= kill_at)
            .collect();
        assert!(!before.is_empty());
        assert!(before.iter().all(|s| s.status == Some(200)), "{}", show(&before));

        // While dead: 503 cell_unavailable with Retry-After, nothing else.
        let dead: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.cell == victim && s.start >= killed && s.end() <= restart_at)
            .collect();
        let wrong: Vec<&Sample> = dead
            .iter()
            .copied()
            .filter(|s| {
                s.status != Some(503) || s.code.as_deref() != Some("cell_unavailable") || !s.retry_after
            })
            .collect();
        assert!(wrong.is_empty(), "{} of {} requests to the dead cell:{}", wrong.len(), dead.len(), show(&wrong));
        // In flight at the kill: the write's outcome may be unknown (502), never a hang.
        let at_kill: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.cell == victim && s.start < killed && s.end() > kill_at)
            .collect();
        assert!(
            at_kill.iter().all(|s| matches!(s.status, Some(200 | 502 | 503))),
            "{}",
            show(&at_kill)
        );

        // Once the breaker is open, they fail fast.
        let mut fast: Vec<Duration> = dead
            .iter()
            .filter(|s| s.start >= open_at)
            .map(|s| s.took)
            .collect();
        fast.sort_unstable();
        assert!(fast.len() >= 20, "only {} requests to the open breaker", fast.len());
        let (p50, p99, max) = (percentile(&fast, 0.5), percentile(&fast, 0.99), fast[fast.len() - 1]);
        eprintln!(
            "dead cell: {} answers, {} after the breaker opened: p50 {p50:?} p99 {p99:?} max {max:?}; healthy cells: {during} answers meanwhile",
            dead.len(),
            fast.len()
        );
        assert!(p99 < ms(50), "p99 of fast failures {p99:?}");

        // Recovering: 5xx allowed for the victim only; then served.
        let after: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.cell == victim && s.start >= restart_at)
            .collect();
        assert!(
            after.iter().all(|s| matches!(s.status, Some(200 | 502 | 503 | 504))),
            "{}",
            show(&after)
        );
        assert!(after.iter().any(|s| s.status == Some(200)));

        // Every acknowledged write of every cell reads back with its etag.
        let by_cell = acked.iter().fold(BTreeMap::<CellId, usize>::new(), |mut m, a| {
            *m.entry(ring.cell_for(bucket, &a.key)).or_default() += 1;
            m
        });
        eprintln!("acknowledged writes per cell: {by_cell:?}; {} requests in all", samples.len());
        assert_eq!(by_cell.len(), 3);
        must_read_back_all(&api, bucket, &acked).await;
        cluster.check_no_crash().unwrap();
        assert_cluster_logs_clean(&cluster);
    })
    .await
}

// ---------------------------------------------------------------------------
// d. Graceful router shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_router_shutdown() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("router_sigterm");
        let mut o = LocalClusterOptions::default();
        o.router.config.shutdown_grace = secs(3);
        let grace = o.router.config.shutdown_grace;
        let cluster = must_start_cluster(o, dir.path()).await;
        let ring = router_ring(&cluster);
        let api = PublicApi::new(&cluster);
        let bucket = "shutdown";
        let record = Arc::new(Record::default());
        let writers = spawn_writers(&api, &ring, bucket, 4, record.clone());
        tokio::time::sleep(secs(1)).await;

        // SIGTERM under load: drains, exits 0 within its grace period.
        let router = cluster.router();
        let t0 = Instant::now();
        let status = router.terminate(grace + secs(5)).await.unwrap();
        let took = t0.elapsed();
        eprintln!("router stopped {took:?} after SIGTERM ({status})");
        assert_eq!(status.code(), Some(0), "{status}");
        assert!(
            took < grace,
            "graceful stop took {took:?}, grace is {grace:?}"
        );
        let log = router.log_since_start();
        assert!(
            log.contains("shutting down") && log.contains("router stopped"),
            "{log}"
        );
        tokio::time::sleep(ms(200)).await;
        writers.stop().await;

        // Every request got a whole answer or no connection; no 5xx.
        let samples = record.samples.lock().unwrap().clone();
        let before = samples.iter().filter(|s| s.end() <= t0).count();
        assert!(before > 0);
        let fivexx: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.status.is_some_and(|c| c >= 500))
            .collect();
        assert!(fivexx.is_empty(), "{fivexx:?}");
        assert!(
            samples
                .iter()
                .filter(|s| s.start >= t0 + took)
                .all(|s| s.status.is_none()),
            "a stopped router answered"
        );

        // The router holds no state: a new one serves every acknowledged write.
        router.restart().unwrap();
        router.wait_serving_all(secs(20)).await.unwrap();
        let acked = record.acked.lock().unwrap().clone();
        eprintln!("{} writes acknowledged before the SIGTERM", acked.len());
        must_read_back_all(&api, bucket, &acked).await;
        cluster.check_no_crash().unwrap();
        assert_cluster_logs_clean(&cluster);
        let status = router.terminate(grace + secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(0), "{status}");
        assert!(status.signal().is_none());
    })
    .await
}

// ---------------------------------------------------------------------------
// The launcher

/// Waits until the launcher has written `cluster.json` (it does once the
/// cluster serves), failing at once if it exits.
async fn must_cluster_json(launcher: &ManagedProcess, data: &std::path::Path) -> Value {
    must_eventually(
        secs(60),
        "cellkv-local writes cluster.json",
        || async move {
            if let Some(s) = launcher.unexpected_exit() {
                panic!("cellkv-local exited ({s}):\n{}", launcher.log_tail(40));
            }
            let text = std::fs::read(data.join(CLUSTER_FILE)).ok()?;
            serde_json::from_slice(&text).ok()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_launcher_restarts_with_its_data() {
    bounded_by(CLUSTER_TEST_LIMIT, async {
        let dir = TestDir::new("cellkv_local");
        let data = dir.path().join("cluster");
        let launcher = ManagedProcess::new(ProcessSpec {
            label: "cellkv-local".into(),
            bin: bin_path(LOCAL_BIN).unwrap(),
            args: vec![
                "--cells".into(),
                "1".into(),
                "--data-dir".into(),
                data.clone().into(),
            ],
            dir: dir.path().to_owned(),
            log_path: dir.path().join("cellkv-local.log"),
            env: Vec::new(),
        });
        launcher.start().unwrap();
        let info = must_cluster_json(&launcher, &data).await;

        // The documented shape.
        let url = info["router"]["url"]
            .as_str()
            .expect("router.url")
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{info}");
        assert!(info["router"]["pid"].as_u64().is_some(), "{info}");
        let token = info["token"].as_str().expect("token").to_owned();
        assert!(token.len() >= 16);
        let cells = info["cells"].as_array().expect("cells");
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0]["id"], 1);
        let replicas = cells[0]["replicas"].as_array().expect("replicas");
        assert_eq!(replicas.len(), 3);
        let mut pids = vec![info["router"]["pid"].as_u64().unwrap()];
        for (i, r) in replicas.iter().enumerate() {
            assert_eq!(r["node_id"], i + 1, "{r}");
            pids.push(r["pid"].as_u64().expect("pid"));
            assert!(
                r["api_url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http://")),
                "{r}"
            );
            assert!(
                std::path::Path::new(r["data_dir"].as_str().unwrap()).is_dir(),
                "{r}"
            );
        }

        // What it printed: endpoint, token, cluster.json and a working curl example.
        let out = launcher.log_since_start();
        assert!(out.contains(&url) && out.contains(&token), "{out}");
        let json_path = data.canonicalize().unwrap().join(CLUSTER_FILE);
        assert!(out.contains(&json_path.display().to_string()), "{out}");
        let curls: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("curl "))
            .collect();
        assert_eq!(curls.len(), 2, "{out}");
        assert!(
            curls[0].contains("-X PUT") && !curls[1].contains("-X"),
            "{curls:?}"
        );
        let has_curl = std::process::Command::new("sh")
            .args(["-c", "command -v curl"])
            .output()
            .is_ok_and(|o| o.status.success());
        if has_curl {
            for (line, want) in curls.iter().zip([r#""etag""#, "hello, cellkv"]) {
                let o = tokio::process::Command::new("sh")
                    .args(["-c", line])
                    .output()
                    .await
                    .unwrap();
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert!(
                    o.status.success() && stdout.contains(want),
                    "{line}: {stdout} {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        } else {
            eprintln!("curl is not installed: the printed example is not run");
        }

        // Through the router: write something to find again after a restart.
        let api = PublicApi {
            client: client::http::Client::default(),
            base: url.clone(),
            auth: Some(format!("Bearer {token}")),
        };
        let (stored, _) = api
            .must_put("demo", "kept/across/restarts", &b"still here"[..], &[])
            .await;

        // SIGTERM: everything stops, exit 0.
        let status = launcher.terminate(secs(40)).await.unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "{status}:\n{}",
            launcher.log_tail(20)
        );
        let out = launcher.log_since_start();
        assert!(out.contains("stopped"), "{out}");
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "pid {pid} survived"
            );
        }

        // Started again on the same directory: same endpoint and token, same data.
        std::fs::remove_file(data.join(CLUSTER_FILE)).unwrap();
        launcher.restart().unwrap();
        let again = must_cluster_json(&launcher, &data).await;
        assert_eq!(again["router"]["url"], url.as_str());
        assert_eq!(again["token"], token.as_str());
        assert!(launcher.log_since_start().contains("restarting 1 cell(s)"));
        let r = api
            .must_send(
                Method::GET,
                &obj_path("demo", "kept/across/restarts"),
                &[],
                empty(),
            )
            .await;
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"still here"[..]),
            "{}",
            r.text()
        );
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", stored.etag).as_str())
        );
        let status = launcher.terminate(secs(40)).await.unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "{status}:\n{}",
            launcher.log_tail(20)
        );
    })
    .await
}
