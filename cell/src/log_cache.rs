//! The newest Raft log entries, kept decoded in memory so that replication
//! and apply do not read back from RocksDB what was appended a moment ago.
//! On the leader every entry is read three times right after its append (one
//! AppendEntries per follower, then apply); each read built a RocksDB
//! iterator and decoded the entry again, ~7% of the leader's CPU at 16
//! connections (ADR 0015).
//!
//! The cache always holds a suffix of the log: contiguous indexes ending at
//! the last one appended. `LogStore` applies every append, truncation and
//! purge to it, so a read that starts inside the cache finds there every
//! entry the log has from that index on; a read that starts before it goes
//! to RocksDB. It is bounded by entries and bytes and drops its oldest
//! entries first: a follower far behind is served from RocksDB, as before.

use std::collections::VecDeque;
use std::ops::RangeBounds;

use crate::types::Entry;

/// Most entries kept (at least one is always kept, however large).
pub const CACHE_ENTRIES: usize = 4096;
/// Most stored bytes kept; entries carry up to 4 MiB, so a few large ones
/// can take the whole budget.
pub const CACHE_BYTES: usize = 32 << 20;

/// The byte budget of one log read (`max_bytes`): entries are taken until
/// their stored sizes add up past it, but the first always is. Reads from
/// the cache and from RocksDB share it, so both stop at the same entry.
pub struct ReadBudget {
    max: Option<usize>,
    used: usize,
}

impl ReadBudget {
    pub fn new(max: Option<usize>) -> ReadBudget {
        ReadBudget { max, used: 0 }
    }

    /// Counts the next entry's `size`; whether it is still within the budget
    /// (always, if it would be the `first` one taken).
    pub fn admits(&mut self, size: usize, first: bool) -> bool {
        self.used = self.used.saturating_add(size);
        first || self.max.is_none_or(|max| self.used <= max)
    }
}

#[derive(Default)]
pub struct LogCache {
    /// Each entry with its stored (encoded) size, oldest first.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// Adds an entry just written to the log. An index at or below the last
    /// one replaces it and everything after (as the log's truncation did); a
    /// gap empties the cache first, so it stays a suffix of the log.
    pub fn push(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        self.truncate_from(index);
        if self.last_index().is_some_and(|last| last + 1 != index) {
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > 1
            && (self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES)
        {
            self.drop_oldest();
        }
    }

    /// Drops the entries at `index` and after (the log was truncated there).
    pub fn truncate_from(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            self.drop_newest();
        }
    }

    /// Drops the entries up to and including `index` (the log was purged).
    pub fn purge_upto(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.drop_oldest();
        }
    }

    // The only two places entries leave one at a time: `bytes` follows them here.
    fn drop_oldest(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn drop_newest(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `range` from `start` (its first index), if the cache
    /// holds `start` or the log has nothing from there on; `None` when only
    /// RocksDB has them. Within `max_bytes` as a read from RocksDB is
    /// ([`ReadBudget`]).
    pub fn read<RB: RangeBounds<u64>>(
        &self,
        start: u64,
        range: &RB,
        max_bytes: Option<usize>,
    ) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let mut out = Vec::new();
        let mut budget = ReadBudget::new(max_bytes);
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        for (e, size) in self.entries.iter().skip(skip) {
            if !range.contains(&e.log_id.index) {
                break;
            }
            if !budget.admits(*size, out.is_empty()) {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    fn filled(range: std::ops::RangeInclusive<u64>) -> LogCache {
        let mut c = LogCache::default();
        for i in range {
            c.push(entry(1, i), 10);
        }
        c
    }

    #[test]
    fn reads_inside_the_cache_and_declines_before_it() {
        let c = filled(5..=9);
        assert_eq!(
            indexes(&c.read(6, &(6..9), None).unwrap()),
            [(1, 6), (1, 7), (1, 8)]
        );
        assert_eq!(c.read(7, &(7..), None).unwrap().len(), 3);
        assert_eq!(
            c.read(12, &(12..20), None).unwrap().len(),
            0,
            "nothing after the last"
        );
        assert!(
            c.read(4, &(4..8), None).is_none(),
            "index 4 is only in RocksDB"
        );
        assert!(LogCache::default().read(1, &(1..), None).is_none());
    }

    #[test]
    fn keeps_the_byte_budget_but_always_returns_one() {
        let c = filled(1..=5);
        assert_eq!(c.read(1, &(1..), Some(25)).unwrap().len(), 2);
        assert_eq!(c.read(1, &(1..), Some(5)).unwrap().len(), 1);
    }

    #[test]
    fn follows_truncation_purge_and_overwrites_as_a_suffix_of_the_log() {
        let mut c = filled(1..=6);
        c.truncate_from(5);
        assert_eq!(c.last_index(), Some(4));
        // A new leader's entries replace the old ones from index 3 on.
        c.push(entry(2, 3), 10);
        assert_eq!(
            indexes(&c.read(1, &(1..), None).unwrap()),
            [(1, 1), (1, 2), (2, 3)]
        );
        c.purge_upto(2);
        assert!(c.read(2, &(2..), None).is_none());
        assert_eq!(indexes(&c.read(3, &(3..), None).unwrap()), [(2, 3)]);
        // A gap (never made by openraft) empties it rather than leave a hole.
        c.push(entry(2, 9), 10);
        assert!(c.read(3, &(3..), None).is_none());
        assert_eq!(indexes(&c.read(9, &(9..), None).unwrap()), [(2, 9)]);
        assert_eq!(c.bytes, 10);
    }

    #[test]
    fn drops_the_oldest_entries_past_its_bounds() {
        let mut c = LogCache::default();
        for i in 1..=(CACHE_ENTRIES as u64 + 10) {
            c.push(entry(1, i), 1);
        }
        assert_eq!(c.entries.len(), CACHE_ENTRIES);
        assert_eq!(c.first_index(), Some(11));
        c.push(entry(1, CACHE_ENTRIES as u64 + 11), CACHE_BYTES);
        assert_eq!(c.entries.len(), 1, "one huge entry is still kept, alone");
        assert_eq!(c.bytes, CACHE_BYTES);
    }
}
