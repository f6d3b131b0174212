//! In-process tests of the router against fake cells: placement, the object
//! API, leader hints, write-retry safety, listings, auth and isolation of a
//! dead or slow cell.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use common::{CellId, CellState, NodeId};
use support::*;

fn obj_path(bucket: &str, key: &str) -> String {
    format!("/v1/buckets/{bucket}/objects/{key}")
}

#[tokio::test]
async fn routes_each_key_to_its_ring_cell_and_serves_the_object_api() {
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
        FakeCell::must_start(3, 1).await,
    ];
    let cfg = config(cells.iter().map(FakeCell::spec).collect());
    let ring = cfg.cell_map.ring().unwrap();
    let r = TestRouter::must_start(cfg).await;

    let keys: Vec<String> = (0..30).map(|i| format!("dir/obj-{i}")).collect();
    for k in &keys {
        let resp = must_call(
            Method::PUT,
            &r.url(&obj_path("photos", k)),
            &[("content-type", "text/plain")],
            k.as_bytes(),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
        let cell = ring.cell_for("photos", k);
        assert_eq!(
            resp.header("x-cellkv-cell"),
            Some(cell.to_string().as_str())
        );
        assert!(resp.header("etag").is_some_and(|e| e.starts_with('"')));
        assert_eq!(resp.json()["size"], k.len());
    }
    for c in &cells {
        for (bucket, key) in c.keys() {
            assert_eq!(
                ring.cell_for(&bucket, &key),
                c.id,
                "{key} stored in the wrong cell"
            );
        }
    }
    assert_eq!(
        cells.iter().map(|c| c.keys().len()).sum::<usize>(),
        keys.len()
    );
    assert!(
        cells.iter().all(|c| !c.keys().is_empty()),
        "30 keys reach every cell"
    );

    // GET, HEAD, conditional GET.
    let k = &keys[0];
    let cell = ring.cell_for("photos", k).to_string();
    let got = must_call(Method::GET, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], k.as_bytes());
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("x-cellkv-cell"), Some(cell.as_str()));
    assert!(got.header("last-modified").is_some() && got.header("x-cellkv-version").is_some());
    let etag = got.header("etag").unwrap().to_string();
    let head = must_call(Method::HEAD, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.header("content-length"),
        Some(k.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    let cond = must_call(
        Method::GET,
        &r.url(&obj_path("photos", k)),
        &[("if-none-match", &etag)],
        b"",
    )
    .await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);

    // Conditional writes.
    let again = must_call(
        Method::PUT,
        &r.url(&obj_path("photos", k)),
        &[("if-none-match", "*")],
        b"x",
    )
    .await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::PRECONDITION_FAILED, "precondition_failed")
    );
    assert_eq!(again.json()["error"]["cell"].to_string(), cell);
    let ok = must_call(
        Method::PUT,
        &r.url(&obj_path("photos", k)),
        &[("if-match", &etag)],
        b"v2",
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);

    // Delete, then 404.
    let del = must_call(Method::DELETE, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let gone = must_call(Method::GET, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(
        (gone.status, gone.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let gone = must_call(Method::HEAD, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let del = must_call(Method::DELETE, &r.url(&obj_path("photos", k)), &[], b"").await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);

    // Keys needing percent-encoding reach the cell decoded, on the right cell.
    let odd = "a b/é?#%.txt";
    let encoded = "a%20b/%C3%A9%3F%23%25.txt";
    let put = must_call(
        Method::PUT,
        &r.url(&obj_path("photos", encoded)),
        &[],
        b"odd",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let c = ring.cell_for("photos", odd);
    assert!(cells
        .iter()
        .find(|x| x.id == c)
        .unwrap()
        .keys()
        .contains(&("photos".into(), odd.into())));
    let got = must_call(Method::GET, &r.url(&obj_path("photos", encoded)), &[], b"").await;
    assert_eq!(&got.body[..], b"odd");

    // Input validation happens before any cell is asked.
    let before: usize = cells.iter().map(FakeCell::data_requests).sum();
    let bad = must_call(Method::GET, &r.url(&obj_path("Bad_Bucket", "k")), &[], b"").await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_bucket")
    );
    let long_key = "k".repeat(1025);
    let bad = must_call(
        Method::GET,
        &r.url(&obj_path("photos", &long_key)),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_key")
    );
    let big = vec![b'x'; (4 << 20) + 1];
    let bad = must_call(Method::PUT, &r.url(&obj_path("photos", "big")), &[], &big).await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let after: usize = cells.iter().map(FakeCell::data_requests).sum();
    assert_eq!(before, after);

    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_requests_total{cell=\"none\",op=\"get\",status=\"400\"}"),
        "{m}"
    );
    assert!(m.contains(&format!(
        "cellkv_router_requests_total{{cell=\"{cell}\",op=\"put\",status=\"200\"}}"
    )));
    r.must_stop().await;
}

#[tokio::test]
async fn lists_across_every_cell_in_key_order() {
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
        FakeCell::must_start(3, 1).await,
    ];
    let r = TestRouter::must_start(config(cells.iter().map(FakeCell::spec).collect())).await;
    let mut keys: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
    for k in &keys {
        let resp = must_call(Method::PUT, &r.url(&obj_path("photos", k)), &[], b"v").await;
        assert_eq!(resp.status, StatusCode::OK);
    }
    must_call(Method::PUT, &r.url(&obj_path("other", "k000")), &[], b"v").await;
    keys.sort();

    let mut seen = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let mut path = "/v1/buckets/photos/objects?limit=7&prefix=k".to_string();
        if let Some(sa) = &start_after {
            path.push_str(&format!("&start_after={sa}"));
        }
        let page = must_call(Method::GET, &r.url(&path), &[], b"").await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(page.header("x-cellkv-cell"), Some("1,2,3"));
        let v = page.json();
        assert_eq!(v["partial"], false);
        let objects = v["objects"].as_array().unwrap();
        assert!(objects.len() <= 7);
        seen.extend(
            objects
                .iter()
                .map(|o| o["key"].as_str().unwrap().to_string()),
        );
        match v["next_start_after"].as_str() {
            Some(n) => start_after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, keys, "every key once, in order");

    let bad = must_call(
        Method::GET,
        &r.url("/v1/buckets/photos/objects?limit=0"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let bad = must_call(
        Method::GET,
        &r.url("/v1/buckets/photos/objects?bogus=1"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    r.must_stop().await;
}

#[tokio::test]
async fn follows_a_not_leader_hint_and_caches_the_leader() {
    let cell = FakeCell::must_start(1, 2).await;
    // Replica 1 claims leadership on /health (so the router starts there) but
    // has lost it: data requests get 421 pointing at replica 2.
    let b_addr = cell.replicas[1].api_addr();
    *cell.replicas[0].state.data_role.lock().unwrap() =
        DataRole::NotLeader(Some((NodeId(2), b_addr.clone())));
    *cell.replicas[1].state.data_role.lock().unwrap() = DataRole::Leader;
    let mut cfg = config(vec![cell.spec()]);
    // One health round only (the first tick is immediate), so the cached leader
    // afterwards is whatever the requests taught the router.
    cfg.breaker.health_interval = Duration::from_secs(60);
    cfg.breaker.health_timeout = Duration::from_secs(1);
    let r = TestRouter::must_start(cfg).await;
    let a_addr = cell.replicas[0].api_addr();
    r.must_wait_for(
        "the health round to find replica 1 leading",
        |s, v| s == StatusCode::OK && v["cells"][0]["leader"] == a_addr.as_str(),
        "/readyz",
    )
    .await;

    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let (a, b) = (&cell.replicas[0].state, &cell.replicas[1].state);
    assert_eq!(a.data_requests.load(Ordering::SeqCst), 1);
    assert_eq!(b.writes.load(Ordering::SeqCst), 1);

    // The hint is cached: the next requests go straight to replica 2.
    let get = must_call(Method::GET, &r.url(&obj_path("photos", "k")), &[], b"").await;
    assert_eq!(get.status, StatusCode::OK);
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k2")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(a.data_requests.load(Ordering::SeqCst), 1);
    assert_eq!(b.data_requests.load(Ordering::SeqCst), 3);
    let v = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(v["cells"][0]["leader"], b_addr.as_str());
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_retries_total{cell=\"1\",reason=\"not_leader\"} 1"),
        "{m}"
    );

    // Hints that go in circles end in 503, not an endless loop.
    *cell.replicas[1].state.data_role.lock().unwrap() =
        DataRole::NotLeader(Some((NodeId(1), a_addr.clone())));
    let start = Instant::now();
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k3")), &[], b"v").await;
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "cell_unavailable")
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    let total = cell.data_requests();
    assert!(total <= 3 + 5, "bounded hops, saw {total} requests");
    r.must_stop().await;
}

#[tokio::test]
async fn never_retries_a_write_after_a_cell_timeout() {
    let cell = FakeCell::must_start(1, 2).await;
    for r in &cell.replicas {
        *r.state.data_role.lock().unwrap() = DataRole::Leader;
        *r.state.write_mode.lock().unwrap() = WriteMode::Answer504;
    }
    let r = TestRouter::must_start(config(vec![cell.spec()])).await;
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "timeout")
    );
    assert!(put.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("outcome is unknown"));
    let writes: usize = cell
        .replicas
        .iter()
        .map(|r| r.state.writes.load(Ordering::SeqCst))
        .sum();
    assert_eq!(writes, 1, "a write that timed out is never sent again");
    let del = must_call(Method::DELETE, &r.url(&obj_path("photos", "k")), &[], b"").await;
    assert_eq!(del.status, StatusCode::GATEWAY_TIMEOUT);
    let writes: usize = cell
        .replicas
        .iter()
        .map(|r| r.state.writes.load(Ordering::SeqCst))
        .sum();
    assert_eq!(writes, 2);
    r.must_stop().await;
}

#[tokio::test]
async fn never_retries_a_write_after_the_router_deadline() {
    let cell = FakeCell::must_start(1, 2).await;
    for r in &cell.replicas {
        *r.state.data_role.lock().unwrap() = DataRole::Leader;
        *r.state.write_mode.lock().unwrap() = WriteMode::Hang(Duration::from_secs(3));
    }
    let mut cfg = config(vec![cell.spec()]);
    cfg.cell_request_timeout = Duration::from_millis(300);
    cfg.connect_timeout = Duration::from_millis(200);
    let r = TestRouter::must_start(cfg).await;
    let start = Instant::now();
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    let took = start.elapsed();
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "timeout")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Give a (wrong) retry time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes: usize = cell
        .replicas
        .iter()
        .map(|r| r.state.writes.load(Ordering::SeqCst))
        .sum();
    assert_eq!(writes, 1);
    r.must_stop().await;
}

