//! One segment: a log file named by its base offset, its in-memory sparse indexes, and the
//! bookkeeping that appends and recovery share (`on_batch`), so both build identical indexes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::file::SegmentFile;
use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::protocol::batch::BatchHeader;

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Kafka pads base offsets to 20 digits so file names sort by offset.
const FILE_NAME_DIGITS: usize = 20;
/// No timestamp seen yet (Kafka's NO_TIMESTAMP).
pub(crate) const NO_TIMESTAMP: i64 = -1;

pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:0width$}{suffix}", width = FILE_NAME_DIGITS)
}

/// The base offset of a `.log` file name, or `None` for any other file.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Rc<SegmentFile>,
    /// Bytes of whole, written batches; everything below is readable and never changes.
    pub size_bytes: u64,
    /// Offset after the last batch of this segment (`base_offset` when empty).
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index_entry: u64,
    /// Largest batch maxTimestamp seen, and the base offset of the batch holding it.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Wall-clock time the segment was created or opened, for segment.ms.
    pub created_ms: i64,
    /// The persisted index files are behind the in-memory indexes.
    pub index_dirty: bool,
}

impl Segment {
    pub fn new(base_offset: i64, file: Rc<SegmentFile>, created_ms: i64) -> Segment {
        Segment {
            base_offset,
            file,
            size_bytes: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            created_ms,
            index_dirty: true,
        }
    }

    pub fn path(&self, dir: &Path, suffix: &str) -> PathBuf {
        dir.join(file_name(self.base_offset, suffix))
    }

    /// Offset relative to the segment base, as the indexes store it.
    pub fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&relative),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        relative as u32
    }

    /// True when `last_offset` still fits this segment's u32 relative offsets.
    pub fn fits_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(u32::MAX)
    }

    /// Accounts for one whole batch written (or found by recovery) at `position`, which must be
    /// the segment's current end. Indexes the batch when a full interval has passed.
    pub fn on_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        assert_eq!(position, self.size_bytes, "batches are appended at the end");
        assert_eq!(header.base_offset, self.next_offset, "offsets are dense");
        let position_u32 = u32::try_from(position).expect("segment.bytes keeps positions in u32");
        if position > 0
            && self.bytes_since_index_entry >= u64::from(index_interval_bytes)
            && !self.index.is_full()
        {
            let relative_offset = self.relative(header.base_offset);
            self.index.push(OffsetEntry {
                relative_offset,
                position: position_u32,
            });
            if self.max_timestamp != NO_TIMESTAMP {
                self.time_index.maybe_push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset: self.relative(self.offset_of_max_timestamp),
                });
            }
            self.bytes_since_index_entry = 0;
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        let size = header.total_bytes() as u64;
        self.bytes_since_index_entry += size;
        self.size_bytes = position + size;
        self.next_offset = header.next_offset();
        self.index_dirty = true;
    }

    /// Adopts indexes loaded from disk (or kept from before a truncation) as the state at
    /// `position`, the start of the batch at `next_offset`.
    pub fn resume_at(&mut self, position: u64, next_offset: i64) {
        self.size_bytes = position;
        self.next_offset = next_offset;
        self.index.truncate_to_position(position);
        self.time_index
            .truncate_to_offset(self.relative(next_offset));
        self.bytes_since_index_entry = match self.index.last() {
            Some(entry) => position - u64::from(entry.position),
            None => position,
        };
        match self.time_index.last() {
            Some(entry) => {
                self.max_timestamp = entry.timestamp;
                self.offset_of_max_timestamp = self.base_offset + i64::from(entry.relative_offset);
            }
            None => {
                self.max_timestamp = NO_TIMESTAMP;
                self.offset_of_max_timestamp = self.base_offset;
            }
        }
    }

    /// The time index as persisted: with a closing entry for the largest timestamp, so a clean
    /// open knows the segment's maximum without a scan (Kafka writes the same entry on roll).
    pub fn time_index_for_disk(&self) -> TimeIndex {
        let mut index = self.time_index.clone();
        if self.max_timestamp != NO_TIMESTAMP {
            index.maybe_push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative(self.offset_of_max_timestamp),
            });
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_offset_and_parse_back() {
        assert_eq!(file_name(42, LOG_SUFFIX), "00000000000000000042.log");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000004x.log"), None);
    }
}
