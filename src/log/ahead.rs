//! Space written ahead of the log end, for lone durable writes.
//!
//! A lone acks=all append is written with O_DSYNC (`append::write_chunk`). Appended past the end
//! of the file, that write also allocates blocks and grows the inode, and its sync waits for
//! that metadata as well as for the data. Over blocks that already hold written data it waits
//! for the data alone: on this machine's disk a 4 KiB O_DSYNC write took p50 164 µs appended and
//! 110 µs over written blocks (fio, io_uring, queue depth 1). So while a partition takes lone
//! durable writes, a background fill keeps zeros written past the log end of its active segment,
//! and the next writes land on blocks that exist.
//!
//! * The zeros are written while the fill holds the write lock, so no append can be written into
//!   their range before them. Their fdatasync runs after the lock is released, on a descriptor of
//!   the fill's own: a writeback error is reported once per descriptor, and this sync must not
//!   take that report from the log's own syncs.
//! * Nothing reads past a segment's `size_bytes`: the file is longer, the log is not.
//! * Close, a roll's background task and a failed write cut the zeros off; recovery cuts an
//!   all-zero tail left by a crash without calling it damage (`recovery::open_segment`).
//! * Bounded: one fill of `write_ahead_bytes` per partition at a time, none while the log grows
//!   faster than `AHEAD_RATE_MAX_BYTES_PER_MS`, and at most `AHEAD_SHARD_MAX_BYTES` of zeros
//!   past the log ends of one shard's partitions (10,000 partitions must not hold 10,000
//!   windows).

use std::cell::Cell;
use std::rc::Rc;

use super::file::{self, SegmentFile};
use super::{PartitionLog, now_ms};

/// The log's write rate is measured over intervals at least this long.
const RATE_INTERVAL_MS: i64 = 25;

/// Zeros are written ahead only while the log grew at most this fast over the last interval
/// (bytes per ms: 10 MB/s). A faster log batches its durable writes, overruns any window in
/// milliseconds, and would pay its disk bandwidth twice.
const AHEAD_RATE_MAX_BYTES_PER_MS: u64 = 10_000;

/// Most bytes of zeros past the log ends of one shard's partitions.
pub(crate) const AHEAD_SHARD_MAX_BYTES: u64 = 64 << 20;

/// Largest `write_ahead_bytes` a log takes.
pub const WRITE_AHEAD_MAX_BYTES: u64 = 4 << 20;

/// Fills start on a page boundary: the page holding the log end is already allocated.
const PAGE_BYTES: u64 = 4096;

/// Most zeros a segment file can hold past its log end: a fill may start just under a full
/// window ahead (at most `WRITE_AHEAD_MAX_BYTES`), a page up, and write one window more.
/// Recovery reads no further looking for them.
pub(super) const ZEROS_PAST_END_MAX_BYTES: u64 = 2 * WRITE_AHEAD_MAX_BYTES + PAGE_BYTES;