#[tokio::test]
async fn retries_a_write_refused_by_a_dead_replica_elsewhere() {
    // The cached leader (replica 1) dies; its port refuses connections, so
    // nothing was sent and even a write may go to the next replica.
    let mut cell = FakeCell::must_start(1, 2).await;
    *cell.replicas[1].state.data_role.lock().unwrap() = DataRole::Leader;
    let mut cfg = config(vec![cell.spec()]);
    cfg.breaker.health_interval = Duration::from_secs(60);
    cfg.breaker.health_timeout = Duration::from_secs(1);
    let r = TestRouter::must_start(cfg).await;
    let a_addr = cell.replicas[0].api_addr();
    r.must_wait_for(
        "the health round to find replica 1 leading",
        |s, v| s == StatusCode::OK && v["cells"][0]["leader"] == a_addr.as_str(),
        "/readyz",
    )
    .await;
    cell.replicas[0].kill().await;
    for i in 0..4 {
        let put = must_call(
            Method::PUT,
            &r.url(&obj_path("photos", &format!("k{i}"))),
            &[],
            b"v",
        )
        .await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    }
    assert_eq!(cell.replicas[1].state.writes.load(Ordering::SeqCst), 4);
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_retries_total{cell=\"1\",reason=\"connect_error\"} 1"),
        "{m}"
    );
    r.must_stop().await;
}

