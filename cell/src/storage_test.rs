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