thread_local! {
    /// Zeros past the log ends of this shard's partitions (each log's `counted`, summed).
    static SHARD_AHEAD_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// One log's zeros past its end.
#[derive(Default)]
pub(super) struct WriteAhead {
    /// The segment (base offset) whose file holds the zeros; `written_to` means nothing for
    /// any other segment.
    segment: Cell<Option<i64>>,
    /// End of the zeros written into that segment's file.
    written_to: Cell<u64>,
    /// Bytes of them past the log end, as counted in `SHARD_AHEAD_BYTES`.
    counted: Cell<u64>,
    filling: Cell<bool>,
    /// Start of the current rate interval: time, and the active segment and its end then.
    rate_mark: Cell<Option<(i64, i64, u64)>>,
    /// The log grew slowly enough over the last whole interval (or none has passed yet).
    slow: Cell<bool>,
    /// Fills finished, for tests.
    fills: Cell<u64>,
}

impl WriteAhead {
    /// End of the zeros in the segment at `base_offset`'s file, or 0.
    fn written_to(&self, base_offset: i64) -> u64 {
        match self.segment.get() {
            Some(base) if base == base_offset => self.written_to.get(),
            _ => 0,
        }
    }

    /// Measures the log's growth; returns whether it is slow enough for zeros ahead.
    fn measure_rate(&self, now: i64, base_offset: i64, log_end: u64) -> bool {
        match self.rate_mark.get() {
            Some((since, base, end)) if base == base_offset => {
                let elapsed = now - since;
                if elapsed >= RATE_INTERVAL_MS {
                    let grown = log_end.saturating_sub(end);
                    self.slow
                        .set(grown <= AHEAD_RATE_MAX_BYTES_PER_MS * elapsed as u64);
                    self.rate_mark.set(Some((now, base_offset, log_end)));
                }
            }
            // First write, or a new segment: start an interval, keep the last verdict.
            _ => {
                if self.rate_mark.get().is_none() {
                    self.slow.set(true);
                }
                self.rate_mark.set(Some((now, base_offset, log_end)));
            }
        }
        self.slow.get()
    }

    /// Counts the zeros past `log_end` in the shard's total.
    fn recount(&self, base_offset: i64, log_end: u64) {
        self.set_counted(self.written_to(base_offset).saturating_sub(log_end));
    }

    /// What this log adds to `SHARD_AHEAD_BYTES`: the one place the total changes.
    fn set_counted(&self, bytes: u64) {
        let before = self.counted.replace(bytes);
        SHARD_AHEAD_BYTES.with(|total| total.set(total.get() - before + bytes));
    }

    /// Forgets the zeros (the file was or is about to be cut at its log end). Returns whether the
    /// segment at `base_offset` may have any past its end.
    pub(super) fn forget(&self, base_offset: i64) -> bool {
        let had = self.segment.get() == Some(base_offset);
        if had {
            self.segment.set(None);
            self.written_to.set(0);
        }
        self.set_counted(0);
        had
    }

    #[cfg(test)]
    pub(super) fn fills(&self) -> u64 {
        self.fills.get()
    }

    #[cfg(test)]
    pub(super) fn filling(&self) -> bool {
        self.filling.get()
    }
}

impl Drop for WriteAhead {
    /// A log dropped without close (a partition moved away, or a test's crash) stops counting.
    fn drop(&mut self) {
        self.set_counted(0);
    }
}

/// Zeros past the log ends of this shard's partitions, in bytes (a metric).
pub fn shard_ahead_bytes() -> u64 {
    SHARD_AHEAD_BYTES.with(Cell::get)
}

impl PartitionLog {
    /// After a write moved the end of the active segment (at `base_offset`, in `file`) to
    /// `log_end`: zeros it wrote over leave the count, and a lone durable write (`write_through`)
    /// starts a fill when less than `write_ahead_bytes` is left ahead of it.
    /// A log that grows fast gets blocks allocated ahead of its end instead
    /// (`SegmentFile::preallocate_ahead`).
    pub(super) fn after_write(
        &self,
        file: &Rc<SegmentFile>,
        base_offset: i64,
        log_end: u64,
        write_through: bool,
    ) {
        let ahead = &self.write_ahead;
        ahead.recount(base_offset, log_end);
        let slow = ahead.measure_rate(now_ms(), base_offset, log_end);
        if !slow {
            file.preallocate_ahead(log_end);
        }
        let bytes = self.config.borrow().write_ahead_bytes;
        if !write_through || bytes == 0 || ahead.filling.get() || !slow {
            return;
        }
        if ahead.written_to(base_offset).saturating_sub(log_end) >= bytes {
            return;
        }
        if SHARD_AHEAD_BYTES.with(Cell::get) + bytes > AHEAD_SHARD_MAX_BYTES {
            return;
        }
        let Some(log) = self.me.upgrade() else {
            return;
        };
        ahead.filling.set(true);
        file::spawn_detached(async move {
            if let Err(e) = log.fill_ahead(base_offset, bytes).await {
                // Only the speed of later writes depends on the zeros; the log's own syncs
                // report a failing disk.
                tracing::debug!(dir = %log.dir.display(), error = %e, "writing zeros ahead of the log end failed");
            }
            log.write_ahead.filling.set(false);
        });
    }

    /// Writes `bytes` of zeros past the end of the segment at `base_offset`, if it is still
    /// the active one, and syncs them.
    async fn fill_ahead(&self, base_offset: i64, bytes: u64) -> std::io::Result<()> {
        // Opened, not created: a segment deleted meanwhile is not brought back.
        let file = SegmentFile::open_existing(&self.segment_log_path(base_offset)).await?;
        {
            let _turn = self.write_lock.lock().await;
            let log_end = {
                let state = self.state.borrow();
                if state.closed || state.active().base_offset != base_offset {
                    return Ok(());
                }
                state.active().size_bytes
            };
            let ahead = &self.write_ahead;
            let from = ahead
                .written_to(base_offset)
                .max(log_end.next_multiple_of(PAGE_BYTES));
            let written = file.write_at(vec![0; bytes as usize], from).await;
            // The log's own descriptor did not see the file grow.
            let state = self.state.borrow();
            if state.active().base_offset == base_offset {
                state.active().file.forget_size();
            }
            drop(state);
            // Even a failed write may have left some zeros: whoever cuts the tail must know.
            ahead.segment.set(Some(base_offset));
            ahead.written_to.set(from + bytes);
            ahead.recount(base_offset, log_end);
            written?;
        }
        file.fdatasync().await?;
        self.write_ahead.fills.set(self.write_ahead.fills.get() + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_written_ahead_only_while_the_log_grows_slowly() {
        let ahead = WriteAhead::default();
        assert!(
            ahead.measure_rate(0, 0, 0),
            "the first write finds a slow log"
        );
        assert!(
            ahead.measure_rate(10, 0, 1 << 20),
            "the interval is not over yet"
        );
        // 1 MiB in 30 ms is 35 MB/s.
        assert!(!ahead.measure_rate(30, 0, 1 << 20));
        assert!(
            !ahead.measure_rate(40, 0, 1 << 20),
            "kept until the next interval ends"
        );
        // 1,000 bytes in the 30 ms since: slow again.
        assert!(ahead.measure_rate(60, 0, (1 << 20) + 1000));
        // 100 MiB 10 ms later, but the interval is not over: still slow. A roll then starts a
        // new interval at the new segment and keeps the verdict; the 100 MiB are not counted.
        assert!(ahead.measure_rate(70, 0, 100 << 20));
        assert!(ahead.measure_rate(71, 5, 0));
        assert_eq!(ahead.rate_mark.get(), Some((71, 5, 0)));
        assert!(ahead.measure_rate(100, 5, 1000));
    }

    #[test]
    fn the_shard_count_follows_writes_fills_and_forgetting() {
        let base = SHARD_AHEAD_BYTES.with(Cell::get);
        let ahead = WriteAhead::default();
        ahead.segment.set(Some(0));
        ahead.written_to.set(300_000);
        ahead.recount(0, 100_000);
        assert_eq!(shard_ahead_bytes(), base + 200_000);
        ahead.recount(0, 250_000);
        assert_eq!(shard_ahead_bytes(), base + 50_000);
        ahead.recount(0, 400_000);
        assert_eq!(shard_ahead_bytes(), base, "written past the zeros");
        ahead.recount(0, 100_000);
        assert!(!ahead.forget(7), "another segment has none");
        assert_eq!(shard_ahead_bytes(), base);
        ahead.recount(0, 100_000);
        assert!(ahead.forget(0));
        assert_eq!(ahead.written_to(0), 0);
        ahead.recount(0, 100_000);
        drop(ahead);
        assert_eq!(shard_ahead_bytes(), base);
        let dropped = WriteAhead::default();
        dropped.segment.set(Some(0));
        dropped.written_to.set(8192);
        dropped.recount(0, 0);
        drop(dropped);
        assert_eq!(shard_ahead_bytes(), base, "a dropped log stops counting");
    }
}
