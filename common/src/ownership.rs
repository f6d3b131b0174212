//! Range ownership: which hash ranges a cell serves, and how a range changes
//! hands during a migration. Two views of the same facts live here:
//!
//! - [`RoutingTable`]: the cluster-wide "range → owner cell" table routers
//!   place keys with (from the cell map's explicit `owners`, or derived from
//!   the weighted ring when a static map has none).
//! - [`OwnershipTable`]: one cell's own record, replicated through its Raft
//!   log, checked on every read and write *at apply time*, so a router with a
//!   stale map can never write to, or read stale data from, the wrong cell.
//!
//! A range moves from cell S to cell D in this order (each step one Raft
//! entry, each idempotent so a crashed job can redo it):
//! `D: Prepare` (incoming: ingest allowed, clients refused) → bulk copy →
//! `S: Fence` (writes refused with `range_moving`, reads still served) →
//! copy the delta → `S: Fence{seal}` (reads refused too) → `D: Own` →
//! `S: Release{to: D}` (answers `moved` naming D) → map epoch + 1 → later
//! the source's copy is purged. Cancelling before `Own`: `S: Unfence`,
//! `D: Abort`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::CellId;
use crate::ring::{ranges_owned_by, space_fraction, HashRange, Ring};

/// One row of the cell map's explicit ownership table: the range starting at
/// `.0` (up to the next row's start − 1, or `u64::MAX`) belongs to cell `.1`.
/// Serialized as a two-element JSON array to keep the map small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOwner(pub u64, pub CellId);

/// A problem with an explicit ownership table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoutingError {
    #[error("the ownership table is empty")]
    Empty,
    #[error("the ownership table must start at hash 0, not {0}")]
    BadStart(u64),
    #[error("ownership rows must have strictly increasing starts (row {0})")]
    NotSorted(usize),
}

/// "Which cell owns hash h", as sorted contiguous ranges covering the whole
/// hash space. Adjacent rows of the same cell are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    starts: Vec<u64>,
    cells: Vec<CellId>,
}

impl RoutingTable {
    /// From explicit rows (the cell map's `owners`).
    pub fn from_owners(rows: &[RangeOwner]) -> Result<RoutingTable, RoutingError> {
        let first = rows.first().ok_or(RoutingError::Empty)?;
        if first.0 != 0 {
            return Err(RoutingError::BadStart(first.0));
        }
        let mut t = RoutingTable {
            starts: Vec::with_capacity(rows.len()),
            cells: Vec::with_capacity(rows.len()),
        };
        for (i, r) in rows.iter().enumerate() {
            if i > 0 && r.0 <= rows[i - 1].0 {
                return Err(RoutingError::NotSorted(i));
            }
            if t.cells.last() == Some(&r.1) {
                continue;
            }
            t.starts.push(r.0);
            t.cells.push(r.1);
        }
        Ok(t)
    }

    /// From a weighted ring (static maps without explicit owners).
    pub fn from_ring(ring: &Ring) -> RoutingTable {
        Self::from_ranges(&ring.ranges())
    }

    /// From contiguous sorted ranges covering `[0, u64::MAX]`, as
    /// [`Ring::ranges`] returns them.
    pub fn from_ranges(ranges: &[(HashRange, CellId)]) -> RoutingTable {
        let rows: Vec<RangeOwner> = ranges
            .iter()
            .map(|(r, c)| RangeOwner(r.start, *c))
            .collect();
        Self::from_owners(&rows).expect("ring ranges start at 0 and are sorted")
    }

    /// The rows to store in the cell map.
    pub fn to_owners(&self) -> Vec<RangeOwner> {
        self.starts
            .iter()
            .zip(&self.cells)
            .map(|(&s, &c)| RangeOwner(s, c))
            .collect()
    }

    /// The owner of hash `h`.
    pub fn cell_for_hash(&self, h: u64) -> CellId {
        let i = self.starts.partition_point(|&s| s <= h);
        self.cells[i - 1]
    }

