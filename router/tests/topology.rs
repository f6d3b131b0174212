//! In-process tests of a changing cell map: `moved` and `range_moving`
//! answers, the map watcher against a fake control cell (a fake cell holding
//! `cellkv-control/cell-map`), static stability, the cache file, and
//! listings that see one key in two cells.

mod support;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{CellId, CellMap, CellSpec, CellState, RangeOwner};
use support::*;

fn obj_path(bucket: &str, key: &str) -> String {
    format!("/v1/buckets/{bucket}/objects/{key}")
}

/// A map of `cells` at `epoch` where `owner` owns the whole hash space.
fn owned_by(epoch: u64, cells: Vec<CellSpec>, owner: u32) -> CellMap {
    CellMap {
        epoch,
        cells,
        owners: vec![RangeOwner(0, CellId(owner))],
        ..CellMap::default()
    }
}

#[tokio::test]
async fn a_moved_answer_naming_the_owner_sends_the_request_there() {
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let cfg = config(cells.iter().map(FakeCell::spec).collect());
    let keys = keys_on(&cfg, "photos", 1, 3);
    let r = TestRouter::must_start(cfg).await;
    // Cell 1 handed its ranges to cell 2; the router's static map does not know.
    cells[0].refuse(Refusal::Moved {
        owner: Some(CellId(2)),
        epoch: 2,
    });
    let put = must_call(
        Method::PUT,
        &r.url(&obj_path("photos", &keys[0])),
        &[],
        b"v",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.header("x-cellkv-cell"), Some("2"));
    assert_eq!(put.header("x-cellkv-epoch"), Some("1"));
    assert_eq!(cells[0].writes(), 0, "the refused write was never applied");
    assert_eq!(cells[1].keys(), vec![("photos".into(), keys[0].clone())]);
    let get = must_call(Method::GET, &r.url(&obj_path("photos", &keys[0])), &[], b"").await;
    assert_eq!((get.status, &get.body[..]), (StatusCode::OK, &b"v"[..]));
    // HEAD answers have no body: the code comes in X-Cellkv-Error-Code.
    let head = must_call(
        Method::HEAD,
        &r.url(&obj_path("photos", &keys[0])),
        &[],
        b"",
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-cellkv-cell"), Some("2"));
    let del = must_call(
        Method::DELETE,
        &r.url(&obj_path("photos", &keys[0])),
        &[],
        b"",
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(cells[0].refused(), 4);
    let m = r.must_metrics().await;
    assert_eq!(
        metric_value(&m, "cellkv_router_moved_total{cell=\"1\"}"),
        Some(4.0),
        "{m}"
    );
    // An owner that is not in the map (and no control cell to ask): bounded
    // hops, then 503 without executing anything.
    cells[0].refuse(Refusal::Moved {
        owner: Some(CellId(9)),
        epoch: 2,
    });
    let start = Instant::now();
    let put = must_call(
        Method::PUT,
        &r.url(&obj_path("photos", &keys[1])),
        &[],
        b"v",
    )
    .await;
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "cell_unavailable")
    );
    assert!(put.header("retry-after").is_some());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Cell 2 applied the PUT and the DELETE above; cell 1 applied nothing.
    assert_eq!((cells[0].writes(), cells[1].writes()), (0, 2));
    r.must_stop().await;
}

#[tokio::test]
async fn range_moving_is_retried_until_served_or_the_deadline() {
    let cell = FakeCell::must_start(1, 1).await;
    let mut cfg = config(vec![cell.spec()]);
    cfg.cell_request_timeout = Duration::from_millis(400);
    cfg.connect_timeout = Duration::from_millis(200);
    let r = TestRouter::must_start(cfg).await;
    r.must_wait_breaker(1, "closed").await;

    cell.refuse(Refusal::RangeMoving(3));
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!((cell.refused(), cell.writes()), (3, 1));
    cell.refuse(Refusal::RangeMoving(2));
    let head = must_call(Method::HEAD, &r.url(&obj_path("photos", "k")), &[], b"").await;
    assert_eq!(head.status, StatusCode::OK);

    // A hand-over that outlasts the deadline: 503 range_moving, Retry-After.
    cell.refuse(Refusal::RangeMoving(usize::MAX));
    let start = Instant::now();
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v2").await;
    let took = start.elapsed();
    assert_eq!(
        (put.status, put.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "range_moving")
    );
    assert_eq!(put.header("retry-after"), Some("1"));
    assert_eq!(put.header("x-cellkv-cell"), Some("1"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(cell.writes(), 1, "no refused write was applied");
    // Backing off is not a cell failure: the breaker stays closed.
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_breaker_state{cell=\"1\"} 0"),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "cellkv_router_retries_total{cell=\"1\",reason=\"range_moving\"}"
        )
        .is_some_and(|v| v >= 5.0),
        "{m}"
    );
    r.must_stop().await;
}

