//! The lost-write check: every acknowledged write (bucket, key, version, etag)
//! is kept while the run goes; afterwards each key is read back and compared
//! with its latest acknowledged write. Reading back over HTTP is the driver's.
//!
//! Versions are Raft log indexes of the key's cell (ADR 0005), so they order
//! the writes of one key while it stays in one cell. Once a move (drain, add)
//! hands a key to another cell, versions of the two cells are not comparable:
//! the etag names the cell that wrote it (`<cell>-<index>-<op>`, kept by the
//! copy), and the cells' *generations* (`Scenario::cell_generations`: a
//! move's source below its destination) order writes of different cells.

use std::collections::{BTreeMap, HashMap};

use common::CellId;
use serde::{Deserialize, Serialize};

/// The latest acknowledged write of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedWrite {
    pub version: u64,
    pub etag: String,
}

/// Position of the op inside its log entry, from an etag `<cell>-<index>-<op>`:
/// orders two writes batched into one entry (same version).
fn op_position(etag: &str) -> Option<u64> {
    etag.trim_matches('"').rsplit('-').next()?.parse().ok()
}

/// The cell that wrote an etag `<cell>-<index>-<op>`.
fn etag_cell(etag: &str) -> Option<CellId> {
    etag.trim_matches('"')
        .split('-')
        .next()?
        .parse()
        .ok()
        .map(CellId)
}

/// Whether `(version, etag)` was written after `than`: by the writing cells'
/// generations when two cells wrote them, else by version and op position.
fn is_later(gens: &BTreeMap<CellId, i64>, version: u64, etag: &str, than: &AckedWrite) -> bool {
    if let (Some(a), Some(b)) = (etag_cell(etag), etag_cell(&than.etag)) {
        let gen = |c: CellId| gens.get(&c).copied().unwrap_or(0);
        if a != b && gen(a) != gen(b) {
            return gen(a) > gen(b);
        }
    }
    match version.cmp(&than.version) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => match (op_position(etag), op_position(&than.etag)) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
    }
}

/// What reading a key back found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadBack {
    Found {
        version: u64,
        etag: String,
    },
    /// 404.
    Missing,
    /// The read itself failed (5xx, timeout): nothing can be concluded.
    Failed(String),
}

/// How an acknowledged write was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// The key is gone.
    Missing,
    /// The key holds a version older than the acknowledged one.
    Older,
}

/// One lost write, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    pub bucket: String,
    pub key: String,
    pub kind: LossKind,
    pub acked: AckedWrite,
    /// What the read found (`None` when missing).
    pub found: Option<AckedWrite>,
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The acknowledged write, or a later one, is there.
    Kept,
    Lost(LostWrite),
    /// The read-back failed.
    Unverified {
        reason: String,
    },
    /// No acknowledged write of this key.
    NotTracked,
}

/// Every acknowledged write of a run: one per client, merged at the end.
#[derive(Clone, Debug, Default)]
pub struct WriteLedger {
    acked: HashMap<(String, String), AckedWrite>,
    /// Orders writes of one key by different cells (see the module doc).
    generations: BTreeMap<CellId, i64>,
}

impl WriteLedger {
    pub fn new() -> WriteLedger {
        WriteLedger::default()
    }

    /// A ledger that orders writes of different cells by `generations`.
    pub fn with_generations(generations: BTreeMap<CellId, i64>) -> WriteLedger {
        WriteLedger {
            acked: HashMap::new(),
            generations,
        }
    }

    /// Keys with an acknowledged write.
    pub fn len(&self) -> usize {
        self.acked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acked.is_empty()
    }

    /// Records an acknowledged write; keeps the later of two acks of a key.
    pub fn record_ack(&mut self, bucket: &str, key: &str, version: u64, etag: &str) {
        match self.acked.get_mut(&(bucket.to_owned(), key.to_owned())) {
            Some(prev) => {
                if is_later(&self.generations, version, etag, prev) {
                    *prev = AckedWrite {
                        version,
                        etag: etag.to_owned(),
                    };
                }
            }
            None => {
                self.acked.insert(
                    (bucket.to_owned(), key.to_owned()),
                    AckedWrite {
                        version,
                        etag: etag.to_owned(),
                    },
                );
            }
        }
    }

    pub fn merge(&mut self, other: &WriteLedger) {
        for ((b, k), w) in &other.acked {
            self.record_ack(b, k, w.version, &w.etag);
        }
    }