#[tokio::test]
async fn a_dead_cell_fails_fast_while_the_others_keep_serving() {
    let mut cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let mut cfg = config(cells.iter().map(FakeCell::spec).collect());
    // Long enough that every request below meets the open breaker (no probes).
    cfg.breaker.open_duration = Duration::from_secs(30);
    let keys1 = keys_on(&cfg, "photos", 1, 10);
    let keys2 = keys_on(&cfg, "photos", 2, 10);
    let r = TestRouter::must_start(cfg).await;
    for k in keys1.iter().chain(&keys2) {
        let put = must_call(Method::PUT, &r.url(&obj_path("photos", k)), &[], b"v").await;
        assert_eq!(put.status, StatusCode::OK);
    }
    r.must_wait_breaker(2, "closed").await;

    // Cell 2 dies: listener and connections closed.
    cells[1].replicas[0].kill().await;
    r.must_wait_breaker(2, "open").await;
    let served_before = cells[1].data_requests();

    for k in &keys2 {
        let start = Instant::now();
        let resp = must_call(Method::GET, &r.url(&obj_path("photos", k)), &[], b"").await;
        let took = start.elapsed();
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "cell_unavailable")
        );
        assert_eq!(resp.header("x-cellkv-cell"), Some("2"));
        assert!(resp.header("retry-after").is_some());
        assert!(took < Duration::from_millis(50), "fast fail took {took:?}");
        let put = must_call(Method::PUT, &r.url(&obj_path("photos", k)), &[], b"v").await;
        assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    for k in &keys1 {
        let resp = must_call(Method::GET, &r.url(&obj_path("photos", k)), &[], b"").await;
        assert_eq!(resp.status, StatusCode::OK, "cell 1 keeps serving");
        assert_eq!(resp.header("x-cellkv-cell"), Some("1"));
    }
    assert_eq!(cells[1].data_requests(), served_before);

    // Listings name the missing cell, or return a marked partial page.
    let list = must_call(Method::GET, &r.url("/v1/buckets/photos/objects"), &[], b"").await;
    assert_eq!(
        (list.status, list.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "cell_unavailable")
    );
    assert_eq!(
        list.json()["error"]["missing_cells"],
        serde_json::json!([2])
    );
    let list = must_call(
        Method::GET,
        &r.url("/v1/buckets/photos/objects?allow_partial=true"),
        &[],
        b"",
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let v = list.json();
    assert_eq!(v["partial"], true);
    assert_eq!(v["missing_cells"], serde_json::json!([2]));
    let mut expect = keys1.clone();
    expect.sort();
    let got: Vec<&str> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(got, expect);

    let ready = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(ready["ready"], true, "cell 1 still serves");
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_breaker_state{cell=\"2\"} 2"),
        "{m}"
    );
    assert!(m.contains("cellkv_router_breaker_state{cell=\"1\"} 0"));
    assert!(m.contains("cellkv_router_fast_fail_total{cell=\"2\",reason=\"breaker_open\"}"));
    r.must_stop().await;
}