    /// The owner of `(bucket, key)`.
    pub fn cell_for(&self, bucket: &str, key: &str) -> CellId {
        self.cell_for_hash(crate::ring::key_hash(bucket, key))
    }

    /// Every range with its owner, sorted by start.
    pub fn ranges(&self) -> Vec<(HashRange, CellId)> {
        (0..self.starts.len())
            .map(|i| {
                let end = self.starts.get(i + 1).map_or(u64::MAX, |&s| s - 1);
                (
                    HashRange {
                        start: self.starts[i],
                        end,
                    },
                    self.cells[i],
                )
            })
            .collect()
    }

    /// The ranges owned by `cell`, sorted.
    pub fn ranges_of(&self, cell: CellId) -> Vec<HashRange> {
        ranges_owned_by(self.ranges(), cell)
    }

    /// Fraction of the hash space `cell` owns.
    pub fn share(&self, cell: CellId) -> f64 {
        space_fraction(&self.ranges_of(cell))
    }

    /// Every cell that owns at least one range.
    pub fn owners(&self) -> std::collections::BTreeSet<CellId> {
        self.cells.iter().copied().collect()
    }

    /// A copy with `range` assigned to `cell`.
    pub fn with_assignment(&self, range: HashRange, cell: CellId) -> RoutingTable {
        let mut out: Vec<(HashRange, CellId)> = Vec::new();
        for (r, c) in self.ranges() {
            // The part of r before, inside and after `range`.
            if r.end < range.start || r.start > range.end {
                out.push((r, c));
                continue;
            }
            if r.start < range.start {
                out.push((
                    HashRange {
                        start: r.start,
                        end: range.start - 1,
                    },
                    c,
                ));
            }
            let s = r.start.max(range.start);
            let e = r.end.min(range.end);
            out.push((HashRange { start: s, end: e }, cell));
            if r.end > range.end {
                out.push((
                    HashRange {
                        start: range.end + 1,
                        end: r.end,
                    },
                    c,
                ));
            }
        }
        Self::from_ranges(&out)
    }

    /// The ranges whose owner differs from `target`, as `(range, from, to)`,
    /// sorted, adjacent rows with the same `(from, to)` merged.
    pub fn diff(&self, target: &RoutingTable) -> Vec<(HashRange, CellId, CellId)> {
        let mut cuts: Vec<u64> = self.starts.iter().chain(&target.starts).copied().collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out: Vec<(HashRange, CellId, CellId)> = Vec::new();
        for (i, &s) in cuts.iter().enumerate() {
            let e = cuts.get(i + 1).map_or(u64::MAX, |&n| n - 1);
            let (from, to) = (self.cell_for_hash(s), target.cell_for_hash(s));
            if from == to {
                continue;
            }
            match out.last_mut() {
                Some((r, f, t)) if *f == from && *t == to && r.end.wrapping_add(1) == s => {
                    r.end = e
                }
                _ => out.push((HashRange { start: s, end: e }, from, to)),
            }
        }
        out
    }
}

/// The state of one range in a cell's own ownership record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeState {
    /// Served normally.
    Owned,
    /// Being handed over: reads served, writes refused with `range_moving`.
    WriteFenced,
    /// Final moment of a hand-over: reads and writes refused with `range_moving`.
    Sealed,
    /// Arriving here: the control plane may ingest into it; clients are refused.
    Incoming,
    /// Handed to cell `to`: requests are answered `moved` naming it.
    Moved { to: CellId },
}

impl fmt::Display for RangeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeState::Owned => f.write_str("owned"),
            RangeState::WriteFenced => f.write_str("write_fenced"),
            RangeState::Sealed => f.write_str("sealed"),
            RangeState::Incoming => f.write_str("incoming"),
            RangeState::Moved { to } => write!(f, "moved to cell {to}"),
        }
    }
}