#[tokio::test]
async fn a_moved_answer_without_owner_refreshes_the_map_and_follows_it() {
    let control = FakeCell::must_start(100, 1).await;
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let specs: Vec<CellSpec> = cells.iter().map(FakeCell::spec).collect();
    let v1 = owned_by(1, specs.clone(), 1);
    control.set_map(&v1);
    let mut cfg = config(specs.clone());
    cfg.cell_map = v1.clone();
    // Polls so rare that only the refresh asked for by `moved` can explain success.
    let cfg = with_control(cfg, &control, Duration::from_secs(60));
    let r = TestRouter::must_start(cfg).await;
    // The first poll runs at start-up and finds nothing newer.
    r.must_wait_for(
        "the first poll",
        |_, v| v["control"]["last_success_ms_ago"].is_u64(),
        "/readyz",
    )
    .await;

    // The control plane moved everything to cell 2 and published epoch 2.
    control.set_map(&owned_by(2, specs, 2));
    cells[0].refuse(Refusal::Moved {
        owner: None,
        epoch: 2,
    });
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.header("x-cellkv-cell"), Some("2"));
    assert_eq!(put.header("x-cellkv-epoch"), Some("2"));
    assert_eq!(cells[1].writes(), 1);
    assert_eq!(cells[0].writes(), 0);
    // The next request goes to cell 2 at once.
    let before = cells[0].data_requests();
    let get = must_call(Method::GET, &r.url(&obj_path("photos", "k")), &[], b"").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(cells[0].data_requests(), before);
    assert_eq!(get.header("x-cellkv-epoch"), Some("2"));
    r.must_stop().await;
}

#[tokio::test]
async fn picks_up_a_map_with_a_new_cell_within_a_second_and_drops_removed_cells() {
    let control = FakeCell::must_start(100, 2).await;
    // The control cell's second replica follows and points at the first.
    *control.replicas[1].state.data_role.lock().unwrap() = DataRole::NotLeader(Some((
        control.replicas[0].state.node,
        control.replicas[0].api_addr(),
    )));
    let c1 = FakeCell::must_start(1, 1).await;
    let v1 = CellMap {
        epoch: 1,
        cells: vec![c1.spec()],
        ..CellMap::default()
    };
    control.set_map(&v1);
    let mut cfg = with_control(
        config(v1.cells.clone()),
        &control,
        Duration::from_millis(250),
    );
    cfg.control.as_mut().unwrap().endpoints.reverse(); // ask the follower first
    let r = TestRouter::must_start(cfg).await;
    r.must_wait_breaker(1, "closed").await;

    // Cell 2 joins and the control plane gives it everything.
    let c2 = FakeCell::must_start(2, 1).await;
    let v2 = owned_by(2, vec![c1.spec(), c2.spec()], 2);
    control.set_map(&v2);
    let took = r.must_wait_epoch(2).await;
    assert!(took < Duration::from_secs(1), "converged in {took:?}");
    r.must_wait_breaker(2, "closed").await;
    for k in keys_routed(&v2, "photos", 2, 5) {
        let put = must_call(Method::PUT, &r.url(&obj_path("photos", &k)), &[], b"v").await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        assert_eq!(put.header("x-cellkv-cell"), Some("2"));
        assert_eq!(put.header("x-cellkv-epoch"), Some("2"));
    }
    assert_eq!(c2.keys().len(), 5);
    assert!(c1.keys().is_empty());
    let m = r.must_metrics().await;
    assert!(m.contains("cellkv_router_map_epoch 2"), "{m}");
    assert!(
        m.contains("cellkv_router_breaker_state{cell=\"2\"} 0"),
        "{m}"
    );

    // Cell 1, drained, is marked empty, then removed.
    let mut v3 = v2.clone();
    v3.epoch = 3;
    v3.cells[0].state = CellState::Empty;
    control.set_map(&v3);
    r.must_wait_epoch(3).await;
    let list = must_call(Method::GET, &r.url("/v1/buckets/photos/objects"), &[], b"").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.header("x-cellkv-cell"),
        Some("2"),
        "empty cells are not asked"
    );
    assert_eq!(list.json()["objects"].as_array().unwrap().len(), 5);
    let mut v4 = v3.clone();
    v4.epoch = 4;
    v4.cells.remove(0);
    control.set_map(&v4);
    r.must_wait_epoch(4).await;
    let ready = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(ready["cells"].as_array().unwrap().len(), 1);
    assert_eq!(ready["cells"][0]["id"], 2);
    let m = r.must_metrics().await;
    assert!(
        !m.contains("cellkv_router_breaker_state{cell=\"1\"}"),
        "{m}"
    );

    // An older or invalid map is never applied.
    let mut stale = v2.clone();
    stale.epoch = 3;
    control.set_map(&stale);
    let mut bad = v4.clone();
    bad.epoch = 9;
    bad.owners = vec![RangeOwner(0, CellId(7))];
    tokio::time::sleep(Duration::from_millis(600)).await;
    control.set_map(&bad);
    r.must_wait_for(
        "the bad map to be reported",
        |_, v| {
            v["control"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cell 7"))
        },
        "/readyz",
    )
    .await;
    let ready = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(ready["epoch"], 4);
    let m = r.must_metrics().await;
    assert!(
        m.contains("cellkv_router_map_refresh_errors_total{reason=\"bad_map\"}"),
        "{m}"
    );
    r.must_stop().await;
}

