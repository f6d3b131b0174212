//! Snapshot files: built by iterating a RocksDB snapshot of the `objects`
//! column family, streamed to peers in chunks by openraft, verified and loaded
//! back into RocksDB on install. The state is never serialized in memory whole.
//!
//! File layout: `CKVSNAP2`, then records `[u32 klen][key][u32 vlen][value]`
//! (little-endian lengths), then `[u32 0xFFFFFFFF][u64 count][u64 xxh3]` where
//! xxh3 covers every record byte. The first record has an empty key (no
//! placement key is empty) and carries the cell's `OwnershipTable`; the
//! others are objects. `CKVSNAP1` files (no table: an unmanaged cell) still load. `snapshots/current.json` names the current
//! file and its `SnapshotMeta`; both are replaced by write-fsync-rename.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use common::ownership::OwnershipTable;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use xxhash_rust::xxh3::Xxh3;

use crate::db::{self, CF_BY_HASH, CF_OBJECTS, CF_SM_META, KEY_SPACE_END};
use crate::objects;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"CKVSNAP2";
/// Files written before snapshots carried the ownership table.
const MAGIC_V1: &[u8; 8] = b"CKVSNAP1";
const TRAILER_MARK: u32 = u32::MAX;
/// Records per RocksDB write batch while loading a snapshot: bounds memory, keeps batches efficient.
const LOAD_BATCH_BYTES: usize = 8 << 20;

pub const SM_KEY_APPLIED: &[u8] = b"last_applied";
pub const SM_KEY_MEMBERSHIP: &[u8] = b"membership";
/// The cell's `OwnershipTable` (absent: unmanaged).
pub const SM_KEY_OWNERSHIP: &[u8] = b"ownership";

/// A snapshot file handle that remembers its path (openraft hands us back only the handle).
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn open_read(path: PathBuf) -> std::io::Result<SnapshotFile> {
        let file = tokio::fs::File::open(&path).await?;
        Ok(SnapshotFile { file, path })
    }

    async fn create(path: PathBuf) -> std::io::Result<SnapshotFile> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(SnapshotFile { file, path })
    }

    pub async fn sync(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, pos: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(pos)
    }
    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

#[derive(Serialize, Deserialize)]
struct Current {
    file: String,
    meta: SnapshotMeta,
}