/// One row of a cell's ownership record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntry {
    pub range: HashRange,
    pub state: RangeState,
    /// Epoch of the op that last changed this row.
    pub epoch: u64,
}

/// A change to a cell's ownership record, proposed by the control plane
/// through the cell's Raft log (`POST /admin/ownership` on the control port).
/// Every op is idempotent: applying it to a range already in the target
/// state succeeds without change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnershipOp {
    /// Replace the whole record: `owned` ranges Owned, everything else not
    /// owned. Turns a cell managed (before its first op, an unmanaged cell
    /// serves every hash: a static cluster without a control plane).
    Assign { epoch: u64, owned: Vec<HashRange> },
    /// Owned → WriteFenced (`seal: false`), or Owned/WriteFenced → Sealed (`seal: true`).
    Fence {
        epoch: u64,
        ranges: Vec<HashRange>,
        seal: bool,
    },
    /// WriteFenced/Sealed → Owned (cancel a hand-over at the source).
    Unfence { epoch: u64, ranges: Vec<HashRange> },
    /// WriteFenced/Sealed → Moved{to} (the source gives the range away).
    Release {
        epoch: u64,
        ranges: Vec<HashRange>,
        to: CellId,
    },
    /// not owned/Moved → Incoming (the destination gets ready to receive).
    Prepare { epoch: u64, ranges: Vec<HashRange> },
    /// Incoming → not owned (cancel at the destination).
    Abort { epoch: u64, ranges: Vec<HashRange> },
    /// Incoming → Owned (the destination takes the range).
    Own { epoch: u64, ranges: Vec<HashRange> },
}

impl OwnershipOp {
    pub fn epoch(&self) -> u64 {
        match self {
            OwnershipOp::Assign { epoch, .. }
            | OwnershipOp::Fence { epoch, .. }
            | OwnershipOp::Unfence { epoch, .. }
            | OwnershipOp::Release { epoch, .. }
            | OwnershipOp::Prepare { epoch, .. }
            | OwnershipOp::Abort { epoch, .. }
            | OwnershipOp::Own { epoch, .. } => *epoch,
        }
    }
}

/// Why an ownership op was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum OwnershipError {
    #[error("op epoch {op} is older than the cell's ownership epoch {cell}")]
    StaleEpoch { op: u64, cell: u64 },
    #[error("range {start:#x}..={end:#x} is {found}, which this op cannot change")]
    WrongState { start: u64, end: u64, found: String },
    #[error("range {start:#x}..={end:#x} has start > end")]
    BadRange { start: u64, end: u64 },
}

/// What a cell may do with a request for one hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Serve reads and writes.
    Serve,
    /// Serve reads; refuse writes with `range_moving`.
    ReadOnly,
    /// Refuse with `range_moving` (retry shortly).
    Moving,
    /// Refuse with `moved`, naming the new owner when known.
    Moved { to: Option<CellId>, epoch: u64 },
}

impl Access {
    pub fn may_read(self) -> bool {
        matches!(self, Access::Serve | Access::ReadOnly)
    }
    pub fn may_write(self) -> bool {
        matches!(self, Access::Serve)
    }
}

/// One cell's ownership record (replicated state; part of its snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipTable {
    /// False until the first op: an unmanaged cell serves every hash.
    pub managed: bool,
    /// Highest epoch of any applied op.
    pub epoch: u64,
    /// Sorted, non-overlapping; hashes in no row are not owned.
    pub entries: Vec<RangeEntry>,
}

impl OwnershipTable {
    /// What the cell may do for hash `h`.
    pub fn access(&self, h: u64) -> Access {
        if !self.managed {
            return Access::Serve;
        }
        let unknown = Access::Moved {
            to: None,
            epoch: self.epoch,
        };
        let Some(e) = self.entry_of(h) else {
            return unknown;
        };
        match e.state {
            RangeState::Owned => Access::Serve,
            RangeState::WriteFenced => Access::ReadOnly,
            RangeState::Sealed => Access::Moving,
            RangeState::Incoming => unknown,
            RangeState::Moved { to } => Access::Moved {
                to: Some(to),
                epoch: e.epoch,
            },
        }
    }

