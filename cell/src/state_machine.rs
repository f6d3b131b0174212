//! openraft's state machine over the replica's RocksDB: applies committed
//! entries with `objects::decide`, builds snapshots from RocksDB and installs
//! received ones. The API reads objects straight from RocksDB; `SmShared`
//! tells it how far the state machine has applied and whether it is loading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use common::ownership::OwnershipTable;
use common::wire::{IngestBatch, IngestResult, ObjectMeta};
use common::{CellId, HashRange};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::{WriteBatch, DB};

use crate::db::{self, CF_BY_HASH, CF_OBJECTS, CF_SM_META};
use crate::metrics::CellMetrics;
use crate::objects::{self, Mutation};
use crate::snapshot::{
    self, SnapshotDir, SnapshotFile, SM_KEY_APPLIED, SM_KEY_MEMBERSHIP, SM_KEY_OWNERSHIP,
};
use crate::types::{
    Entry, IngestRefused, LogId, OpResult, Request, Response, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig, WriteOp,
};

/// Most objects one purge entry deletes: bounds the entry's apply time and write batch.
pub const MAX_PURGE_LIMIT: u64 = 10_000;

/// What the API needs to know about the state machine without owning it.
#[derive(Default)]
pub struct SmShared {
    /// Index of the last applied entry (0 before any).
    pub applied_index: AtomicU64,
    /// True while a received snapshot replaces the state: reads must not be served.
    pub loading: AtomicBool,
    /// The applied ownership table. Readers clone the `Arc` (one uncontended
    /// read lock per request); the state machine swaps in a new table after
    /// the RocksDB write that persisted it, so a reader never sees a table
    /// newer than the data beside it.
    ownership: RwLock<Arc<OwnershipTable>>,
}

impl SmShared {
    /// The ownership table as of the last applied entry.
    pub fn ownership(&self) -> Arc<OwnershipTable> {
        self.ownership
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_ownership(&self, t: OwnershipTable) {
        *self.ownership.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
    }
}

pub struct StateMachine {
    db: Arc<DB>,
    cell: CellId,
    snapshots: Arc<SnapshotDir>,
    shared: Arc<SmShared>,
    metrics: Arc<CellMetrics>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The ownership record as of `last_applied` (changes are applied here
    /// first, persisted with the entry's batch, then published to `shared`).
    ownership: OwnershipTable,
}

/// Writes of the entries applied since the last commit, not yet in RocksDB.
struct Pending {
    batch: WriteBatch,
    /// Objects written earlier in this batch: later ops must see them.
    overlay: HashMap<Vec<u8>, Option<ObjectMeta>>,
    membership_changed: bool,
    ownership_changed: bool,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            membership_changed: false,
            ownership_changed: false,
        }
    }
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
        let ownership = snapshot::read_ownership(&db)?;
        shared.set_ownership(ownership.clone());
        shared
            .applied_index
            .store(applied.map(|l| l.index).unwrap_or(0), Ordering::Release);
        Ok(StateMachine {
            ownership,
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
        let mut p = Pending::new();
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let resp = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    p.membership_changed = true;
                    Response::None
                }
                EntryPayload::Normal(Request::Ops(ops)) => {
                    Response::Ops(self.apply_ops(&ops, index, &mut p)?)
                }
                EntryPayload::Normal(Request::Ownership(op)) => {
                    let mut t = self.ownership.clone();
                    match t.apply(&op) {
                        Ok(()) => {
                            tracing::info!(?op, epoch = t.epoch, "applied an ownership change");
                            self.ownership = t.clone();
                            p.ownership_changed = true;
                            Response::Ownership(Ok(t))
                        }
                        Err(e) => Response::Ownership(Err(e)),
                    }
                }
                EntryPayload::Normal(Request::Ingest(batch)) => {
                    Response::Ingest(self.apply_ingest(&batch.into(), &mut p)?)
                }
                EntryPayload::Normal(Request::IngestV2(batch)) => {
                    Response::Ingest(self.apply_ingest(&batch, &mut p)?)
                }
                EntryPayload::Normal(Request::Purge { range, limit }) => {
                    // A purge reads the by_hash index: first write what the
                    // entries before it in this batch changed.
                    let before = std::mem::replace(&mut p, Pending::new());
                    self.commit(before)?;
                    let (deleted, more) = self.apply_purge(range, limit, &mut p)?;
                    Response::Purge { deleted, more }
                }
            };
            self.last_applied = Some(entry.log_id);
            out.push(resp);
        }
        self.commit(p)?;
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
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, OwnershipTable)> {
            snapshot::verify_file(&incoming)?;
            // Promote first: if we crash while loading, the next start reloads this file.
            let path = dir.promote(&incoming, &meta2)?;
            snapshot::load_file(&db, &path, meta2.last_log_id, &meta2.last_membership)
        })
        .await
        .map_err(|e| snap_err(std::io::Error::other(e)));
        self.shared.loading.store(false, Ordering::Release);
        let (count, ownership) = res?.map_err(snap_err)?;
        self.ownership = ownership.clone();
        self.shared.set_ownership(ownership);
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