#[tokio::test]
async fn keeps_serving_with_the_last_map_while_the_control_cell_is_down() {
    let mut control = FakeCell::must_start(100, 1).await;
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let specs: Vec<CellSpec> = cells.iter().map(FakeCell::spec).collect();
    let cfg = with_control(config(specs.clone()), &control, Duration::from_millis(50));
    let r = TestRouter::must_start(cfg).await;
    let v2 = owned_by(2, specs, 1);
    control.set_map(&v2);
    r.must_wait_epoch(2).await;

    control.replicas[0].kill().await;
    r.must_wait_for(
        "failed polls to show",
        |_, v| v["control"]["consecutive_errors"].as_u64().unwrap_or(0) >= 3,
        "/readyz",
    )
    .await;
    for i in 0..10 {
        let k = format!("k{i}");
        let put = must_call(Method::PUT, &r.url(&obj_path("photos", &k)), &[], b"v").await;
        assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
        assert_eq!(
            put.header("x-cellkv-cell"),
            Some("1"),
            "epoch 2: cell 1 owns all"
        );
        assert_eq!(put.header("x-cellkv-epoch"), Some("2"));
    }
    let ready = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["epoch"], 2);
    let m = r.must_metrics().await;
    assert!(
        metric_value(
            &m,
            "cellkv_router_map_refresh_errors_total{reason=\"unreachable\"}"
        )
        .is_some_and(|v| v >= 3.0),
        "{m}"
    );
    assert!(
        metric_value(&m, "cellkv_router_map_poll_age_seconds").is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert!(m.contains("cellkv_router_map_epoch 2"), "{m}");
    r.must_stop().await;
}

#[tokio::test]
async fn a_restarted_router_starts_from_the_cache_file_when_the_control_cell_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cell-map.json");
    let mut control = FakeCell::must_start(100, 1).await;
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let specs: Vec<CellSpec> = cells.iter().map(FakeCell::spec).collect();
    let mut cfg = with_control(config(specs.clone()), &control, Duration::from_millis(50));
    cfg.control.as_mut().unwrap().cache_file = Some(cache.clone());

    let r = TestRouter::must_start(cfg.clone()).await;
    let v5 = owned_by(5, specs, 2);
    control.set_map(&v5);
    r.must_wait_epoch(5).await;
    // The file is written after the swap; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read(&cache).is_ok_and(|b| b.windows(10).any(|w| w == b"\"epoch\": 5")) {
        assert!(Instant::now() < deadline, "cache file not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.must_stop().await;

    control.replicas[0].kill().await;
    let r = TestRouter::must_start(cfg).await;
    let ready = r.must_wait_for("readyz", |_, _| true, "/readyz").await;
    assert_eq!(
        ready["epoch"], 5,
        "started from the cache, not static epoch 1"
    );
    let put = must_call(Method::PUT, &r.url(&obj_path("photos", "k")), &[], b"v").await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.header("x-cellkv-cell"), Some("2"));
    assert_eq!(put.header("x-cellkv-epoch"), Some("5"));
    r.must_stop().await;
}

#[tokio::test]
async fn a_key_listed_by_two_cells_during_a_hand_over_is_listed_once() {
    let cells = [
        FakeCell::must_start(1, 1).await,
        FakeCell::must_start(2, 1).await,
    ];
    let r = TestRouter::must_start(config(cells.iter().map(FakeCell::spec).collect())).await;
    // Between Own at the destination and Release at the source both list it.
    cells[0].put_raw("photos", "both", b"v");
    cells[1].put_raw("photos", "both", b"v");
    cells[0].put_raw("photos", "a", b"v");
    cells[1].put_raw("photos", "z", b"v");
    let list = must_call(Method::GET, &r.url("/v1/buckets/photos/objects"), &[], b"").await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let keys: Vec<String> = list.json()["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["a", "both", "z"]);
    let page = must_call(
        Method::GET,
        &r.url("/v1/buckets/photos/objects?limit=2"),
        &[],
        b"",
    )
    .await;
    let v = page.json();
    assert_eq!(v["objects"].as_array().unwrap().len(), 2);
    assert_eq!(v["next_start_after"], "both");
    assert_eq!(page.header("x-cellkv-epoch"), Some("1"));
    r.must_stop().await;
}
