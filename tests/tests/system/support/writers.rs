//! Load: [`Writers`], N writer tasks stopped together and collected, each
//! returning its own log; on top of it [`spawn_cell_writers`] (fresh keys
//! through a cell's leader, every acknowledgement in [`Acks`]) and
//! [`RouterLoad`] (writes and read-backs of a fixed key set through the
//! router, with the checks every control-plane test makes).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::http::{HttpError, Resp};
use cluster::cell_proc::LocalCell;
use common::HashRange;
use http::Method;

use super::leader::{Ack, LeaderWriter};
use super::readback::{must_read_back, Expect};
use super::{http_client, must_eventually, obj_url, unquote};

/// What a writer task gets: its index, whether to go on, and a counter of
/// its progress (shared by all, read by [`Writers::must_progress`]).
#[derive(Clone)]
pub struct Writer {
    /// `0..n`, for key names.
    pub id: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
}

impl Writer {
    /// Not stopped yet.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Acquire)
    }

    /// Counts one unit of progress (an acknowledged write, an operation).
    pub fn progressed(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// `n` writer tasks, stopped together; each returns its own log `T`.
pub struct Writers<T> {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<T>>,
}

impl<T: Send + 'static> Writers<T> {
    /// Spawns `task(writer)` for writers `0..n`.
    pub fn spawn<F, Fut>(n: usize, mut task: F) -> Writers<T>
    where
        F: FnMut(Writer) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|id| {
                tokio::spawn(task(Writer {
                    id,
                    stop: stop.clone(),
                    done: done.clone(),
                }))
            })
            .collect();
        Writers { stop, done, tasks }
    }

    /// Progress counted so far by every writer.
    pub fn progress(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until the writers counted `n` more units of progress, or fails after `within`.
    pub async fn must_progress(&self, n: u64, within: Duration) {
        let target = self.progress() + n;
        must_eventually(
            within,
            &format!("the writers make {n} more progress"),
            || {
                let now = self.progress();
                async move { (now >= target).then_some(()) }
            },
        )
        .await;
    }

    /// Tells every writer to stop (they finish the write in hand).
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the writers and collects their logs; a writer's panic fails the test.
    pub async fn stop(self) -> Vec<T> {
        self.signal_stop();
        self.join().await
    }

    /// Waits until every writer ends by itself and collects their logs.
    pub async fn join(self) -> Vec<T> {
        let mut logs = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            logs.push(t.await.expect("a writer task panicked"));
        }
        logs
    }
}

impl Writers<anyhow::Result<()>> {
    /// [`join`](Self::join) that fails the test if a writer failed.
    pub async fn must_finish(self) {
        for r in self.join().await {
            r.unwrap_or_else(|e| panic!("writer failed: {e:#}"));
        }
    }

    /// [`stop`](Self::stop) that fails the test if a writer failed.
    pub async fn must_stop(self) {
        self.signal_stop();
        self.must_finish().await;
    }
}

/// Acknowledged writes, shared by the writers and the test.
#[derive(Clone, Default)]
pub struct Acks(Arc<Mutex<Vec<Ack>>>);

impl Acks {
    pub fn push(&self, a: Ack) {
        self.0.lock().unwrap().push(a);
    }

