//! The partition log: segments of record batches stored exactly as produced, a sparse offset index
//! and a time index per segment, group-committed fdatasync, recovery of a torn tail.
//!
//! Only `file.rs` touches the async runtime; the rest is runtime-free.
//!
//! CONTRACT (used by handlers and net; keep these signatures):
//! * `PartitionLog::open(dir, config, leader_epoch, last_stop).await` recovers and opens one
//!   partition; `last_stop` says how the broker last stopped (its marker, `CLEAN_SHUTDOWN_FILE`).
//! * `append(records, acks).await` appends a validated record set (one or more v2 batches, as
//!   `protocol::batch::validate_record_set` accepted them) and answers per `acks`.
//! * `read(from, max_bytes).await` returns whole batches as file regions.
//! * `appended()` is a future that completes at the next append (long poll).
//! * `offset_for_timestamp(ts)` / `max_timestamp()` for ListOffsets.
//! * `close().await` flushes and writes what a clean open trusts (indexes, producer snapshot);
//!   the broker writes its clean-shutdown marker once every log has closed. `delete().await`
//!   removes it all.

mod ahead;
mod append;
pub mod file;
mod index;
mod notify;
pub mod pagecache;
mod producer;
mod read;
mod reap;
mod recovery;
mod retention;
mod segment;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use crate::limits::{INDEX_INTERVAL_BYTES, SEGMENT_SIZE_DEFAULT_BYTES};
use crate::types::{Acks, Offset};

pub use ahead::{WRITE_AHEAD_MAX_BYTES, shard_ahead_bytes as shard_write_ahead_bytes};
pub use file::SegmentFile;
use notify::{FifoLock, Notify};
pub use producer::ActiveProducer;
use recovery::RecoveryMode;
use segment::{INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_INDEX_SUFFIX};

/// Written in the data directory by the broker once every log closed without an error (Kafka:
/// `.kafka_cleanshutdown` per log directory); its presence at start means the files are whole and
/// the tail scans may skip CRC checks. Removed at start, before anything is written, so a later
/// crash is unclean. Earlier versions wrote one per partition directory; open honours and
/// removes such a file.
pub const CLEAN_SHUTDOWN_FILE: &str = ".sable_clean_shutdown";

/// How the broker stopped last time, as its clean-shutdown marker told at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastStop {
    /// Every log was closed: synced, indexes and snapshots written.
    Clean,
    /// A crash, a kill, or a close that failed: tails are checked batch by batch, CRCs included.
    Unclean,
}

/// Close leaves the producer snapshot as it is when the batches written since it are at most
/// this many bytes: the next open reads their headers instead, about what writing it costs.
const SNAPSHOT_SKIP_MAX_BYTES: u64 = 64 * 1024;
/// Kafka caps segment.bytes at Int.MaxValue; index positions are u32 and a segment may
/// overshoot by one request.
pub const SEGMENT_SIZE_MAX_BYTES: u64 = i32::MAX as u64;
const _: () = assert!(
    SEGMENT_SIZE_MAX_BYTES + crate::limits::REQUEST_SIZE_MAX_BYTES as u64 <= u32::MAX as u64
);

/// `LogConfig::write_ahead_bytes` unless configured.
pub const WRITE_AHEAD_DEFAULT_BYTES: u64 = 256 * 1024;