#[tokio::test]
async fn a_cell_that_never_lived_and_an_isolated_cell_fail_fast() {
    let live = FakeCell::must_start(1, 1).await;
    let mut isolated = FakeCell::must_start(3, 1).await.spec();
    isolated.state = CellState::Isolated;
    let cfg = config(vec![live.spec(), dead_cell_spec(2).await, isolated]);
    let k2 = keys_on(&cfg, "photos", 2, 1).remove(0);
    let k3 = keys_on(&cfg, "photos", 3, 1).remove(0);
    let r = TestRouter::must_start(cfg).await;
    r.must_wait_breaker(2, "open").await;
    let resp = must_call(Method::GET, &r.url(&obj_path("photos", &k2)), &[], b"").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    let resp = must_call(Method::GET, &r.url(&obj_path("photos", &k3)), &[], b"").await;
    assert_eq!(
        (resp.status, resp.header("x-cellkv-cell")),
        (StatusCode::SERVICE_UNAVAILABLE, Some("3"))
    );
    assert!(resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("isolated"));
    let list = must_call(
        Method::GET,
        &r.url("/v1/buckets/photos/objects?allow_partial=true"),
        &[],
        b"",
    )
    .await;
    assert_eq!(list.json()["missing_cells"], serde_json::json!([2, 3]));
    r.must_stop().await;
}

