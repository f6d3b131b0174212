//! openraft's storage conformance suite against the RocksDB log store and
//! state machine, each run in a fresh `TempDir`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{CellId, NodeId};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::config::Durability;
use crate::log_store::{LogStore, SyncerHandle};
use crate::metrics::CellMetrics;
use crate::state_machine::{SmShared, StateMachine};
use crate::types::{StorageError, TypeConfig};

/// A log store over a fresh RocksDB in `dir`, for a replica that leads or
/// not, with the parts the tests look at.
struct TestLog {
    db: Arc<rocksdb::DB>,
    metrics: Arc<CellMetrics>,
    gate: Arc<crate::log_store::FlushGate>,
    leader: Arc<AtomicBool>,
    log: LogStore,
    syncer: SyncerHandle,
}

fn open_log(dir: &std::path::Path, leader: bool) -> TestLog {
    let db = crate::db::open(dir, CellId(1), NodeId(1), 0).expect("open rocksdb");
    let metrics = Arc::new(CellMetrics::new(prometheus::Registry::new()).expect("metrics"));
    let gate = Arc::new(crate::log_store::FlushGate::default());
    let leader = Arc::new(AtomicBool::new(leader));
    let (log, syncer) = LogStore::new(
        db.clone(),
        Durability::Fsync,
        metrics.clone(),
        Arc::new(AtomicU64::new(0)),
        gate.clone(),
        leader.clone(),
    );
    TestLog {
        db,
        metrics,
        gate,
        leader,
        log,
        syncer,
    }
}

/// Builds stores for a replica that leads (`leader`: appends fsynced by the
/// syncer thread) or follows (appends fsynced inline).
struct RocksBuilder {
    leader: bool,
}

/// Kept by the suite until a test is over (after it dropped the stores): waits
/// for the WAL syncer, which holds the last RocksDB handle, so the DB is closed
/// before its directory is deleted or the process exits.
struct Guard {
    syncer: Option<SyncerHandle>,
    _dir: TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(s) = self.syncer.take() {
            assert!(
                s.join_blocking(Duration::from_secs(10)),
                "WAL syncer did not stop"
            );
        }
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Guard> for RocksBuilder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("create temp dir");
        let TestLog {
            db,
            metrics,
            log,
            syncer,
            ..
        } = open_log(dir.path(), self.leader);
        let sm = StateMachine::open(
            db,
            dir.path(),
            CellId(1),
            Arc::new(SmShared::default()),
            metrics,
        )
        .expect("open state machine");
        Ok((
            Guard {
                syncer: Some(syncer),
                _dir: dir,
            },
            log,
            sm,
        ))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(RocksBuilder { leader: true }).expect("openraft storage suite passes");
}

#[test]
fn openraft_storage_suite_with_inline_fsync() {
    Suite::test_all(RocksBuilder { leader: false })
        .expect("openraft storage suite passes as a follower's store");
}

/// The role hint picks the fsync path per append, and both complete it: a
/// follower's append is fsynced inside `append` itself (the whole append is
/// done at its first poll, no thread involved), the leader's by the syncer.
#[tokio::test]
async fn the_role_hint_picks_where_an_append_is_fsynced() {
    use openraft::storage::{RaftLogReader, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let dir = tempfile::tempdir().unwrap();
    let TestLog {
        metrics,
        gate,
        leader,
        mut log,
        syncer,
        ..
    } = open_log(dir.path(), false);
    let entry = |index: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    };
    let fsyncs = || metrics.wal_fsync_seconds.get_sample_count();
    for index in 1..=3u64 {
        let mut append = std::pin::pin!(log.blocking_append([entry(index)]));
        let first_poll = append
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            matches!(first_poll, Poll::Ready(Ok(()))),
            "a follower's append waited for another thread"
        );
        assert_eq!(gate.flushed(), index);
        assert_eq!(fsyncs(), index);
    }
    leader.store(true, Ordering::Release);
    for index in 4..=6u64 {
        log.blocking_append([entry(index)]).await.unwrap();
        // The syncer completes the callback first, then counts the fsync.
        gate.wait_past(index - 1, Duration::from_secs(5)).await;
        assert_eq!(
            gate.flushed(),
            index,
            "the syncer made the leader's append durable"
        );
        assert_eq!(fsyncs(), index);
    }
    leader.store(false, Ordering::Release);
    log.blocking_append([entry(7)]).await.unwrap();
    assert_eq!(gate.flushed(), 7);
    let stored = log.try_get_log_entries(1..8).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    drop(log);
    assert!(
        syncer.join(Duration::from_secs(10)).await,
        "WAL syncer did not stop"
    );
}

/// Replication reads a bounded amount per AppendEntries: entries up to
/// `MAX_APPEND_BYTES` in all, never none, and everything when they are small.
#[test]
fn limited_reads_stop_at_the_byte_budget() {
    use openraft::storage::RaftLogReader;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use crate::log_store::{encode, MAX_APPEND_BYTES};
    use crate::types::{Condition, Request, WriteOp};

    let dir = tempfile::tempdir().unwrap();
    let TestLog {
        db,
        mut log,
        syncer,
        ..
    } = open_log(dir.path(), true);
    // Indexes 1..=10 of 1 MiB each, then 11..=20 of 100 bytes, stored the
    // way `append` stores them (openraft's flush callback cannot be built
    // outside openraft).
    let cf = crate::db::cf(&db, crate::db::CF_LOG);
    for index in 1..=20u64 {
        let value_bytes = if index <= 10 { 1 << 20 } else { 100 };
        let e = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::Ops(vec![WriteOp::Put {
                bucket: "b".into(),
                key: format!("k{index}"),
                value: vec![7; value_bytes],
                content_type: None,
                condition: Condition::None,
                modified_ms: 0,
            }])),
        };
        db.put_cf(cf, crate::db::log_key(index), encode(&e).unwrap())
            .unwrap();
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = log.limited_get_log_entries(1, 21).await.unwrap();
        let per_append = MAX_APPEND_BYTES / (1 << 20);
        assert!(
            first.len() < per_append && first.len() + 1 >= per_append,
            "{} entries of 1 MiB in one read of at most {MAX_APPEND_BYTES} bytes",
            first.len()
        );
        assert_eq!(first[0].log_id.index, 1);
        // Walking the range like replication does: never an empty read.
        let (mut next, mut rounds) = (1, 0);
        while next < 21 {
            let got = log.limited_get_log_entries(next, 21).await.unwrap();
            assert!(!got.is_empty(), "an empty read at {next}");
            assert_eq!(got[0].log_id.index, next);
            next = got.last().unwrap().log_id.index + 1;
            rounds += 1;
        }
        assert!(rounds >= 3, "10 MiB of entries read in {rounds} rounds");
        // Small entries come all together; the unlimited read is unchanged.
        assert_eq!(log.limited_get_log_entries(11, 21).await.unwrap().len(), 10);
        assert_eq!(log.try_get_log_entries(1..21).await.unwrap().len(), 20);
    });
    drop(log);
    drop(db);
    assert!(syncer.join_blocking(Duration::from_secs(10)));
}
