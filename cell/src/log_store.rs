//! The Raft log and vote in RocksDB (`log` and `raft_meta` column families).
//! openraft 0.9 appends one batch at a time and waits for its flush callback
//! before doing anything else, so an append is durable before openraft goes
//! on, on both paths below. Which path depends on the replica's role, given
//! by a hint the replica keeps up to date (`leader`):
//!
//! ```text
//!  follower: append ──synced write (fsync)──▶ cb.log_io_completed()   inline
//!  leader:   append ──write (no sync)──▶ RocksDB WAL (page cache)
//!                └────cb──▶ [bounded queue] ──▶ wal-syncer thread:
//!                                               flush_wal(sync=true)   ← one fsync
//!                                               cb.log_io_completed()
//! ```
//! A follower fsyncs on the Raft core's own task: the core waits for it in any
//! case, the AppendEntries handler waits for the core, and nothing else
//! latency-bound runs there; skipping the hand-off to a thread and back cuts
//! two thread wake-ups off every replication round trip (ADR 0014). The leader
//! keeps the fsync off its tokio workers, which also serve clients: a disk
//! stall must not hold up the requests queued on the worker the core runs on.
//! The role is only a hint: an append made on the wrong path is just as
//! durable. The vote is written with `sync=true` before `save_vote` returns: a
//! replica must never forget a vote (it could vote twice in a term after a crash).
//! Reads of the newest entries are served from memory (`log_cache`, ADR 0015).