#[tokio::test]
async fn a_recovered_cell_closes_its_breaker_after_healthy_checks() {
    let cell = FakeCell::must_start(1, 1).await;
    let r = TestRouter::must_start(config(vec![cell.spec()])).await;
    r.must_wait_breaker(1, "closed").await;
    cell.replicas[0]
        .state
        .health_leader
        .store(false, Ordering::SeqCst);
    r.must_wait_breaker(1, "open").await;
    r.must_wait_for(
        "not ready",
        |s, _| s == StatusCode::SERVICE_UNAVAILABLE,
        "/readyz",
    )
    .await;
    cell.replicas[0]
        .state
        .health_leader
        .store(true, Ordering::SeqCst);
    r.must_wait_breaker(1, "closed").await;
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK);
    r.must_stop().await;
}

#[tokio::test]
async fn a_slow_cell_holds_only_its_own_bulkhead() {
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    *cells[1].replicas[0].state.read_delay.lock().unwrap() = Duration::from_millis(1500);
    let mut cfg = config(cells.iter().map(FakeCell::spec).collect());
    cfg.max_in_flight_per_cell = 2;
    cfg.max_queue_per_cell = 1;
    cfg.queue_timeout = Duration::from_secs(5);
    cfg.cell_request_timeout = Duration::from_secs(5);
    let k1 = keys_on(&cfg, "photos", 1, 1).remove(0);
    let k2 = keys_on(&cfg, "photos", 2, 1).remove(0);
    let r = TestRouter::must_start(cfg).await;
    r.must_wait_breaker(2, "closed").await;

    // Three slow reads fill cell 2's slots and queue...
    let url2 = r.url(&obj_path("photos", &k2));
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = url2.clone();
            tokio::spawn(async move { must_call(Method::GET, &url, &[], b"").await.status })
        })
        .collect();
    r.must_wait_for(
        "cell 2's bulkhead to fill",
        |_, v| v["cells"][1]["in_flight"] == 2 && v["cells"][1]["queued"] == 1,
        "/readyz",
    )
    .await;
    // ...so a fourth is refused at once,
    let start = Instant::now();
    let resp = must_call(Method::GET, &url2, &[], b"").await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "cell_unavailable")
    );
    assert!(start.elapsed() < Duration::from_millis(50));
    // ...while cell 1 answers as usual.
    let start = Instant::now();
    let resp = must_call(Method::GET, &r.url(&obj_path("photos", &k1)), &[], b"").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert!(start.elapsed() < Duration::from_millis(200));
    for s in slow {
        assert_eq!(
            s.await.unwrap(),
            StatusCode::NOT_FOUND,
            "the slow reads complete"
        );
    }
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_fast_fail_total{cell=\"2\",reason=\"queue_full\"} 1"),
        "{m}"
    );
    r.must_stop().await;
}