/// Per-partition settings; Kafka's topic config names in the docs.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes: a segment is rolled before an append would take it past this.
    /// Default 1 GiB; at most `SEGMENT_SIZE_MAX_BYTES`.
    pub segment_bytes: u64,
    /// segment.ms: a segment older than this is rolled at the next append. Default 7 days.
    pub segment_ms: i64,
    /// index.interval.bytes: log bytes between two sparse index entries. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// retention.ms: whole segments whose newest record is older than this are deleted.
    /// -1 keeps everything. Default 7 days.
    pub retention_ms: i64,
    /// retention.bytes: old segments are deleted while the partition is larger than this.
    /// -1 (the default) means no size limit.
    pub retention_bytes: i64,
    /// Bytes of zeros kept written past the log end while the partition takes lone acks=all
    /// appends, so their O_DSYNC writes land on blocks that exist (`ahead`); 0 turns it off.
    /// Sable's own setting, default 256 KiB, at most `WRITE_AHEAD_MAX_BYTES`.
    pub write_ahead_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: INDEX_INTERVAL_BYTES,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            write_ahead_bytes: WRITE_AHEAD_DEFAULT_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {requested} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("corrupt data in {path} at byte {position_bytes}")]
    Corrupt { path: PathBuf, position_bytes: u64 },
    #[error("log is closed")]
    Closed,
    /// An fdatasync of this log failed: nothing more is written to it until the broker restarts
    /// and recovery checks the files. Reads go on.
    #[error("an fdatasync of this log failed; it takes no writes until the broker restarts")]
    SyncFailed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id}: epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    #[error("producer {producer_id}: a retried batch arrived inside a multi-batch record set")]
    DuplicateSequence { producer_id: i64 },
}

/// What an append answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record of the first batch.
    pub base_offset: Offset,
    /// Log start offset after the append.
    pub log_start_offset: Offset,
}

/// A byte range of a segment file, to be sent as-is (sendfile or read + write).
#[derive(Clone)]
pub struct FileRegion {
    pub file: Rc<SegmentFile>,
    pub position: u64,
    pub len: u64,
}

/// Whole batches read for a fetch.
#[derive(Clone, Default)]
pub struct ReadSlice {
    pub regions: Vec<FileRegion>,
    pub len_bytes: u64,
}

/// The mutable part of a log. Borrowed only between awaits, never across one.
struct LogState {
    /// Sorted by base offset; the last is the active segment. Never empty.
    segments: Vec<Segment>,
    /// Next offset to be written; every batch below is whole on disk (page cache at least).
    high_watermark: i64,
    closed: bool,
    /// Log start offset set by DeleteRecords (persisted), or -1; see `log_start()`.
    log_start_explicit: i64,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Index of the segment holding `offset`: the last whose base is at or below it.
    fn segment_for(&self, offset: i64) -> usize {
        let after = self.segments.partition_point(|s| s.base_offset <= offset);
        after.saturating_sub(1)
    }
}

/// Group commit bookkeeping. Writes are numbered as they complete; a sync covers every write
/// completed before it was issued.
#[derive(Default)]
struct SyncState {
    written_seq: Cell<u64>,
    synced_seq: Cell<u64>,
    in_flight: Cell<bool>,
    /// An fdatasync failed: no later sync may be trusted to cover earlier writes.
    failed: Cell<bool>,
    /// fdatasync calls issued, for tests and metrics.
    syncs: Cell<u64>,
    /// Writes made durable by O_DSYNC instead of an fdatasync, for tests.
    write_throughs: Cell<u64>,
    /// Rolled segments whose data the next sync must cover before it counts. A roll does not
    /// sync inline: with a whole segment of dirty pages that stalled appends for seconds.
    unsynced_rolled: RefCell<Vec<Rc<SegmentFile>>>,
    /// A segment was created since the directory was last synced: its name must be made durable
    /// before anything written to it counts as synced.
    dir_unsynced: Cell<bool>,
}