    /// A copy of every acknowledgement so far.
    pub fn snapshot(&self) -> Vec<Ack> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` over the acknowledgements so far (under the lock).
    pub fn with<R>(&self, f: impl FnOnce(&[Ack]) -> R) -> R {
        f(&self.0.lock().unwrap())
    }
}

/// What [`spawn_cell_writers`] writes.
#[derive(Clone, Copy, Debug)]
pub struct CellLoad {
    pub writers: usize,
    pub bucket: &'static str,
    /// Bytes of each value ([`value_of`] its key).
    pub value_len: usize,
    /// Writes per writer; `None`: until stopped.
    pub per_writer: Option<usize>,
    /// How long one write may take to be acknowledged.
    pub within: Duration,
}

impl CellLoad {
    /// `writers` writers of `value_len`-byte values into `bucket`, until
    /// stopped, 15 s per write.
    pub fn new(writers: usize, bucket: &'static str, value_len: usize) -> CellLoad {
        CellLoad {
            writers,
            bucket,
            value_len,
            per_writer: None,
            within: Duration::from_secs(15),
        }
    }

    /// At most `n` writes per writer.
    pub fn each(self, n: usize) -> CellLoad {
        CellLoad {
            per_writer: Some(n),
            ..self
        }
    }

    /// Each write acknowledged within `within`.
    pub fn within(self, within: Duration) -> CellLoad {
        CellLoad { within, ..self }
    }
}

/// Writers PUTting distinct keys `w{writer}-{seq:05}` through `cell`'s leader
/// ([`LeaderWriter`]) until stopped (or `per_writer` each), every
/// acknowledgement recorded in `acks`. A write not acknowledged in time ends
/// its writer with the error.
pub fn spawn_cell_writers(
    cell: &LocalCell,
    load: CellLoad,
    acks: &Acks,
) -> Writers<anyhow::Result<()>> {
    Writers::spawn(load.writers, |w| {
        let writer = LeaderWriter::new(cell);
        let acks = acks.clone();
        async move {
            let mut seq = 0usize;
            while w.running() && load.per_writer.is_none_or(|m| seq < m) {
                let key = format!("w{}-{seq:05}", w.id);
                let value = Bytes::from(value_of(&key, load.value_len));
                let ack = writer
                    .try_put(load.bucket, &key, value, load.within)
                    .await?;
                acks.push(ack);
                w.progressed();
                seq += 1;
            }
            Ok(())
        }
    })
}

/// A deterministic value of `len` bytes for `key`.
pub fn value_of(key: &str, len: usize) -> Vec<u8> {
    let unit = format!("{key};");
    unit.as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len.max(1))
        .collect()
}

// ---------------------------------------------------------------------------
// Through the router: the operator tests' load

/// What the load saw for one key.
#[derive(Default, Clone, Debug)]
pub struct KeyLog {
    /// Etag (unquoted) of the last acknowledged write.
    pub acked: Option<String>,
    /// Errors answered for this key: (status, code).
    pub errors: Vec<(u16, String)>,
}

/// Writers and readers through the router. Each worker owns a disjoint set of
/// keys `w{worker}-k{n}` of `bucket` and is their only writer, so a read after
/// an acknowledged write must return exactly that write's etag: anything else
/// is a stale read. [`verify`](Self::verify) makes the final checks.
pub struct RouterLoad {
    bucket: &'static str,
    auth: String,
    /// Transport errors are expected only while the router is down.
    pub router_down: Arc<AtomicBool>,
    pub keys: Arc<Mutex<HashMap<String, KeyLog>>>,
    stale: Arc<Mutex<Vec<String>>>,
    writers: Option<Writers<()>>,
}

impl RouterLoad {
    /// `workers` workers over `keys_per_worker` keys each, through the router
    /// at `router_url` with `auth` (`Bearer <client token>`). Every PUT and
    /// GET counts as one operation for [`wait_ops`](Self::wait_ops).
    pub fn start(
        router_url: &str,
        auth: &str,
        bucket: &'static str,
        workers: usize,
        keys_per_worker: usize,
    ) -> RouterLoad {
        let router_down = Arc::new(AtomicBool::new(false));
        let keys: Arc<Mutex<HashMap<String, KeyLog>>> = Arc::default();
        let stale: Arc<Mutex<Vec<String>>> = Arc::default();
        let client = http_client();
        let writers = Writers::spawn(workers, |w| {
            let (router_down, keys, stale, client) = (
                router_down.clone(),
                keys.clone(),
                stale.clone(),
                client.clone(),
            );
            let (base, auth) = (router_url.to_owned(), auth.to_owned());
            async move {
                // Records a failed answer for `key`. A transport error counts
                // only while the router is meant to be up; after any failed
                // PUT the key's state is unknown, so its ack is forgotten.
                let failed = |key: &str, r: &Result<Resp, HttpError>, was_put: bool| {
                    let mut keys = keys.lock().unwrap();
                    let log = keys.entry(key.to_owned()).or_default();
                    match r {
                        Ok(r) => log
                            .errors
                            .push((r.status, r.error_code().unwrap_or_default())),
                        Err(e) if !router_down.load(Ordering::Relaxed) => {
                            log.errors.push((0, e.to_string()))
                        }
                        Err(_) => {}
                    }
                    if was_put {
                        log.acked = None;
                    }
                };
                let mut i: u64 = 0;
                while w.running() {
                    i += 1;
                    let key = format!("w{}-k{}", w.id, i as usize % keys_per_worker);
                    let url = obj_url(&base, bucket, &key);
                    let value = format!("{key}-v{i}");
                    let put = client
                        .request(
                            Method::PUT,
                            &url,
                            &[("authorization", &auth)],
                            Bytes::from(value),
                        )
                        .await;
                    w.progressed();
                    let want = match &put {
                        Ok(r) if r.status == 200 || r.status == 201 => {
                            let etag = r.header("etag").unwrap_or("").to_owned();
                            keys.lock().unwrap().entry(key.clone()).or_default().acked =
                                Some(unquote(&etag).to_owned());
                            etag
                        }
                        _ => {
                            failed(&key, &put, true);
                            if put.is_err() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            continue;
                        }
                    };
                    // Read it back: must be exactly the acknowledged version.
                    let get = client
                        .request(Method::GET, &url, &[("authorization", &auth)], Bytes::new())
                        .await;
                    w.progressed();
                    match &get {
                        Ok(r) if r.status == 200 => {
                            let got = r.header("etag").unwrap_or("");
                            if got != want {
                                stale
                                    .lock()
                                    .unwrap()
                                    .push(format!("{key}: read {got}, acked {want:?}"));
                            }
                        }
                        _ => {
                            failed(&key, &get, false);
                            if get.is_err() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }
        });
        RouterLoad {
            bucket,
            auth: auth.to_owned(),
            router_down,
            keys,
            stale,
            writers: Some(writers),
        }
    }

    /// Stops the workers and waits for them.
    pub async fn stop(&mut self) {
        if let Some(w) = self.writers.take() {
            w.stop().await;
        }
    }

    /// Runs until `n` more operations were done (progress under load).
    pub async fn wait_ops(&self, n: u64, limit: Duration) {
        let w = self.writers.as_ref().expect("the load runs");
        let start = w.progress();
        let deadline = Instant::now() + limit;
        while w.progress() < start + n {
            assert!(Instant::now() < deadline, "the load made no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The final checks: every acknowledged write is there with its etag
    /// (read through the router at `router_url`), no stale read, and no
    /// error for a key whose hash lies outside `moving`. Returns the number
    /// of keys checked and of errors inside `moving`.
    pub async fn verify(&self, router_url: &str, moving: &[HashRange]) -> (usize, usize) {
        let stale = self.stale.lock().unwrap().clone();
        assert!(stale.is_empty(), "stale reads: {stale:?}");
        let keys = self.keys.lock().unwrap().clone();
        let mut outside_errors = Vec::new();
        let mut inside_errors = 0;
        for (k, log) in &keys {
            if log.errors.is_empty() {
                continue;
            }
            let h = common::key_hash(self.bucket, k);
            if moving.iter().any(|r| r.contains(h)) {
                inside_errors += log.errors.len();
            } else {
                outside_errors.push(format!("{k}: {:?}", log.errors));
            }
        }
        assert!(
            outside_errors.is_empty(),
            "errors for keys outside the moving ranges: {outside_errors:?}"
        );
        let client = http_client();
        let expected: Vec<Expect> = keys
            .iter()
            .filter_map(|(k, log)| {
                log.acked.as_ref().map(|etag| Expect {
                    key: k.clone(),
                    etag: etag.clone(),
                    value: None,
                })
            })
            .collect();
        let checked = expected.len();
        let (bucket, auth, base) = (self.bucket, self.auth.clone(), router_url.to_owned());
        must_read_back(expected, 1, move |key| {
            let (client, auth, url) = (client.clone(), auth.clone(), obj_url(&base, bucket, &key));
            async move {
                client
                    .request(Method::GET, &url, &[("authorization", &auth)], Bytes::new())
                    .await
                    .unwrap()
            }
        })
        .await;
        assert!(checked > 0, "the load acknowledged nothing");
        (checked, inside_errors)
    }
}