    /// Whether a listing should include hash `h` (owned in any form, fenced included).
    pub fn lists(&self, h: u64) -> bool {
        matches!(
            self.access(h),
            Access::Serve | Access::ReadOnly | Access::Moving
        )
    }

    /// Whether the control plane may ingest (or delete by ingest) hash `h`.
    pub fn accepts_ingest(&self, h: u64) -> bool {
        self.managed && self.state_of(h) == Some(RangeState::Incoming)
    }

    /// Whether the cell may purge its copy of hash `h` (it is neither owned nor incoming).
    pub fn may_purge(&self, h: u64) -> bool {
        self.managed && matches!(self.state_of(h), None | Some(RangeState::Moved { .. }))
    }

    /// The row holding hash `h`, if any.
    fn entry_of(&self, h: u64) -> Option<&RangeEntry> {
        let i = self.entries.partition_point(|e| e.range.start <= h);
        i.checked_sub(1)
            .map(|i| &self.entries[i])
            .filter(|e| e.range.contains(h))
    }

    fn state_of(&self, h: u64) -> Option<RangeState> {
        self.entry_of(h).map(|e| e.state)
    }

    /// Ranges in state Owned, WriteFenced or Sealed (what the cell still
    /// answers for), adjacent ones merged.
    pub fn owned_ranges(&self) -> Vec<HashRange> {
        if !self.managed {
            return vec![HashRange::FULL];
        }
        let mut out: Vec<HashRange> = Vec::new();
        for e in &self.entries {
            if !matches!(
                e.state,
                RangeState::Owned | RangeState::WriteFenced | RangeState::Sealed
            ) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end.wrapping_add(1) == e.range.start => last.end = e.range.end,
                _ => out.push(e.range),
            }
        }
        out
    }

    /// Applies `op` atomically: either every range changes or none does.
    pub fn apply(&mut self, op: &OwnershipOp) -> Result<(), OwnershipError> {
        if op.epoch() < self.epoch {
            return Err(OwnershipError::StaleEpoch {
                op: op.epoch(),
                cell: self.epoch,
            });
        }
        let epoch = op.epoch();
        if let OwnershipOp::Assign { owned, .. } = op {
            let mut rows = BTreeMap::new();
            for r in owned {
                check_range(r)?;
                rows.insert(r.start, (r.end, Some(RangeState::Owned), epoch));
            }
            self.entries = Vec::new();
            self.managed = true;
            self.epoch = epoch;
            let mut t = self.to_rows();
            for (s, v) in rows {
                set(&mut t, HashRange { start: s, end: v.0 }, v.1, epoch);
            }
            self.set_rows(t);
            return Ok(());
        }
        // (ranges, allowed prior states (None = not owned), target state)
        type Allowed = fn(Option<RangeState>) -> bool;
        let (ranges, allowed, target): (&Vec<HashRange>, Allowed, Option<RangeState>) = match op {
            OwnershipOp::Assign { .. } => unreachable!("handled above"),
            OwnershipOp::Fence {
                ranges,
                seal: false,
                ..
            } => (
                ranges,
                |s| matches!(s, Some(RangeState::Owned | RangeState::WriteFenced)),
                Some(RangeState::WriteFenced),
            ),
            OwnershipOp::Fence {
                ranges, seal: true, ..
            } => (
                ranges,
                |s| {
                    matches!(
                        s,
                        Some(RangeState::Owned | RangeState::WriteFenced | RangeState::Sealed)
                    )
                },
                Some(RangeState::Sealed),
            ),
            OwnershipOp::Unfence { ranges, .. } => (
                ranges,
                |s| {
                    matches!(
                        s,
                        Some(RangeState::Owned | RangeState::WriteFenced | RangeState::Sealed)
                    )
                },
                Some(RangeState::Owned),
            ),
            OwnershipOp::Release { ranges, to, .. } => {
                // Moved to the same cell is the target (idempotent); moved elsewhere is not allowed.
                let target = Some(RangeState::Moved { to: *to });
                let ok = ranges.iter().all(|r| {
                    self.pieces(r).iter().all(|(_, s)| match s {
                        Some(RangeState::WriteFenced | RangeState::Sealed) => true,
                        Some(RangeState::Moved { to: t }) => t == to,
                        _ => false,
                    })
                });
                if !ok {
                    return Err(self.first_wrong(ranges, |s| {
                        matches!(s, Some(RangeState::WriteFenced | RangeState::Sealed))
                            || s == target
                    }));
                }
                return self.set_all(ranges, target, epoch);
            }
            OwnershipOp::Prepare { ranges, .. } => (
                ranges,
                |s| {
                    matches!(
                        s,
                        None | Some(RangeState::Moved { .. } | RangeState::Incoming)
                    )
                },
                Some(RangeState::Incoming),
            ),
            OwnershipOp::Abort { ranges, .. } => (
                ranges,
                |s| matches!(s, None | Some(RangeState::Incoming)),
                None,
            ),
            OwnershipOp::Own { ranges, .. } => (
                ranges,
                |s| matches!(s, Some(RangeState::Incoming | RangeState::Owned)),
                Some(RangeState::Owned),
            ),
        };
        for r in ranges {
            check_range(r)?;
        }
        let bad = ranges
            .iter()
            .any(|r| self.pieces(r).iter().any(|(_, s)| !allowed(*s)));
        if bad {
            return Err(self.first_wrong(ranges, allowed));
        }
        self.set_all(ranges, target, epoch)
    }

    fn set_all(
        &mut self,
        ranges: &[HashRange],
        target: Option<RangeState>,
        epoch: u64,
    ) -> Result<(), OwnershipError> {
        for r in ranges {
            check_range(r)?;
        }
        let mut rows = self.to_rows();
        for r in ranges {
            // Rows already in the target state keep their epoch (idempotent redo).
            for (piece, s) in self.pieces(r) {
                if s != target {
                    set(&mut rows, piece, target, epoch);
                }
            }
        }
        self.managed = true;
        self.epoch = self.epoch.max(epoch);
        self.set_rows(rows);
        Ok(())
    }

    fn first_wrong(
        &self,
        ranges: &[HashRange],
        allowed: impl Fn(Option<RangeState>) -> bool,
    ) -> OwnershipError {
        for r in ranges {
            for (piece, s) in self.pieces(r) {
                if !allowed(s) {
                    return OwnershipError::WrongState {
                        start: piece.start,
                        end: piece.end,
                        found: s.map_or("not owned".to_string(), |s| s.to_string()),
                    };
                }
            }
        }
        unreachable!("first_wrong is called only when some piece is wrong")
    }

    /// `r` cut into pieces of uniform state (None = not owned).
    fn pieces(&self, r: &HashRange) -> Vec<(HashRange, Option<RangeState>)> {
        if !self.managed {
            return vec![(*r, Some(RangeState::Owned))];
        }
        let mut out = Vec::new();
        let mut pos = r.start;
        for e in &self.entries {
            if e.range.end < pos {
                continue;
            }
            if e.range.start > r.end {
                break;
            }
            if e.range.start > pos {
                out.push((
                    HashRange {
                        start: pos,
                        end: e.range.start - 1,
                    },
                    None,
                ));
            }
            let end = e.range.end.min(r.end);
            out.push((
                HashRange {
                    start: pos.max(e.range.start),
                    end,
                },
                Some(e.state),
            ));
            if end == r.end {
                return out;
            }
            pos = end + 1;
        }
        out.push((
            HashRange {
                start: pos,
                end: r.end,
            },
            None,
        ));
        out
    }

    fn to_rows(&self) -> Rows {
        let mut rows = Rows::new();
        if !self.managed {
            rows.insert(0, (u64::MAX, Some(RangeState::Owned), self.epoch));
        }
        for e in &self.entries {
            rows.insert(e.range.start, (e.range.end, Some(e.state), e.epoch));
        }
        rows
    }

    fn set_rows(&mut self, rows: Rows) {
        let mut out: Vec<RangeEntry> = Vec::new();
        for (start, (end, state, epoch)) in rows {
            let Some(state) = state else { continue };
            match out.last_mut() {
                Some(last)
                    if last.state == state
                        && last.epoch == epoch
                        && last.range.end.wrapping_add(1) == start =>
                {
                    last.range.end = end
                }
                _ => out.push(RangeEntry {
                    range: HashRange { start, end },
                    state,
                    epoch,
                }),
            }
        }
        self.entries = out;
    }
}

