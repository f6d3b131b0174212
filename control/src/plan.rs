//! Migration planning, pure: which ranges must move (the diff between the
//! map's ownership table and the target ring), how they group into batches
//! (one source and destination, bounded bytes and ranges), and the numbers
//! an operator sees — per-pair totals, progress, rate, ETA, pause percentiles.

use std::collections::BTreeMap;

use common::admin::{BatchPlan, PairPlan};
use common::wire::RangeStats;
use common::{CellId, CellMap, HashRange, RoutingTable};
use thiserror::Error;

/// One range changing owner.
pub type Move = (HashRange, CellId, CellId);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    #[error("no cell would own anything: at least one cell must be active or isolated")]
    NoTarget,
    #[error("the map's ownership table is invalid: {0}")]
    BadMap(String),
}

/// Where the map's ownership differs from its target ring, sorted by range.
pub fn pending_moves(map: &CellMap) -> Result<Vec<Move>, PlanError> {
    let current = map
        .routing()
        .map_err(|e| PlanError::BadMap(e.to_string()))?;
    let ring = map.target_ring().ok_or(PlanError::NoTarget)?;
    Ok(current.diff(&RoutingTable::from_ring(&ring)))
}

/// The moves of the first (from, to) pair in `moves`: the candidates of the next batch.
pub fn first_pair(moves: &[Move]) -> Option<(CellId, CellId, Vec<HashRange>)> {
    let &(_, from, to) = moves.first()?;
    let ranges = moves
        .iter()
        .filter(|(_, f, t)| *f == from && *t == to)
        .map(|(r, _, _)| *r)
        .collect();
    Some((from, to, ranges))
}

/// Takes ranges in order (with their stats) while the batch stays within
/// `max_bytes` and `max_ranges`; always at least one range.
pub fn make_batch(
    from: CellId,
    to: CellId,
    ranges: &[HashRange],
    stats: &[RangeStats],
    max_bytes: u64,
    max_ranges: usize,
) -> BatchPlan {
    let mut b = BatchPlan {
        from,
        to,
        ranges: Vec::new(),
        range_keys: Vec::new(),
        keys: 0,
        bytes: 0,
    };
    for (i, r) in ranges.iter().enumerate() {
        let (k, by) = stats
            .get(i)
            .filter(|s| s.range == *r)
            .map_or((0, 0), |s| (s.keys, s.bytes));
        if !b.ranges.is_empty() && (b.ranges.len() >= max_ranges || b.bytes + by > max_bytes) {
            break;
        }
        b.ranges.push(*r);
        b.range_keys.push(k);
        b.keys += k;
        b.bytes += by;
    }
    b
}

/// Groups `moves` per (from, to), with keys and bytes from `stats` (by range).
pub fn summarize(moves: &[Move], stats: &BTreeMap<HashRange, RangeStats>) -> Vec<PairPlan> {
    let mut pairs: BTreeMap<(CellId, CellId), PairPlan> = BTreeMap::new();
    for (r, from, to) in moves {
        let p = pairs.entry((*from, *to)).or_insert(PairPlan {
            from: *from,
            to: *to,
            ranges: 0,
            share_pct: 0.0,
            keys: 0,
            bytes: 0,
        });
        p.ranges += 1;
        p.share_pct += r.len() as f64 / 18_446_744_073_709_551_616.0 * 100.0;
        if let Some(s) = stats.get(r) {
            p.keys += s.keys;
            p.bytes += s.bytes;
        }
    }
    pairs.into_values().collect()
}

/// Seconds to copy `bytes` at `bandwidth` bytes per second.
pub fn estimate_secs(bytes: u64, bandwidth: u64) -> f64 {
    if bandwidth == 0 {
        return f64::INFINITY;
    }
    bytes as f64 / bandwidth as f64
}

/// Rate and ETA from bytes moved in `active_secs` of running time.
pub fn rate_and_eta(done_bytes: u64, total_bytes: u64, active_secs: f64) -> (f64, Option<f64>) {
    if active_secs <= 0.0 || done_bytes == 0 {
        return (0.0, None);
    }
    let rate = done_bytes as f64 / active_secs;
    let left = total_bytes.saturating_sub(done_bytes);
    (rate, Some(left as f64 / rate))
}

/// ETA from ranges when bytes say nothing (empty cells): time per range so far.
pub fn eta_by_ranges(done: u64, total: u64, active_secs: f64) -> Option<f64> {
    if done == 0 || active_secs <= 0.0 {
        return None;
    }
    Some(total.saturating_sub(done) as f64 * active_secs / done as f64)
}

/// Max and p99 (nearest rank) of per-batch write pauses in milliseconds.
pub fn pause_stats(pauses_ms: &[u64]) -> (Option<u64>, Option<u64>) {
    if pauses_ms.is_empty() {
        return (None, None);
    }
    let mut v = pauses_ms.to_vec();
    v.sort_unstable();
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    (v.last().copied(), Some(v[rank.clamp(1, v.len()) - 1]))
}