#[tokio::test]
async fn authenticates_scopes_and_rate_limits() {
    let cell = FakeCell::must_start(1, 1).await;
    let mut cfg = config(vec![cell.spec()]);
    cfg.tokens[1].rate_per_sec = 1.0;
    cfg.tokens[1].burst = 3;
    let r = TestRouter::must_start(cfg).await;
    let url = r.url(&obj_path("photos", "k"));

    let resp = must_send(Method::GET, &url, &[], Bytes::new()).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    let resp = must_send(
        Method::GET,
        &url,
        &[("authorization", "Bearer wrong-token-wrong-token")],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    // The router's cell token is not a client token.
    let cell_auth = format!("Bearer {CELL_TOKEN}");
    let resp = must_send(
        Method::GET,
        &url,
        &[("authorization", &cell_auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);

    let read = format!("Bearer {READ_TOKEN}");
    let h = [("authorization", read.as_str())];
    let resp = must_send(Method::PUT, &url, &h, Bytes::from_static(b"v")).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    let resp = must_send(
        Method::GET,
        &r.url(&obj_path("secrets", "k")),
        &h,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let resp = must_send(
        Method::GET,
        &r.url(&obj_path("logs-eu", "k")),
        &h,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // The burst of 3 is spent; the next request is limited.
    let resp = must_send(
        Method::GET,
        &r.url(&obj_path("logs-eu", "k")),
        &h,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(
        cell.data_requests(),
        1,
        "refused requests never reach a cell"
    );

    // The writer is not affected by the reader's limit.
    let resp = must_call(Method::GET, &url, &[], b"").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json()["error"]["cell"], CellId(1).0);

    let resp = must_send(Method::GET, &r.url("/nope"), &[], Bytes::new()).await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let resp = must_call(Method::POST, &url, &[], b"").await;
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    r.must_stop().await;
}

#[tokio::test]
async fn outcome_unknown_when_the_connection_breaks_after_a_write_was_sent() {
    // A replica that answers /health like a leader but drops every write's
    // connection after reading it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = writes.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let w = w.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|x| x == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if got.starts_with(b"GET /health") {
                    let body = r#"{"ready":true,"role":"leader","quorum_reachable":true}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                } else if got.starts_with(b"PUT ") {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                // Anything else: close without answering.
            });
        }
    });
    let spec = common::CellSpec {
        id: CellId(1),
        weight: 1,
        replicas: vec![
            common::ReplicaSpec {
                node_id: NodeId(1),
                api_addr: addr.to_string(),
                control_addr: None,
            },
            common::ReplicaSpec {
                node_id: NodeId(2),
                api_addr: addr.to_string().replace("127.0.0.1", "localhost"),
                control_addr: None,
            },
        ],
        state: CellState::Active,
    };
    let r = TestRouter::must_start(config(vec![spec])).await;
    r.must_wait_breaker(1, "closed").await;
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::BAD_GATEWAY, "cell_unavailable")
    );
    assert!(put.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("outcome is unknown"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(writes.load(Ordering::SeqCst), 1, "never resent");
    r.must_stop().await;
    server.abort();
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let cell = FakeCell::must_start(1, 1).await;
    *cell.replicas[0].state.read_delay.lock().unwrap() = Duration::from_millis(500);
    let r = TestRouter::must_start(config(vec![cell.spec()])).await;
    r.must_wait_breaker(1, "closed").await;
    let url = r.url(&obj_path("photos", "k"));
    let slow = tokio::spawn(async move { must_call(Method::GET, &url, &[], b"").await.status });
    r.must_wait_for(
        "the read to be in flight",
        |_, v| v["cells"][0]["in_flight"] == 1,
        "/readyz",
    )
    .await;
    let healthz = r.url("/healthz");
    r.must_stop().await;
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::NOT_FOUND,
        "the in-flight read completed"
    );
    assert!(
        try_send(Method::GET, &healthz, &[], Bytes::new())
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn retries_a_write_the_cell_did_not_execute_during_an_election() {
    let cell = FakeCell::must_start(1, 2).await;
    let mut cfg = config(vec![cell.spec()]);
    cfg.breaker.health_interval = Duration::from_secs(60);
    cfg.breaker.health_timeout = Duration::from_secs(1);
    let r = TestRouter::must_start(cfg).await;
    let a_addr = cell.replicas[0].api_addr();
    r.must_wait_for(
        "the health round to find replica 1 leading",
        |s, v| s == StatusCode::OK && v["cells"][0]["leader"] == a_addr.as_str(),
        "/readyz",
    )
    .await;
    // Replica 1 lost leadership and an election is running; replica 2 wins it.
    *cell.replicas[0].state.data_role.lock().unwrap() = DataRole::NoLeader;
    *cell.replicas[1].state.data_role.lock().unwrap() = DataRole::Leader;
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(
        cell.replicas[0].state.data_requests.load(Ordering::SeqCst),
        1
    );
    assert_eq!(cell.replicas[1].state.writes.load(Ordering::SeqCst), 1);
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_retries_total{cell=\"1\",reason=\"no_leader\"} 1"),
        "{m}"
    );
    r.must_stop().await;
}

#[tokio::test]
async fn waits_out_an_election_with_stale_hints_until_the_deadline() {
    let cell = FakeCell::must_start(1, 3).await;
    let mut cfg = config(vec![cell.spec()]);
    cfg.breaker.health_interval = Duration::from_secs(60);
    cfg.breaker.health_timeout = Duration::from_secs(1);
    let r = TestRouter::must_start(cfg).await;
    // The deposed leader answers no_leader; both followers still point at it.
    let deposed = (cell.replicas[0].state.node, cell.replicas[0].api_addr());
    *cell.replicas[0].state.data_role.lock().unwrap() = DataRole::NoLeader;
    for i in [1, 2] {
        *cell.replicas[i].state.data_role.lock().unwrap() =
            DataRole::NotLeader(Some(deposed.clone()));
    }
    // The election ends after 800 ms: longer than the six quick attempts the
    // router used to give up after, shorter than its deadline.
    let winner = cell.replicas[2].state.clone();
    let election = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        *winner.data_role.lock().unwrap() = DataRole::Leader;
    });
    let t0 = std::time::Instant::now();
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "served before the election ended?"
    );
    assert_eq!(cell.replicas[2].state.writes.load(Ordering::SeqCst), 1);
    election.await.unwrap();
    r.must_stop().await;
}

