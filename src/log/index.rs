//! The sparse per-segment indexes, kept in memory and persisted in Kafka's layouts:
//! `.index` holds (relative offset u32, file position u32) big-endian, one entry per
//! `index.interval.bytes` of log; `.timeindex` holds (max timestamp i64, relative offset u32).
//! Both are rebuildable from the log, so loading refuses anything that is not plausible and
//! the caller rebuilds instead.

pub(crate) const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
pub(crate) const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Largest index file we load and most entries one segment's index holds; Kafka's
/// segment.index.bytes default. A segment whose index is full is rolled.
pub(crate) const INDEX_FILE_SIZE_MAX_BYTES: u64 = 10 << 20;
pub(crate) const OFFSET_INDEX_ENTRIES_MAX: usize =
    INDEX_FILE_SIZE_MAX_BYTES as usize / OFFSET_INDEX_ENTRY_BYTES;
pub(crate) const TIME_INDEX_ENTRIES_MAX: usize =
    INDEX_FILE_SIZE_MAX_BYTES as usize / TIME_INDEX_ENTRY_BYTES;

/// One offset index entry: the batch starting at `relative_offset` begins at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time index entry: the batch at `relative_offset` holds `timestamp`, the largest
/// timestamp of the segment up to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset, "offsets rise");
            assert!(entry.position > last.position, "positions rise");
        }
        self.entries.push(entry);
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= OFFSET_INDEX_ENTRIES_MAX
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// The entry of the last indexed batch starting at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry whose batch starts at or below `position`.
    pub fn last_at_or_below_position(&self, position: u64) -> Option<OffsetEntry> {
        let after = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries at or past `position`, whose batches are gone or not yet re-validated.
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Loads entries, or `None` when the bytes are not a plausible index of a log of
    /// `log_size_bytes`: a torn entry, entries that do not rise, a position past the log.
    pub fn decode(bytes: &[u8], log_size_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES)
            || bytes.len() / OFFSET_INDEX_ENTRY_BYTES > OFFSET_INDEX_ENTRIES_MAX
        {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[..4].try_into().expect("4 bytes")),
                position: u32::from_be_bytes(chunk[4..].try_into().expect("4 bytes")),
            };
            let rises = index.last().is_none_or(|last| {
                entry.relative_offset > last.relative_offset && entry.position > last.position
            });
            if !rises || u64::from(entry.position) >= log_size_bytes || entry.position == 0 {
                return None;
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records a new largest timestamp; entries whose timestamp does not rise are skipped,
    /// as Kafka does, so the index stays sorted by both fields.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        if let Some(last) = self.entries.last() {
            if entry.timestamp <= last.timestamp {
                return;
            }
            assert!(
                entry.relative_offset >= last.relative_offset,
                "offsets rise"
            );
        }
        if self.entries.len() < TIME_INDEX_ENTRIES_MAX {
            self.entries.push(entry);
        }
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// The batch to start a timestamp search from: every batch before the last entry whose
    /// timestamp is below `timestamp` is below it too.
    pub fn lookup_before(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self.entries.partition_point(|e| e.timestamp < timestamp);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries about batches at or past `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Loads entries, or `None` when they are torn or do not rise.
    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES)
            || bytes.len() / TIME_INDEX_ENTRY_BYTES > TIME_INDEX_ENTRIES_MAX
        {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let entry = TimeEntry {
                timestamp: i64::from_be_bytes(chunk[..8].try_into().expect("8 bytes")),
                relative_offset: u32::from_be_bytes(chunk[8..].try_into().expect("4 bytes")),
            };
            let rises = index.last().is_none_or(|last| {
                entry.timestamp > last.timestamp && entry.relative_offset >= last.relative_offset
            });
            if !rises {
                return None;
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_index(entries: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in entries {
            index.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        index
    }

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before() {
        let index = offset_index(&[(10, 100), (20, 200), (30, 300)]);
        assert_eq!(index.lookup(5), None);
        assert_eq!(index.lookup(10).map(|e| e.position), Some(100));
        assert_eq!(index.lookup(29).map(|e| e.position), Some(200));
        assert_eq!(index.lookup(u32::MAX).map(|e| e.position), Some(300));
    }

    #[test]
    fn offset_index_round_trips_and_refuses_garbage() {
        let index = offset_index(&[(10, 100), (20, 200)]);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 1000), Some(index.clone()));
        assert_eq!(OffsetIndex::decode(&bytes[..12], 1000), None, "torn entry");
        assert_eq!(
            OffsetIndex::decode(&bytes, 150),
            None,
            "position past the log"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(OffsetIndex::decode(&swapped, 1000), None, "falling entries");
        let mut truncated = index;
        truncated.truncate_to_position(200);
        assert_eq!(truncated, offset_index(&[(10, 100)]));
    }

    #[test]
    fn time_index_keeps_rising_timestamps_only() {
        let mut index = TimeIndex::default();
        for (timestamp, relative_offset) in [(5, 0), (4, 1), (9, 2), (9, 3), (12, 3)] {
            index.maybe_push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(index.lookup_before(5), None);
        assert_eq!(index.lookup_before(6).map(|e| e.relative_offset), Some(0));
        assert_eq!(index.lookup_before(100).map(|e| e.relative_offset), Some(3));
        index.truncate_to_offset(3);
        assert_eq!(index.last().map(|e| e.timestamp), Some(9));
        assert_eq!(TimeIndex::decode(&[1, 2, 3]), None);
    }
}
