//! Whole-system tests of the cell side of range ownership and replica
//! management: real `cellkv-cell` processes (3 per cell, fresh ports and temp
//! dirs), driven through the cell API and the control port's `/admin/*`
//! endpoints. Build the binaries first: `cargo build --release --bins -p cellkv-cell`.
//! Each test is bounded by `support::TEST_LIMIT`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use client::cell::{CellClient, Retry, LEADER_CONTROL_HEADER};
use client::http::{Client, ClientConfig, Resp};
use cluster::cell_proc::{bin_path, free_port, CellLayout, LocalCell, Peer, ReplicaProc, CELL_BIN};
use common::ownership::OwnershipOp;
use common::wire::{IngestBatch, ScanItem, ScanPage};
use common::{key_hash, CellId, HashRange, NodeId};
use serde_json::{json, Value};

const BUCKET: &str = "own";
/// The lower half of the hash space: the range the tests move.
const LOW: HashRange = HashRange {
    start: 0,
    end: u64::MAX / 2,
};

/// The control port's admin API of one cell, following `not_leader` hints.
struct Admin<'a> {
    cell: &'a LocalCell,
    client: Client,
}

impl<'a> Admin<'a> {
    fn new(cell: &'a LocalCell) -> Admin<'a> {
        Admin {
            cell,
            client: Client::new(ClientConfig {
                request_timeout: secs(70),
                ..ClientConfig::default()
            }),
        }
    }

    /// One request to replica `i`'s control port.
    async fn try_on(&self, i: usize, method: http::Method, path: &str, body: Vec<u8>) -> Resp {
        let url = format!("{}{path}", self.cell.replica(i).raft_url());
        let auth = self.cell.admin_auth();
        self.client
            .request(method, &url, &[("authorization", auth.as_str())], body)
            .await
            .unwrap_or_else(|e| panic!("{path} on replica {i}: {e}"))
    }

    /// Sends to the leader through the one cell client: it follows the
    /// control port's leader hint (`x-cellkv-leader-control`) and retries
    /// what the cell did not execute (a 503) for a while.
    async fn send(&self, method: http::Method, path: &str, body: Vec<u8>) -> Resp {
        self.cell.wait_for_leader(secs(10)).await.unwrap();
        let urls: Vec<String> = self.cell.replicas().iter().map(|r| r.raft_url()).collect();
        CellClient::new(self.client.clone(), &urls, self.cell.admin_auth())
            .with_leader_header(LEADER_CONTROL_HEADER)
            .call(method, path, &[], body.into(), Retry::AtMostOnce, secs(15))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .resp
    }

    async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(http::Method::POST, path, body.to_string().into_bytes())
            .await
    }

    /// Applies an ownership op that must succeed; returns the new table.
    async fn must_op(&self, op: &OwnershipOp) -> Value {
        let resp = self
            .post_json("/admin/ownership", &serde_json::to_value(op).unwrap())
            .await;
        assert_eq!(resp.status, 200, "{op:?}: {}", resp.text());
        resp.json().unwrap()
    }

    async fn must_table(&self) -> Value {
        let resp = self
            .send(http::Method::GET, "/admin/ownership", vec![])
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json().unwrap()
    }

    async fn ingest(&self, batch: &IngestBatch) -> Resp {
        self.send(
            http::Method::POST,
            "/admin/ingest",
            common::wire::encode_objects(batch).unwrap(),
        )
        .await
    }

    /// Purges `range` page by page until nothing is left; returns the total.
    async fn must_purge_all(&self, range: HashRange, limit: u64) -> u64 {
        let mut total = 0;
        loop {
            let resp = self
                .post_json("/admin/purge", &json!({"range": range, "limit": limit}))
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            let v: Value = resp.json().unwrap();
            let n = v["deleted"].as_u64().unwrap();
            assert!(n <= limit);
            total += n;
            if v["more"] == false {
                return total;
            }
        }
    }

    async fn must_stats(&self, range: HashRange) -> (u64, u64) {
        let resp = self
            .post_json("/admin/range-stats", &json!({"ranges": [range]}))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v: Value = resp.json().unwrap();
        (
            v[0]["keys"].as_u64().unwrap(),
            v[0]["bytes"].as_u64().unwrap(),
        )
    }
}

fn one(h: u64) -> HashRange {
    HashRange { start: h, end: h }
}

