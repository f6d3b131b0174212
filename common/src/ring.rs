//! Placement: the consistent-hash ring that maps a (bucket, key) to the cell
//! that owns it. Pure and deterministic; the encoding, seed and vnode layout
//! are frozen by `tests/ring_golden.rs` (see `docs/ring.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::CellId;
use crate::ownership::RoutingTable;

/// Seed of every placement hash: the ASCII bytes `"cellkv-1"` read as a
/// big-endian u64. Changing it moves every key (needs a data migration).
pub const RING_SEED: u64 = u64::from_be_bytes(*b"cellkv-1");

/// Virtual-node points per unit of cell weight (weight 1 is the default).
///
/// A cell's share of the ring is a sum of `n` near-exponential arcs, so it
/// deviates from the ideal by roughly `1/sqrt(n)` (relative). Measured over 40
/// alternative vnode layouts of 8 equal cells, the worst cell's deviation was
/// at most 26% with 128 points, 8.3% with 1024, 6.3% with 2048 and 4.9% with
/// 4096 (median 2.8%); the frozen layout gives 3.5%. 4096 is the smallest
/// power of two for which ±5% holds for every layout tried, not by luck of the
/// seed. Cost: 64–80 KiB per unit of weight (a position, an owner and one or
/// two index slots per point); the index keeps a lookup to a few cache lines
/// however large the ring is (see [`Ring`]).
pub const VNODES_PER_WEIGHT: u32 = 4096;

/// Upper bound on the sum of cell weights in one ring: bounds the ring to
/// 4 Mi points (~64 MiB) and keeps every vnode index within a u32.
pub const MAX_TOTAL_WEIGHT: u64 = 1024;

/// Domain-separation prefix of the bytes hashed to place a vnode point.
pub const VNODE_DOMAIN: &[u8] = b"cellkv-vnode";

/// Longest placement key hashed from a stack buffer: 1 + 63-byte bucket +
/// 1024-byte key, i.e. every valid (bucket, key). Longer inputs allocate.
const STACK_KEY_LEN: usize = 1 + 63 + 1024;

/// Stack buffer size for the common case of short keys (no 1 KiB memset).
const SHORT_KEY_LEN: usize = 128;

/// Appends the placement key of (bucket, key) to `buf`:
/// `[bucket.len() as u8] ++ bucket ++ key`.
///
/// Bucket names are at most 63 bytes (S3 rules), so the length byte makes the
/// encoding injective. Callers validate bucket names first; for an (invalid)
/// name of 255 bytes or more the length byte saturates at 255.
pub fn encode_placement_key_into(buf: &mut Vec<u8>, bucket: &str, key: &str) {
    buf.reserve(1 + bucket.len() + key.len());
    buf.push(bucket_len_byte(bucket));
    buf.extend_from_slice(bucket.as_bytes());
    buf.extend_from_slice(key.as_bytes());
}

/// The placement key of (bucket, key): `[bucket.len() as u8] ++ bucket ++ key`.
pub fn placement_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_placement_key_into(&mut buf, bucket, key);
    buf
}

/// Position of (bucket, key) on the ring:
/// `xxh3_64_with_seed(placement_key(bucket, key), RING_SEED)`.
/// Does not allocate for any valid bucket name and key (≤ 1088 bytes encoded).
pub fn key_hash(bucket: &str, key: &str) -> u64 {
    let len = 1 + bucket.len() + key.len();
    if len <= SHORT_KEY_LEN {
        hash_on_stack::<SHORT_KEY_LEN>(bucket, key)
    } else if len <= STACK_KEY_LEN {
        hash_on_stack::<STACK_KEY_LEN>(bucket, key)
    } else {
        xxh3_64_with_seed(&placement_key(bucket, key), RING_SEED)
    }
}