// openraft's `StorageError` is what every storage method returns; boxing it
// here would only add a conversion on the way out.
#[allow(clippy::result_large_err)]
impl StateMachine {
    /// Writes `p` with the applied log id (and membership and ownership if
    /// they changed) in one batch, then publishes the new state to the API.
    fn commit(&mut self, p: Pending) -> Result<(), StorageError> {
        let cf_meta = db::cf(&self.db, CF_SM_META);
        let mut batch = p.batch;
        batch.put_cf(
            cf_meta,
            SM_KEY_APPLIED,
            crate::log_store::encode(&self.last_applied).map_err(sm_err)?,
        );
        if p.membership_changed {
            batch.put_cf(
                cf_meta,
                SM_KEY_MEMBERSHIP,
                crate::log_store::encode(&self.membership).map_err(sm_err)?,
            );
        }
        if p.ownership_changed {
            batch.put_cf(
                cf_meta,
                SM_KEY_OWNERSHIP,
                crate::log_store::encode(&self.ownership).map_err(sm_err)?,
            );
        }
        // No sync: the Raft log is the durable record and is re-applied after a crash.
        self.db.write(batch).map_err(sm_err)?;
        if p.ownership_changed {
            self.shared.set_ownership(self.ownership.clone());
        }
        let idx = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.shared.applied_index.store(idx, Ordering::Release);
        self.metrics.applied_index.set(idx as i64);
        Ok(())
    }

    /// The current metadata of `pkey`, seeing this batch's earlier writes.
    fn current(
        &self,
        p: &Pending,
        pkey: &[u8],
        needed: bool,
    ) -> Result<Option<ObjectMeta>, StorageError> {
        match p.overlay.get(pkey) {
            Some(m) => Ok(m.clone()),
            None if needed => read_meta(&self.db, pkey).map_err(sm_err),
            None => Ok(None),
        }
    }

    /// Client writes: each is checked against the ownership table, then decided by `objects::decide`.
    fn apply_ops(
        &self,
        ops: &[WriteOp],
        index: u64,
        p: &mut Pending,
    ) -> Result<Vec<OpResult>, StorageError> {
        let cf_obj = db::cf(&self.db, CF_OBJECTS);
        let cf_hash = db::cf(&self.db, CF_BY_HASH);
        let mut results = Vec::with_capacity(ops.len());
        for (sub, op) in ops.iter().enumerate() {
            let (bucket, key) = op.bucket_key();
            let hash = common::ring::key_hash(bucket, key);
            if let Some(refused) = objects::write_refusal(self.ownership.access(hash)) {
                results.push(refused);
                continue;
            }
            let pkey = common::ring::placement_key(bucket, key);
            let current = self.current(p, &pkey, objects::needs_current(op))?;
            let (res, mutation) = objects::decide(op, current.as_ref(), index, sub, self.cell);
            match mutation {
                Mutation::None => {}
                Mutation::Put { meta } => {
                    let value = op
                        .put_parts()
                        .expect("decide returns Put only for put ops")
                        .value;
                    p.batch
                        .put_cf(cf_obj, &pkey, objects::encode_object(&meta, value));
                    p.batch.put_cf(
                        cf_hash,
                        objects::hash_index_key(hash, &pkey),
                        objects::hash_index_value(value.len() as u64),
                    );
                    p.overlay.insert(pkey, Some(meta));
                }
                Mutation::Delete => {
                    p.batch.delete_cf(cf_obj, &pkey);
                    p.batch
                        .delete_cf(cf_hash, objects::hash_index_key(hash, &pkey));
                    p.overlay.insert(pkey, None);
                }
            }
            results.push(res);
        }
        Ok(results)
    }