#[tokio::test]
async fn a_refused_listing_names_no_cell() {
    let cell = FakeCell::must_start(1, 1).await;
    let r = TestRouter::must_start(config(vec![cell.spec()])).await;
    let list = r.url("/v1/buckets/photos/objects");
    // No token: refused before any cell is asked.
    let refused = must_send(Method::GET, &list, &[], Bytes::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers.get("x-cellkv-cell").is_none(),
        "{:?}",
        refused.headers
    );
    // A served listing names every cell it gathered from.
    let served = must_call(Method::GET, &list, &[], b"").await;
    assert_eq!(served.status, StatusCode::OK, "{:?}", served.body);
    assert_eq!(served.headers.get("x-cellkv-cell").unwrap(), "1");
    r.must_stop().await;
}

#[tokio::test]
async fn the_time_a_request_spends_in_the_router_is_measured_apart_from_the_cell() {
    let cell = FakeCell::must_start(1, 1).await;
    *cell.replicas[0].state.read_delay.lock().unwrap() = Duration::from_millis(300);
    let r = TestRouter::must_start(config(vec![cell.spec()])).await;
    r.must_wait_breaker(1, "closed").await;
    let url = r.url(&obj_path("photos", "slow"));
    let put = must_call(Method::PUT, &url, &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK);
    // The cell takes 300 ms to answer a read.
    let got = must_call(Method::GET, &url, &[], b"").await;
    assert_eq!(got.status, StatusCode::OK);
    // Refused before any cell is asked: not a request a cell served.
    let refused = must_send(Method::GET, &url, &[], Bytes::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let m = r.must_metrics().await;
    let total = |op: &str| {
        metric_value(
            &m,
            &format!("cellkv_router_request_duration_seconds_sum{{cell=\"1\",op=\"{op}\"}}"),
        )
        .unwrap_or_else(|| panic!("no duration of {op}: {m}"))
    };
    let added = |op: &str, what: &str| {
        metric_value(
            &m,
            &format!("cellkv_router_added_seconds_{what}{{op=\"{op}\"}}"),
        )
        .unwrap_or_else(|| panic!("no added time of {op}: {m}"))
    };
    assert!(total("get") >= 0.3, "{m}");
    // The 300 ms the cell took are not the router's.
    assert!(added("get", "sum") < 0.1, "{m}");
    assert!(added("get", "sum") > 0.0, "{m}");
    assert_eq!(added("get", "count"), 1.0, "{m}");
    assert_eq!(added("put", "count"), 1.0, "{m}");
    assert!(added("put", "sum") <= total("put"), "{m}");
    r.must_stop().await;
}
