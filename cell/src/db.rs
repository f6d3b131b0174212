//! Opens a replica's RocksDB and owns its layout: the column families, their
//! key encodings, and the identity file that ties a data dir to one replica.
//! Everything persistent about a replica lives under its `data_dir`.
//!
//! ```text
//! data_dir/
//!   identity.json     {cell_id, node_id}: refuses to serve another replica's data
//!   rocksdb/          CFs: log, raft_meta, objects, by_hash, sm_meta
//!   snapshots/        current.json + snap-<term>-<index>.bin (streamed to peers)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{CellId, NodeId};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};

/// Raft log entries, keyed by big-endian index (so iteration order is log order).
pub const CF_LOG: &str = "log";
/// Vote, committed and last-purged log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// Objects, keyed by the placement key `[bucket len][bucket][key]` (sorted listing).
pub const CF_OBJECTS: &str = "objects";
/// Index `[xxh3 hash BE][placement key]` → value size (u64 LE; empty in older stores), for hash-range scans and range stats.
pub const CF_BY_HASH: &str = "by_hash";
/// State-machine bookkeeping: last applied log id, membership and the ownership table.
pub const CF_SM_META: &str = "sm_meta";

pub const ALL_CFS: [&str; 5] = [CF_LOG, CF_RAFT_META, CF_OBJECTS, CF_BY_HASH, CF_SM_META];

/// Obsolete WAL files kept for reuse (see `open`); each is about as large as
/// the WAL written between two memtable flushes.
pub const WAL_FILES_TO_RECYCLE: usize = 2;

/// Exclusive upper bound above every key of `log` (8-byte keys) and of
/// `by_hash`/`objects` (whose 9th/1st byte is a bucket length ≤ 63).
pub const KEY_SPACE_END: [u8; 9] = [0xff; 9];

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data dir {path} is not usable: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} belongs to cell {found_cell} node {found_node}, but this replica is cell {cell} node {node}; point --data-dir at this replica's own directory")]
    WrongReplica {
        path: PathBuf,
        found_cell: CellId,
        found_node: NodeId,
        cell: CellId,
        node: NodeId,
    },
    #[error("data dir {path} has an identity file but no RocksDB store: the data was lost or moved; restore it, or wipe the dir and re-add this replica to its cell")]
    MissingStore { path: PathBuf },
    #[error("identity file {path} is corrupt: {why}")]
    BadIdentity { path: PathBuf, why: String },
    #[error("RocksDB at {path} could not be opened ({kind}): {message}. If it is corrupt, wipe this replica's data dir and re-add it to its cell; its peers hold the data")]
    Rocks {
        path: PathBuf,
        kind: String,
        message: String,
    },
    #[error(
        "only {free} bytes free on the disk of {path} (minimum {min}); free space before starting"
    )]
    DiskFull { path: PathBuf, free: u64, min: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    cell_id: CellId,
    node_id: NodeId,
}