    /// Stores copied objects with their metadata unchanged and deletes the
    /// listed keys, all or nothing: refused if any key is outside an incoming range.
    fn apply_ingest(
        &self,
        b: &IngestBatch,
        p: &mut Pending,
    ) -> Result<Result<IngestResult, IngestRefused>, StorageError> {
        let keys = b
            .items
            .iter()
            .map(|i| (i.bucket.as_str(), i.key.as_str()))
            .chain(b.deletes.iter().map(|(b, k)| (b.as_str(), k.as_str())));
        for (bucket, key) in keys {
            let hash = common::ring::key_hash(bucket, key);
            if !self.ownership.accepts_ingest(hash) {
                return Ok(Err(IngestRefused {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    hash,
                    epoch: self.ownership.epoch,
                }));
            }
        }
        let cf_obj = db::cf(&self.db, CF_OBJECTS);
        let cf_hash = db::cf(&self.db, CF_BY_HASH);
        let mut res = IngestResult::default();
        for item in &b.items {
            let hash = common::ring::key_hash(&item.bucket, &item.key);
            let pkey = common::ring::placement_key(&item.bucket, &item.key);
            p.batch.put_cf(
                cf_obj,
                &pkey,
                objects::encode_object(&item.meta, &item.value),
            );
            p.batch.put_cf(
                cf_hash,
                objects::hash_index_key(hash, &pkey),
                objects::hash_index_value(item.value.len() as u64),
            );
            p.overlay.insert(pkey, Some(item.meta.clone()));
            res.stored += 1;
        }
        for (bucket, key) in &b.deletes {
            let pkey = common::ring::placement_key(bucket, key);
            if self.current(p, &pkey, true)?.is_some() {
                let hash = common::ring::key_hash(bucket, key);
                p.batch.delete_cf(cf_obj, &pkey);
                p.batch
                    .delete_cf(cf_hash, objects::hash_index_key(hash, &pkey));
                p.overlay.insert(pkey, None);
                res.deleted += 1;
            }
        }
        self.metrics.ingested_objects_total.inc_by(res.stored);
        Ok(Ok(res))
    }

    /// Deletes, in hash order, up to `limit` objects of `range` whose hash the
    /// cell `may_purge`. Reads RocksDB as of the previous entry (the caller
    /// committed everything before), so every replica deletes the same keys.
    fn apply_purge(
        &self,
        range: HashRange,
        limit: u64,
        p: &mut Pending,
    ) -> Result<(u64, bool), StorageError> {
        let limit = limit.min(MAX_PURGE_LIMIT);
        let table = &self.ownership;
        let cf_obj = db::cf(&self.db, CF_OBJECTS);
        let cf_hash = db::cf(&self.db, CF_BY_HASH);
        let mut it = self.db.raw_iterator_cf(cf_hash);
        it.seek(range.start.to_be_bytes());
        let (mut deleted, mut more) = (0u64, false);
        while let Some(k) = it.key().map(<[u8]>::to_vec) {
            let Some(hash) = k
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            else {
                return Err(sm_err(std::io::Error::other("short by_hash key")));
            };
            if hash > range.end {
                break;
            }
            if !table.may_purge(hash) {
                // Skip the whole row that keeps this hash (owned, fenced or incoming).
                let row_end = table
                    .entries
                    .iter()
                    .find(|e| e.range.contains(hash))
                    .map(|e| e.range.end);
                match row_end {
                    Some(end) if end < range.end => {
                        it.seek((end + 1).to_be_bytes());
                        continue;
                    }
                    // The rest of the range is kept (or the cell is unmanaged).
                    _ => break,
                }
            }
            if deleted == limit {
                more = true;
                break;
            }
            let pkey = k[8..].to_vec();
            p.batch.delete_cf(cf_obj, &pkey);
            p.batch.delete_cf(cf_hash, &k);
            p.overlay.insert(pkey, None);
            deleted += 1;
            it.next();
        }
        it.status().map_err(sm_err)?;
        self.metrics.purged_objects_total.inc_by(deleted);
        Ok((deleted, more))
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

#[cfg(test)]
mod tests {
    use common::ownership::{Access, OwnershipError, OwnershipOp};
    use common::wire::ScanItem;
    use common::NodeId;
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::io::AsyncWriteExt;

    use std::collections::BTreeSet;

    use super::*;
    use crate::types::Condition;

    struct Replica {
        sm: StateMachine,
        shared: Arc<SmShared>,
        db: Arc<DB>,
        next: u64,
    }

    fn open(dir: &std::path::Path) -> Replica {
        let db = crate::db::open(dir, CellId(1), NodeId(1), 0).unwrap();
        let metrics = Arc::new(CellMetrics::new(prometheus::Registry::new()).unwrap());
        let shared = Arc::new(SmShared::default());
        let sm = StateMachine::open(db.clone(), dir, CellId(1), shared.clone(), metrics).unwrap();
        let next = sm.last_applied.map_or(1, |l| l.index + 1);
        Replica {
            sm,
            shared,
            db,
            next,
        }
    }

    fn entry(index: u64, req: Request) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(req),
        }
    }