/// The smallest range covering every range in `ranges` (purges work on it:
/// a cell purges only what it may, so covering extra hashes is harmless).
pub fn covering(ranges: &[HashRange]) -> Option<HashRange> {
    let start = ranges.iter().map(|r| r.start).min()?;
    let end = ranges.iter().map(|r| r.end).max()?;
    Some(HashRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{CellSpec, CellState, NodeId, ReplicaSpec, Ring};

    fn hr(start: u64, end: u64) -> HashRange {
        HashRange { start, end }
    }

    fn spec(id: u32, state: CellState) -> CellSpec {
        CellSpec {
            id: CellId(id),
            weight: 1,
            replicas: vec![ReplicaSpec {
                node_id: NodeId(1),
                api_addr: format!("127.0.0.1:{}", 7000 + id),
                control_addr: None,
            }],
            state,
        }
    }

    fn map_with(cells: Vec<CellSpec>, owners_of: &[u32]) -> CellMap {
        let ring = Ring::new(
            &owners_of
                .iter()
                .map(|&c| (CellId(c), 1))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        CellMap {
            epoch: 1,
            cells,
            owners: RoutingTable::from_ring(&ring).to_owners(),
            moving: vec![],
        }
    }

    #[test]
    fn adding_a_cell_moves_only_to_it() {
        let m = map_with(
            vec![
                spec(1, CellState::Active),
                spec(2, CellState::Active),
                spec(3, CellState::Active),
            ],
            &[1, 2],
        );
        let moves = pending_moves(&m).unwrap();
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|(_, _, to)| *to == CellId(3)));
        let share: f64 = moves.iter().map(|(r, _, _)| r.len() as f64).sum::<f64>() / 2f64.powi(64);
        assert!((share - 1.0 / 3.0).abs() < 0.05, "{share}");
        // Applying every move reaches the target: nothing left to do.
        let mut t = m.routing().unwrap();
        for (r, _, to) in &moves {
            t = t.with_assignment(*r, *to);
        }
        let mut done = m.clone();
        done.owners = t.to_owners();
        assert!(pending_moves(&done).unwrap().is_empty());
    }

    #[test]
    fn draining_moves_everything_off_the_cell() {
        let mut m = map_with(
            vec![
                spec(1, CellState::Active),
                spec(2, CellState::Active),
                spec(3, CellState::Active),
            ],
            &[1, 2, 3],
        );
        assert!(pending_moves(&m).unwrap().is_empty());
        m.cells[1].state = CellState::Draining;
        let moves = pending_moves(&m).unwrap();
        assert!(moves
            .iter()
            .all(|(_, from, to)| *from == CellId(2) && *to != CellId(2)));
        let moved: u128 = moves.iter().map(|(r, _, _)| r.len()).sum();
        let owned: u128 = m
            .routing()
            .unwrap()
            .ranges_of(CellId(2))
            .iter()
            .map(HashRange::len)
            .sum();
        assert_eq!(moved, owned);
        for c in &mut m.cells {
            c.state = CellState::Draining;
        }
        assert_eq!(pending_moves(&m), Err(PlanError::NoTarget));
    }

    #[test]
    fn batches_are_bounded_and_non_empty() {
        let ranges: Vec<HashRange> = (0..10).map(|i| hr(i * 10, i * 10 + 9)).collect();
        let stats: Vec<RangeStats> = ranges
            .iter()
            .map(|r| RangeStats {
                range: *r,
                keys: 2,
                bytes: 100,
            })
            .collect();
        let b = make_batch(CellId(1), CellId(2), &ranges, &stats, 350, 100);
        assert_eq!(b.ranges.len(), 3);
        assert_eq!((b.keys, b.bytes), (6, 300));
        assert_eq!(b.range_keys, vec![2, 2, 2]);
        let b = make_batch(CellId(1), CellId(2), &ranges, &stats, 10_000, 4);
        assert_eq!(b.ranges.len(), 4);
        // One range larger than the limit still makes a batch of one.
        let b = make_batch(CellId(1), CellId(2), &ranges, &stats, 1, 4);
        assert_eq!(b.ranges.len(), 1);
        // Missing or mismatched stats count as empty.
        let b = make_batch(CellId(1), CellId(2), &ranges, &[], 1, 100);
        assert_eq!(b.ranges.len(), 10);
        assert_eq!(b.bytes, 0);
    }

    #[test]
    fn first_pair_and_summary() {
        let moves = vec![
            (hr(0, 9), CellId(1), CellId(3)),
            (hr(10, 19), CellId(2), CellId(3)),
            (hr(20, 29), CellId(1), CellId(3)),
        ];
        let (f, t, rs) = first_pair(&moves).unwrap();
        assert_eq!((f, t), (CellId(1), CellId(3)));
        assert_eq!(rs, vec![hr(0, 9), hr(20, 29)]);
        let mut stats = BTreeMap::new();
        stats.insert(
            hr(0, 9),
            RangeStats {
                range: hr(0, 9),
                keys: 5,
                bytes: 50,
            },
        );
        let s = summarize(&moves, &stats);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].ranges, s[0].keys, s[0].bytes), (2, 5, 50));
        assert_eq!((s[1].from, s[1].ranges, s[1].keys), (CellId(2), 1, 0));
        assert!(first_pair(&[]).is_none());
    }

    #[test]
    fn progress_math() {
        assert_eq!(estimate_secs(100, 50), 2.0);
        assert!(estimate_secs(1, 0).is_infinite());
        let (rate, eta) = rate_and_eta(100, 300, 10.0);
        assert_eq!(rate, 10.0);
        assert_eq!(eta, Some(20.0));
        assert_eq!(rate_and_eta(0, 300, 10.0), (0.0, None));
        assert_eq!(rate_and_eta(400, 300, 10.0).1, Some(0.0));
        assert_eq!(eta_by_ranges(5, 20, 10.0), Some(30.0));
        assert_eq!(eta_by_ranges(0, 20, 10.0), None);
        assert_eq!(pause_stats(&[]), (None, None));
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(pause_stats(&v), (Some(200), Some(198)));
        assert_eq!(pause_stats(&[7]), (Some(7), Some(7)));
        assert_eq!(covering(&[hr(5, 9), hr(0, 2)]), Some(hr(0, 9)));
        assert_eq!(covering(&[]), None);
    }
}
