//! openraft's state machine over the replica's RocksDB: applies committed
//! entries with `objects::decide`, builds snapshots from RocksDB and installs
//! received ones. The API reads objects straight from RocksDB; `SmShared`
//! tells it how far the state machine has applied and whether it is loading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::wire::ObjectMeta;
use common::CellId;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::{WriteBatch, DB};

use crate::db::{self, CF_BY_HASH, CF_OBJECTS, CF_SM_META};
use crate::metrics::CellMetrics;
use crate::objects::{self, Mutation};
use crate::snapshot::{self, SnapshotDir, SnapshotFile, SM_KEY_APPLIED, SM_KEY_MEMBERSHIP};
use crate::types::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig, WriteOp,
};

/// What the API needs to know about the state machine without owning it.
#[derive(Default)]
pub struct SmShared {
    /// Index of the last applied entry (0 before any).
    pub applied_index: AtomicU64,
    /// True while a received snapshot replaces the state: reads must not be served.
    pub loading: AtomicBool,
}

pub struct StateMachine {
    db: Arc<DB>,
    cell: CellId,
    snapshots: Arc<SnapshotDir>,
    shared: Arc<SmShared>,
    metrics: Arc<CellMetrics>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Opens the state machine, first finishing any snapshot install a crash interrupted.
    pub fn open(
        db: Arc<DB>,
        data_dir: &std::path::Path,
        cell: CellId,
        shared: Arc<SmShared>,
        metrics: Arc<CellMetrics>,
    ) -> std::io::Result<StateMachine> {
        let snapshots = Arc::new(SnapshotDir::new(data_dir));
        snapshots.remove_partial_files()?;
        let (mut applied, mut membership) = snapshot::read_sm_meta(&db)?;
        if let Some((meta, path)) = snapshots.current()? {
            if meta.last_log_id > applied {
                tracing::info!(snapshot = %meta.snapshot_id, "state is behind the current snapshot; loading it");
                snapshot::load_file(&db, &path, meta.last_log_id, &meta.last_membership)?;
                applied = meta.last_log_id;
                membership = meta.last_membership.clone();
            }
        }
        shared
            .applied_index
            .store(applied.map(|l| l.index).unwrap_or(0), Ordering::Release);
        Ok(StateMachine {
            db,
            cell,
            snapshots,
            shared,
            metrics,
            last_applied: applied,
            membership,
        })
    }
}