/// `key_hash` through an `N`-byte stack buffer; the caller checks the fit.
fn hash_on_stack<const N: usize>(bucket: &str, key: &str) -> u64 {
    let (b, k) = (bucket.as_bytes(), key.as_bytes());
    let len = 1 + b.len() + k.len();
    let mut buf = [0u8; N];
    buf[0] = bucket_len_byte(bucket);
    buf[1..1 + b.len()].copy_from_slice(b);
    buf[1 + b.len()..len].copy_from_slice(k);
    xxh3_64_with_seed(&buf[..len], RING_SEED)
}

fn bucket_len_byte(bucket: &str) -> u8 {
    u8::try_from(bucket.len()).unwrap_or(u8::MAX)
}

/// Position of vnode point `index` of `cell`:
/// `xxh3_64_with_seed(b"cellkv-vnode" ++ cell.0 as u32 BE ++ index as u32 BE, RING_SEED)`.
pub fn vnode_point(cell: CellId, index: u32) -> u64 {
    let mut buf = [0u8; VNODE_DOMAIN.len() + 8];
    buf[..VNODE_DOMAIN.len()].copy_from_slice(VNODE_DOMAIN);
    buf[VNODE_DOMAIN.len()..VNODE_DOMAIN.len() + 4].copy_from_slice(&cell.0.to_be_bytes());
    buf[VNODE_DOMAIN.len() + 4..].copy_from_slice(&index.to_be_bytes());
    xxh3_64_with_seed(&buf, RING_SEED)
}

/// A range of ring positions, BOTH ENDS INCLUSIVE: the whole space is
/// `[0, u64::MAX]` ([`HashRange::FULL`]). Invariant: `start <= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashRange {
    pub start: u64,
    pub end: u64,
}

impl HashRange {
    /// The whole hash space, `[0, u64::MAX]`.
    pub const FULL: HashRange = HashRange {
        start: 0,
        end: u64::MAX,
    };

    /// Whether `h` lies in `[start, end]`.
    pub fn contains(&self, h: u64) -> bool {
        self.start <= h && h <= self.end
    }

    /// Number of hashes in the range (`1..=2^64`).
    pub fn len(&self) -> u128 {
        u128::from(self.end.wrapping_sub(self.start)) + 1
    }

    /// Always false: an inclusive range holds at least one hash.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Fraction of the whole hash space this range covers, in `(0, 1]`.
    pub fn len_fraction(&self) -> f64 {
        self.len() as f64 / SPACE
    }
}

/// Size of the hash space, 2^64, as f64.
const SPACE: f64 = 18_446_744_073_709_551_616.0;

/// The ranges of `cell` among `(range, owner)` rows, in their order.
pub(crate) fn ranges_owned_by(rows: Vec<(HashRange, CellId)>, cell: CellId) -> Vec<HashRange> {
    rows.into_iter()
        .filter(|&(_, c)| c == cell)
        .map(|(r, _)| r)
        .collect()
}

/// Fraction of the hash space the (non-overlapping) `ranges` cover, in `[0, 1]`.
pub(crate) fn space_fraction(ranges: &[HashRange]) -> f64 {
    let total: u128 = ranges.iter().map(HashRange::len).sum();
    total as f64 / SPACE
}

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    #[error("a ring needs at least one cell")]
    Empty,
    #[error("cell {0} is listed more than once; cell ids must be unique")]
    DuplicateCell(CellId),
    #[error("the total weight of the cells is 0; give at least one cell a weight > 0")]
    ZeroTotalWeight,
    #[error(
        "the total weight of the cells is {total}, above the maximum {max}; lower the weights"
    )]
    TotalWeightTooLarge { total: u64, max: u64 },
}

