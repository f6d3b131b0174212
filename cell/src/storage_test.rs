//! openraft's storage conformance suite against the RocksDB log store and
//! state machine, each run in a fresh `TempDir`.

use std::sync::atomic::AtomicU64;
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

struct RocksBuilder;

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
        let db = crate::db::open(dir.path(), CellId(1), NodeId(1), 0).expect("open rocksdb");
        let metrics = Arc::new(CellMetrics::new(prometheus::Registry::new()).expect("metrics"));
        let (log, syncer) = LogStore::new(
            db.clone(),
            Durability::Fsync,
            metrics.clone(),
            Arc::new(AtomicU64::new(0)),
            Arc::new(crate::log_store::FlushGate::default()),
        );
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
    Suite::test_all(RocksBuilder).expect("openraft storage suite passes");
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
    let db = crate::db::open(dir.path(), CellId(1), NodeId(1), 0).unwrap();
    let metrics = Arc::new(CellMetrics::new(prometheus::Registry::new()).unwrap());
    let (mut log, syncer) = LogStore::new(
        db.clone(),
        Durability::Fsync,
        metrics,
        Arc::new(AtomicU64::new(0)),
        Arc::new(crate::log_store::FlushGate::default()),
    );
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