/// The replica's `snapshots/` directory.
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn new(data_dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: data_dir.join("snapshots"),
        }
    }

    /// Removes partial files a crash left behind (nothing builds or receives
    /// snapshots before the replica has started).
    pub fn remove_partial_files(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let n = entry.file_name();
            let n = n.to_string_lossy();
            if n.starts_with("build-") || n.starts_with("incoming-") || n.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// The current snapshot's metadata and path, if there is one.
    pub fn current(&self) -> std::io::Result<Option<(SnapshotMeta, PathBuf)>> {
        match std::fs::read(self.dir.join("current.json")) {
            Ok(b) => {
                let c: Current = serde_json::from_slice(&b).map_err(std::io::Error::other)?;
                Ok(Some((c.meta, self.dir.join(c.file))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn new_incoming(&self) -> std::io::Result<SnapshotFile> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        SnapshotFile::create(self.dir.join(format!("incoming-{nanos}.bin"))).await
    }

    /// Makes the complete file at `path` the current snapshot, then removes older files.
    pub fn promote(&self, path: &Path, meta: &SnapshotMeta) -> std::io::Result<PathBuf> {
        let name = format!("snap-{}.bin", meta.snapshot_id);
        let final_path = self.dir.join(&name);
        std::fs::rename(path, &final_path)?;
        let cur = Current {
            file: name.clone(),
            meta: meta.clone(),
        };
        service::write_file_durably(
            &self.dir.join("current.json"),
            &serde_json::to_vec(&cur).map_err(std::io::Error::other)?,
        )?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let n = entry.file_name();
            let n = n.to_string_lossy();
            // Only older complete snapshots: a `build-*` or `incoming-*` file may
            // belong to a snapshot being built or received right now.
            if n != name && n.starts_with("snap-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(final_path)
    }

    pub fn build_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("build-{id}.bin"))
    }
}

/// Reads the applied log id and membership stored in the state machine.
pub fn read_sm_meta(db: &DB) -> std::io::Result<(Option<LogId>, StoredMembership)> {
    let cf = db::cf(db, CF_SM_META);
    let applied = match db
        .get_pinned_cf(cf, SM_KEY_APPLIED)
        .map_err(std::io::Error::other)?
    {
        Some(b) => crate::log_store::decode(&b)?,
        None => None,
    };
    let membership = match db
        .get_pinned_cf(cf, SM_KEY_MEMBERSHIP)
        .map_err(std::io::Error::other)?
    {
        Some(b) => crate::log_store::decode(&b)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Reads the ownership table stored in the state machine (default: unmanaged).
pub fn read_ownership(db: &DB) -> std::io::Result<OwnershipTable> {
    match db
        .get_pinned_cf(db::cf(db, CF_SM_META), SM_KEY_OWNERSHIP)
        .map_err(std::io::Error::other)?
    {
        Some(b) => crate::log_store::decode(&b),
        None => Ok(OwnershipTable::default()),
    }
}

/// Writes the ownership table and objects of a consistent RocksDB snapshot to
/// `path`; returns the applied log id and membership the file corresponds to
/// and the number of objects. Blocking: run off the async workers.
pub fn build_file(db: &DB, path: &Path) -> std::io::Result<(Option<LogId>, StoredMembership, u64)> {
    let snap = db.snapshot();
    let cf_meta = db::cf(db, CF_SM_META);
    let get = |k: &[u8]| snap.get_cf(cf_meta, k).map_err(std::io::Error::other);
    let applied: Option<LogId> = match get(SM_KEY_APPLIED)? {
        Some(b) => crate::log_store::decode(&b)?,
        None => None,
    };
    let membership: StoredMembership = match get(SM_KEY_MEMBERSHIP)? {
        Some(b) => crate::log_store::decode(&b)?,
        None => StoredMembership::default(),
    };
    let ownership: OwnershipTable = match get(SM_KEY_OWNERSHIP)? {
        Some(b) => crate::log_store::decode(&b)?,
        None => OwnershipTable::default(),
    };
    let f = std::fs::File::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(MAGIC)?;
    let mut hasher = Xxh3::new();
    let mut count = 0u64;
    let mut record = |k: &[u8], v: &[u8]| -> std::io::Result<()> {
        for part in [k, v] {
            let len = (part.len() as u32).to_le_bytes();
            hasher.update(&len);
            hasher.update(part);
            w.write_all(&len)?;
            w.write_all(part)?;
        }
        count += 1;
        Ok(())
    };
    record(b"", &crate::log_store::encode(&ownership)?)?;
    let cf = db::cf(db, CF_OBJECTS);
    for item in snap.iterator_cf(cf, IteratorMode::Start) {
        let (k, v) = item.map_err(std::io::Error::other)?;
        record(&k, &v)?;
    }
    let objects = count - 1;
    w.write_all(&TRAILER_MARK.to_le_bytes())?;
    w.write_all(&count.to_le_bytes())?;
    w.write_all(&hasher.digest().to_le_bytes())?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((applied, membership, objects))
}

/// Visits every record of a snapshot file, then checks its trailer.
fn for_each_record(
    path: &Path,
    mut f: impl FnMut(Vec<u8>, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let corrupt = |m: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot {}: {m}", path.display()),
        )
    };
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC && &magic != MAGIC_V1 {
        return Err(corrupt("bad magic"));
    }
    let mut hasher = Xxh3::new();
    let mut count = 0u64;
    let mut len = [0u8; 4];
    loop {
        r.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
        let klen = u32::from_le_bytes(len);
        if klen == TRAILER_MARK {
            break;
        }
        hasher.update(&len);
        let mut k = vec![0u8; klen as usize];
        r.read_exact(&mut k).map_err(|_| corrupt("truncated key"))?;
        hasher.update(&k);
        r.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
        hasher.update(&len);
        let vlen = u32::from_le_bytes(len) as usize;
        if vlen > (1 << 30) {
            return Err(corrupt("record too large"));
        }
        let mut v = vec![0u8; vlen];
        r.read_exact(&mut v)
            .map_err(|_| corrupt("truncated value"))?;
        hasher.update(&v);
        f(k, v)?;
        count += 1;
    }
    let mut trailer = [0u8; 16];
    r.read_exact(&mut trailer)
        .map_err(|_| corrupt("truncated trailer"))?;
    let want_count = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let want_hash = u64::from_le_bytes(trailer[8..].try_into().expect("8 bytes"));
    if want_count != count || want_hash != hasher.digest() {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(count)
}

/// Checks a snapshot file end to end without loading it.
pub fn verify_file(path: &Path) -> std::io::Result<u64> {
    for_each_record(path, |_, _| Ok(()))
}

/// Replaces the state machine's objects with the file's, then records `applied`,
/// `membership` and the file's ownership table in the same final (synced)
/// batch. Idempotent: a crash midway leaves the old applied id, so the load is
/// redone at the next start. Returns the number of objects and the table.
pub fn load_file(
    db: &Arc<DB>,
    path: &Path,
    applied: Option<LogId>,
    membership: &StoredMembership,
) -> std::io::Result<(u64, OwnershipTable)> {
    verify_file(path)?;
    let cf_obj = db::cf(db, CF_OBJECTS);
    let cf_hash = db::cf(db, CF_BY_HASH);
    let cf_meta = db::cf(db, CF_SM_META);
    let io = std::io::Error::other;
    let mut wipe = WriteBatch::default();
    wipe.delete_range_cf(cf_obj, &b""[..], &KEY_SPACE_END[..]);
    wipe.delete_range_cf(cf_hash, &b""[..], &KEY_SPACE_END[..]);
    db.write(wipe).map_err(io)?;
    let mut batch = WriteBatch::default();
    let mut ownership = OwnershipTable::default();
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut objects_loaded = 0u64;
    for_each_record(path, |k, v| {
        if k.is_empty() {
            ownership = crate::log_store::decode(&v)?;
            return Ok(());
        }
        let (bucket, key) =
            objects::split_placement_key(&k).ok_or_else(|| bad("bad placement key in snapshot"))?;
        let hash = common::ring::key_hash(bucket, key);
        let (meta, _) = objects::decode_object(&v).map_err(|e| bad(&e.to_string()))?;
        batch.put_cf(
            cf_hash,
            objects::hash_index_key(hash, &k),
            objects::hash_index_value(meta.size),
        );
        batch.put_cf(cf_obj, &k, &v);
        objects_loaded += 1;
        if batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            db.write(std::mem::take(&mut batch)).map_err(io)?;
        }
        Ok(())
    })?;
    batch.put_cf(cf_meta, SM_KEY_APPLIED, crate::log_store::encode(&applied)?);
    batch.put_cf(
        cf_meta,
        SM_KEY_MEMBERSHIP,
        crate::log_store::encode(membership)?,
    );
    batch.put_cf(
        cf_meta,
        SM_KEY_OWNERSHIP,
        crate::log_store::encode(&ownership)?,
    );
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io)?;
    Ok((objects_loaded, ownership))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{CellId, NodeId};

    #[test]
    fn build_verify_load_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::open(&dir.path().join("a"), CellId(1), NodeId(1), 0).unwrap();
        let cf = db::cf(&db, CF_OBJECTS);
        for i in 0..1000u32 {
            let pk = common::ring::placement_key("bkt", &format!("k{i}"));
            let meta = common::wire::ObjectMeta {
                version: u64::from(i),
                etag: format!("1-{i}-0"),
                size: 100,
                content_type: None,
                modified_ms: 1,
                s3: None,
            };
            db.put_cf(cf, &pk, objects::encode_object(&meta, &[i as u8; 100]))
                .unwrap();
        }
        // The ownership table travels with the objects.
        let mut table = OwnershipTable::default();
        table
            .apply(&common::ownership::OwnershipOp::Assign {
                epoch: 4,
                owned: vec![common::HashRange { start: 0, end: 99 }],
            })
            .unwrap();
        db.put_cf(
            db::cf(&db, CF_SM_META),
            SM_KEY_OWNERSHIP,
            crate::log_store::encode(&table).unwrap(),
        )
        .unwrap();
        let f = dir.path().join("s.bin");
        let (applied, _, count) = build_file(&db, &f).unwrap();
        assert_eq!((applied, count), (None, 1000));
        // Objects plus the ownership record.
        assert_eq!(verify_file(&f).unwrap(), 1001);

        let db2 = db::open(&dir.path().join("b"), CellId(1), NodeId(2), 0).unwrap();
        // Stale data in the target must disappear.
        db2.put_cf(
            db::cf(&db2, CF_OBJECTS),
            common::ring::placement_key("bkt", "stale"),
            b"x",
        )
        .unwrap();
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 77));
        assert_eq!(read_ownership(&db2).unwrap(), OwnershipTable::default());
        assert_eq!(
            load_file(&db2, &f, applied, &StoredMembership::default()).unwrap(),
            (1000, table.clone())
        );
        assert_eq!(read_ownership(&db2).unwrap(), table);
        // The by_hash index records each object's size.
        let sizes: u64 = db2
            .iterator_cf(db::cf(&db2, CF_BY_HASH), IteratorMode::Start)
            .map(|kv| objects::decode_hash_index_value(&kv.unwrap().1).unwrap())
            .sum();
        assert_eq!(sizes, 100 * 1000);
        let cf2 = db::cf(&db2, CF_OBJECTS);
        assert_eq!(db2.iterator_cf(cf2, IteratorMode::Start).count(), 1000);
        assert_eq!(
            db2.iterator_cf(db::cf(&db2, CF_BY_HASH), IteratorMode::Start)
                .count(),
            1000
        );
        assert!(db2
            .get_cf(cf2, common::ring::placement_key("bkt", "stale"))
            .unwrap()
            .is_none());
        assert_eq!(read_sm_meta(&db2).unwrap().0, applied);

        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&f, &bytes).unwrap();
        assert!(verify_file(&f).is_err());
        bytes.truncate(mid);
        std::fs::write(&f, &bytes).unwrap();
        assert!(verify_file(&f).is_err());
    }
}