/// start → (end, state or None for not owned, epoch); non-overlapping.
type Rows = BTreeMap<u64, (u64, Option<RangeState>, u64)>;

fn check_range(r: &HashRange) -> Result<(), OwnershipError> {
    if r.start > r.end {
        return Err(OwnershipError::BadRange {
            start: r.start,
            end: r.end,
        });
    }
    Ok(())
}

/// Sets `[r.start, r.end]` to `state` in `rows`, splitting rows it cuts.
fn set(rows: &mut Rows, r: HashRange, state: Option<RangeState>, epoch: u64) {
    // Split a row that starts before r and reaches into it.
    if let Some((&s, &(e, st, ep))) = rows.range(..r.start).next_back() {
        if e >= r.start {
            rows.insert(s, (r.start - 1, st, ep));
            rows.insert(r.start, (e, st, ep));
        }
    }
    // Split a row that starts inside r and reaches past it.
    if let Some((&s, &(e, st, ep))) = rows.range(r.start..=r.end).next_back() {
        if e > r.end {
            rows.insert(s, (r.end, st, ep));
            rows.insert(r.end + 1, (e, st, ep));
        }
    }
    let inside: Vec<u64> = rows.range(r.start..=r.end).map(|(&s, _)| s).collect();
    for s in inside {
        rows.remove(&s);
    }
    rows.insert(r.start, (r.end, state, epoch));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr(start: u64, end: u64) -> HashRange {
        HashRange { start, end }
    }

    #[test]
    fn routing_table_round_trips_and_assigns() {
        let t = RoutingTable::from_ranges(&[
            (hr(0, 99), CellId(1)),
            (hr(100, 199), CellId(2)),
            (hr(200, u64::MAX), CellId(1)),
        ]);
        assert_eq!(t.cell_for_hash(0), CellId(1));
        assert_eq!(t.cell_for_hash(150), CellId(2));
        assert_eq!(t.cell_for_hash(u64::MAX), CellId(1));
        assert_eq!(RoutingTable::from_owners(&t.to_owners()).unwrap(), t);
        let t2 = t.with_assignment(hr(150, 250), CellId(3));
        assert_eq!(t2.cell_for_hash(149), CellId(2));
        assert_eq!(t2.cell_for_hash(150), CellId(3));
        assert_eq!(t2.cell_for_hash(250), CellId(3));
        assert_eq!(t2.cell_for_hash(251), CellId(1));
        assert_eq!(
            t.diff(&t2),
            vec![
                (hr(150, 199), CellId(2), CellId(3)),
                (hr(200, 250), CellId(1), CellId(3))
            ]
        );
        assert!(t.diff(&t).is_empty());
        assert_eq!(
            RoutingTable::from_owners(&[RangeOwner(5, CellId(1))]),
            Err(RoutingError::BadStart(5))
        );
        assert_eq!(
            RoutingTable::from_owners(&[RangeOwner(0, CellId(1)), RangeOwner(0, CellId(2))]),
            Err(RoutingError::NotSorted(1))
        );
    }

    #[test]
    fn routing_from_ring_matches_ring() {
        let ring = Ring::new(&[(CellId(1), 1), (CellId(2), 1), (CellId(3), 2)]).unwrap();
        let t = RoutingTable::from_ring(&ring);
        for i in 0..2000u32 {
            let k = format!("key-{i}");
            assert_eq!(t.cell_for("b", &k), ring.cell_for("b", &k));
        }
        let new = Ring::new(&[(CellId(1), 1), (CellId(2), 1)]).unwrap();
        assert_eq!(t.diff(&RoutingTable::from_ring(&new)), ring.diff(&new));
    }

    #[test]
    fn unmanaged_cell_serves_everything() {
        let t = OwnershipTable::default();
        assert_eq!(t.access(0), Access::Serve);
        assert_eq!(t.access(u64::MAX), Access::Serve);
        assert!(!t.accepts_ingest(5));
        assert!(!t.may_purge(5));
    }

    #[test]
    fn full_hand_over_source_and_destination() {
        let mut src = OwnershipTable::default();
        src.apply(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![hr(0, 999)],
        })
        .unwrap();
        let mut dst = OwnershipTable::default();
        dst.apply(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![],
        })
        .unwrap();
        assert_eq!(dst.access(5), Access::Moved { to: None, epoch: 1 });
        assert_eq!(src.access(1000), Access::Moved { to: None, epoch: 1 });

        let moving = vec![hr(100, 199)];
        dst.apply(&OwnershipOp::Prepare {
            epoch: 2,
            ranges: moving.clone(),
        })
        .unwrap();
        assert!(dst.accepts_ingest(150));
        assert!(!dst.accepts_ingest(250));
        assert!(!dst.access(150).may_read());

        src.apply(&OwnershipOp::Fence {
            epoch: 2,
            ranges: moving.clone(),
            seal: false,
        })
        .unwrap();
        assert_eq!(src.access(150), Access::ReadOnly);
        assert_eq!(src.access(99), Access::Serve);
        assert_eq!(src.access(200), Access::Serve);
        src.apply(&OwnershipOp::Fence {
            epoch: 2,
            ranges: moving.clone(),
            seal: true,
        })
        .unwrap();
        assert_eq!(src.access(150), Access::Moving);
        assert!(src.lists(150));
        // Redo is harmless.
        src.apply(&OwnershipOp::Fence {
            epoch: 2,
            ranges: moving.clone(),
            seal: true,
        })
        .unwrap();

        dst.apply(&OwnershipOp::Own {
            epoch: 3,
            ranges: moving.clone(),
        })
        .unwrap();
        assert_eq!(dst.access(150), Access::Serve);
        src.apply(&OwnershipOp::Release {
            epoch: 3,
            ranges: moving.clone(),
            to: CellId(2),
        })
        .unwrap();
        assert_eq!(
            src.access(150),
            Access::Moved {
                to: Some(CellId(2)),
                epoch: 3
            }
        );
        assert!(!src.lists(150));
        assert!(src.may_purge(150));
        assert!(!src.may_purge(50));
        // Release again (a crashed job redoing its step) is fine; to another cell is not.
        src.apply(&OwnershipOp::Release {
            epoch: 3,
            ranges: moving.clone(),
            to: CellId(2),
        })
        .unwrap();
        assert!(matches!(
            src.apply(&OwnershipOp::Release {
                epoch: 3,
                ranges: moving.clone(),
                to: CellId(9),
            }),
            Err(OwnershipError::WrongState { .. })
        ));
        assert_eq!(src.owned_ranges(), vec![hr(0, 99), hr(200, 999)]);
        assert_eq!(dst.owned_ranges(), vec![hr(100, 199)]);
        // Stale epochs are refused.
        assert!(matches!(
            src.apply(&OwnershipOp::Unfence {
                epoch: 1,
                ranges: vec![hr(0, 5)]
            }),
            Err(OwnershipError::StaleEpoch { op: 1, cell: 3 })
        ));
    }

    #[test]
    fn wrong_states_are_refused_atomically() {
        let mut t = OwnershipTable::default();
        t.apply(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![hr(0, 99)],
        })
        .unwrap();
        let before = t.clone();
        // Fence across owned and not-owned hashes: nothing changes.
        let err = t
            .apply(&OwnershipOp::Fence {
                epoch: 2,
                ranges: vec![hr(50, 150)],
                seal: false,
            })
            .unwrap_err();
        assert_eq!(
            err,
            OwnershipError::WrongState {
                start: 100,
                end: 150,
                found: "not owned".into()
            }
        );
        assert_eq!(t, before);
        // Own without Prepare is refused.
        assert!(t
            .apply(&OwnershipOp::Own {
                epoch: 2,
                ranges: vec![hr(200, 300)]
            })
            .is_err());
        // Release of an unfenced range is refused.
        assert!(t
            .apply(&OwnershipOp::Release {
                epoch: 2,
                ranges: vec![hr(0, 10)],
                to: CellId(2)
            })
            .is_err());
        assert!(matches!(
            t.apply(&OwnershipOp::Prepare {
                epoch: 2,
                ranges: vec![hr(10, 5)]
            }),
            Err(OwnershipError::BadRange { .. })
        ));
        assert_eq!(t, before);
    }

    #[test]
    fn cancel_returns_to_the_start() {
        let mut src = OwnershipTable::default();
        src.apply(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![HashRange::FULL],
        })
        .unwrap();
        let r = vec![hr(10, 20)];
        src.apply(&OwnershipOp::Fence {
            epoch: 2,
            ranges: r.clone(),
            seal: true,
        })
        .unwrap();
        src.apply(&OwnershipOp::Unfence {
            epoch: 2,
            ranges: r.clone(),
        })
        .unwrap();
        assert_eq!(src.owned_ranges(), vec![HashRange::FULL]);
        let mut dst = OwnershipTable::default();
        dst.apply(&OwnershipOp::Assign {
            epoch: 1,
            owned: vec![],
        })
        .unwrap();
        dst.apply(&OwnershipOp::Prepare {
            epoch: 2,
            ranges: r.clone(),
        })
        .unwrap();
        dst.apply(&OwnershipOp::Abort {
            epoch: 2,
            ranges: r,
        })
        .unwrap();
        assert!(dst.entries.is_empty());
        assert!(dst.managed);
    }

    #[test]
    fn serde_shape_is_stable() {
        let op = OwnershipOp::Release {
            epoch: 4,
            ranges: vec![hr(1, 2)],
            to: CellId(3),
        };
        let v = serde_json::to_value(&op).unwrap();
        assert_eq!(v["release"]["to"], 3);
        // Externally tagged, so bincode (the Raft log) can carry it too.
        let bin = crate::wire::encode(&op).unwrap();
        assert_eq!(crate::wire::decode::<OwnershipOp>(&bin).unwrap(), op);
        let e = RangeEntry {
            range: hr(1, 2),
            state: RangeState::Moved { to: CellId(3) },
            epoch: 4,
        };
        let v = serde_json::to_value(e).unwrap();
        assert_eq!(v["state"]["moved"]["to"], 3);
        let back: RangeEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let mut t = OwnershipTable::default();
        t.entries.push(e);
        let bin = crate::wire::encode(&t).unwrap();
        assert_eq!(crate::wire::decode::<OwnershipTable>(&bin).unwrap(), t);
        let row = serde_json::to_string(&RangeOwner(7, CellId(2))).unwrap();
        assert_eq!(row, "[7,2]");
    }
}
