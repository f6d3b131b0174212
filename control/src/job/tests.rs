//! Unit tests of the job state machine against an in-memory cluster: cells
//! are an `OwnershipTable` plus a sorted object map, with the same checks
//! the real cells apply (ingest only into incoming ranges, purge only what
//! may be purged). Used only to test the phase logic and resume.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::ownership::{Access, OwnershipTable};
use common::wire::ObjectMeta;
use common::{key_hash, CellSpec, NodeId, ReplicaSpec, Ring, RoutingTable};

use super::*;

type Obj = (ObjectMeta, Vec<u8>);

#[derive(Default)]
struct MemCell {
    own: OwnershipTable,
    /// (hash, bucket, key) → object
    objects: BTreeMap<(u64, String, String), Obj>,
}

struct Mem {
    map: Mutex<CellMap>,
    cells: Mutex<BTreeMap<CellId, MemCell>>,
    saved: Mutex<Option<Job>>,
    saves: AtomicU64,
    /// Stop the runner (simulated crash) at this save count.
    crash_at: AtomicU64,
    signals: Mutex<Option<Arc<Signals>>>,
    /// Every Nth cell call fails transiently (0 = never).
    flaky_every: AtomicU64,
    calls: AtomicU64,
    /// Ingest refuses everything (an operator-level error).
    refuse_ingest: std::sync::atomic::AtomicBool,
    /// Checked at every save: no hash is readable at two cells.
    violations: Mutex<Vec<String>>,
    tracked: Mutex<Vec<(String, String)>>,
}

fn spec(id: u32) -> CellSpec {
    CellSpec {
        id: CellId(id),
        weight: 1,
        replicas: vec![ReplicaSpec {
            node_id: NodeId(1),
            api_addr: format!("127.0.0.1:{}", 7000 + id),
            control_addr: Some(format!("127.0.0.1:{}", 7100 + id)),
        }],
        state: CellState::Active,
    }
}

impl Mem {
    /// Cells `all`, the ranges owned by the ring of `owners`, managed.
    fn new(all: &[u32], owners: &[u32]) -> Arc<Mem> {
        let ring = Ring::new(&owners.iter().map(|&c| (CellId(c), 1)).collect::<Vec<_>>()).unwrap();
        let routing = RoutingTable::from_ring(&ring);
        let map = CellMap {
            epoch: 1,
            cells: all.iter().map(|&c| spec(c)).collect(),
            owners: routing.to_owners(),
            moving: vec![],
        };
        let mut cells = BTreeMap::new();
        for &c in all {
            let mut mc = MemCell::default();
            mc.own
                .apply(&OwnershipOp::Assign {
                    epoch: 1,
                    owned: routing.ranges_of(CellId(c)),
                })
                .unwrap();
            cells.insert(CellId(c), mc);
        }
        Arc::new(Mem {
            map: Mutex::new(map),
            cells: Mutex::new(cells),
            saved: Mutex::new(None),
            saves: AtomicU64::new(0),
            crash_at: AtomicU64::new(u64::MAX),
            signals: Mutex::new(None),
            flaky_every: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            refuse_ingest: Default::default(),
            violations: Mutex::new(vec![]),
            tracked: Mutex::new(vec![]),
        })
    }