    /// The keys to read back, sorted (bucket, key).
    pub fn keys(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .acked
            .keys()
            .map(|(b, k)| (b.as_str(), k.as_str()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Compares what a read found with the latest acknowledged write.
    pub fn check(&self, bucket: &str, key: &str, read: &ReadBack) -> Verdict {
        let Some(acked) = self.acked.get(&(bucket.to_owned(), key.to_owned())) else {
            return Verdict::NotTracked;
        };
        let lost = |kind, found| {
            Verdict::Lost(LostWrite {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                kind,
                acked: acked.clone(),
                found,
            })
        };
        match read {
            ReadBack::Failed(reason) => Verdict::Unverified {
                reason: reason.clone(),
            },
            ReadBack::Missing => lost(LossKind::Missing, None),
            ReadBack::Found { version, etag } => {
                if *etag == acked.etag || is_later(&self.generations, *version, etag, acked) {
                    Verdict::Kept
                } else {
                    lost(
                        LossKind::Older,
                        Some(AckedWrite {
                            version: *version,
                            etag: etag.clone(),
                        }),
                    )
                }
            }
        }
    }
}

/// The outcome of reading every acknowledged key back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub checked: u64,
    pub kept: u64,
    pub lost: Vec<LostWrite>,
    /// `(bucket, key, why)` of keys whose read-back failed.
    pub unverified: Vec<(String, String, String)>,
}

impl Verification {
    pub fn push(&mut self, bucket: &str, key: &str, v: Verdict) {
        match v {
            Verdict::NotTracked => return,
            Verdict::Kept => self.kept += 1,
            Verdict::Lost(l) => self.lost.push(l),
            Verdict::Unverified { reason } => {
                self.unverified
                    .push((bucket.to_owned(), key.to_owned(), reason))
            }
        }
        self.checked += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(version: u64, etag: &str) -> ReadBack {
        ReadBack::Found {
            version,
            etag: etag.to_owned(),
        }
    }

    #[test]
    fn keeps_the_latest_ack_per_key() {
        let mut l = WriteLedger::new();
        l.record_ack("b", "k", 10, "1-10-0");
        l.record_ack("b", "k", 7, "1-7-0"); // an older ack arriving late
        l.record_ack("b", "k", 10, "1-10-3"); // same entry, later op
        l.record_ack("b", "k", 10, "1-10-1");
        let mut other = WriteLedger::new();
        other.record_ack("b", "j", 5, "2-5-0");
        other.record_ack("b", "k", 9, "1-9-0");
        l.merge(&other);
        assert_eq!(l.len(), 2);
        assert_eq!(l.keys(), vec![("b", "j"), ("b", "k")]);
        assert_eq!(l.check("b", "k", &found(10, "1-10-3")), Verdict::Kept);
        assert!(matches!(
            l.check("b", "k", &found(10, "1-10-1")),
            Verdict::Lost(LostWrite {
                kind: LossKind::Older,
                ..
            })
        ));
    }

    #[test]
    fn writes_of_a_moved_key_are_ordered_by_the_cells_generations() {
        // Cell 3 is drained (generation -1): its writes come first, whatever
        // their versions; cell 4 was added (generation 2): its writes last.
        let gens = BTreeMap::from([(CellId(3), -1), (CellId(4), 2)]);
        let mut l = WriteLedger::with_generations(gens.clone());
        l.record_ack("b", "k", 9000, "\"3-9000-0\"");
        l.record_ack("b", "k", 12, "\"1-12-0\""); // after the move, lower version
        assert_eq!(l.check("b", "k", &found(12, "\"1-12-0\"")), Verdict::Kept);
        // The copy (source etag) is older than the acknowledged write at the new owner.
        assert!(matches!(
            l.check("b", "k", &found(9000, "\"3-9000-0\"")),
            Verdict::Lost(LostWrite {
                kind: LossKind::Older,
                ..
            })
        ));
        // A late ack from the source does not replace the newer one.
        l.record_ack("b", "k", 9001, "\"3-9001-0\"");
        assert_eq!(l.check("b", "k", &found(12, "\"1-12-0\"")), Verdict::Kept);
        // An added cell's write is later than an old owner's.
        l.record_ack("b", "j", 500, "\"2-500-0\"");
        assert_eq!(l.check("b", "j", &found(7, "\"4-7-0\"")), Verdict::Kept);
        // Merged ledgers keep the order.
        let mut m = WriteLedger::with_generations(gens);
        m.merge(&l);
        assert_eq!(m.check("b", "k", &found(12, "\"1-12-0\"")), Verdict::Kept);
        // Same generation, different cells (no known move between them): versions decide.
        let mut n = WriteLedger::new();
        n.record_ack("b", "k", 10, "1-10-0");
        n.record_ack("b", "k", 11, "2-11-0");
        assert_eq!(n.check("b", "k", &found(11, "2-11-0")), Verdict::Kept);
        assert_eq!(etag_cell("\"12-5-0\""), Some(CellId(12)));
        assert_eq!(etag_cell("nonsense"), None);
    }

    #[test]
    fn verdicts_on_read_back() {
        let mut l = WriteLedger::new();
        l.record_ack("b", "k", 10, "\"1-10-0\"");
        assert_eq!(l.check("b", "k", &found(10, "\"1-10-0\"")), Verdict::Kept);
        // A later write (unacknowledged, e.g. one that timed out) applied.
        assert_eq!(l.check("b", "k", &found(12, "\"1-12-0\"")), Verdict::Kept);
        let older = l.check("b", "k", &found(8, "\"1-8-0\""));
        let Verdict::Lost(lw) = older else {
            panic!("expected a loss, got {older:?}")
        };
        assert_eq!(lw.kind, LossKind::Older);
        assert_eq!(lw.found.map(|f| f.version), Some(8));
        assert!(matches!(
            l.check("b", "k", &ReadBack::Missing),
            Verdict::Lost(LostWrite {
                kind: LossKind::Missing,
                found: None,
                ..
            })
        ));
        assert!(matches!(
            l.check("b", "k", &ReadBack::Failed("503".into())),
            Verdict::Unverified { .. }
        ));
        assert_eq!(l.check("b", "x", &ReadBack::Missing), Verdict::NotTracked);

        let mut v = Verification::default();
        for (key, rb) in [
            ("k", found(10, "\"1-10-0\"")),
            ("k", ReadBack::Missing),
            ("k", ReadBack::Failed("timeout".into())),
            ("x", ReadBack::Missing),
        ] {
            v.push("b", key, l.check("b", key, &rb));
        }
        assert_eq!(
            (v.checked, v.kept, v.lost.len(), v.unverified.len()),
            (3, 1, 1, 1)
        );
    }
}