/// Free bytes available to unprivileged writers on the filesystem holding `path`.
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory
    // of the right type; statvfs only writes into it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some); u64 on Linux x86_64.
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Opens (creating on first start) the replica's store under `data_dir`.
pub fn open(
    data_dir: &Path,
    cell: CellId,
    node: NodeId,
    min_free: u64,
) -> Result<Arc<DB>, OpenError> {
    let io = |source| OpenError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let free = free_disk_bytes(data_dir).map_err(io)?;
    if free < min_free {
        return Err(OpenError::DiskFull {
            path: data_dir.to_owned(),
            free,
            min: min_free,
        });
    }
    let id_path = data_dir.join("identity.json");
    let store = data_dir.join("rocksdb");
    match std::fs::read(&id_path) {
        Ok(bytes) => {
            let id: Identity =
                serde_json::from_slice(&bytes).map_err(|e| OpenError::BadIdentity {
                    path: id_path.clone(),
                    why: e.to_string(),
                })?;
            if id.cell_id != cell || id.node_id != node {
                return Err(OpenError::WrongReplica {
                    path: data_dir.to_owned(),
                    found_cell: id.cell_id,
                    found_node: id.node_id,
                    cell,
                    node,
                });
            }
            if !store.join("CURRENT").exists() {
                return Err(OpenError::MissingStore {
                    path: data_dir.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store.exists() {
                return Err(OpenError::BadIdentity {
                    path: id_path,
                    why: "missing while a RocksDB store exists".into(),
                });
            }
            let id = Identity {
                cell_id: cell,
                node_id: node,
            };
            let body = serde_json::to_vec_pretty(&id).expect("identity serializes");
            service::write_file_durably(&id_path, &body).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir.join("snapshots")).map_err(io)?;

    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    // Two background jobs: the machines we target have two cores.
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    // The WAL is synced by the log store's group-commit thread, never per write.
    opts.set_manual_wal_flush(false);
    // Slowly filling column families (by_hash, metadata) pin old WAL files;
    // past this total RocksDB flushes them so old WALs can be deleted (WALs
    // reached ~1 GB in a 30 s write test without a bound). 256 MiB forced
    // flushes so often that write p99 tripled; 1 GiB is reached only by
    // sustained load, where the forced flushes are small.
    opts.set_max_total_wal_size(1 << 30);
    // Write the WAL over the blocks of obsolete WAL files instead of new ones.
    // An fdatasync after appending to a new file must also commit the file's
    // new size and extents to the filesystem journal; over blocks already
    // written it flushes only the data. On these disks that took the leader's
    // group-commit fsync under load from ~330 µs to ~220 µs (ADR 0012). Two
    // files suffice: with atomic flush below, a WAL is obsolete at the first
    // flush after it is replaced.
    opts.set_recycle_log_file_num(WAL_FILES_TO_RECYCLE);
    // Flush every column family together, so no small one (raft_meta, sm_meta)
    // pins old WAL files until `max_total_wal_size` forces it: recycling then
    // starts after the second memtable flush instead of after 1 GiB of WAL.
    opts.set_atomic_flush(true);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut o = Options::default();
        if *name == CF_OBJECTS {
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        }
        ColumnFamilyDescriptor::new(*name, o)
    });
    let db = DB::open_cf_descriptors(&opts, &store, cfs).map_err(|e| OpenError::Rocks {
        path: store.clone(),
        kind: format!("{:?}", e.kind()),
        message: e.into_string(),
    })?;
    for name in ALL_CFS {
        if db.cf_handle(name).is_none() {
            return Err(OpenError::Rocks {
                path: store,
                kind: "MissingColumnFamily".into(),
                message: format!("column family {name} is missing"),
            });
        }
    }
    Ok(Arc::new(db))
}

/// The handle of a column family that `open` checked exists.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are checked when the store is opened")
}

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reopens_and_refuses_other_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r1");
        drop(open(&p, CellId(1), NodeId(1), 0).unwrap());
        drop(open(&p, CellId(1), NodeId(1), 0).unwrap());
        let err = open(&p, CellId(1), NodeId(2), 0).unwrap_err();
        assert!(matches!(err, OpenError::WrongReplica { .. }), "{err}");
        assert!(err.to_string().contains("node 2"));
    }

    #[test]
    fn refuses_lost_store_and_corrupt_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r1");
        drop(open(&p, CellId(1), NodeId(1), 0).unwrap());
        std::fs::remove_dir_all(p.join("rocksdb")).unwrap();
        assert!(matches!(
            open(&p, CellId(1), NodeId(1), 0).unwrap_err(),
            OpenError::MissingStore { .. }
        ));
        std::fs::write(p.join("identity.json"), b"{garbage").unwrap();
        assert!(matches!(
            open(&p, CellId(1), NodeId(1), 0).unwrap_err(),
            OpenError::BadIdentity { .. }
        ));
    }

    #[test]
    fn refuses_corrupt_rocksdb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r1");
        drop(open(&p, CellId(1), NodeId(1), 0).unwrap());
        // Destroy the manifest pointer: RocksDB cannot find its files any more.
        std::fs::write(p.join("rocksdb").join("CURRENT"), b"MANIFEST-999999\n").unwrap();
        let err = open(&p, CellId(1), NodeId(1), 0).unwrap_err();
        assert!(matches!(err, OpenError::Rocks { .. }), "{err}");
    }

    /// The WAL is written over recycled files once the store has flushed
    /// twice (ADR 0012); RocksDB would silently turn recycling off if, say,
    /// the recovery mode changed to one it is incompatible with.
    #[test]
    fn reuses_obsolete_wal_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r1");
        let db = open(&p, CellId(1), NodeId(1), 0).unwrap();
        let all: Vec<_> = ALL_CFS.iter().map(|n| cf(&db, n)).collect();
        for round in 0..3u64 {
            db.put_cf(cf(&db, CF_LOG), log_key(round), [7u8; 4096])
                .unwrap();
            db.put_cf(cf(&db, CF_SM_META), b"applied", round.to_be_bytes())
                .unwrap();
            db.flush_cfs_opt(&all, &rocksdb::FlushOptions::default())
                .unwrap();
        }
        drop(all);
        drop(db); // closing writes out RocksDB's info log
        let info = std::fs::read_to_string(p.join("rocksdb").join("LOG")).unwrap();
        assert!(
            info.contains(&format!("recycle_log_file_num: {WAL_FILES_TO_RECYCLE}")),
            "recycling is configured"
        );
        assert!(
            info.contains("reusing log"),
            "a recycled WAL file was reused"
        );
        let reopened = open(&p, CellId(1), NodeId(1), 0).unwrap();
        let got = reopened
            .get_cf(cf(&reopened, CF_SM_META), b"applied")
            .unwrap();
        assert_eq!(got.as_deref(), Some(&2u64.to_be_bytes()[..]));
    }

    #[test]
    fn refuses_when_disk_is_below_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(&dir.path().join("r"), CellId(1), NodeId(1), u64::MAX).unwrap_err();
        assert!(matches!(err, OpenError::DiskFull { .. }), "{err}");
    }

    #[test]
    fn refuses_unusable_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = open(&file.join("sub"), CellId(1), NodeId(1), 0).unwrap_err();
        assert!(matches!(err, OpenError::DataDir { .. }), "{err}");
    }
}