    fn flaky(&self) -> Result<(), StepError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let every = self.flaky_every.load(Ordering::Relaxed);
        if every > 0 && n.is_multiple_of(every) {
            return Err(StepError::Transient("injected: leader changed".into()));
        }
        Ok(())
    }

    /// A client write: goes to the one cell that serves writes for the hash, if any.
    fn client_put(&self, bucket: &str, key: &str, value: &[u8], version: u64) -> bool {
        let h = key_hash(bucket, key);
        let mut cells = self.cells.lock().unwrap();
        let serving: Vec<CellId> = cells
            .iter()
            .filter(|(_, c)| c.own.access(h) == Access::Serve)
            .map(|(id, _)| *id)
            .collect();
        assert!(
            serving.len() <= 1,
            "two cells serve writes for {key}: {serving:?}"
        );
        let Some(id) = serving.first() else {
            return false;
        };
        let meta = ObjectMeta {
            version,
            etag: format!("{id}.{version}"),
            size: value.len() as u64,
            content_type: None,
            modified_ms: version,
            s3: None,
        };
        cells
            .get_mut(id)
            .unwrap()
            .objects
            .insert((h, bucket.into(), key.into()), (meta, value.to_vec()));
        self.tracked
            .lock()
            .unwrap()
            .push((bucket.into(), key.into()));
        true
    }

    fn client_delete(&self, bucket: &str, key: &str) -> bool {
        let h = key_hash(bucket, key);
        let mut cells = self.cells.lock().unwrap();
        for c in cells.values_mut() {
            if c.own.access(h) == Access::Serve {
                c.objects.remove(&(h, bucket.into(), key.into()));
                return true;
            }
        }
        false
    }

    /// What a client reads: the value at the one readable cell.
    fn client_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let h = key_hash(bucket, key);
        let cells = self.cells.lock().unwrap();
        let readable: Vec<&MemCell> = cells
            .values()
            .filter(|c| c.own.access(h).may_read())
            .collect();
        assert!(readable.len() <= 1, "two cells serve reads for {key}");
        readable
            .first()
            .and_then(|c| c.objects.get(&(h, bucket.into(), key.into())))
            .map(|(_, v)| v.clone())
    }

    fn check_invariants(&self) {
        let cells = self.cells.lock().unwrap();
        for (b, k) in self.tracked.lock().unwrap().iter() {
            let h = key_hash(b, k);
            let readable = cells
                .values()
                .filter(|c| c.own.access(h).may_read())
                .count();
            if readable > 1 {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("{k} readable at {readable} cells"));
            }
        }
    }
}

impl Backend for Mem {
    async fn map(&self) -> Result<CellMap, StepError> {
        Ok(self.map.lock().unwrap().clone())
    }

    async fn update_map(&self, mut f: MapFn) -> Result<CellMap, StepError> {
        let mut m = self.map.lock().unwrap();
        let mut next = m.clone();
        if f(&mut next) {
            next.epoch = m.epoch + 1;
            next.validate()
                .map_err(|e| StepError::Operator(e.to_string()))?;
            *m = next;
        }
        Ok(m.clone())
    }

    async fn ownership(&self, cell: CellId, op: OwnershipOp) -> Result<(), StepError> {
        self.flaky()?;
        let mut cells = self.cells.lock().unwrap();
        let c = cells
            .get_mut(&cell)
            .ok_or(StepError::Operator("no cell".into()))?;
        c.own
            .apply(&op)
            .map_err(|e| StepError::Operator(e.to_string()))
    }