    impl Replica {
        /// Applies `reqs` as one apply call (one batch); returns their responses.
        async fn apply_all(&mut self, reqs: Vec<Request>) -> Vec<Response> {
            let entries: Vec<Entry> = reqs
                .into_iter()
                .map(|r| {
                    self.next += 1;
                    entry(self.next - 1, r)
                })
                .collect();
            self.sm.apply(entries).await.unwrap()
        }

        async fn apply(&mut self, req: Request) -> Response {
            self.apply_all(vec![req]).await.pop().unwrap()
        }

        async fn own(&mut self, op: OwnershipOp) -> OwnershipTable {
            match self.apply(Request::Ownership(op)).await {
                Response::Ownership(Ok(t)) => t,
                other => panic!("{other:?}"),
            }
        }

        fn meta(&self, bucket: &str, key: &str) -> Option<ObjectMeta> {
            read_meta(&self.db, &common::ring::placement_key(bucket, key)).unwrap()
        }

        fn keys(&self) -> Vec<Vec<u8>> {
            self.db
                .iterator_cf(db::cf(&self.db, CF_OBJECTS), rocksdb::IteratorMode::Start)
                .map(|kv| kv.unwrap().0.to_vec())
                .collect()
        }
    }

    fn put(key: &str) -> WriteOp {
        WriteOp::Put {
            bucket: "b".into(),
            key: key.into(),
            value: key.as_bytes().to_vec(),
            content_type: None,
            condition: Condition::None,
            modified_ms: 7,
        }
    }

    fn one(h: u64) -> HashRange {
        HashRange { start: h, end: h }
    }

    fn hash(key: &str) -> u64 {
        common::ring::key_hash("b", key)
    }