pub struct PartitionLog {
    /// This log, for the background task a roll starts.
    me: Weak<PartitionLog>,
    dir: PathBuf,
    /// Replaced whole when the topic's configs change (`set_config`).
    config: RefCell<LogConfig>,
    leader_epoch: i32,
    state: RefCell<LogState>,
    /// Taken in call order; its holder writes every queued append, from offset assignment to the
    /// end of the write.
    write_lock: FifoLock,
    /// Appends waiting for the holder of `write_lock`, which writes all of them at once.
    queued: append::AppendQueue,
    appended: Rc<Notify>,
    sync: SyncState,
    /// Fires whenever the write lock is released (however the write ended), a queued append
    /// gives up, or a sync ends: what waiting `sync_through` callers re-check on.
    progress: Rc<Notify>,
    /// Idempotent producers' epochs and last batches; checked and updated under `write_lock`.
    producers: RefCell<producer::ProducerStateTable>,
    /// Offset the producer snapshot on disk stands for: an open rebuilds the table from it and
    /// a scan of every batch header after it (from the log start when there is none). `None`:
    /// the file there is unusable, and close replaces it.
    snapshot_offset: Cell<Option<i64>>,
    /// Held while index files and the producer snapshot are written, or segment files deleted,
    /// outside the write lock (after a roll, by retention), and by `close`: those writes never
    /// race each other, a deletion or the final flush. Taken after `write_lock` when both are.
    housekeeping: FifoLock,
    /// Zeros written past the active segment's end for lone durable writes.
    write_ahead: ahead::WriteAhead,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        leader_epoch: i32,
        last_stop: LastStop,
    ) -> Result<Rc<PartitionLog>, LogError> {
        assert!(config.segment_bytes > 0 && config.segment_bytes <= SEGMENT_SIZE_MAX_BYTES);
        assert!(config.write_ahead_bytes <= WRITE_AHEAD_MAX_BYTES);
        let created = file::make_dir(&dir).await?;
        let names = file::list_dir(&dir).await?;
        let own_marker = names.iter().any(|name| name == CLEAN_SHUTDOWN_FILE);
        let clean = last_stop == LastStop::Clean || own_marker;
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|name| segment::parse_log_file_name(name))
            .collect();
        bases.sort_unstable();
        let first_segment = bases.is_empty();
        if first_segment {
            bases.push(0);
        }
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let mode = RecoveryMode {
                verify_crc: is_active && !clean,
                truncate_tail: is_active,
            };
            let segment =
                recovery::open_segment(&dir, base, config.index_interval_bytes, mode, now_ms())
                    .await?;
            segments.push(segment);
            file::yield_if_needed().await;
        }
        if own_marker {
            // Gone before the first append, so a crash from here on is recovered as unclean.
            file::remove_file(&dir.join(CLEAN_SHUTDOWN_FILE)).await?;
        }
        // Names made or removed here durable before anything written in them is acknowledged:
        // a first segment, a consumed marker, and a new directory's own name in its parent. A
        // directory that already held its segments is left alone (10,000 syncs at every start).
        if created || first_segment || own_marker {
            file::sync_dir(&dir).await?;
        }
        if created && let Some(parent) = dir.parent() {
            file::sync_dir(parent).await?;
        }
        let high_watermark = segments.last().expect("at least one segment").next_offset;
        let log_start_explicit = retention::load_log_start(&dir).await?.min(high_watermark);
        let (producers, snapshot_offset) =
            recovery::load_producers(&dir, &segments, high_watermark).await?;
        tracing::debug!(dir = %dir.display(), clean, high_watermark, producers = producers.len(), "log opened");
        let progress = Rc::new(Notify::default());
        Ok(Rc::new_cyclic(|me| PartitionLog {
            me: me.clone(),
            dir,
            config: RefCell::new(config),
            leader_epoch,
            state: RefCell::new(LogState {
                segments,
                high_watermark,
                closed: false,
                log_start_explicit,
            }),
            write_lock: FifoLock::new(Rc::clone(&progress)),
            queued: Default::default(),
            appended: Rc::new(Notify::default()),
            sync: SyncState::default(),
            progress,
            producers: RefCell::new(producers),
            snapshot_offset: Cell::new(snapshot_offset),
            housekeeping: FifoLock::default(),
            write_ahead: Default::default(),
        }))
    }

    /// Appends a validated record set. Offsets are assigned here; baseOffset and
    /// partitionLeaderEpoch are patched in place (both lie outside the CRC).
    /// `Acks::All` returns only after an fdatasync covering the batches; the others after the write.
    pub async fn append(&self, records: Bytes, acks: Acks) -> Result<AppendInfo, LogError> {
        let (base_offset, write_seq) = self.write(records, acks == Acks::All).await?;
        if acks == Acks::All {
            self.sync_through(write_seq, true).await?;
        }
        Ok(AppendInfo {
            base_offset: Offset(base_offset),
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Next offset to be written; everything below is readable.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.state.borrow().high_watermark)
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.state.borrow().log_start())
    }

    /// The idempotent producers this partition knows (DescribeProducers).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.producers.borrow().active()
    }

    /// The partition's current settings.
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Applies changed topic configs live (e.g. a lowered retention.ms); the next append, roll or
    /// retention pass uses them.
    pub fn set_config(&self, config: LogConfig) {
        assert!(config.segment_bytes > 0 && config.segment_bytes <= SEGMENT_SIZE_MAX_BYTES);
        assert!(config.write_ahead_bytes <= WRITE_AHEAD_MAX_BYTES);
        *self.config.borrow_mut() = config;
    }

    /// The leader epoch stamped into every appended batch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Whole batches from the one holding `from`, up to `max_bytes` (at least one batch, KIP-74),
    /// never past the high watermark. `from` == high watermark gives an empty slice.
    pub async fn read(&self, from: Offset, max_bytes: u64) -> Result<ReadSlice, LogError> {
        self.read_batches(from.value(), max_bytes).await
    }

    /// Completes at the next successful append (or when the log closes).
    pub fn appended(&self) -> impl std::future::Future<Output = ()> + 'static {
        let next = self.appended.notified();
        let closed = self.state.borrow().closed;
        async move {
            if !closed {
                next.await;
            }
        }
    }

    /// The first record (not batch) with timestamp >= `timestamp_ms`: (offset, its timestamp).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let found = self.first_record_at_or_after(timestamp_ms).await?;
        Ok(found.map(|(offset, timestamp)| (Offset(offset), timestamp)))
    }

    /// The record with the largest timestamp (KIP-734): (offset, timestamp).
    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let found = self.record_with_max_timestamp().await?;
        Ok(found.map(|(offset, timestamp)| (Offset(offset), timestamp)))
    }

    /// Makes every completed write durable. Meant for the shard's background flush of
    /// acks=0/1 data (flush_interval_ms); acks=all appends already wait for their own sync.
    pub async fn flush(&self) -> Result<(), LogError> {
        self.sync_through(self.sync.written_seq.get(), true).await
    }

    /// fdatasync calls issued so far (group commit shares one among many appends).
    pub fn sync_count(&self) -> u64 {
        self.sync.syncs.get()
    }

    /// Writes made durable by O_DSYNC (a lone acks=all append) instead of an fdatasync.
    pub fn write_through_count(&self) -> u64 {
        self.sync.write_throughs.get()
    }

    /// Syncs everything written and writes what a clean open reads instead of scanning: the
    /// indexes that changed, and a producer snapshot unless little was written since the last.
    /// An idle partition costs no I/O. The broker's clean-shutdown marker, written once every
    /// log has closed, is what lets the next open trust all of it.
    pub async fn close(&self) -> Result<(), LogError> {
        let _turn = self.write_lock.lock().await;
        if self.state.borrow().closed {
            return Ok(());
        }
        self.state.borrow_mut().closed = true;
        // Long polls end now; their next read answers NOT_LEADER_OR_FOLLOWER-style errors or data.
        self.appended.notify_all();
        // No fill writes zeros after this (it takes the write lock, then sees `closed`).
        let (active_base, active_file, active_end) = {
            let state = self.state.borrow();
            let active = state.active();
            (
                active.base_offset,
                Rc::clone(&active.file),
                active.size_bytes,
            )
        };
        if self.write_ahead.forget(active_base) || active_file.has_preallocation() {
            active_file.truncate(active_end).await?;
        }
        self.sync_through(self.sync.written_seq.get(), false)
            .await?;
        // After any index and snapshot writes a roll left running.
        let _housekeeping = self.housekeeping.lock().await;
        let bases: Vec<i64> = self
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect();
        let mut renamed = false;
        for base_offset in bases {
            renamed |= self.persist_indexes(base_offset).await?;
        }
        // A snapshot saves the next open a scan of what was written since the last one; where
        // that is less than writing it costs, the scan is cheaper (10,000 partitions each
        // written a little: three files and two fdatasyncs each made shutdown take seconds).
        let scan_bytes = (self.snapshot_offset.get())
            .map(|from| recovery::producer_scan_bytes(&self.state.borrow().segments, from));
        if scan_bytes.is_none_or(|bytes| bytes > SNAPSHOT_SKIP_MAX_BYTES) {
            self.write_producer_snapshot().await?;
            renamed = true;
        }
        // The new files' names, before the broker's marker says they are there.
        if renamed {
            file::sync_dir(&self.dir).await?;
        }
        tracing::debug!(dir = %self.dir.display(), "log closed cleanly");
        Ok(())
    }

    /// Closes and removes the partition directory.
    pub async fn delete(&self) -> Result<(), LogError> {
        if let Err(e) = self.close().await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "close before delete failed");
        }
        file::remove_dir_all(&self.dir).await?;
        // The segments still hold their files; whoever drops the log would close them, and free
        // every cached page of the partition, on this shard. Free them here, elsewhere.
        let files: Vec<_> = (self.state.borrow().segments.iter())
            .map(|s| Rc::clone(&s.file))
            .collect();
        for file in &files {
            SegmentFile::free_unlinked(file, 1).await;
        }
        Ok(())
    }

    /// Writes the indexes of the segment starting at `base_offset`, if it still exists and they
    /// changed since last persisted. Index files are rebuildable, so they are written with a
    /// rename but without a directory sync. Retention may drop segments meanwhile: the segment
    /// is found by its base offset, never by a position held across an await. Returns whether
    /// it wrote them.
    async fn persist_indexes(&self, base_offset: i64) -> Result<bool, LogError> {
        let (index_path, index, time_index_path, time_index) = {
            let state = self.state.borrow();
            let Some(segment) = state.segments.iter().find(|s| s.base_offset == base_offset) else {
                return Ok(false);
            };
            if !segment.index_dirty {
                return Ok(false);
            }
            (
                segment.path(&self.dir, INDEX_SUFFIX),
                segment.index.encode(),
                segment.path(&self.dir, TIME_INDEX_SUFFIX),
                segment.time_index_for_disk().encode(),
            )
        };
        file::replace_small_file(&index_path, index).await?;
        file::replace_small_file(&time_index_path, time_index).await?;
        if let Some(segment) = self
            .state
            .borrow_mut()
            .segments
            .iter_mut()
            .find(|s| s.base_offset == base_offset)
        {
            segment.index_dirty = false;
        }
        Ok(true)
    }

    /// Persists the producer table as of the high watermark (after a roll, at close). After a
    /// roll the batches may not be synced yet; open ignores a snapshot that goes past the
    /// recovered log end, so a power loss cannot leave it describing batches that are gone.
    async fn write_producer_snapshot(&self) -> Result<(), LogError> {
        let (next_offset, bytes) = {
            let next_offset = self.state.borrow().high_watermark;
            (next_offset, self.producers.borrow().encode(next_offset))
        };
        file::replace_small_file(&self.dir.join(producer::SNAPSHOT_FILE), bytes).await?;
        self.snapshot_offset.set(Some(next_offset));
        Ok(())
    }

    fn segment_log_path(&self, base_offset: i64) -> PathBuf {
        self.dir.join(segment::file_name(base_offset, LOG_SUFFIX))
    }
}

/// Sizes for DescribeLogDirs and metrics.
impl PartitionLog {
    /// Bytes of record data in all segments (indexes not counted).
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| s.size_bytes)
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }
}

#[cfg(test)]
mod tests;