/// Reads an object's metadata, if it exists.
pub fn read_meta(db: &DB, pkey: &[u8]) -> Result<Option<ObjectMeta>, std::io::Error> {
    match db
        .get_pinned_cf(db::cf(db, CF_OBJECTS), pkey)
        .map_err(std::io::Error::other)?
    {
        Some(buf) => Ok(Some(
            objects::decode_object(&buf)
                .map_err(std::io::Error::other)?
                .0,
        )),
        None => Ok(None),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf_obj = db::cf(&self.db, CF_OBJECTS);
        let cf_hash = db::cf(&self.db, CF_BY_HASH);
        let cf_meta = db::cf(&self.db, CF_SM_META);
        let mut batch = WriteBatch::default();
        // Objects written earlier in this batch: later ops must see them.
        let mut overlay: HashMap<Vec<u8>, Option<ObjectMeta>> = HashMap::new();
        let mut out = Vec::new();
        let mut membership_changed = false;
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response::None),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                    out.push(Response::None);
                }
                EntryPayload::Normal(req) => {
                    let mut results = Vec::with_capacity(req.ops.len());
                    for (sub, op) in req.ops.iter().enumerate() {
                        let (bucket, key) = op.bucket_key();
                        let pkey = common::ring::placement_key(bucket, key);
                        let current = match overlay.get(&pkey) {
                            Some(m) => m.clone(),
                            None if objects::needs_current(op) => {
                                read_meta(&self.db, &pkey).map_err(sm_err)?
                            }
                            None => None,
                        };
                        let (res, mutation) = objects::decide(
                            op,
                            current.as_ref(),
                            entry.log_id.index,
                            sub,
                            self.cell,
                        );
                        let hash_key =
                            || objects::hash_index_key(common::ring::key_hash(bucket, key), &pkey);
                        match mutation {
                            Mutation::None => {}
                            Mutation::Put { meta } => {
                                let WriteOp::Put { value, .. } = op else {
                                    unreachable!("decide returns Put only for put ops")
                                };
                                batch.put_cf(cf_obj, &pkey, objects::encode_object(&meta, value));
                                batch.put_cf(cf_hash, hash_key(), b"");
                                overlay.insert(pkey, Some(meta));
                            }
                            Mutation::Delete => {
                                batch.delete_cf(cf_obj, &pkey);
                                batch.delete_cf(cf_hash, hash_key());
                                overlay.insert(pkey, None);
                            }
                        }
                        results.push(res);
                    }
                    out.push(Response::Ops(results));
                }
            }
        }
        batch.put_cf(
            cf_meta,
            SM_KEY_APPLIED,
            crate::log_store::encode(&self.last_applied).map_err(sm_err)?,
        );
        if membership_changed {
            batch.put_cf(
                cf_meta,
                SM_KEY_MEMBERSHIP,
                crate::log_store::encode(&self.membership).map_err(sm_err)?,
            );
        }
        // No sync: the Raft log is the durable record and is re-applied after a crash.
        self.db.write(batch).map_err(sm_err)?;
        let idx = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.shared.applied_index.store(idx, Ordering::Release);
        self.metrics.applied_index.set(idx as i64);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            metrics: self.metrics.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        Ok(Box::new(
            self.snapshots.new_incoming().await.map_err(snap_err)?,
        ))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let t = std::time::Instant::now();
        snapshot.sync().await.map_err(snap_err)?;
        let incoming = snapshot.path().to_owned();
        drop(snapshot);
        let db = self.db.clone();
        let dir = self.snapshots.clone();
        let meta2 = meta.clone();
        self.shared.loading.store(true, Ordering::Release);
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            snapshot::verify_file(&incoming)?;
            // Promote first: if we crash while loading, the next start reloads this file.
            let path = dir.promote(&incoming, &meta2)?;
            snapshot::load_file(&db, &path, meta2.last_log_id, &meta2.last_membership)
        })
        .await
        .map_err(|e| snap_err(std::io::Error::other(e)));
        self.shared.loading.store(false, Ordering::Release);
        let count = res?.map_err(snap_err)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let idx = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.shared.applied_index.store(idx, Ordering::Release);
        self.metrics.applied_index.set(idx as i64);
        self.metrics.snapshots_installed_total.inc();
        tracing::info!(snapshot = %meta.snapshot_id, objects = count, took = ?t.elapsed(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, path)) = self.snapshots.current().map_err(snap_err)? else {
            return Ok(None);
        };
        let file = SnapshotFile::open_read(path).await.map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Builds a snapshot file from a consistent RocksDB snapshot, off the async workers.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshots: Arc<SnapshotDir>,
    metrics: Arc<CellMetrics>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let t = std::time::Instant::now();
        let db = self.db.clone();
        let dir = self.snapshots.clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let tmp = dir.build_path(&nanos.to_string());
        let (meta, path, count) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let (applied, membership, count) = snapshot::build_file(&db, &tmp)?;
            let id = match applied {
                Some(l) => format!(
                    "{}-{}-{}-{nanos}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("0-0-0-{nanos}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id: id,
            };
            let path = dir.promote(&tmp, &meta)?;
            Ok((meta, path, count))
        })
        .await
        .map_err(|e| snap_err(std::io::Error::other(e)))?
        .map_err(snap_err)?;
        self.metrics
            .snapshot_build_seconds
            .observe(t.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta.snapshot_id, objects = count, took = ?t.elapsed(), "built snapshot");
        let file = SnapshotFile::open_read(path).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}