fn assign_full(epoch: u64) -> OwnershipOp {
    OwnershipOp::Assign {
        epoch,
        owned: vec![HashRange::FULL],
    }
}

/// Keys `prefix-0..n` with values, written through the leader; returns (key → etag).
async fn must_fill(cell: &LocalCell, prefix: &str, n: usize) -> BTreeMap<String, String> {
    let w = LeaderWriter::new(cell);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let ack = w
            .try_put(
                BUCKET,
                &key,
                Bytes::from(format!("value of {key}")),
                secs(10),
            )
            .await
            .unwrap();
        out.insert(key, ack.etag);
    }
    out
}

/// Every object of `range` on replica `i`, following cursors.
async fn must_scan(cell: &LocalCell, i: usize, range: HashRange, values: bool) -> Vec<ScanItem> {
    let api = Api::new(cell);
    let base = cell.replica(i).api_url();
    let mut items = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut q = format!(
            "/internal/v1/scan?start={}&end={}&limit=7&values={values}",
            range.start, range.end
        );
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", hex(a)));
        }
        let resp = api.try_get_path(&base, &q).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let page: ScanPage = common::wire::decode_objects(&resp.body).unwrap();
        items.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return items,
        }
    }
}

fn listed_keys(resp: &Resp) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: Value = resp.json().unwrap();
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_seal_release_refuse_clients() {
    bounded(async {
        let dir = TestDir::new("own_fence");
        let cell = must_start(opts(), dir.path()).await;
        let admin = Admin::new(&cell);
        let api = Api::new(&cell);
        let etags = must_fill(&cell, "k", 10).await;
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);
        let (leader, follower) = (cell.replica(l).api_url(), cell.replica(f).api_url());
        let h = cell.health(l).await.unwrap();
        assert_eq!(h["ownership"]["managed"], false);
        assert_eq!(h["ownership"]["owned_share"], 1.0);

        // Invalid admin input: clear JSON errors, nothing applied.
        let bad = admin
            .post_json("/admin/ownership", &json!({"nope": 1}))
            .await;
        assert_api_error(&bad, 400, "bad_request", 1);
        let bad = admin
            .post_json(
                "/admin/ownership",
                &json!({"fence": {"epoch": 1, "ranges": [{"start": 9, "end": 1}], "seal": false}}),
            )
            .await;
        assert_api_error(&bad, 400, "bad_request", 1);
        let bad = admin
            .post_json(
                "/admin/purge",
                &json!({"range": HashRange::FULL, "limit": 0}),
            )
            .await;
        assert_api_error(&bad, 400, "bad_request", 1);
        let no_token = cell
            .client()
            .get(
                &format!("{}/admin/ownership", cell.replica(l).raft_url()),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(no_token.status, 401);
        // A follower names the leader.
        let on_follower = admin
            .try_on(f, http::Method::GET, "/admin/ownership", vec![])
            .await;
        assert_api_error(&on_follower, 421, "not_leader", 1);

        admin.must_op(&assign_full(1)).await;
        let key = "k-3";
        let hk = key_hash(BUCKET, key);
        let table = admin
            .must_op(&OwnershipOp::Fence {
                epoch: 2,
                ranges: vec![one(hk)],
                seal: false,
            })
            .await;
        assert_eq!(table["epoch"], 2);
        // A stale op is refused with the reason.
        let stale = admin
            .post_json(
                "/admin/ownership",
                &serde_json::to_value(OwnershipOp::Unfence {
                    epoch: 1,
                    ranges: vec![one(hk)],
                })
                .unwrap(),
            )
            .await;
        assert_api_error(&stale, 412, "precondition_failed", 1);

        // Write-fenced: writes get 503 range_moving, reads are served.
        let put = api.try_put(&leader, BUCKET, key, "new", &[]).await.unwrap();
        assert_api_error(&put, 503, "range_moving", 1);
        assert!(put.header("retry-after").is_some());
        let del = api.try_delete(&leader, BUCKET, key, &[]).await.unwrap();
        assert_api_error(&del, 503, "range_moving", 1);
        let get = api.try_get(&leader, BUCKET, key, &[]).await.unwrap();
        assert_eq!(get.status, 200);
        assert_eq!(
            get.header("etag"),
            Some(format!("\"{}\"", etags[key]).as_str())
        );
        must_eventually(secs(5), "a stale read on a follower is served", || {
            let api = &api;
            let follower = &follower;
            async move {
                let r = api
                    .try_get_q(follower, BUCKET, key, "read=stale", &[])
                    .await
                    .ok()?;
                (r.status == 200).then_some(())
            }
        })
        .await;
        // Other keys are untouched.
        api.must_put(&leader, BUCKET, "k-4", "still mine", &[])
            .await;
        let list = api
            .try_get_path(&leader, &format!("/v1/buckets/{BUCKET}/objects"))
            .await
            .unwrap();
        assert!(listed_keys(&list).contains(&key.to_owned()));

        // Sealed: reads are refused too, the key is still listed.
        admin
            .must_op(&OwnershipOp::Fence {
                epoch: 2,
                ranges: vec![one(hk)],
                seal: true,
            })
            .await;
        let get = api.try_get(&leader, BUCKET, key, &[]).await.unwrap();
        assert_api_error(&get, 503, "range_moving", 1);
        let head = api.try_head(&leader, BUCKET, key).await.unwrap();
        assert_eq!(head.status, 503);
        let list = api
            .try_get_path(&leader, &format!("/v1/buckets/{BUCKET}/objects"))
            .await
            .unwrap();
        assert!(listed_keys(&list).contains(&key.to_owned()));

        // Released: 421 moved naming the new owner; the key leaves listings.
        admin
            .must_op(&OwnershipOp::Release {
                epoch: 3,
                ranges: vec![one(hk)],
                to: CellId(2),
            })
            .await;
        for resp in [
            api.try_get(&leader, BUCKET, key, &[]).await.unwrap(),
            api.try_put(&leader, BUCKET, key, "x", &[]).await.unwrap(),
        ] {
            assert_api_error(&resp, 421, "moved", 1);
            let v: Value = resp.json().unwrap();
            assert_eq!(v["error"]["moved"], json!({"owner": 2, "epoch": 3}), "{v}");
        }
        let list = api
            .try_get_path(&leader, &format!("/v1/buckets/{BUCKET}/objects"))
            .await
            .unwrap();
        let keys = listed_keys(&list);
        assert!(
            !keys.contains(&key.to_owned()) && keys.len() == 9,
            "{keys:?}"
        );
        // The scan is not filtered; it can leave values out.
        let all = must_scan(&cell, l, HashRange::FULL, false).await;
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|i| i.value.is_empty()));
        assert!(all
            .iter()
            .any(|i| i.key == key && i.meta.etag == etags[key]));

        let table = admin.must_table().await;
        assert_eq!(table["epoch"], 3);
        assert_eq!(table["managed"], true);
        let h = cell.health(l).await.unwrap();
        assert_eq!(h["ownership"]["epoch"], 3);
        // Owned below the key, moved, owned above (one hash is below f64 precision).
        assert_eq!(h["ownership"]["ranges"], 3, "{h}");
        assert!(h["ownership"]["owned_share"].as_f64().unwrap() > 0.999);
        let m = must_metrics(&cell, l).await;
        let refusals = |reason| {
            metric(
                &m,
                "cellkv_cell_ownership_refusals_total",
                &[("reason", reason)],
            )
        };
        assert!(refusals("range_moving") >= 4.0, "{m}");
        assert!(refusals("moved") >= 2.0);
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_a_range_between_two_cells() {
    bounded(async {
        let dir = TestDir::new("own_move");
        let src = must_start(opts(), dir.path()).await;
        let mut o = opts();
        o.cell_id = CellId(2);
        let dst = must_start(o, dir.path()).await;
        let (sa, da) = (Admin::new(&src), Admin::new(&dst));
        let api_d = Api::new(&dst);
        let etags = must_fill(&src, "m", 40).await;
        let in_low: Vec<&String> = etags
            .keys()
            .filter(|k| LOW.contains(key_hash(BUCKET, k)))
            .collect();
        assert!(!in_low.is_empty() && in_low.len() < 40);
        sa.must_op(&assign_full(1)).await;
        da.must_op(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![],
        })
        .await;
        let dl = dst.wait_for_leader(secs(5)).await.unwrap();
        let sl = src.wait_for_leader(secs(5)).await.unwrap();
        let d_leader = dst.replica(dl).api_url();

        // 1. Prepare at the destination; 2. copy the source's scan.
        da.must_op(&OwnershipOp::Prepare {
            epoch: 2,
            ranges: vec![LOW],
        })
        .await;
        let items = must_scan(&src, sl, LOW, true).await;
        assert_eq!(items.len(), in_low.len());
        // A batch with one key outside the incoming range is refused whole.
        let outside = must_scan(
            &src,
            sl,
            HashRange {
                start: LOW.end + 1,
                end: u64::MAX,
            },
            true,
        )
        .await;
        let mut mixed = items.clone();
        mixed.push(outside[0].clone());
        let refused = da
            .ingest(&IngestBatch {
                job: "t".into(),
                items: mixed,
                deletes: vec![],
            })
            .await;
        assert_api_error(&refused, 421, "moved", 2);
        assert_eq!(da.must_stats(HashRange::FULL).await.0, 0);
        // A corrupt item is refused before Raft.
        let mut corrupt = items[0].clone();
        corrupt.meta.size += 1;
        let r = da
            .ingest(&IngestBatch {
                job: "t".into(),
                items: vec![corrupt],
                deletes: vec![],
            })
            .await;
        assert_api_error(&r, 400, "bad_request", 2);
        for chunk in items.chunks(8) {
            let r = da
                .ingest(&IngestBatch {
                    job: "t".into(),
                    items: chunk.to_vec(),
                    deletes: vec![],
                })
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json::<Value>().unwrap()["stored"], chunk.len());
        }
        // Clients are refused at the destination until Own.
        let probe = in_low[0].as_str();
        let get = api_d.try_get(&d_leader, BUCKET, probe, &[]).await.unwrap();
        assert_api_error(&get, 421, "moved", 2);
        let put = api_d
            .try_put(&d_leader, BUCKET, probe, "x", &[])
            .await
            .unwrap();
        assert_api_error(&put, 421, "moved", 2);

        // 3.–5. Fence and seal the source; the delta is empty (no writes since the copy).
        sa.must_op(&OwnershipOp::Fence {
            epoch: 2,
            ranges: vec![LOW],
            seal: false,
        })
        .await;
        let s_meta = must_scan(&src, sl, LOW, false).await;
        let d_meta = must_scan(&dst, dl, LOW, false).await;
        let pairs = |v: &[ScanItem]| -> Vec<(String, String)> {
            v.iter()
                .map(|i| (i.key.clone(), i.meta.etag.clone()))
                .collect()
        };
        assert_eq!(pairs(&s_meta), pairs(&d_meta), "etags are preserved");
        assert_eq!(sa.must_stats(LOW).await, da.must_stats(LOW).await);
        sa.must_op(&OwnershipOp::Fence {
            epoch: 2,
            ranges: vec![LOW],
            seal: true,
        })
        .await;
        // 6. Own at the destination: served with the source's etags.
        da.must_op(&OwnershipOp::Own {
            epoch: 3,
            ranges: vec![LOW],
        })
        .await;
        let get = api_d.try_get(&d_leader, BUCKET, probe, &[]).await.unwrap();
        assert_eq!(get.status, 200, "{}", get.text());
        assert_eq!(
            get.header("etag"),
            Some(format!("\"{}\"", etags[probe]).as_str())
        );
        assert_eq!(get.text(), format!("value of {probe}"));
        // Ingest is closed once owned.
        let r = da
            .ingest(&IngestBatch {
                job: "t".into(),
                items: items[..1].to_vec(),
                deletes: vec![],
            })
            .await;
        assert_api_error(&r, 421, "moved", 2);
        // 7. Release at the source.
        sa.must_op(&OwnershipOp::Release {
            epoch: 3,
            ranges: vec![LOW],
            to: CellId(2),
        })
        .await;
        let api_s = Api::new(&src);
        let get = api_s
            .try_get(&src.replica(sl).api_url(), BUCKET, probe, &[])
            .await
            .unwrap();
        assert_api_error(&get, 421, "moved", 1);
        assert_eq!(get.json::<Value>().unwrap()["error"]["moved"]["owner"], 2);

        // 9. Purge: only the moved range goes, at the source; the destination keeps all.
        let before = sa.must_stats(HashRange::FULL).await.0;
        assert_eq!(before, 40);
        let purged = sa.must_purge_all(HashRange::FULL, 5).await;
        assert_eq!(purged as usize, in_low.len());
        assert_eq!(sa.must_stats(LOW).await, (0, 0));
        assert_eq!(
            sa.must_stats(HashRange::FULL).await.0 as usize,
            40 - in_low.len()
        );
        assert_eq!(da.must_purge_all(HashRange::FULL, 100).await, 0);
        assert_eq!(da.must_stats(LOW).await.0 as usize, in_low.len());
        // Every source replica purged the same keys.
        for i in 0..3 {
            src.wait_caught_up(i, secs(10)).await.unwrap();
            let left = Api::new(&src)
                .must_scan_all(&src.replica(i).api_url(), true)
                .await;
            assert_eq!(left.len(), 40 - in_low.len(), "replica {i}");
            assert!(left.iter().all(|it| !LOW.contains(it.hash)));
        }
        let m = must_metrics(&dst, dl).await;
        assert_eq!(
            metric(&m, "cellkv_cell_ingested_objects_total", &[]) as usize,
            in_low.len()
        );
        let m = must_metrics(&src, sl).await;
        assert_eq!(
            metric(&m, "cellkv_cell_purged_objects_total", &[]) as usize,
            in_low.len()
        );
        assert_no_panics(&src);
        assert_no_panics(&dst);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_survives_restart_and_snapshot_catch_up() {
    bounded(async {
        let dir = TestDir::new("own_restart");
        let mut o = opts();
        o.config.raft.snapshot_logs_since_last = 100;
        o.config.raft.logs_to_keep_after_snapshot = 10;
        let cell = must_start(o, dir.path()).await;
        let admin = Admin::new(&cell);
        let api = Api::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let f = a_follower(l);
        must_fill(&cell, "r", 5).await;
        cell.wait_caught_up(f, secs(10)).await.unwrap();
        let f_last = must_health_u64(&cell, f, "last_log_index").await;
        cell.replica(f).kill().unwrap();

        // Ownership changes the follower misses, then enough writes that the
        // leader snapshots and purges its log past the follower.
        admin.must_op(&assign_full(1)).await;
        let hk = key_hash(BUCKET, "r-1");
        admin
            .must_op(&OwnershipOp::Fence {
                epoch: 2,
                ranges: vec![one(hk)],
                seal: true,
            })
            .await;
        admin
            .must_op(&OwnershipOp::Release {
                epoch: 2,
                ranges: vec![one(hk)],
                to: CellId(9),
            })
            .await;
        let fill = CellLoad::new(4, BUCKET, 1).each(60).within(secs(10));
        let _ = spawn_cell_writers(&cell, fill, &Acks::default())
            .join()
            .await;
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        must_eventually(secs(15), "the leader purges past the dead follower", || {
            let cell = &cell;
            async move {
                let p = cell.health(l).await.ok()?["purged_index"].as_u64()?;
                (p > f_last).then_some(())
            }
        })
        .await;

        cell.replica(f).restart().unwrap();
        cell.wait_caught_up(f, secs(30)).await.unwrap();
        let m = must_metrics(&cell, f).await;
        assert!(metric(&m, "cellkv_cell_snapshots_installed_total", &[]) >= 1.0);
        let h = cell.health(f).await.unwrap();
        assert_eq!(h["ownership"]["managed"], true, "{h}");
        assert_eq!(h["ownership"]["epoch"], 2);
        let stale = api
            .try_get_q(&cell.replica(f).api_url(), BUCKET, "r-1", "read=stale", &[])
            .await
            .unwrap();
        assert_api_error(&stale, 421, "moved", 1);
        assert_eq!(stale.json::<Value>().unwrap()["error"]["moved"]["owner"], 9);

        // A full restart keeps the table.
        let table = admin.must_table().await;
        cell.kill_all().unwrap();
        for r in cell.replicas() {
            r.restart().unwrap();
        }
        let l = cell.wait_ready(secs(30)).await.unwrap();
        assert_eq!(admin.must_table().await, table);
        let put = api
            .try_put(&cell.replica(l).api_url(), BUCKET, "r-1", "x", &[])
            .await
            .unwrap();
        assert_api_error(&put, 421, "moved", 1);
        api.must_put(&cell.replica(l).api_url(), BUCKET, "r-2", "ok", &[])
            .await;
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_learner_then_voter_while_writing() {
    bounded(async {
        let dir = TestDir::new("own_learner");
        let cell = must_start(opts(), dir.path()).await;
        let admin = Admin::new(&cell);
        let acks = Acks::default();
        let writers =
            spawn_cell_writers(&cell, CellLoad::new(2, BUCKET, 512).within(secs(10)), &acks);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A 4th replica of the same cell, started empty.
        let mut layout: CellLayout = cell.layout().clone();
        let loopback = |p| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let new = Peer {
            node_id: NodeId(4),
            api_addr: loopback(free_port().unwrap()),
            raft_addr: loopback(free_port().unwrap()),
        };
        layout.peers.push(new.clone());
        let r4 = ReplicaProc::prepare(
            &bin_path(CELL_BIN).unwrap(),
            cell.options(),
            &layout,
            NodeId(4),
            &dir.path().join("c1-n4"),
        )
        .unwrap();
        r4.start().unwrap();
        let bad = admin
            .post_json("/admin/learner", &json!({"node_id": 4, "api_addr": "nope", "raft_addr": "x"}))
            .await;
        assert_api_error(&bad, 400, "bad_request", 1);
        // A voter that is not a learner first is refused.
        let bad = admin.post_json("/admin/voters", &json!({"voters": [1, 2, 3, 5]})).await;
        assert_eq!(bad.status, 412, "{}", bad.text());
        let t0 = Instant::now();
        let resp = admin
            .post_json(
                "/admin/learner",
                &json!({"node_id": 4, "api_addr": new.api_addr.to_string(), "raft_addr": new.raft_addr.to_string()}),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json::<Value>().unwrap()["learners"], json!([4]));
        eprintln!("learner caught up after {:?}", t0.elapsed());
        let resp = admin.post_json("/admin/voters", &json!({"voters": [1, 2, 3, 4]})).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v: Value = resp.json().unwrap();
        assert_eq!(v["voters"], json!([1, 2, 3, 4]));
        assert_eq!(v["learners"], json!([]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        writers.must_stop().await;

        // The new voter has every acknowledged write.
        let client = cell.client().clone();
        let url4 = format!("http://{}/health", new.api_addr);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        let target = must_health_u64(&cell, l, "applied_index").await;
        must_eventually(secs(15), "the 4th replica applied everything", || {
            let (client, url4) = (&client, &url4);
            async move {
                let (_, h) = client.get_json::<Value>(url4, &[]).await.ok()?;
                (h["applied_index"].as_u64()? >= target && h["voters"] == json!([1, 2, 3, 4]))
                    .then_some(())
            }
        })
        .await;
        let api = Api::new(&cell);
        let items = api
            .must_scan_all(&format!("http://{}", new.api_addr), true)
            .await;
        let acks = acks.snapshot();
        assert!(acks.len() > 10, "only {} writes", acks.len());
        assert_acked_etags(&acks, &items, "on the new replica");
        assert!(!r4.log().contains(" panic"));
        assert_no_panics(&cell);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_moves_leadership() {
    bounded(async {
        let dir = TestDir::new("own_elect");
        let cell = must_start(opts(), dir.path()).await;
        let admin = Admin::new(&cell);
        let l = cell.wait_for_leader(secs(5)).await.unwrap();
        // On the leader: nothing to do.
        let resp = admin
            .try_on(l, http::Method::POST, "/admin/elect", vec![])
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json::<Value>().unwrap()["attempts"], 0);
        let bad = admin
            .try_on(l, http::Method::POST, "/admin/elect", b"{\"x\":1}".to_vec())
            .await;
        assert_api_error(&bad, 400, "bad_request", 1);

        // Leadership moves to the chosen replica, twice in a row, with writes
        // between the transfers (not during: see ADR 0009).
        let writer = LeaderWriter::new(&cell);
        for round in 0..2 {
            for i in 0..20 {
                writer
                    .try_put(
                        BUCKET,
                        &format!("e{round}-{i}"),
                        Bytes::from_static(b"v"),
                        secs(10),
                    )
                    .await
                    .unwrap();
            }
            let l = cell.wait_for_leader(secs(5)).await.unwrap();
            let t = (l + 1) % 3;
            let t0 = Instant::now();
            let resp = admin
                .try_on(
                    t,
                    http::Method::POST,
                    "/admin/elect",
                    br#"{"timeout_ms": 15000}"#.to_vec(),
                )
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            let v: Value = resp.json().unwrap();
            assert_eq!(v["leader"], cell.replica(t).node_id().0);
            eprintln!(
                "round {round}: leadership moved to node {} in {:?} ({v})",
                t + 1,
                t0.elapsed()
            );
            let now = cell.wait_for_leader(secs(5)).await.unwrap();
            assert_eq!(now, t);
        }
        writer
            .try_put(BUCKET, "after", Bytes::from_static(b"v"), secs(10))
            .await
            .unwrap();
        assert_no_panics(&cell);
    })
    .await
}