    #[tokio::test]
    async fn writes_are_checked_against_ownership_when_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path());
        // Unmanaged: everything is served.
        assert!(matches!(
            r.apply(Request::Ops(vec![put("k")])).await,
            Response::Ops(v) if matches!(v[0], OpResult::Stored(_))
        ));
        r.own(OwnershipOp::Assign {
            epoch: 1,
            owned: vec![HashRange::FULL],
        })
        .await;
        let h = hash("k");
        // A fence and a write in the same batch: the write after the fence is refused.
        let out = r
            .apply_all(vec![
                Request::Ops(vec![put("k")]),
                Request::Ownership(OwnershipOp::Fence {
                    epoch: 2,
                    ranges: vec![one(h)],
                    seal: false,
                }),
                Request::Ops(vec![put("k"), put("other")]),
            ])
            .await;
        assert!(matches!(&out[0], Response::Ops(v) if matches!(v[0], OpResult::Stored(_))));
        let Response::Ops(v) = &out[2] else {
            panic!("{out:?}")
        };
        assert_eq!(v[0], OpResult::RangeMoving);
        assert!(matches!(v[1], OpResult::Stored(_)), "{v:?}");
        assert_eq!(r.shared.ownership().access(h), Access::ReadOnly);
        let delete = WriteOp::Delete {
            bucket: "b".into(),
            key: "k".into(),
            condition: Condition::None,
        };
        r.own(OwnershipOp::Fence {
            epoch: 2,
            ranges: vec![one(h)],
            seal: true,
        })
        .await;
        assert_eq!(
            r.apply(Request::Ops(vec![delete.clone()])).await,
            Response::Ops(vec![OpResult::RangeMoving])
        );
        r.own(OwnershipOp::Release {
            epoch: 3,
            ranges: vec![one(h)],
            to: CellId(2),
        })
        .await;
        assert_eq!(
            r.apply(Request::Ops(vec![delete])).await,
            Response::Ops(vec![OpResult::Moved {
                owner: Some(CellId(2)),
                epoch: 3
            }])
        );
        // The object is still there (refused writes changed nothing).
        assert_eq!(r.meta("b", "k").unwrap().version, 3);
        // A refused op changes nothing and says why.
        let before = r.shared.ownership();
        assert!(matches!(
            r.apply(Request::Ownership(OwnershipOp::Own {
                epoch: 3,
                ranges: vec![one(h)]
            }))
            .await,
            Response::Ownership(Err(OwnershipError::WrongState { .. }))
        ));
        assert!(matches!(
            r.apply(Request::Ownership(OwnershipOp::Unfence {
                epoch: 1,
                ranges: vec![one(h)]
            }))
            .await,
            Response::Ownership(Err(OwnershipError::StaleEpoch { .. }))
        ));
        assert_eq!(r.shared.ownership(), before);
        // Persisted with the entries, and loaded again at open.
        assert_eq!(snapshot::read_ownership(&r.db).unwrap(), *before);
        drop(r);
        let r = open(dir.path());
        assert_eq!(r.shared.ownership(), before);
        assert_eq!(r.sm.ownership, *before);
    }

    fn item(key: &str, etag: &str) -> ScanItem {
        ScanItem {
            hash: hash(key),
            bucket: "b".into(),
            key: key.into(),
            meta: ObjectMeta {
                version: 99,
                etag: etag.into(),
                size: 3,
                content_type: Some("text/plain".into()),
                modified_ms: 12345,
                s3: None,
            },
            value: b"abc".to_vec(),
        }
    }

    #[tokio::test]
    async fn ingest_keeps_metadata_and_is_refused_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path());
        // Unmanaged cells accept no ingest.
        let batch = IngestBatch {
            job: "j".into(),
            items: vec![item("in", "5-1-0")],
            deletes: vec![],
        };
        assert!(matches!(
            r.apply(Request::IngestV2(batch.clone())).await,
            Response::Ingest(Err(_))
        ));
        r.own(OwnershipOp::Assign {
            epoch: 1,
            owned: vec![],
        })
        .await;
        r.own(OwnershipOp::Prepare {
            epoch: 2,
            ranges: vec![one(hash("in")), one(hash("gone"))],
        })
        .await;
        // One key outside the incoming ranges: nothing at all is applied.
        let mixed = IngestBatch {
            job: "j".into(),
            items: vec![item("in", "5-1-0"), item("out", "5-2-0")],
            deletes: vec![],
        };
        match r.apply(Request::IngestV2(mixed)).await {
            Response::Ingest(Err(refused)) => {
                assert_eq!((refused.key.as_str(), refused.epoch), ("out", 2))
            }
            other => panic!("{other:?}"),
        }
        assert!(r.meta("b", "in").is_none());
        assert_eq!(
            r.apply(Request::IngestV2(batch)).await,
            Response::Ingest(Ok(IngestResult {
                stored: 1,
                deleted: 0
            }))
        );
        assert_eq!(r.meta("b", "in").unwrap(), item("in", "5-1-0").meta);
        // An entry an older build logged (v1 layout) still applies.
        let old = common::wire::v1::IngestBatch {
            job: "old".into(),
            items: vec![common::wire::v1::ScanItem {
                hash: hash("in"),
                bucket: "b".into(),
                key: "in".into(),
                meta: common::wire::v1::ObjectMeta {
                    version: 9,
                    etag: "5-9-0".into(),
                    size: 3,
                    content_type: None,
                    modified_ms: 1,
                },
                value: b"abc".to_vec(),
            }],
            deletes: vec![],
        };
        let entry = crate::log_store::encode(&Request::Ingest(old)).unwrap();
        let decoded: Request = crate::log_store::decode(&entry).unwrap();
        assert!(matches!(
            r.apply(decoded).await,
            Response::Ingest(Ok(IngestResult { stored: 1, .. }))
        ));
        assert_eq!(r.meta("b", "in").unwrap().etag, "5-9-0");
        r.apply(Request::IngestV2(IngestBatch {
            job: "j".into(),
            items: vec![item("in", "5-1-0")],
            deletes: vec![],
        }))
        .await;
        // Deleting keys that exist (and ignoring those that do not).
        let del = IngestBatch {
            job: "j".into(),
            items: vec![item("gone", "5-3-0")],
            deletes: vec![("b".into(), "in".into()), ("b".into(), "gone".into())],
        };
        assert_eq!(
            r.apply(Request::IngestV2(del)).await,
            Response::Ingest(Ok(IngestResult {
                stored: 1,
                deleted: 2
            }))
        );
        assert!(r.keys().is_empty());
        // Clients are refused in incoming ranges.
        assert_eq!(
            r.apply(Request::Ops(vec![put("in")])).await,
            Response::Ops(vec![OpResult::Moved {
                owner: None,
                epoch: 2
            }])
        );
    }

    #[tokio::test]
    async fn purge_deletes_only_purgeable_keys_the_same_on_every_replica() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(&dir.path().join("a"));
        let mut b = open(&dir.path().join("b"));
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let mid = u64::MAX / 2;
        let kept: BTreeSet<String> = keys.iter().filter(|k| hash(k) <= mid).cloned().collect();
        for r in [&mut a, &mut b] {
            // Writes and the ownership change in one batch, then purge pages
            // in the same batch as more writes: the purge must see them.
            r.apply_all(vec![
                Request::Ops(keys[..150].iter().map(|k| put(k)).collect()),
                Request::Ownership(OwnershipOp::Assign {
                    epoch: 1,
                    owned: vec![HashRange { start: 0, end: mid }],
                }),
            ])
            .await;
            // Writes to what the cell no longer owns are refused.
            let out = r
                .apply(Request::Ops(keys[150..].iter().map(|k| put(k)).collect()))
                .await;
            let Response::Ops(v) = out else {
                panic!("{out:?}")
            };
            for (k, o) in keys[150..].iter().zip(v) {
                assert_eq!(
                    matches!(o, OpResult::Stored(_)),
                    kept.contains(k),
                    "{k}: {o:?}"
                );
            }
        }
        let mut pages = Vec::new();
        loop {
            let (ra, rb) = (
                a.apply(Request::Purge {
                    range: HashRange::FULL,
                    limit: 7,
                })
                .await,
                b.apply(Request::Purge {
                    range: HashRange::FULL,
                    limit: 7,
                })
                .await,
            );
            assert_eq!(ra, rb);
            assert_eq!(a.keys(), b.keys(), "replicas diverged");
            let Response::Purge { deleted, more } = ra else {
                panic!("{ra:?}")
            };
            assert!(deleted <= 7);
            pages.push(deleted);
            if !more {
                break;
            }
        }
        let left: BTreeSet<String> = a
            .keys()
            .iter()
            .map(|k| objects::split_placement_key(k).unwrap().1.to_owned())
            .collect();
        assert_eq!(left, kept);
        let purged: u64 = pages.iter().sum();
        let unowned_written = keys[..150].iter().filter(|k| !kept.contains(*k)).count();
        assert_eq!(purged as usize, unowned_written);
        // Nothing more to purge; the by_hash index follows the objects.
        assert_eq!(
            a.apply(Request::Purge {
                range: HashRange::FULL,
                limit: 7
            })
            .await,
            Response::Purge {
                deleted: 0,
                more: false
            }
        );
        let indexed =
            a.db.iterator_cf(db::cf(&a.db, CF_BY_HASH), rocksdb::IteratorMode::Start)
                .count();
        assert_eq!(indexed, kept.len());
    }

    #[tokio::test]
    async fn unmanaged_cells_never_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path());
        r.apply(Request::Ops(vec![put("a"), put("b")])).await;
        assert_eq!(
            r.apply(Request::Purge {
                range: HashRange::FULL,
                limit: 100
            })
            .await,
            Response::Purge {
                deleted: 0,
                more: false
            }
        );
        assert_eq!(r.keys().len(), 2);
    }

    #[tokio::test]
    async fn snapshots_carry_the_ownership_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(&dir.path().join("a"));
        a.apply(Request::Ops(vec![put("x"), put("y")])).await;
        let table = a
            .own(OwnershipOp::Assign {
                epoch: 5,
                owned: vec![HashRange { start: 10, end: 20 }],
            })
            .await;
        let snap =
            a.sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        let bytes = std::fs::read(snap.snapshot.path()).unwrap();

        let mut b = open(&dir.path().join("b"));
        assert!(!b.shared.ownership().managed);
        let mut file = b.sm.begin_receiving_snapshot().await.unwrap();
        file.write_all(&bytes).await.unwrap();
        b.sm.install_snapshot(&snap.meta, file).await.unwrap();
        assert_eq!(*b.shared.ownership(), table);
        assert_eq!(b.sm.ownership, table);
        assert_eq!(b.keys(), a.keys());
        assert_eq!(snapshot::read_ownership(&b.db).unwrap(), table);
        // And after a restart.
        drop(b);
        let b = open(&dir.path().join("b"));
        assert_eq!(*b.shared.ownership(), table);
    }
}