/// The consistent-hash ring: `VNODES_PER_WEIGHT * weight` points per cell; a
/// hash belongs to the cell of the first point `>=` it, wrapping to the first
/// point; of identical points, the lowest cell id wins.
///
/// Lookup is a binary search over the sorted points, narrowed first by a
/// radix index on the top bits of the hash (about one index slot per point),
/// so it touches a handful of points instead of ~20 cache lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Member cells and their weights, sorted by cell id. Zero-weight cells
    /// are members that own no hash space.
    members: Vec<(CellId, u32)>,
    /// Distinct point positions, ascending; never empty.
    points: Vec<u64>,
    /// `owners[i]` owns `points[i]` (the lowest cell id among identical points).
    owners: Vec<CellId>,
    /// `index[b]` = first `i` with `points[i] >= b << index_shift`;
    /// `index.len() == (1 << (64 - index_shift)) + 1`, last entry `points.len()`.
    index: Vec<u32>,
    index_shift: u32,
}

impl Ring {
    /// Builds the ring of `cells` (cell id, weight). Order does not matter.
    pub fn new(cells: &[(CellId, u32)]) -> Result<Ring, RingError> {
        if cells.is_empty() {
            return Err(RingError::Empty);
        }
        let mut members = cells.to_vec();
        members.sort_unstable();
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RingError::DuplicateCell(w[0].0));
        }
        let total: u64 = members.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 {
            return Err(RingError::ZeroTotalWeight);
        }
        if total > MAX_TOTAL_WEIGHT {
            return Err(RingError::TotalWeightTooLarge {
                total,
                max: MAX_TOTAL_WEIGHT,
            });
        }
        let n_points = usize::try_from(total * u64::from(VNODES_PER_WEIGHT))
            .expect("MAX_TOTAL_WEIGHT bounds the point count");
        let mut points = Vec::with_capacity(n_points);
        for &(cell, weight) in &members {
            let n = weight
                .checked_mul(VNODES_PER_WEIGHT)
                .expect("MAX_TOTAL_WEIGHT keeps vnode indexes within u32");
            points.extend((0..n).map(|i| (vnode_point(cell, i), cell)));
        }
        Ok(Ring::from_points(members, points))
    }

    /// Builds the ring from raw (position, cell) points (non-empty; members
    /// sorted): sorts, keeps the lowest cell id of identical points, indexes.
    fn from_points(members: Vec<(CellId, u32)>, mut raw: Vec<(u64, CellId)>) -> Ring {
        raw.sort_unstable();
        raw.dedup_by_key(|&mut (p, _)| p);
        let (points, owners): (Vec<u64>, Vec<CellId>) = raw.into_iter().unzip();
        assert!(!points.is_empty(), "a ring has at least one point");
        let bits = points
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, 24);
        let index_shift = 64 - bits;
        let slots = 1usize << bits;
        let mut index = Vec::with_capacity(slots + 1);
        let mut i = 0usize;
        for b in 0..slots as u64 {
            let slot_start = b << index_shift;
            while i < points.len() && points[i] < slot_start {
                i += 1;
            }
            index.push(u32::try_from(i).expect("MAX_TOTAL_WEIGHT bounds the point count"));
        }
        index.push(u32::try_from(points.len()).expect("MAX_TOTAL_WEIGHT bounds the point count"));
        Ring {
            members,
            points,
            owners,
            index,
            index_shift,
        }
    }

    /// The cell owning ring position `h`.
    pub fn cell_for_hash(&self, h: u64) -> CellId {
        let slot = (h >> self.index_shift) as usize;
        let lo = self.index[slot] as usize;
        let hi = self.index[slot + 1] as usize;
        // Points in [lo, hi) lie in h's slot; if none is >= h, the answer is
        // the first point of a later slot, `hi` (or the wrap to point 0).
        let i = lo + self.points[lo..hi].partition_point(|&p| p < h);
        self.owners.get(i).copied().unwrap_or(self.owners[0])
    }

    /// The cell owning `key` in `bucket`.
    pub fn cell_for(&self, bucket: &str, key: &str) -> CellId {
        self.cell_for_hash(key_hash(bucket, key))
    }

    /// Member cells, sorted by id (including zero-weight members).
    pub fn cells(&self) -> impl Iterator<Item = CellId> + '_ {
        self.members.iter().map(|&(c, _)| c)
    }

    /// Weight of `cell`, or `None` if it is not a member.
    pub fn weight(&self, cell: CellId) -> Option<u32> {
        self.members
            .binary_search_by_key(&cell, |&(c, _)| c)
            .ok()
            .map(|i| self.members[i].1)
    }

    /// The ring as contiguous inclusive ranges covering exactly `[0, u64::MAX]`,
    /// sorted by start, adjacent ranges of the same cell merged.
    pub fn ranges(&self) -> Vec<(HashRange, CellId)> {
        let mut out: Vec<(HashRange, CellId)> = Vec::new();
        let mut push = |start: u64, end: u64, cell: CellId| match out.last_mut() {
            Some((r, c)) if *c == cell && r.end.wrapping_add(1) == start => r.end = end,
            _ => out.push((HashRange { start, end }, cell)),
        };
        let mut next_start = 0u64;
        for (&p, &cell) in self.points.iter().zip(&self.owners) {
            push(next_start, p, cell);
            match p.checked_add(1) {
                Some(s) => next_start = s,
                None => return out, // A point at u64::MAX: no wrap-around arc.
            }
        }
        // Arc after the last point wraps to the first point's cell.
        push(next_start, u64::MAX, self.owners[0]);
        out
    }

    /// The ranges owned by `cell`, sorted by start (empty if it owns none).
    pub fn ranges_of(&self, cell: CellId) -> Vec<HashRange> {
        ranges_owned_by(self.ranges(), cell)
    }

    /// Fraction of the hash space `cell` owns, in `[0, 1]`.
    pub fn share(&self, cell: CellId) -> f64 {
        space_fraction(&self.ranges_of(cell))
    }

    /// Every cell's share of the hash space, by cell id (zero-weight members
    /// included with 0.0).
    pub fn shares(&self) -> BTreeMap<CellId, f64> {
        let mut lens: BTreeMap<CellId, u128> = self.cells().map(|c| (c, 0)).collect();
        for (r, c) in self.ranges() {
            *lens.entry(c).or_default() += r.len();
        }
        lens.into_iter()
            .map(|(c, l)| (c, l as f64 / SPACE))
            .collect()
    }

    /// The ranges whose owner differs between `self` (old) and `new`, as
    /// `(range, from, to)`: exactly what a rebalance from `self` to `new`
    /// moves. Sorted by start; adjacent ranges with the same (from, to) merged.
    pub fn diff(&self, new: &Ring) -> Vec<(HashRange, CellId, CellId)> {
        RoutingTable::from_ring(self).diff(&RoutingTable::from_ring(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a tiny deterministic PRNG for test inputs.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    const N_KEYS: usize = 1_000_000;

    /// Hashes of `n` pseudo-random (bucket, key) pairs: 16 buckets, keys that
    /// look like object names.
    fn sample_hashes(n: usize, seed: u64) -> Vec<u64> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| {
                let bucket = format!("bucket-{}", rng.next() % 16);
                let key = format!("photos/{:x}/{}.jpg", rng.next(), rng.next() % 1000);
                key_hash(&bucket, &key)
            })
            .collect()
    }

    fn ring_of(ids: &[u32]) -> Ring {
        let cells: Vec<(CellId, u32)> = ids.iter().map(|&i| (CellId(i), 1)).collect();
        Ring::new(&cells).expect("valid test ring")
    }

    fn counts(ring: &Ring, hashes: &[u64]) -> BTreeMap<CellId, usize> {
        let mut m = BTreeMap::new();
        for &h in hashes {
            *m.entry(ring.cell_for_hash(h)).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn placement_key_encoding() {
        assert_eq!(placement_key("b", "k"), b"\x01bk".to_vec());
        assert_eq!(placement_key("", ""), vec![0u8]);
        // The length prefix keeps (bucket, key) splits apart.
        assert_ne!(placement_key("ab", "c"), placement_key("a", "bc"));
        let mut buf = b"xx".to_vec();
        encode_placement_key_into(&mut buf, "bk", "é");
        assert_eq!(buf, b"xx\x02bk\xc3\xa9".to_vec());
    }

    #[test]
    fn key_hash_matches_encoding_on_and_off_stack() {
        let (b63, k64, k1024) = ("b".repeat(63), "k".repeat(64), "k".repeat(1024));
        let (k127, k2000) = ("k".repeat(127), "k".repeat(2000));
        let cases = [
            ("b", ""),
            ("bucket", "key"),
            (&b63[..], &k64[..64 - 1]), // exactly 128 bytes
            (&b63[..], &k64[..]),       // 129 bytes
            (&b63[..], &k1024[..]),     // 1088 bytes: the longest valid
            (&b63[..], &k2000[..]),     // allocates
            ("", &k127[..]),            // 128 bytes
            (&b63[..], &k1024[..1000]),
        ];
        for (b, k) in cases {
            assert_eq!(
                key_hash(b, k),
                xxh3_64_with_seed(&placement_key(b, k), RING_SEED)
            );
        }
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }

    #[test]
    fn hash_range_basics() {
        assert!(HashRange::FULL.contains(0) && HashRange::FULL.contains(u64::MAX));
        assert_eq!(HashRange::FULL.len(), 1u128 << 64);
        assert_eq!(HashRange::FULL.len_fraction(), 1.0);
        let r = HashRange { start: 5, end: 5 };
        assert!(r.contains(5) && !r.contains(4) && !r.contains(6));
        assert_eq!(r.len(), 1);
        let half = HashRange {
            start: 0,
            end: u64::MAX / 2,
        };
        assert_eq!(half.len_fraction(), 0.5);
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, r#"{"start":5,"end":5}"#);
        assert_eq!(serde_json::from_str::<HashRange>(&json).expect("parse"), r);
    }

    #[test]
    fn errors_for_bad_input() {
        assert_eq!(Ring::new(&[]), Err(RingError::Empty));
        assert_eq!(
            Ring::new(&[(CellId(1), 1), (CellId(2), 1), (CellId(1), 2)]),
            Err(RingError::DuplicateCell(CellId(1)))
        );
        assert_eq!(
            Ring::new(&[(CellId(1), 0), (CellId(2), 0)]),
            Err(RingError::ZeroTotalWeight)
        );
        assert_eq!(
            Ring::new(&[(CellId(1), 1000), (CellId(2), 25)]),
            Err(RingError::TotalWeightTooLarge {
                total: 1025,
                max: MAX_TOTAL_WEIGHT
            })
        );
        assert!(Ring::new(&[(CellId(1), 1000), (CellId(2), 24)]).is_ok());
    }

    #[test]
    fn construction_is_order_independent() {
        let a = Ring::new(&[(CellId(3), 1), (CellId(1), 2), (CellId(2), 1)]).expect("ring");
        let b = Ring::new(&[(CellId(1), 2), (CellId(2), 1), (CellId(3), 1)]).expect("ring");
        assert_eq!(a, b);
        assert_eq!(
            a.cells().collect::<Vec<_>>(),
            vec![CellId(1), CellId(2), CellId(3)]
        );
        assert_eq!(a.weight(CellId(1)), Some(2));
        assert_eq!(a.weight(CellId(9)), None);
    }

    #[test]
    fn single_cell_owns_everything() {
        let ring = ring_of(&[7]);
        assert_eq!(ring.ranges(), vec![(HashRange::FULL, CellId(7))]);
        assert_eq!(ring.share(CellId(7)), 1.0);
        for h in [0, 1, u64::MAX / 3, u64::MAX] {
            assert_eq!(ring.cell_for_hash(h), CellId(7));
        }
    }

    #[test]
    fn balance_of_eight_equal_cells() {
        let ring = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let hashes = sample_hashes(N_KEYS, 1);
        let counts = counts(&ring, &hashes);
        let ideal = N_KEYS as f64 / 8.0;
        let mut worst_keys = 0.0f64;
        let mut worst_space = 0.0f64;
        for c in ring.cells() {
            let dev = (counts[&c] as f64 - ideal) / ideal;
            let space_dev = (ring.share(c) - 0.125) / 0.125;
            worst_keys = worst_keys.max(dev.abs());
            worst_space = worst_space.max(space_dev.abs());
            assert!(
                dev.abs() < 0.05,
                "cell {c}: {} keys, {dev:+.4} off 1/8",
                counts[&c]
            );
        }
        println!(
            "balance: worst key-count deviation {:.2}%, worst hash-space deviation {:.2}%",
            worst_keys * 100.0,
            worst_space * 100.0
        );
        let total: f64 = ring.shares().values().sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn adding_a_cell_moves_about_one_ninth_all_onto_it() {
        let old = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let new = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let hashes = sample_hashes(N_KEYS, 2);
        let mut moved = 0usize;
        for &h in &hashes {
            let (a, b) = (old.cell_for_hash(h), new.cell_for_hash(h));
            if a != b {
                moved += 1;
                assert_eq!(b, CellId(9), "key moved {a} -> {b}, not onto the new cell");
            }
        }
        let frac = moved as f64 / N_KEYS as f64;
        println!(
            "add 9th cell: moved {:.3}% of keys (ideal {:.3}%)",
            frac * 100.0,
            100.0 / 9.0
        );
        assert!((frac - 1.0 / 9.0).abs() < 0.015, "moved {frac}");
    }

    #[test]
    fn removing_a_cell_moves_only_its_keys() {
        let old = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let new = ring_of(&[1, 2, 3, 4, 6, 7, 8]);
        let hashes = sample_hashes(N_KEYS, 3);
        let mut moved = 0usize;
        for &h in &hashes {
            let (a, b) = (old.cell_for_hash(h), new.cell_for_hash(h));
            if a == CellId(5) {
                assert_ne!(b, CellId(5));
                moved += 1;
            } else {
                assert_eq!(a, b, "key not on the removed cell moved");
            }
        }
        let frac = moved as f64 / N_KEYS as f64;
        println!(
            "remove a cell of 8: moved {:.3}% of keys (ideal 12.5%)",
            frac * 100.0
        );
    }

    #[test]
    fn weight_two_gets_about_twice_the_share() {
        let ring = Ring::new(&[
            (CellId(1), 1),
            (CellId(2), 2),
            (CellId(3), 1),
            (CellId(4), 1),
        ])
        .expect("ring");
        let hashes = sample_hashes(N_KEYS, 4);
        let counts = counts(&ring, &hashes);
        let singles = [1, 3, 4].map(|i| counts[&CellId(i)] as f64);
        let avg_single = singles.iter().sum::<f64>() / 3.0;
        let ratio = counts[&CellId(2)] as f64 / avg_single;
        println!("weight 2 vs weight 1: key ratio {ratio:.3}");
        assert!((ratio - 2.0).abs() < 0.2, "ratio {ratio}");
        assert!((ring.share(CellId(2)) - 0.4).abs() < 0.02);
    }

    #[test]
    fn zero_weight_member_owns_nothing() {
        let ring = Ring::new(&[(CellId(1), 1), (CellId(2), 0)]).expect("ring");
        assert_eq!(ring.cells().collect::<Vec<_>>(), vec![CellId(1), CellId(2)]);
        assert_eq!(ring.ranges(), vec![(HashRange::FULL, CellId(1))]);
        assert!(ring.ranges_of(CellId(2)).is_empty());
        assert_eq!(ring.share(CellId(2)), 0.0);
        assert_eq!(ring.shares()[&CellId(2)], 0.0);
    }

    /// Checks that `ranges` tile `[0, u64::MAX]` and agree with `cell_for_hash`.
    fn check_ranges(ring: &Ring, rng: &mut SplitMix64) {
        let ranges = ring.ranges();
        assert_eq!(ranges.first().map(|(r, _)| r.start), Some(0));
        assert_eq!(ranges.last().map(|(r, _)| r.end), Some(u64::MAX));
        for w in ranges.windows(2) {
            let ((a, ca), (b, cb)) = (w[0], w[1]);
            assert!(a.start <= a.end);
            assert_eq!(a.end + 1, b.start, "gap or overlap between {a:?} and {b:?}");
            assert_ne!(ca, cb, "adjacent ranges of {ca} not merged");
        }
        for &(r, c) in &ranges {
            assert_eq!(ring.cell_for_hash(r.start), c, "start of {r:?}");
            assert_eq!(ring.cell_for_hash(r.end), c, "end of {r:?}");
            let mid = r.start + rng.next() % (r.end - r.start).saturating_add(1).max(1);
            assert!(r.contains(mid));
            assert_eq!(ring.cell_for_hash(mid), c, "{mid} in {r:?}");
        }
        for _ in 0..10_000 {
            let h = rng.next();
            let i = ranges.partition_point(|(r, _)| r.end < h);
            assert!(ranges[i].0.contains(h));
            assert_eq!(ranges[i].1, ring.cell_for_hash(h));
        }
        let by_cell: usize = ring.cells().map(|c| ring.ranges_of(c).len()).sum();
        assert_eq!(by_cell, ranges.len());
    }

    #[test]
    fn ranges_tile_the_space_and_match_lookups() {
        let mut rng = SplitMix64(5);
        check_ranges(&ring_of(&[1, 2, 3]), &mut rng);
        check_ranges(&ring_of(&[1, 2, 3, 4, 5, 6, 7, 8]), &mut rng);
        let weighted = Ring::new(&[(CellId(10), 3), (CellId(20), 1)]).expect("ring");
        check_ranges(&weighted, &mut rng);
    }

    #[test]
    fn ranges_handle_edge_points_and_ties() {
        // Hand-built rings exercise points at 0 and u64::MAX and identical points.
        let ring = Ring::from_points(
            vec![(CellId(1), 1), (CellId(2), 1), (CellId(3), 1)],
            vec![
                (u64::MAX, CellId(1)),
                (100, CellId(3)),
                (0, CellId(2)),
                (200, CellId(3)),
                (100, CellId(1)),
            ],
        );
        assert_eq!(
            ring.cell_for_hash(100),
            CellId(1),
            "tie goes to the lower id"
        );
        assert_eq!(
            ring.ranges(),
            vec![
                (HashRange { start: 0, end: 0 }, CellId(2)),
                (HashRange { start: 1, end: 100 }, CellId(1)),
                (
                    HashRange {
                        start: 101,
                        end: 200
                    },
                    CellId(3)
                ),
                (
                    HashRange {
                        start: 201,
                        end: u64::MAX
                    },
                    CellId(1)
                ),
            ]
        );
        check_ranges(&ring, &mut SplitMix64(6));
        // Wrap-around arc owned by the first point's cell, kept separate from [0, p0].
        let ring = Ring::from_points(
            vec![(CellId(1), 1), (CellId(2), 1)],
            vec![(10, CellId(1)), (20, CellId(2))],
        );
        assert_eq!(
            ring.ranges(),
            vec![
                (HashRange { start: 0, end: 10 }, CellId(1)),
                (HashRange { start: 11, end: 20 }, CellId(2)),
                (
                    HashRange {
                        start: 21,
                        end: u64::MAX
                    },
                    CellId(1)
                ),
            ]
        );
        assert_eq!(ring.cell_for_hash(u64::MAX), CellId(1));
    }

    /// Reference lookup: plain binary search over the points, no index.
    fn slow_cell_for_hash(ring: &Ring, h: u64) -> CellId {
        let i = ring.points.partition_point(|&p| p < h);
        ring.owners[if i == ring.points.len() { 0 } else { i }]
    }

    #[test]
    fn indexed_lookup_matches_plain_binary_search() {
        let mut rng = SplitMix64(8);
        let rings = [
            ring_of(&[1, 2, 3]),
            Ring::new(&[(CellId(4), 5), (CellId(9), 1)]).expect("ring"),
            Ring::from_points(vec![(CellId(1), 1)], vec![(42, CellId(1))]),
            Ring::from_points(
                vec![(CellId(1), 1), (CellId(2), 1)],
                vec![(1 << 63, CellId(1)), ((1 << 63) - 1, CellId(2))],
            ),
        ];
        for ring in &rings {
            let shift = ring.index_shift;
            let mut probes: Vec<u64> = (0..20_000).map(|_| rng.next()).collect();
            for &p in ring.points.iter().take(2000) {
                probes.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
            }
            for b in 0..(1u64 << (64 - shift)).min(4096) {
                let start = b << shift;
                probes.extend([start, start.wrapping_sub(1)]);
            }
            probes.extend([0, 1, u64::MAX - 1, u64::MAX]);
            for h in probes {
                assert_eq!(
                    ring.cell_for_hash(h),
                    slow_cell_for_hash(ring, h),
                    "hash {h}"
                );
            }
        }
    }

    /// Checks `old.diff(new)` against per-hash comparison.
    fn check_diff(old: &Ring, new: &Ring, hashes: &[u64]) {
        let diff = old.diff(new);
        for w in diff.windows(2) {
            let ((a, fa, ta), (b, fb, tb)) = (w[0], w[1]);
            assert!(a.end < b.start, "unsorted or overlapping");
            assert!(a.end + 1 != b.start || (fa, ta) != (fb, tb), "not merged");
        }
        let moved = |h: u64| {
            let i = diff.partition_point(|(r, _, _)| r.end < h);
            diff.get(i)
                .filter(|(r, _, _)| r.contains(h))
                .map(|&(_, f, t)| (f, t))
        };
        for &h in hashes {
            let (a, b) = (old.cell_for_hash(h), new.cell_for_hash(h));
            let expect = (a != b).then_some((a, b));
            assert_eq!(moved(h), expect, "hash {h}");
        }
        for &(r, f, t) in &diff {
            for h in [r.start, r.end] {
                assert_eq!((old.cell_for_hash(h), new.cell_for_hash(h)), (f, t));
            }
        }
    }

    #[test]
    fn diff_agrees_with_per_key_comparison() {
        let hashes = sample_hashes(200_000, 7);
        let eight = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let nine = ring_of(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let seven = ring_of(&[1, 2, 3, 4, 6, 7, 8]);
        let reweighted = Ring::new(&[
            (CellId(1), 2),
            (CellId(2), 1),
            (CellId(3), 1),
            (CellId(4), 1),
            (CellId(5), 1),
            (CellId(6), 1),
            (CellId(7), 1),
            (CellId(8), 1),
        ])
        .expect("ring");
        check_diff(&eight, &nine, &hashes);
        check_diff(&eight, &seven, &hashes);
        check_diff(&eight, &reweighted, &hashes);
        check_diff(&nine, &seven, &hashes);
        assert!(eight.diff(&eight).is_empty());
        assert!(eight.diff(&nine).iter().all(|&(_, _, to)| to == CellId(9)));
        assert!(eight
            .diff(&seven)
            .iter()
            .all(|&(_, from, _)| from == CellId(5)));
        let moved: f64 = eight
            .diff(&nine)
            .iter()
            .map(|(r, _, _)| r.len_fraction())
            .sum();
        assert!((moved - nine.share(CellId(9))).abs() < 1e-12);
    }
}