// openraft's `StorageError` is the error type its storage traits require; the
// private helpers return it too rather than box it and convert back.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::config::Durability;
use crate::db::{self, CF_LOG, CF_RAFT_META, KEY_SPACE_END};
use crate::log_cache::{LogCache, ReadBudget};
use crate::metrics::CellMetrics;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// Appends waiting for the syncer. Bounded so a stalled disk pushes back on
/// openraft instead of queueing without limit; 4096 covers many RPC batches.
const SYNC_QUEUE_CAPACITY: usize = 4096;
/// Most stored bytes of log entries replicated in one AppendEntries (an
/// entry larger than this still goes, alone): what a follower can receive,
/// append and fsync well inside the heartbeat interval on a busy host.
pub const MAX_APPEND_BYTES: usize = 4 << 20;

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    bincode::serde::encode_to_vec(v, bincode_cfg()).map_err(std::io::Error::other)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, std::io::Error> {
    bincode::serde::decode_from_slice(b, bincode_cfg())
        .map(|(v, _)| v)
        .map_err(std::io::Error::other)
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// Counts completed log fsyncs and wakes whoever waits for the next one. The
/// proposer uses it to send the next batch the moment the log is free, so
/// fsyncs run back to back and each carries everything that arrived meanwhile.
#[derive(Default)]
pub struct FlushGate {
    flushed: AtomicU64,
    notify: tokio::sync::Notify,
}

impl FlushGate {
    /// Fsyncs completed so far.
    pub fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Waits until more than `seen` fsyncs have completed, or `max` elapsed.
    pub async fn wait_past(&self, seen: u64, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, async {
            loop {
                let notified = self.notify.notified();
                if self.flushed() > seen {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    fn completed(&self) {
        self.flushed.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// Records one WAL fsync, begun at `started`, that made `appends` appends durable.
fn observe_fsync(metrics: &CellMetrics, started: Instant, appends: usize) {
    metrics
        .wal_fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.wal_fsync_batch_size.observe(appends as f64);
}

/// Fsyncs the WAL on behalf of many appends at once.
struct Syncer {
    tx: mpsc::SyncSender<LogFlushed<TypeConfig>>,
}

impl Syncer {
    fn start(
        db: Arc<DB>,
        durability: Durability,
        metrics: Arc<CellMetrics>,
        gate: Arc<FlushGate>,
    ) -> (Syncer, SyncerHandle) {
        let (tx, rx) = mpsc::sync_channel::<LogFlushed<TypeConfig>>(SYNC_QUEUE_CAPACITY);
        let join = std::thread::Builder::new()
            .name("wal-syncer".into())
            .spawn(move || {
                // Ends when every sender (every LogStore clone) is dropped.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        waiting.push(more);
                    }
                    let t = Instant::now();
                    let res = match durability {
                        Durability::Fsync => db.flush_wal(true),
                        Durability::UnsafeNoFsync => Ok(()),
                    };
                    observe_fsync(&metrics, t, waiting.len());
                    match res {
                        Ok(()) => {
                            for cb in waiting {
                                cb.log_io_completed(Ok(()));
                            }
                            gate.completed();
                        }
                        Err(e) => {
                            tracing::error!("failed to fsync the Raft log WAL: {e}");
                            for cb in waiting {
                                cb.log_io_completed(Err(std::io::Error::other(e.to_string())));
                            }
                        }
                    }
                }
            })
            .expect("spawn the WAL syncer thread");
        (Syncer { tx }, SyncerHandle { join })
    }
}

/// The syncer thread, kept by whoever must know it stopped (RocksDB may only
/// close once it has): it ends when the last `LogStore` clone is dropped.
pub struct SyncerHandle {
    join: std::thread::JoinHandle<()>,
}

impl SyncerHandle {
    /// Waits up to `timeout` for the thread to end; false if it is still running.
    pub async fn join(self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.join.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = self.join.join();
        true
    }

    /// Blocking form of [`SyncerHandle::join`], for code outside the runtime.
    pub fn join_blocking(self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.join.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = self.join.join();
        true
    }
}

/// openraft's log storage over the replica's RocksDB.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
    durability: Durability,
    /// Whether this replica leads (a hint kept by the replica): the leader
    /// hands fsyncs to the syncer thread, any other role fsyncs inline.
    leader: Arc<AtomicBool>,
    metrics: Arc<CellMetrics>,
    gate: Arc<FlushGate>,
    /// The newest entries, decoded, shared by every clone (`log_cache`).
    cache: Arc<Mutex<LogCache>>,
    /// Last committed index openraft reported, for `/health`.
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub fn new(
        db: Arc<DB>,
        durability: Durability,
        metrics: Arc<CellMetrics>,
        committed: Arc<AtomicU64>,
        gate: Arc<FlushGate>,
        leader: Arc<AtomicBool>,
    ) -> (LogStore, SyncerHandle) {
        let (syncer, handle) = Syncer::start(db.clone(), durability, metrics.clone(), gate.clone());
        let syncer = Arc::new(syncer);
        let store = LogStore {
            db,
            syncer,
            durability,
            leader,
            metrics,
            gate,
            cache: Arc::default(),
            committed,
        };
        (store, handle)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let cf = db::cf(&self.db, CF_RAFT_META);
        match self.db.get_pinned_cf(cf, key).map_err(read_err)? {
            Some(b) => Ok(Some(decode(&b).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        // The cache is only ever left consistent; a panic elsewhere while
        // it was held does not make it wrong.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds entries just written to the log (after the write succeeded).
    fn cache_appended(&self, appended: Vec<(Entry, usize)>) {
        let mut cache = self.cache();
        for (e, size) in appended {
            cache.push(e, size);
        }
    }

    fn synced(&self) -> WriteOptions {
        let mut o = WriteOptions::default();
        o.set_sync(self.durability == Durability::Fsync);
        o
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = db::cf(&self.db, CF_LOG);
        let mut it = self.db.iterator_cf(cf, IteratorMode::End);
        match it.next() {
            Some(Ok((_, v))) => Ok(Some(decode::<Entry>(&v).map_err(read_err)?.log_id)),
            Some(Err(e)) => Err(read_err(e)),
            None => Ok(None),
        }
    }
}

impl LogStore {
    /// The entries of `range` in order; with `max_bytes`, stops before the
    /// entry that would take the stored size past it (never before the first).
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        max_bytes: Option<usize>,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // The newest entries come from memory (replication and apply read
        // each one right after it was appended); older ones from RocksDB.
        if let Some(cached) = self.cache().read(start, &range, max_bytes) {
            return Ok(cached);
        }
        let cf = db::cf(&self.db, CF_LOG);
        let mut budget = ReadBudget::new(max_bytes);
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            cf,
            IteratorMode::From(&db::log_key(start), Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(read_err)?;
            let idx = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| read_err(std::io::Error::other("log key is not 8 bytes")))?,
            );
            if !range.contains(&idx) {
                break;
            }
            if !budget.admits(v.len(), out.is_empty()) {
                break;
            }
            out.push(decode::<Entry>(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(range, None)
    }

    /// What replication sends in one AppendEntries: at most
    /// [`MAX_APPEND_BYTES`] of entries (at least one). openraft 0.9 gives an
    /// AppendEntries the heartbeat interval as its deadline and would
    /// otherwise read, encode and send up to `max_payload_entries` entries of
    /// up to several MiB each to a returning follower: a request that can
    /// never finish in time, so the follower never catches up.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(start..end, Some(MAX_APPEND_BYTES))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let cf = db::cf(&self.db, CF_RAFT_META);
        let mut b = WriteBatch::default();
        b.put_cf(
            cf,
            KEY_VOTE,
            encode(vote).map_err(|e| StorageIOError::write_vote(&e))?,
        );
        self.db
            .write_opt(b, &self.synced())
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for faster re-apply after restart; losing it is harmless, so no sync.
        self.committed
            .store(committed.map(|l| l.index).unwrap_or(0), Ordering::Release);
        let cf = db::cf(&self.db, CF_RAFT_META);
        self.db
            .put_cf(cf, KEY_COMMITTED, encode(&committed).map_err(write_err)?)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = db::cf(&self.db, CF_LOG);
        let mut b = WriteBatch::default();
        let mut appended = Vec::new();
        for e in entries {
            let bytes = encode(&e).map_err(write_err)?;
            b.put_cf(cf, db::log_key(e.log_id.index), &bytes);
            appended.push((e, bytes.len()));
        }
        // Not the leader: fsync here (RocksDB syncs its WAL before returning).
        // The leader writes without sync: its syncer thread fsyncs once for
        // every append queued.
        let inline = !self.leader.load(Ordering::Acquire);
        let opts = if inline {
            self.synced()
        } else {
            WriteOptions::default()
        };
        let t = Instant::now();
        self.db.write_opt(b, &opts).map_err(write_err)?;
        self.cache_appended(appended);
        if inline {
            observe_fsync(&self.metrics, t, 1);
            self.gate.completed();
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.syncer
            .tx
            .send(callback)
            .map_err(|_| write_err(std::io::Error::other("WAL syncer thread has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = db::cf(&self.db, CF_LOG);
        let mut b = WriteBatch::default();
        b.delete_range_cf(cf, &db::log_key(log_id.index)[..], &KEY_SPACE_END[..]);
        self.db.write_opt(b, &self.synced()).map_err(write_err)?;
        self.cache().truncate_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf_log = db::cf(&self.db, CF_LOG);
        let cf_meta = db::cf(&self.db, CF_RAFT_META);
        let mut b = WriteBatch::default();
        b.put_cf(cf_meta, KEY_PURGED, encode(&log_id).map_err(write_err)?);
        b.delete_range_cf(cf_log, db::log_key(0), db::log_key(log_id.index + 1));
        self.db.write(b).map_err(write_err)?;
        self.cache().purge_upto(log_id.index);
        Ok(())
    }
}
