//! Whole-system tests of one cell: three real `cellkv-cell` processes on
//! loopback (fresh temp dirs and ports per test), driven over HTTP and faulted
//! with real signals. Build the binaries first: `cargo build --release --bins`.
//! Each test is bounded by `support::TEST_LIMIT` and prints the replicas' log
//! tails when it fails.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use crate::support::*;
use bytes::Bytes;
use client::http::Client;
use cluster::cell_proc::{bin_path, CellLayout, ReplicaProc, CELL_BIN};
use common::{CellId, NodeId};
use http::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_basics() {
    bounded(async {
        let dir = TestDir::new("api_basics");
        let mut o = opts();
        o.cell_id = CellId(7);
        let cell = must_start(o, dir.path()).await;
        let api = Api::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);
        let (leader, follower) = (cell.replica(l).api_url(), cell.replica(f).api_url());
        let mut expected: BTreeMap<(String, String), (String, Vec<u8>)> = BTreeMap::new();

        // PUT a binary value with a content type.
        let value: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let resp = api
            .try_put(
                &leader,
                "photos",
                "trips/2024/a.bin",
                value.clone(),
                &[("content-type", "image/png")],
            )
            .await
            .unwrap();
        assert_eq!(resp.header("x-cellkv-cell"), Some("7"));
        let s1 = Api::must_stored(&resp);
        assert!(s1.version > 0);
        assert_eq!(resp.json::<serde_json::Value>().unwrap()["size"], 3000);

        // GET returns it with every header.
        let g = api
            .try_get(&leader, "photos", "trips/2024/a.bin", &[])
            .await
            .unwrap();
        assert_eq!(g.status, 200, "{}", g.text());
        assert_eq!(&g.body[..], &value[..]);
        assert_eq!(g.header("content-type"), Some("image/png"));
        assert_eq!(g.header("etag"), Some(format!("\"{}\"", s1.etag).as_str()));
        assert_eq!(g.header("content-length"), Some("3000"));
        assert_eq!(
            g.header("x-cellkv-version"),
            Some(s1.version.to_string().as_str())
        );
        assert_eq!(g.header("x-cellkv-cell"), Some("7"));
        let lm = g.header("last-modified").expect("Last-Modified");
        assert!(lm.ends_with(" GMT"), "{lm}");

        // HEAD: same headers, no body.
        let h = api
            .try_head(&leader, "photos", "trips/2024/a.bin")
            .await
            .unwrap();
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), Some("3000"));
        assert_eq!(h.header("etag"), g.header("etag"));
        assert_eq!(h.header("last-modified"), Some(lm));

        // Without Content-Type the object is served as octet-stream.
        let s_plain = api
            .must_put(&leader, "photos", "plain", &b"hello"[..], &[])
            .await;
        let g = api.try_get(&leader, "photos", "plain", &[]).await.unwrap();
        assert_eq!(g.header("content-type"), Some("application/octet-stream"));
        expected.insert(
            ("photos".into(), "plain".into()),
            (s_plain.etag, b"hello".to_vec()),
        );

        // Overwrite: a new etag and a higher version.
        let value2 = b"second version".to_vec();
        let s2 = api
            .must_put(&leader, "photos", "trips/2024/a.bin", value2.clone(), &[])
            .await;
        assert_ne!(s2.etag, s1.etag);
        assert!(s2.version > s1.version);
        let g = api
            .try_get(&leader, "photos", "trips/2024/a.bin", &[])
            .await
            .unwrap();
        assert_eq!(&g.body[..], &value2[..]);
        expected.insert(
            ("photos".into(), "trips/2024/a.bin".into()),
            (s2.etag.clone(), value2.clone()),
        );

        // Listing with a prefix, two per page.
        let mut listed = BTreeMap::new();
        for k in ["list/a", "list/b", "list/c", "list/d", "list/e", "other/x"] {
            let v = format!("value of {k}").into_bytes();
            let s = api.must_put(&leader, "listing", k, v.clone(), &[]).await;
            listed.insert(k.to_string(), (s.etag.clone(), v.len()));
            expected.insert(("listing".into(), k.into()), (s.etag, v));
        }
        let mut pages = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let mut q = "/v1/buckets/listing/objects?prefix=list/&limit=2".to_string();
            if let Some(sa) = &start_after {
                q.push_str(&format!("&start_after={sa}"));
            }
            let r = api.try_get_path(&leader, &q).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            let page: common::wire::ListPage = r.json().unwrap();
            for e in &page.objects {
                let (etag, size) = &listed[&e.key];
                assert_eq!((&e.etag, e.size), (etag, *size as u64), "{e:?}");
                assert!(e.last_modified_ms > 0);
            }
            pages.push(
                page.objects
                    .iter()
                    .map(|e| e.key.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next_start_after {
                Some(n) => start_after = Some(n),
                None => break,
            }
            assert!(pages.len() < 10, "listing does not end: {pages:?}");
        }
        assert_eq!(
            pages,
            [
                vec!["list/a", "list/b"],
                vec!["list/c", "list/d"],
                vec!["list/e"]
            ]
        );
        let all: common::wire::ListPage = api
            .try_get_path(&leader, "/v1/buckets/listing/objects")
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(all.objects.len(), 6);
        assert_eq!(all.next_start_after, None);

        // A full-range scan returns exactly the stored objects, with their hashes.
        let items = api.must_scan_all(&leader, false).await;
        for it in &items {
            assert_eq!(
                it.hash,
                common::ring::key_hash(&it.bucket, &it.key),
                "{}/{}",
                it.bucket,
                it.key
            );
            assert_eq!(it.meta.size, it.value.len() as u64);
        }
        assert!(
            items.windows(2).all(|w| w[0].hash <= w[1].hash),
            "scan is in hash order"
        );
        assert_eq!(scan_map(&items), expected);
        // Small pages give the same result.
        let paged = api.try_scan_all(&leader, false, Some(3)).await.unwrap();
        assert_eq!(scan_map(&paged), expected);

        // A follower serves stale reads once it has applied the write.
        must_eventually(
            secs(5),
            "the follower serves the latest value stale",
            || {
                let (api, follower, want) = (&api, &follower, &value2);
                async move {
                    let r = api
                        .try_get_q(follower, "photos", "trips/2024/a.bin", "read=stale", &[])
                        .await
                        .ok()?;
                    (r.status == 200 && r.body[..] == want[..]).then_some(())
                }
            },
        )
        .await;
        let stale = api.must_scan_all(&follower, true).await;
        assert_eq!(scan_map(&stale), expected);

        // Linearizable reads and writes on a follower point at the leader.
        let leader_addr = cell.replica(l).api_addr().to_string();
        let check_not_leader = |r: &client::http::Resp| {
            assert_api_error(r, 421, "not_leader", 7);
            let v: serde_json::Value = r.json().unwrap();
            assert_eq!(
                v["error"]["leader"]["api_addr"],
                leader_addr.as_str(),
                "{v}"
            );
            assert_eq!(v["error"]["leader"]["node_id"], l as u64 + 1, "{v}");
            assert_eq!(r.header("x-cellkv-leader"), Some(leader_addr.as_str()));
        };
        check_not_leader(
            &api.try_get(&follower, "photos", "plain", &[])
                .await
                .unwrap(),
        );
        check_not_leader(
            &api.try_put(&follower, "photos", "plain", &b"x"[..], &[])
                .await
                .unwrap(),
        );
        check_not_leader(
            &api.try_delete(&follower, "photos", "plain", &[])
                .await
                .unwrap(),
        );
        check_not_leader(
            &api.try_get_path(&follower, "/v1/buckets/listing/objects")
                .await
                .unwrap(),
        );

        // DELETE, then it is gone.
        let d = api
            .try_delete(&leader, "photos", "plain", &[])
            .await
            .unwrap();
        assert_eq!(d.status, 204, "{}", d.text());
        assert!(d.header("x-cellkv-version").is_some());
        assert_api_error(
            &api.try_get(&leader, "photos", "plain", &[]).await.unwrap(),
            404,
            "not_found",
            7,
        );
        let h = api.try_head(&leader, "photos", "plain").await.unwrap();
        assert_eq!((h.status, h.body.len()), (404, 0));
        expected.remove(&("photos".to_string(), "plain".to_string()));
        assert_eq!(scan_map(&api.must_scan_all(&leader, false).await), expected);

        assert_eq!(cell.error_lines(), Vec::<String>::new());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes() {
    bounded(async {
        let dir = TestDir::new("conditional_writes");
        let cell = must_start(opts(), dir.path()).await;
        let api = Api::new(&cell);
        let leader = must_leader_url(&cell, secs(5)).await;
        let q = |e: &str| format!("\"{e}\"");

        // Create-only.
        let s1 = api
            .must_put(
                &leader,
                "cond",
                "k1",
                &b"one"[..],
                &[("if-none-match", "*")],
            )
            .await;
        let r = api
            .try_put(
                &leader,
                "cond",
                "k1",
                &b"again"[..],
                &[("if-none-match", "*")],
            )
            .await
            .unwrap();
        assert_api_error(&r, 412, "precondition_failed", 1);

        // Compare-and-swap on the etag.
        let s2 = api
            .must_put(
                &leader,
                "cond",
                "k1",
                &b"two"[..],
                &[("if-match", &q(&s1.etag))],
            )
            .await;
        assert_ne!(s1.etag, s2.etag);
        let r = api
            .try_put(
                &leader,
                "cond",
                "k1",
                &b"stale"[..],
                &[("if-match", &q(&s1.etag))],
            )
            .await
            .unwrap();
        assert_api_error(&r, 412, "precondition_failed", 1);
        let g = api.try_get(&leader, "cond", "k1", &[]).await.unwrap();
        assert_eq!((g.status, &g.body[..]), (200, &b"two"[..]));
        // If-Match on a missing object fails too.
        let r = api
            .try_put(
                &leader,
                "cond",
                "missing",
                &b"x"[..],
                &[("if-match", &q(&s2.etag))],
            )
            .await
            .unwrap();
        assert_api_error(&r, 412, "precondition_failed", 1);

        // Conditional GET.
        let g = api
            .try_get(&leader, "cond", "k1", &[("if-none-match", &q(&s2.etag))])
            .await
            .unwrap();
        assert_eq!(g.status, 304, "{}", g.text());
        assert!(g.body.is_empty());
        assert_eq!(g.header("etag"), Some(q(&s2.etag).as_str()));
        let g = api
            .try_get(&leader, "cond", "k1", &[("if-none-match", &q(&s1.etag))])
            .await
            .unwrap();
        assert_eq!((g.status, &g.body[..]), (200, &b"two"[..]));
        let g = api
            .try_get(&leader, "cond", "k1", &[("if-none-match", "*")])
            .await
            .unwrap();
        assert_eq!(g.status, 304);

        // Conditional DELETE.
        let r = api
            .try_delete(&leader, "cond", "k1", &[("if-match", &q(&s1.etag))])
            .await
            .unwrap();
        assert_api_error(&r, 412, "precondition_failed", 1);
        assert_eq!(
            api.try_get(&leader, "cond", "k1", &[])
                .await
                .unwrap()
                .status,
            200
        );
        let r = api
            .try_delete(&leader, "cond", "k1", &[("if-match", &q(&s2.etag))])
            .await
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        assert_api_error(
            &api.try_delete(&leader, "cond", "k1", &[]).await.unwrap(),
            404,
            "not_found",
            1,
        );
        assert_api_error(
            &api.try_delete(&leader, "cond", "never", &[]).await.unwrap(),
            404,
            "not_found",
            1,
        );

        // After a delete, create-only works again.
        api.must_put(
            &leader,
            "cond",
            "k1",
            &b"three"[..],
            &[("if-none-match", "*")],
        )
        .await;
        assert_eq!(cell.error_lines(), Vec::<String>::new());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input() {
    bounded(async {
        let dir = TestDir::new("bad_input");
        let mut o = opts();
        const MAX: usize = 64 * 1024;
        o.config.max_object_bytes = MAX as u64;
        let cell = must_start(o, dir.path()).await;
        let api = Api::new(&cell);
        let leader = must_leader_url(&cell, secs(5)).await;
        let raw = Client::default();
        let mut expected = BTreeMap::new();
        for i in 0..5 {
            must_put_recorded(
                &api,
                &leader,
                &mut expected,
                "seed",
                &format!("k{i}"),
                format!("seed value {i}").into_bytes(),
            )
            .await;
        }

        // Authentication.
        let url = obj_url(&leader, "seed", "k0");
        let admin = cell.admin_auth();
        for (what, headers) in [
            ("no token", vec![]),
            (
                "wrong token",
                vec![("authorization", "Bearer not-the-api-token-000")],
            ),
            (
                "basic auth",
                vec![("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")],
            ),
            ("admin token", vec![("authorization", admin.as_str())]),
        ] {
            for method in [Method::GET, Method::PUT, Method::DELETE] {
                let r = raw
                    .request(method.clone(), &url, &headers, &b"evil"[..])
                    .await
                    .unwrap();
                assert_eq!(r.status, 401, "{what} {method}: {}", r.text());
                assert_api_error(&r, 401, "unauthorized", 1);
            }
            let r = raw
                .get(&format!("{leader}/v1/buckets/seed/objects"), &headers)
                .await
                .unwrap();
            assert_api_error(&r, 401, "unauthorized", 1);
            let r = raw
                .get(
                    &format!("{leader}/internal/v1/scan?start=0&end=9"),
                    &headers,
                )
                .await
                .unwrap();
            assert_api_error(&r, 401, "unauthorized", 1);
        }

        // Names.
        for bucket in [
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "a..b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            let r = api
                .try_put(&leader, bucket, "k", &b"v"[..], &[])
                .await
                .unwrap();
            assert_api_error(&r, 400, "invalid_bucket", 1);
            let r = api.try_get(&leader, bucket, "k", &[]).await.unwrap();
            assert_api_error(&r, 400, "invalid_bucket", 1);
        }
        let r = api
            .try_get_path(&leader, "/v1/buckets/Bad_Bucket/objects")
            .await
            .unwrap();
        assert_api_error(&r, 400, "invalid_bucket", 1);
        let long_key = "k".repeat(1025);
        let r = api
            .try_put(&leader, "seed", &long_key, &b"v"[..], &[])
            .await
            .unwrap();
        assert_api_error(&r, 400, "invalid_key", 1);
        let r = api.try_get(&leader, "seed", &long_key, &[]).await.unwrap();
        assert_api_error(&r, 400, "invalid_key", 1);
        for key in ["bad%01key", "tab%09key", "del%7Fkey"] {
            let r = api
                .try_put(&leader, "seed", key, &b"v"[..], &[])
                .await
                .unwrap();
            assert_api_error(&r, 400, "invalid_key", 1);
        }
        // The longest key is fine.
        must_put_recorded(
            &api,
            &leader,
            &mut expected,
            "seed",
            &"k".repeat(1024),
            b"longest key".to_vec(),
        )
        .await;

        // Size limit, with Content-Length and chunked.
        must_put_recorded(
            &api,
            &leader,
            &mut expected,
            "seed",
            "exactly-max",
            vec![7u8; MAX],
        )
        .await;
        let r = api
            .try_put(&leader, "seed", "too-big", vec![7u8; MAX + 1], &[])
            .await
            .unwrap();
        assert_api_error(&r, 413, "payload_too_large", 1);
        let chunks = |n: usize| -> Vec<Bytes> { vec![Bytes::from(vec![9u8; 16 * 1024]); n] };
        let auth = cell.api_auth();
        let auth_h = [("authorization", auth.as_str())];
        let r = raw
            .request_chunked(
                Method::PUT,
                &obj_url(&leader, "seed", "too-big"),
                &auth_h,
                {
                    let mut c = chunks(4);
                    c.push(Bytes::from_static(b"!"));
                    c
                },
            )
            .await
            .unwrap();
        assert_api_error(&r, 413, "payload_too_large", 1);
        let r = raw
            .request_chunked(
                Method::PUT,
                &obj_url(&leader, "seed", "chunked-ok"),
                &auth_h,
                chunks(2),
            )
            .await
            .unwrap();
        let s = Api::must_stored(&r);
        expected.insert(
            ("seed".into(), "chunked-ok".into()),
            (s.etag, vec![9u8; 32 * 1024]),
        );
        assert_api_error(
            &api.try_get(&leader, "seed", "too-big", &[]).await.unwrap(),
            404,
            "not_found",
            1,
        );

        // Malformed conditions.
        for (method, headers) in [
            (
                Method::PUT,
                vec![("if-match", "\"x\""), ("if-none-match", "*")],
            ),
            (Method::PUT, vec![("if-none-match", "\"x\"")]),
            (Method::PUT, vec![("if-match", "*")]),
            (Method::PUT, vec![("if-match", "\"a\", \"b\"")]),
            (Method::DELETE, vec![("if-none-match", "*")]),
            (
                Method::DELETE,
                vec![("if-match", "\"x\""), ("if-none-match", "*")],
            ),
        ] {
            let mut h = auth_h.to_vec();
            h.extend(headers.iter().copied());
            let r = raw
                .request(method.clone(), &url, &h, &b"v"[..])
                .await
                .unwrap();
            assert_api_error(&r, 400, "bad_request", 1);
        }

        // Unknown paths, bad query values.
        for path in ["/v2/buckets/seed/objects/k0", "/nope", "/v1/buckets"] {
            let r = api.try_get_path(&leader, path).await.unwrap();
            // `error.cell` is checked by `error_bodies_are_always_cell_json` (ignored: cell bug).
            assert_error(&r, 404, "not_found");
            assert_eq!(r.header("x-cellkv-cell"), Some("1"));
        }
        for path in [
            "/v1/buckets/seed/objects/k0?read=bogus",
            "/v1/buckets/seed/objects?read=eventually",
            "/v1/buckets/seed/objects?limit=0",
            "/v1/buckets/seed/objects?limit=1001",
            "/internal/v1/scan?start=0&end=9&read=bogus",
            "/internal/v1/scan?start=9&end=0",
            "/internal/v1/scan?start=0&end=9&after=xyz",
        ] {
            let r = api.try_get_path(&leader, path).await.unwrap();
            assert_api_error(&r, 400, "bad_request", 1);
        }

        // The cell still serves, and nothing it held was harmed.
        must_put_recorded(
            &api,
            &leader,
            &mut expected,
            "seed",
            "after",
            b"still writable".to_vec(),
        )
        .await;
        assert_eq!(scan_map(&api.must_scan_all(&leader, false).await), expected);
        cell.wait_ready(secs(5)).await.unwrap();
        for i in 0..3 {
            cell.wait_caught_up(i, secs(5)).await.unwrap();
            let stale = api.must_scan_all(&cell.replica(i).api_url(), true).await;
            assert!(scan_map(&stale) == expected, "replica {i} differs");
        }
        assert_eq!(cell.error_lines(), Vec::<String>::new());
    })
    .await
}

/// The API contract: every error, whoever produces it (routing, extractors),
/// is the JSON body with `error.code` and `error.cell`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_are_always_cell_json() {
    bounded(async {
        let dir = TestDir::new("error_bodies");
        let cell = must_start(opts(), dir.path()).await;
        let api = Api::new(&cell);
        let leader = must_leader_url(&cell, secs(5)).await;
        let auth = cell.api_auth();
        let raw = Client::default();

        let r = api.try_get_path(&leader, "/nope").await.unwrap();
        assert_api_error(&r, 404, "not_found", 1);
        let r = raw.get(&format!("{leader}/nope"), &[]).await.unwrap();
        assert_api_error(&r, 404, "not_found", 1);
        let r = raw
            .post(
                &obj_url(&leader, "seed", "k0"),
                &[("authorization", auth.as_str())],
                &b"v"[..],
            )
            .await
            .unwrap();
        assert_api_error(&r, 405, "method_not_allowed", 1);
        let r = api
            .try_get_path(&leader, "/v1/buckets/seed/objects/k0?bogus=1")
            .await
            .unwrap();
        assert_api_error(&r, 400, "bad_request", 1);
        let r = api
            .try_get_path(&leader, "/v1/buckets/seed/objects?limit=ten")
            .await
            .unwrap();
        assert_api_error(&r, 400, "bad_request", 1);
        let r = api
            .try_get_path(&leader, "/internal/v1/scan?end=9")
            .await
            .unwrap();
        assert_api_error(&r, 400, "bad_request", 1);
    })
    .await
}

/// PUTs on `leader` (must succeed) and records the object in `expected`.
async fn must_put_recorded(
    api: &Api,
    leader: &str,
    expected: &mut BTreeMap<(String, String), (String, Vec<u8>)>,
    bucket: &str,
    key: &str,
    value: Vec<u8>,
) {
    let s = api.must_put(leader, bucket, key, value.clone(), &[]).await;
    expected.insert((bucket.to_string(), key.to_string()), (s.etag, value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover() {
    bounded(async {
        let dir = TestDir::new("leader_failover");
        // The cell's default timings (50 ms heartbeats, 250-500 ms election
        // timeout): openraft 0.9 waits out the leader lease (= the max) plus a
        // follower's own timeout, and may need a second round under load.
        let o = opts();
        let cell = must_start(o, dir.path()).await;
        let api = Api::new(&cell);
        let old = cell.wait_for_leader(secs(5)).await.unwrap();
        let old_url = cell.replica(old).api_url();
        let acks = Acks::default();
        let writers = spawn_cell_writers(&cell, CellLoad::new(8, "failover", 200), &acks);

        // Load phase 1 (a duration of load, not a synchronization).
        let started = Instant::now();
        must_eventually(secs(10), "writes flow for 2 s", || {
            let n = acks.len();
            async move { (started.elapsed() >= secs(2) && n >= 50).then_some(()) }
        })
        .await;
        let before_kill = acks.len();
        let killed_at = Instant::now();
        cell.replica(old).kill().unwrap();

        // Time to the first write acknowledged by another replica.
        let first = must_eventually(secs(10), "a new leader acknowledges a write", || {
            let t = acks.with(|acks| acks.iter().filter(|a| a.at > killed_at && a.by != old_url).map(|a| a.at).min());
            async move { t }
        })
        .await;
        let failover = first - killed_at;
        eprintln!("failover: first write acknowledged {failover:?} after SIGKILL of the leader ({before_kill} writes before)");
        assert!(failover < secs(2), "failover took {failover:?}");

        // Load phase 2, then stop and collect.
        tokio::time::sleep(secs(2)).await;
        writers.must_stop().await;
        let acks = acks.snapshot();
        let after_kill = acks.iter().filter(|a| a.at > killed_at).count();
        eprintln!("{} writes acknowledged, {after_kill} after the kill", acks.len());
        assert!(after_kill >= 20, "only {after_kill} writes after the failover");

        // Every acknowledged write is on the new leader (linearizable).
        let new = cell.wait_for_leader(secs(5)).await.unwrap();
        assert_ne!(new, old);
        let new_url = cell.replica(new).api_url();
        assert_acked_present(&acks, &api.must_scan_all(&new_url, false).await, "failover");
        let sample = acks.iter().take(20).chain(acks.iter().rev().take(20));
        must_read_back(sample.map(Expect::from).collect(), 1, {
            let (api, new_url) = (api.clone(), new_url.clone());
            move |key| {
                let (api, new_url) = (api.clone(), new_url.clone());
                async move { api.try_get(&new_url, "failover", &key, &[]).await.unwrap() }
            }
        })
        .await;

        // The killed replica comes back and converges to identical data.
        cell.replica(old).restart().unwrap();
        cell.wait_caught_up(old, secs(20)).await.unwrap();
        let reference = scan_map(&api.must_scan_all(&new_url, false).await);
        for i in 0..3 {
            let got = scan_map(&api.must_scan_all(&cell.replica(i).api_url(), true).await);
            assert_eq!(got.len(), reference.len(), "replica {i} object count");
            assert!(got == reference, "replica {i} differs from the leader");
        }
        cell.wait_ready(secs(10)).await.unwrap();
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catch_up_by_snapshot() {
    bounded(async {
        let dir = TestDir::new("snapshot_catch_up");
        let mut o = opts();
        o.config.raft.snapshot_logs_since_last = 100;
        o.config.raft.logs_to_keep_after_snapshot = 10;
        o.config.raft.snapshot_chunk_bytes = 65536;
        let cell = must_start(o, dir.path()).await;
        let api = Api::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);
        let acks = Acks::default();

        // Some writes everyone has, then the follower dies.
        spawn_cell_writers(&cell, CellLoad::new(5, "snap", 1024).each(10), &acks)
            .must_finish()
            .await;
        cell.wait_caught_up(f, secs(10)).await.unwrap();
        let f_last = must_health_u64(&cell, f, "last_log_index").await;
        cell.replica(f).kill().unwrap();

        // 1000 more ~1 KiB objects: the leader snapshots and purges past the follower's log.
        let more = Acks::default();
        spawn_cell_writers(&cell, CellLoad::new(8, "snap2", 1024).each(125), &more)
            .must_finish()
            .await;
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let purged = must_eventually(
            secs(10),
            "the leader purges past the dead follower's log",
            || {
                let cell = &cell;
                async move {
                    let p = cell.health(l).await.ok()?["purged_index"].as_u64()?;
                    (p > f_last).then_some(p)
                }
            },
        )
        .await;
        eprintln!("follower stopped at log index {f_last}; leader purged up to {purged}");

        // Back up: only a snapshot can catch it up.
        let t0 = Instant::now();
        cell.replica(f).restart().unwrap();
        cell.wait_caught_up(f, secs(30)).await.unwrap();
        eprintln!("follower caught up {:?} after restart", t0.elapsed());
        let metrics = must_metrics(&cell, f).await;
        let installed = metric(&metrics, "cellkv_cell_snapshots_installed_total", &[]);
        assert!(
            installed >= 1.0,
            "snapshots installed on the follower: {installed}"
        );
        let snap_index = must_health_u64(&cell, f, "snapshot_index").await;
        assert!(
            snap_index > f_last,
            "follower snapshot index {snap_index} <= {f_last}"
        );

        let leader_items = api.must_scan_all(&cell.replica(l).api_url(), false).await;
        assert_eq!(leader_items.len(), 50 + 1000);
        let mut all = acks.snapshot();
        all.extend(more.snapshot());
        assert_acked_present(&all, &leader_items, "snap2");
        let follower_items = api.must_scan_all(&cell.replica(f).api_url(), true).await;
        assert!(
            scan_map(&follower_items) == scan_map(&leader_items),
            "follower data differs from the leader's"
        );
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_replicate_in_bounded_rpcs() {
    bounded(async {
        let dir = TestDir::new("large_objects");
        let cell = must_start(opts(), dir.path()).await;
        let api = Api::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);
        // With one follower down, 24 objects of 3 MiB (72 MiB) pile up in the
        // leader's log; when it returns, one AppendEntries with all of them
        // would exceed the peers' 32 MiB body limit, so the sender must split.
        cell.replica(f).kill().unwrap();
        let acks = Acks::default();
        spawn_cell_writers(&cell, CellLoad::new(4, "big", 3 << 20).each(6), &acks)
            .must_finish()
            .await;
        cell.replica(f).restart().unwrap();
        cell.wait_caught_up(f, secs(60)).await.unwrap();
        // Replicating 72 MiB on 2 busy cores can delay heartbeats enough for an
        // election: ask whoever leads now (a scan on a former leader answers 421).
        let mut leader_items = None;
        for _ in 0..5 {
            let l = cell.wait_for_leader(secs(5)).await.unwrap();
            match api
                .try_scan_all(&cell.replica(l).api_url(), false, None)
                .await
            {
                Ok(items) => {
                    leader_items = Some(items);
                    break;
                }
                Err(e) => eprintln!("scan of the leader failed, retrying: {e:#}"),
            }
        }
        let leader_items = leader_items.expect("a linearizable scan of the leader succeeds");
        assert_eq!(leader_items.len(), 24);
        assert_acked_present(&acks.snapshot(), &leader_items, "big");
        let follower_items = api.must_scan_all(&cell.replica(f).api_url(), true).await;
        assert!(
            scan_map(&follower_items) == scan_map(&leader_items),
            "the returning follower's data differs from the leader's"
        );
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpc_requires_secret() {
    bounded(async {
        let dir = TestDir::new("raft_rpc_secret");
        let o = opts();
        let cell = must_start(o.clone(), dir.path()).await;
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let r = a_follower(l);
        let raft = cell.replica(r).raft_url();
        let raw = Client::default();
        let rejected = |text: &str, reason: &str| {
            metric(
                text,
                "cellkv_cell_raft_rpc_rejected_total",
                &[("reason", reason)],
            )
        };
        let before = must_metrics(&cell, r).await;

        let secret = format!("Bearer {}", o.config.cluster_secret);
        let api_tok = cell.api_auth();
        let admin = cell.admin_auth();
        // A wire-version byte no build speaks: can never decode into a real RPC.
        let garbage = &b"\xffgarbage"[..];
        type Headers<'a> = Vec<(&'a str, &'a str)>;
        // (path, headers, status, code)
        let cases: Vec<(&str, Headers, u16, &str)> = vec![
            ("/raft/vote", vec![], 401, "unauthorized"),
            ("/raft/append", vec![], 401, "unauthorized"),
            (
                "/raft/snapshot",
                vec![("authorization", "Basic c2VjcmV0")],
                401,
                "unauthorized",
            ),
            (
                "/raft/vote",
                vec![
                    ("authorization", "Bearer wrong-secret-0000000000"),
                    ("x-cellkv-cell", "1"),
                ],
                401,
                "unauthorized",
            ),
            (
                "/raft/append",
                vec![("authorization", &api_tok), ("x-cellkv-cell", "1")],
                401,
                "unauthorized",
            ),
            (
                "/raft/vote",
                vec![("authorization", &secret)],
                403,
                "forbidden",
            ),
            (
                "/raft/append",
                vec![("authorization", &secret), ("x-cellkv-cell", "99")],
                403,
                "forbidden",
            ),
            (
                "/admin/init",
                vec![("authorization", &api_tok)],
                401,
                "unauthorized",
            ),
            ("/admin/init", vec![], 401, "unauthorized"),
            (
                "/admin/init",
                vec![("authorization", &secret)],
                401,
                "unauthorized",
            ),
            // Past authentication, garbage is refused as undecodable.
            (
                "/raft/vote",
                vec![("authorization", &secret), ("x-cellkv-cell", "1")],
                400,
                "bad_request",
            ),
            (
                "/raft/append",
                vec![("authorization", &secret), ("x-cellkv-cell", "1")],
                400,
                "bad_request",
            ),
            // Already initialized by the harness.
            (
                "/admin/init",
                vec![("authorization", &admin)],
                409,
                "already_initialized",
            ),
        ];
        for (path, headers, status, code) in &cases {
            let resp = raw
                .post(&format!("{raft}{path}"), headers, garbage)
                .await
                .unwrap();
            assert_eq!(resp.status, *status, "{path} {headers:?}: {}", resp.text());
            assert_error(&resp, *status, code);
        }
        let m = raw
            .get(
                &format!("{raft}/admin/membership"),
                &[("authorization", &admin)],
            )
            .await
            .unwrap();
        assert_eq!(m.status, 200, "{}", m.text());
        let voters: serde_json::Value = m.json::<serde_json::Value>().unwrap()["voters"].clone();
        assert_eq!(voters, serde_json::json!([1, 2, 3]));
        let m = raw
            .get(
                &format!("{raft}/admin/membership"),
                &[("authorization", &api_tok)],
            )
            .await
            .unwrap();
        assert_error(&m, 401, "unauthorized");
        // Raft RPC is not served on the API port at all.
        let api_port = cell.replica(r).api_url();
        let resp = raw
            .post(
                &format!("{api_port}/raft/vote"),
                &[("authorization", &secret)],
                garbage,
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 404, "{}", resp.text());

        let after = must_metrics(&cell, r).await;
        for (reason, n) in [
            ("missing_secret", 3.0),
            ("wrong_secret", 2.0),
            ("wrong_cell", 2.0),
            ("admin_token", 4.0),
        ] {
            assert_eq!(
                rejected(&after, reason) - rejected(&before, reason),
                n,
                "rejections for {reason}"
            );
        }

        // The cell still works.
        let w = LeaderWriter::new(&cell);
        let ack = w
            .try_put("after", "k", Bytes::from_static(b"v"), secs(5))
            .await
            .unwrap();
        let api = Api::new(&cell);
        let g = api.try_get(&ack.by, "after", "k", &[]).await.unwrap();
        assert_eq!((g.status, &g.body[..]), (200, &b"v"[..]));
        cell.wait_ready(secs(5)).await.unwrap();
        // openraft itself logs ERROR when asked to initialize twice (the 409 case).
        let errors: Vec<String> = cell
            .error_lines()
            .into_iter()
            .filter(|l| !l.contains("Can not initialize"))
            .collect();
        assert_eq!(errors, Vec::<String>::new());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_writes_survive_crash() {
    bounded(async {
        let dir = TestDir::new("acked_survive_crash");
        let cell = must_start(opts(), dir.path()).await;
        let api = Api::new(&cell);

        // 200 concurrent writes, then every replica dies right after the last ack.
        let acks = Acks::default();
        spawn_cell_writers(&cell, CellLoad::new(10, "crash", 300).each(20), &acks)
            .must_finish()
            .await;
        cell.kill_all().unwrap();
        let acks = acks.snapshot();
        assert_eq!(acks.len(), 200);
        for i in 0..3 {
            cell.replica(i).restart().unwrap();
        }
        let l = cell.wait_ready(secs(20)).await.unwrap();
        assert_acked_present(
            &acks,
            &api.must_scan_all(&cell.replica(l).api_url(), false).await,
            "crash",
        );

        // Every replica armed to abort ~20 ms after acknowledging a write: the
        // leader acknowledges one PUT and dies; the write must survive.
        cell.kill_all().unwrap();
        for i in 0..3 {
            cell.replica(i)
                .start_with_env(&[("CELLKV_FAILPOINT", "abort_after_ack")])
                .unwrap();
        }
        cell.wait_ready(secs(20)).await.unwrap();
        let w = LeaderWriter::new(&cell);
        let ack = w
            .try_put(
                "crash",
                "after-ack",
                Bytes::from_static(b"acked then crashed"),
                secs(10),
            )
            .await
            .unwrap();
        let acker = cell
            .index_of_api_addr(ack.by.trim_start_matches("http://"))
            .expect("the acknowledging replica is ours");
        let status = cell.replica(acker).wait_exit(secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
        assert!(cell
            .replica(acker)
            .log_since_start()
            .contains("failpoint abort_after_ack: aborting"));

        cell.replica(acker).restart().unwrap();
        let l = cell.wait_ready(secs(20)).await.unwrap();
        let leader = cell.replica(l).api_url();
        let g = api
            .try_get(&leader, "crash", "after-ack", &[])
            .await
            .unwrap();
        assert_eq!(g.status, 200, "{}", g.text());
        assert_eq!(g.header("etag"), Some(format!("\"{}\"", ack.etag).as_str()));
        assert_eq!(&g.body[..], b"acked then crashed");
        let mut all = acks.clone();
        all.push(ack);
        assert_acked_present(&all, &api.must_scan_all(&leader, false).await, "crash");
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_dir_fails_clearly() {
    bounded(async {
        let dir = TestDir::new("unusable_data_dir");
        let bin = bin_path(CELL_BIN).unwrap();
        let o = opts();
        let layout = CellLayout::allocate(o.cell_id, 3).unwrap();
        let must_fail_with = async |r: &ReplicaProc, needle: &str| {
            let t0 = Instant::now();
            let status = r.wait_exit(secs(10)).await.unwrap();
            let log = r.log_since_start();
            assert!(
                !status.success() && status.code().is_some(),
                "{status}; log:\n{log}"
            );
            assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
            eprintln!(
                "node {} refused to start in {:?} ({status})",
                r.node_id(),
                t0.elapsed()
            );
        };

        // A data dir below a regular file.
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let r1 = ReplicaProc::prepare_with_data_dir(
            &bin,
            &o,
            &layout,
            NodeId(1),
            &dir.path().join("r1"),
            &file.join("data"),
        )
        .unwrap();
        r1.start().unwrap();
        must_fail_with(&r1, "not usable").await;

        // A RocksDB whose CURRENT points at a missing manifest.
        let r2 =
            ReplicaProc::prepare(&bin, &o, &layout, NodeId(2), &dir.path().join("r2")).unwrap();
        r2.start().unwrap();
        let health = format!("{}/health", r2.api_url());
        let probe = Client::default();
        must_eventually(secs(10), "the fresh replica answers /health", || {
            let (probe, health) = (&probe, &health);
            async move { probe.get(health, &[]).await.ok().map(|_| ()) }
        })
        .await;
        // SIGKILL: a crash leaves a valid store too, and this test is not about shutdown.
        r2.kill().unwrap();
        let current = r2.data_dir().join("rocksdb").join("CURRENT");
        assert!(current.is_file());
        std::fs::write(&current, b"MANIFEST-999999\n").unwrap();
        r2.restart().unwrap();
        must_fail_with(&r2, "could not be opened").await;

        // A data dir that belongs to another replica.
        let r3 =
            ReplicaProc::prepare(&bin, &o, &layout, NodeId(3), &dir.path().join("r3")).unwrap();
        std::fs::create_dir_all(r3.data_dir()).unwrap();
        std::fs::write(
            r3.data_dir().join("identity.json"),
            br#"{"cell_id": 1, "node_id": 2}"#,
        )
        .unwrap();
        r3.start().unwrap();
        must_fail_with(&r3, "belongs to").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_sigterm() {
    bounded(async {
        let dir = TestDir::new("graceful_sigterm");
        let o = opts();
        let grace = o.config.shutdown_grace;
        let cell = must_start(o, dir.path()).await;
        let api = Api::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);

        let t0 = Instant::now();
        let status = cell.replica(f).terminate(grace + secs(5)).await.unwrap();
        let took = t0.elapsed();
        eprintln!("follower stopped {took:?} after SIGTERM ({status})");
        assert_eq!(status.code(), Some(0), "{status}");
        assert!(
            took < grace,
            "graceful stop took {took:?}, grace is {grace:?}"
        );
        let log = cell.replica(f).log_since_start();
        assert!(log.contains("replica stopped"), "{log}");

        // Two of three keep serving writes and linearizable reads.
        let acks = Acks::default();
        spawn_cell_writers(&cell, CellLoad::new(4, "two-of-three", 100).each(10), &acks)
            .must_finish()
            .await;
        let acks = acks.snapshot();
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        assert_acked_present(
            &acks,
            &api.must_scan_all(&cell.replica(l).api_url(), false).await,
            "two-of-three",
        );
        cell.wait_ready(secs(5)).await.unwrap();

        // It comes back and catches up.
        cell.replica(f).restart().unwrap();
        cell.wait_caught_up(f, secs(20)).await.unwrap();
        assert_acked_present(
            &acks,
            &api.must_scan_all(&cell.replica(f).api_url(), true).await,
            "two-of-three",
        );
        // openraft logs ERROR for every RPC to the stopped peer, so only panics are checked.
        assert_no_panics(&cell);
    })
    .await
}