    async fn scan(
        &self,
        cell: CellId,
        range: HashRange,
        after: Option<Vec<u8>>,
        values: bool,
    ) -> Result<ScanPage, StepError> {
        self.flaky()?;
        let cells = self.cells.lock().unwrap();
        let c = cells
            .get(&cell)
            .ok_or(StepError::Operator("no cell".into()))?;
        let start: (u64, String, String) = match &after {
            Some(a) => serde_json::from_slice(a).unwrap(),
            None => (range.start, String::new(), String::new()),
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((h, b, k), (meta, v)) in c.objects.range(start.clone()..) {
            if *h > range.end {
                break;
            }
            if after.is_some() && (*h, b.clone(), k.clone()) == start {
                continue;
            }
            if items.len() == 3 {
                let last: &ScanItem = items.last().unwrap();
                next = Some(serde_json::to_vec(&(last.hash, &last.bucket, &last.key)).unwrap());
                break;
            }
            items.push(ScanItem {
                hash: *h,
                bucket: b.clone(),
                key: k.clone(),
                meta: meta.clone(),
                value: if values { v.clone() } else { vec![] },
            });
        }
        Ok(ScanPage {
            range,
            items,
            next,
            applied_index: 0,
        })
    }

    async fn ingest(&self, cell: CellId, batch: IngestBatch) -> Result<IngestResult, StepError> {
        self.flaky()?;
        if self.refuse_ingest.load(Ordering::Relaxed) {
            return Err(StepError::Operator(
                "cell 9 refused: 500 internal: disk full".into(),
            ));
        }
        let mut cells = self.cells.lock().unwrap();
        let c = cells
            .get_mut(&cell)
            .ok_or(StepError::Operator("no cell".into()))?;
        let hashes = batch
            .items
            .iter()
            .map(|i| i.hash)
            .chain(batch.deletes.iter().map(|(b, k)| key_hash(b, k)));
        for h in hashes {
            if !c.own.accepts_ingest(h) {
                return Err(StepError::Operator(format!(
                    "moved: hash {h:#x} not incoming"
                )));
            }
        }
        let mut r = IngestResult::default();
        for i in batch.items {
            c.objects
                .insert((i.hash, i.bucket, i.key), (i.meta, i.value));
            r.stored += 1;
        }
        for (b, k) in batch.deletes {
            if c.objects.remove(&(key_hash(&b, &k), b, k)).is_some() {
                r.deleted += 1;
            }
        }
        Ok(r)
    }

    async fn purge(&self, cell: CellId, range: HashRange) -> Result<PurgeReply, StepError> {
        self.flaky()?;
        let mut cells = self.cells.lock().unwrap();
        let c = cells
            .get_mut(&cell)
            .ok_or(StepError::Operator("no cell".into()))?;
        let victims: Vec<_> = c
            .objects
            .keys()
            .filter(|(h, _, _)| range.contains(*h) && c.own.may_purge(*h))
            .take(2)
            .cloned()
            .collect();
        for v in &victims {
            c.objects.remove(v);
        }
        Ok(PurgeReply {
            deleted: victims.len() as u64,
            more: victims.len() == 2,
        })
    }

    async fn range_stats(
        &self,
        cell: CellId,
        ranges: Vec<HashRange>,
    ) -> Result<Vec<RangeStats>, StepError> {
        self.flaky()?;
        let cells = self.cells.lock().unwrap();
        let c = cells
            .get(&cell)
            .ok_or(StepError::Operator("no cell".into()))?;
        Ok(ranges
            .iter()
            .map(|r| {
                let objs: Vec<_> = c
                    .objects
                    .range((r.start, String::new(), String::new())..)
                    .take_while(|((h, _, _), _)| *h <= r.end)
                    .collect();
                RangeStats {
                    range: *r,
                    keys: objs.len() as u64,
                    bytes: objs.iter().map(|(_, (_, v))| v.len() as u64).sum(),
                }
            })
            .collect())
    }

    async fn save_job(&self, job: &Job) -> Result<(), StepError> {
        self.check_invariants();
        *self.saved.lock().unwrap() = Some(job.clone());
        let n = self.saves.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.crash_at.load(Ordering::Relaxed) {
            if let Some(s) = self.signals.lock().unwrap().as_ref() {
                s.stop();
            }
        }
        Ok(())
    }
}

fn cfg() -> RunnerConfig {
    RunnerConfig {
        step_retry_timeout: Duration::from_secs(5),
        scan_page_bytes: 1 << 20,
        ingest_max_bytes: 64,
    }
}

fn job(kind: JobKind, max_ranges: usize) -> Job {
    new_record("j1".into(), kind, 1 << 40, 1 << 40, max_ranges)
}

fn populate(mem: &Mem, n: usize) {
    for i in 0..n {
        assert!(mem.client_put("b", &format!("k{i}"), format!("value-{i}").as_bytes(), 1));
    }
}

async fn run_once(mem: &Arc<Mem>, j: Job) -> Job {
    let signals = Arc::new(Signals::default());
    *mem.signals.lock().unwrap() = Some(signals.clone());
    JobRunner::new(mem.clone(), signals, cfg(), j).run().await
}

/// Every tracked key is readable with its expected value, stored only at its
/// owner per the map, and no cell keeps copies it does not own.
fn assert_settled(mem: &Mem, expect: &BTreeMap<String, Option<Vec<u8>>>) {
    let map = mem.map.lock().unwrap().clone();
    let routing = map.routing().unwrap();
    assert!(plan::pending_moves(&map).unwrap().is_empty(), "moves left");
    assert!(map.moving.is_empty(), "moving not cleared");
    for (k, v) in expect {
        assert_eq!(mem.client_get("b", k).as_ref(), v.as_ref(), "value of {k}");
    }
    let cells = mem.cells.lock().unwrap();
    for (id, c) in cells.iter() {
        for (h, _, k) in c.objects.keys() {
            assert_eq!(routing.cell_for_hash(*h), *id, "{k} left at cell {id}");
        }
        for (r, owner) in routing.ranges() {
            if owner == *id {
                assert_eq!(
                    c.own.access(r.start),
                    Access::Serve,
                    "cell {id} must serve {r:?}"
                );
            }
        }
    }
    assert!(
        mem.violations.lock().unwrap().is_empty(),
        "{:?}",
        mem.violations.lock().unwrap()
    );
}

fn expected(n: usize) -> BTreeMap<String, Option<Vec<u8>>> {
    (0..n)
        .map(|i| (format!("k{i}"), Some(format!("value-{i}").into_bytes())))
        .collect()
}

#[tokio::test]
async fn add_job_moves_a_third_to_the_new_cell() {
    let mem = Mem::new(&[1, 2, 3], &[1, 2]);
    {
        // The new cell starts managed and owning nothing.
        let mut cells = mem.cells.lock().unwrap();
        cells.get_mut(&CellId(3)).unwrap().own = OwnershipTable::default();
        cells
            .get_mut(&CellId(3))
            .unwrap()
            .own
            .apply(&OwnershipOp::Assign {
                epoch: 1,
                owned: vec![],
            })
            .unwrap();
    }
    populate(&mem, 200);
    let j = run_once(&mem, job(JobKind::Add { cell: CellId(3) }, 1000)).await;
    assert_eq!(j.status, JobStatus::Done, "{:?}", j.message);
    assert_settled(&mem, &expected(200));
    let at3 = mem.cells.lock().unwrap()[&CellId(3)].objects.len();
    assert!((40..=100).contains(&at3), "cell 3 got {at3} keys");
    assert_eq!(j.progress.ranges_done, j.progress.ranges_total);
    assert_eq!(j.pauses_ms.len() as u64, j.progress.batches_done);
    assert!(
        j.progress.batches_done >= 2,
        "two sources: at least two batches"
    );
    assert!(j.purges.is_empty());
    assert_eq!(j.progress.keys_copied as usize, at3);
}

#[tokio::test]
async fn drain_job_empties_the_cell() {
    let mem = Mem::new(&[1, 2, 3], &[1, 2, 3]);
    populate(&mem, 150);
    mem.map.lock().unwrap().cells[1].state = CellState::Draining;
    let j = run_once(&mem, job(JobKind::Drain { cell: CellId(2) }, 700)).await;
    assert_eq!(j.status, JobStatus::Done, "{:?}", j.message);
    assert_settled(&mem, &expected(150));
    let map = mem.map.lock().unwrap().clone();
    assert_eq!(map.cell(CellId(2)).unwrap().state, CellState::Empty);
    assert!(!map.routing().unwrap().owners().contains(&CellId(2)));
    assert!(mem.cells.lock().unwrap()[&CellId(2)].objects.is_empty());
}

/// Crashes the control server after every single save and resumes from the
/// stored record, with client writes and deletes in between: the end state
/// is still exactly right.
#[tokio::test]
async fn resumes_after_a_crash_at_every_step() {
    let mem = Mem::new(&[1, 2, 3], &[1, 2]);
    populate(&mem, 60);
    let mut expect = expected(60);
    let mut j = job(JobKind::Add { cell: CellId(3) }, 400);
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
        mem.crash_at
            .store(mem.saves.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let out = run_once(&mem, j).await;
        // The stored record is what a new server would read.
        j = mem.saved.lock().unwrap().clone().unwrap_or(out);
        if j.status == JobStatus::Done {
            break;
        }
        // Clients keep writing between "crashes" (refused while fenced).
        let i = rounds as usize % 60;
        let k = format!("k{i}");
        let v = format!("v{rounds}").into_bytes();
        if rounds.is_multiple_of(7) {
            if mem.client_delete("b", &k) {
                expect.insert(k, None);
            }
        } else if mem.client_put("b", &k, &v, rounds + 1) {
            expect.insert(k, Some(v));
        }
    }
    mem.crash_at.store(u64::MAX, Ordering::Relaxed);
    assert!(rounds > 10, "crashed {rounds} times");
    assert_settled(&mem, &expect);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let mem = Mem::new(&[1, 2], &[1]);
    populate(&mem, 40);
    mem.flaky_every.store(5, Ordering::Relaxed);
    let j = run_once(&mem, job(JobKind::Add { cell: CellId(2) }, 5000)).await;
    assert_eq!(j.status, JobStatus::Done, "{:?}", j.message);
    mem.flaky_every.store(0, Ordering::Relaxed);
    assert_settled(&mem, &expected(40));
}

#[tokio::test]
async fn cancel_mid_copy_rolls_the_batch_back() {
    let mem = Mem::new(&[1, 2], &[1]);
    populate(&mem, 80);
    let before = mem.map.lock().unwrap().clone();
    let signals = Arc::new(Signals::default());
    *mem.signals.lock().unwrap() = Some(signals.clone());
    let mut j = job(JobKind::Add { cell: CellId(2) }, 5000);
    // Stop right after the first copy-cursor save, then cancel.
    j.bandwidth_bytes_per_sec = 1 << 40;
    mem.crash_at.store(3, Ordering::Relaxed);
    let out = JobRunner::new(mem.clone(), signals, cfg(), j).run().await;
    mem.crash_at.store(u64::MAX, Ordering::Relaxed);
    assert!(
        before_own(out.phase) || out.phase == Phase::Select,
        "{:?}",
        out.phase
    );
    let mut j = mem.saved.lock().unwrap().clone().unwrap();
    j.requested = Some(JobRequest::Cancel);
    let j = run_once(&mem, j).await;
    assert_eq!(j.status, JobStatus::Cancelled);
    let after = mem.map.lock().unwrap().clone();
    assert_eq!(after.owners, before.owners, "no range changed hands");
    assert!(after.moving.is_empty());
    let cells = mem.cells.lock().unwrap();
    assert!(cells[&CellId(2)].objects.is_empty(), "partial copy purged");
    assert_eq!(cells[&CellId(1)].objects.len(), 80);
    assert_eq!(
        cells[&CellId(1)].own.owned_ranges(),
        vec![HashRange::FULL],
        "source unfenced"
    );
    assert!(cells[&CellId(2)].own.owned_ranges().is_empty());
}

#[tokio::test]
async fn operator_error_pauses_with_the_batch_rolled_back() {
    let mem = Mem::new(&[1, 2], &[1]);
    populate(&mem, 30);
    mem.refuse_ingest.store(true, Ordering::Relaxed);
    let j = run_once(&mem, job(JobKind::Add { cell: CellId(2) }, 5000)).await;
    assert_eq!(j.status, JobStatus::Paused);
    assert!(
        j.message.as_deref().unwrap_or("").contains("disk full"),
        "{:?}",
        j.message
    );
    assert!(j.batch.is_none());
    {
        let cells = mem.cells.lock().unwrap();
        assert_eq!(cells[&CellId(1)].own.owned_ranges(), vec![HashRange::FULL]);
    }
    // The operator fixes it and resumes.
    mem.refuse_ingest.store(false, Ordering::Relaxed);
    let mut j = j;
    j.status = JobStatus::Running;
    j.message = None;
    let j = run_once(&mem, j).await;
    assert_eq!(j.status, JobStatus::Done, "{:?}", j.message);
    assert_settled(&mem, &expected(30));
}

#[tokio::test]
async fn pause_stops_between_batches() {
    let mem = Mem::new(&[1, 2, 3], &[1, 2]);
    populate(&mem, 50);
    let signals = Arc::new(Signals::default());
    signals.request(JobRequest::Pause);
    let j = JobRunner::new(mem.clone(), signals, cfg(), job(JobKind::Rebalance, 300))
        .run()
        .await;
    assert_eq!(j.status, JobStatus::Paused);
    assert_eq!(j.phase, Phase::Select);
    assert_eq!(j.progress.batches_done, 0);
    let mut j = j;
    j.status = JobStatus::Running;
    let j = run_once(&mem, j).await;
    assert_eq!(j.status, JobStatus::Done);
    assert_settled(&mem, &expected(50));
}

#[test]
fn chunks_and_views() {
    let item = |n: usize| ScanItem {
        hash: 0,
        bucket: "b".into(),
        key: "k".into(),
        meta: ObjectMeta {
            version: 1,
            etag: "e".into(),
            size: n as u64,
            content_type: None,
            modified_ms: 0,
            s3: None,
        },
        value: vec![0; n],
    };
    let chunks = chunk_items(vec![item(10), item(10), item(100), item(1)], 150);
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    assert!(chunk_items(vec![], 10).is_empty());
    let mut j = job(JobKind::Rebalance, 10);
    j.progress.bytes_copied = 100;
    j.progress.bytes_estimated = 300;
    j.progress.active_ms = 10_000;
    j.pauses_ms = vec![5, 9, 7];
    let v = view(&j);
    assert_eq!(v.rate_bytes_per_sec, 10.0);
    assert_eq!(v.eta_secs, Some(20.0));
    assert_eq!((v.pause_max_ms, v.pause_p99_ms), (Some(9), Some(9)));
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["kind"], "rebalance");
    assert_eq!(json["status"], "running");
    let back: Job = serde_json::from_value(serde_json::to_value(&j).unwrap()).unwrap();
    assert_eq!(back, j);
}
