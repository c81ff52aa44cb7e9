//! The write path: appends queue in call order and whoever holds the FIFO write lock writes every
//! queued append at once (one write per segment touched, however many appends), assigning
//! offsets and patching batches; segment rolls; group-committed fdatasync.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::file::{self, SegmentFile};
use super::producer::{ProducerStateTable, Verdict};
use super::segment::Segment;
use super::{LogError, PartitionLog, now_ms};
use crate::protocol::batch::{
    BatchHeader, BatchHeaders, set_base_offset, set_partition_leader_epoch,
};

/// Most bytes one write round takes from the queue (a single larger append is taken alone):
/// enough to turn a queue of small appends into one write, small enough that the first append
/// of a round is not held back long by the copy of the others.
pub(crate) const WRITE_ROUND_BYTES_MAX: usize = 1024 * 1024;

/// Most bytes a round of only acks=0/1 appends takes. Without an fdatasync to share, a larger
/// round saves only io_uring punts, and a 1 MiB buffered write makes the kernel allocate 1 MiB
/// page-cache folios, which on a VM whose free memory went back to the host cost a host fault
/// per page; writes this size take small folios from recycled memory.
pub(crate) const WRITE_ROUND_BYTES_MAX_UNSYNCED: usize = 256 * 1024;

/// An append waiting in `PartitionLog::queued` for the writer that holds the write lock.
pub(super) struct QueuedAppend {
    records: Bytes,
    /// acks=all: answered only once on disk.
    durable: bool,
    slot: Rc<AppendSlot>,
}

/// Appends waiting for a writer, in call order.
pub(super) type AppendQueue = RefCell<VecDeque<QueuedAppend>>;

/// Where a writer leaves an append's outcome: base offset and write sequence number.
#[derive(Default)]
struct AppendSlot {
    /// A writer took the append from the queue; the owner must not write it again.
    taken: Cell<bool>,
    result: RefCell<Option<Result<(i64, u64), LogError>>>,
}

/// Takes a not-yet-taken append back out of the queue when its owner gives up (a cancelled
/// request is not written).
struct Unqueue<'a> {
    log: &'a PartitionLog,
    slot: &'a Rc<AppendSlot>,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        if !self.slot.taken.get() {
            self.log
                .queued
                .borrow_mut()
                .retain(|q| !Rc::ptr_eq(&q.slot, self.slot));
        }
    }
}

/// The answers of one write round. An append still unanswered when it drops (the writer was
/// cancelled mid-round) fails, so its owner does not wait for ever; nothing of it was accounted,
/// so the next write lands on the same position.
struct Answers {
    slots: Vec<Rc<AppendSlot>>,
}

impl Answers {
    fn set(&self, i: usize, result: Result<(i64, u64), LogError>) {
        let mut slot = self.slots[i].result.borrow_mut();
        assert!(slot.is_none(), "each append is answered once");
        *slot = Some(result);
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut result = slot.result.borrow_mut();
            if result.is_none() {
                *result = Some(Err(LogError::Io(std::io::Error::other(
                    "the write was cancelled before this append was written",
                ))));
            }
        }
    }
}

/// Batches smaller than this are copied into the chunk whole; larger ones are written from the
/// request body, with only their patched 16-byte head copied. A write buffer of its own costs the
/// kernel more than copying a few hundred bytes.
const BATCH_COPY_MAX_BYTES: usize = 512;

/// The patched head of a batch: baseOffset, batchLength and partitionLeaderEpoch.
const PATCHED_HEAD_BYTES: usize = 16;

/// Appends of one round bound for the same segment, as one write: each batch's head copied and
/// patched (offsets, leader epoch), its body left in the request it came in, so the shard's
/// `pwritev` copies it only once, into the page cache.
struct Chunk {
    /// The write in order: runs of copied bytes and batch bodies as received.
    parts: Vec<Bytes>,
    /// Copied bytes not yet cut into `parts`: patched heads and small batches.
    copied: BytesMut,
    len: usize,
    /// Every batch, with where it starts in the write.
    batches: Vec<(usize, BatchHeader)>,
    /// (index in the round, base offset) of each append in the write.
    members: Vec<(usize, i64)>,
    next_offset: i64,
}

impl Chunk {
    /// `appends_hint`: how many appends the chunk will likely hold (a batch each, most often),
    /// so the copies of their heads share one allocation.
    fn new(next_offset: i64, appends_hint: usize) -> Chunk {
        Chunk {
            parts: Vec::new(),
            copied: BytesMut::with_capacity(appends_hint.min(1024) * PATCHED_HEAD_BYTES),
            len: 0,
            batches: Vec::new(),
            members: Vec::new(),
            next_offset,
        }
    }

    /// Adds the record set and stamps offsets and the leader epoch. baseOffset and
    /// partitionLeaderEpoch lie outside the CRC, so patching a copy of the head keeps the
    /// producer's checksum valid and spares re-encoding the batch. Returns the placed batch headers.
    fn add(
        &mut self,
        member: usize,
        records: &Bytes,
        leader_epoch: i32,
    ) -> &[(usize, BatchHeader)] {
        let start = self.len;
        let first_batch = self.batches.len();
        self.members.push((member, self.next_offset));
        let mut found_all = BatchHeaders::new(records).peekable();
        while let Some(found) = found_all.next() {
            let found = found.expect("append takes validated record sets");
            let at = found.position;
            // A batch runs to the next one; the last one takes whatever follows it, as the
            // whole record set used to be written.
            let end = match found_all.peek() {
                Some(Ok(next)) => next.position,
                _ => records.len(),
            };
            let mut head = [0u8; PATCHED_HEAD_BYTES];
            head.copy_from_slice(&records[at..at + PATCHED_HEAD_BYTES]);
            set_base_offset(&mut head, self.next_offset);
            set_partition_leader_epoch(&mut head, leader_epoch);
            self.push_copied(&head);
            let body = at + PATCHED_HEAD_BYTES..end;
            if end - at < BATCH_COPY_MAX_BYTES {
                self.push_copied(&records[body]);
            } else {
                self.push_shared(records.slice(body));
            }
            let header = BatchHeader {
                base_offset: self.next_offset,
                partition_leader_epoch: leader_epoch,
                ..found.header
            };
            self.next_offset = header.next_offset();
            self.batches.push((start + at, header));
        }
        &self.batches[first_batch..]
    }

    fn push_copied(&mut self, bytes: &[u8]) {
        self.copied.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push_shared(&mut self, bytes: Bytes) {
        self.cut_copied();
        self.len += bytes.len();
        self.parts.push(bytes);
    }

    fn cut_copied(&mut self) {
        if !self.copied.is_empty() {
            self.parts.push(self.copied.split().freeze());
        }
    }

    /// The write's parts, in order.
    fn finish(&mut self) -> &[Bytes] {
        self.cut_copied();
        &self.parts
    }
}

/// A copy of an error for every append of a failed write.
fn share_error(e: &LogError) -> LogError {
    match e {
        LogError::Closed => LogError::Closed,
        LogError::SyncFailed => LogError::SyncFailed,
        LogError::Io(io) => LogError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => LogError::Io(std::io::Error::other(other.to_string())),
    }
}

/// True when a record set holds a batch of an idempotent producer.
fn is_idempotent(records: &Bytes) -> bool {
    BatchHeaders::new(records).any(|found| {
        found
            .expect("append takes validated record sets")
            .header
            .producer_id
            >= 0
    })
}

impl PartitionLog {
    /// Writes one validated record set at the end of the log and advances the high watermark.
    /// Returns the base offset and the write's sequence number for `sync_through`.
    /// A `durable` append may be written with O_DSYNC, and then its sequence number is synced
    /// on return.
    pub(super) async fn write(
        &self,
        records: Bytes,
        durable: bool,
    ) -> Result<(i64, u64), LogError> {
        let slot = Rc::new(AppendSlot::default());
        self.queued.borrow_mut().push_back(QueuedAppend {
            records,
            durable,
            slot: Rc::clone(&slot),
        });
        let _unqueue = Unqueue {
            log: self,
            slot: &slot,
        };
        // Releasing the lock, however the write ends, fires `progress` for waiting syncs.
        let _turn = self.write_lock.lock().await;
        if !slot.taken.get() {
            // Nobody wrote it while we waited: write it, with whatever queued up behind it.
            self.write_round().await;
        }
        let result = slot.result.borrow_mut().take();
        result.expect("a writer answers every append it takes")
    }

    /// Takes appends from the head of the queue, up to `WRITE_ROUND_BYTES_MAX` (at least one),
    /// in order. Owners take the lock in the order they queued, so the caller's own
    /// append is the head.
    fn take_round(&self) -> Vec<QueuedAppend> {
        let mut queue = self.queued.borrow_mut();
        let mut round = Vec::new();
        let mut bytes = 0;
        let mut durable = false;
        while let Some(next) = queue.front() {
            let limit = if durable || next.durable {
                WRITE_ROUND_BYTES_MAX
            } else {
                WRITE_ROUND_BYTES_MAX_UNSYNCED
            };
            if !round.is_empty() && bytes + next.records.len() > limit {
                break;
            }
            bytes += next.records.len();
            durable |= next.durable;
            let next = queue.pop_front().expect("front exists");
            next.slot.taken.set(true);
            round.push(next);
        }
        round
    }

    /// Writes every append of one round in order: producer checks, offsets, a roll where the
    /// active segment is full, and one write per segment. An append refused by its producer check
    /// fails alone; a failed write or roll fails its own appends and every later one.
    async fn write_round(&self) {
        let round = self.take_round();
        assert!(!round.is_empty(), "the caller's append is queued");
        // A durable round with nobody queued behind it is written with O_DSYNC: one io_uring
        // operation instead of a write then an fdatasync, for the latency of a lone acks=all
        // producer. Under load the plain write lets the next round's write overlap this sync.
        let write_through = round.iter().any(|q| q.durable) && self.queued.borrow().is_empty();
        let answers = Answers {
            slots: round.iter().map(|q| Rc::clone(&q.slot)).collect(),
        };
        // Appends of one round see the producer state the earlier ones leave, without touching
        // the log's own until their write has succeeded.
        let mut tentative: Option<ProducerStateTable> = None;
        let mut chunk = Chunk::new(self.state.borrow().high_watermark, round.len());
        let mut duplicates = Vec::new();
        let mut failed: Option<LogError> = None;
        for (i, queued) in round.iter().enumerate() {
            if let Some(e) = &failed {
                answers.set(i, Err(share_error(e)));
                continue;
            }
            if self.state.borrow().closed {
                let closed = match self.sync.failed.get() {
                    true => LogError::SyncFailed,
                    false => LogError::Closed,
                };
                answers.set(i, Err(closed));
                continue;
            }
            let records = &queued.records;
            if round.len() > 1 && tentative.is_none() && is_idempotent(records) {
                tentative = Some(self.producers.borrow().clone());
            }
            let checked = match &tentative {
                Some(table) => check_producers(table, records, chunk.next_offset),
                None => check_producers(&self.producers.borrow(), records, chunk.next_offset),
            };
            match checked {
                Err(e) => {
                    answers.set(i, Err(e));
                    continue;
                }
                // A retry of a batch already written: Kafka answers success with the original
                // offsets. The original write may still be unsynced; it rides the next sync.
                Ok(Some(original)) => {
                    duplicates.push((i, original));
                    continue;
                }
                Ok(None) => {}
            }
            let last_offset = chunk.next_offset + count_offsets(records) - 1;
            if self.needs_roll(chunk.len as u64, records.len() as u64, last_offset) {
                let flushed = self.write_chunk(&mut chunk, &answers, write_through).await;
                let rolled = match flushed {
                    Ok(()) => self.roll(chunk.next_offset).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = rolled {
                    answers.set(i, Err(share_error(&e)));
                    failed = Some(e);
                    continue;
                }
            }
            let placed = chunk.add(i, records, self.leader_epoch);
            if let Some(table) = tentative.as_mut() {
                for (_, header) in placed {
                    table.on_written(header);
                }
            }
        }
        if failed.is_none()
            && let Err(e) = self.write_chunk(&mut chunk, &answers, write_through).await
        {
            failed = Some(e);
        }
        let write_seq = self.sync.written_seq.get();
        for (i, original) in duplicates {
            match &failed {
                // The original may have been in the failed write.
                Some(e) => answers.set(i, Err(share_error(e))),
                None => answers.set(i, Ok((original, write_seq))),
            }
        }
    }

    /// Writes a chunk at the end of the active segment and accounts it: indexes, high watermark,
    /// producer state, write sequence. Answers the chunk's appends either way, and leaves an
    /// empty chunk starting at the new log end.
    /// With `write_through` and everything before it durable, the write is durable on return.
    async fn write_chunk(
        &self,
        chunk: &mut Chunk,
        answers: &Answers,
        write_through: bool,
    ) -> Result<(), LogError> {
        if chunk.members.is_empty() {
            return Ok(());
        }
        let mut done = std::mem::replace(chunk, Chunk::new(chunk.next_offset, 0));
        let (file, position) = {
            let state = self.state.borrow();
            (Rc::clone(&state.active().file), state.active().size_bytes)
        };
        // O_DSYNC syncs only the written range, so it makes the log durable up to its end only
        // when everything before is durable already.
        let synced_before = self.sync.synced_seq.get() == self.sync.written_seq.get()
            && self.sync.unsynced_rolled.borrow().is_empty()
            && !self.sync.dir_unsynced.get();
        let durably = write_through && synced_before && !self.sync.failed.get();
        let len = done.len;
        let parts = done.finish();
        let written = if durably {
            file.write_durably(file::join(parts, len), position).await
        } else {
            file.write_parts_at(parts, position).await
        };
        if let Err(e) = written {
            // An O_DSYNC write reports its sync's failure: the kernel may have dropped dirty
            // pages of the log before it, so nothing more is acknowledged, as after an fdatasync.
            if durably {
                self.fail_on_sync_error(&e);
            }
            // Nothing was accounted; trim whatever part of the write landed so the file ends
            // where the log does (zeros written ahead go too). Recovery would trim it too.
            self.write_ahead
                .forget(self.state.borrow().active().base_offset);
            let _ = file.truncate(position).await;
            let e = LogError::from(e);
            for (member, _) in &done.members {
                answers.set(*member, Err(share_error(&e)));
            }
            *chunk = Chunk::new(self.state.borrow().high_watermark, 0);
            return Err(e);
        }
        let (active_base, log_end) = {
            let mut state = self.state.borrow_mut();
            let interval = self.config.borrow().index_interval_bytes;
            let active = state.active_mut();
            for (at, header) in &done.batches {
                active.on_batch(header, position + *at as u64, interval);
            }
            let written = (active.base_offset, active.size_bytes);
            assert_eq!(active.next_offset, done.next_offset);
            assert!(
                done.next_offset > state.high_watermark,
                "appends are not empty"
            );
            state.high_watermark = done.next_offset;
            let mut producers = self.producers.borrow_mut();
            for (_, header) in &done.batches {
                producers.on_written(header);
            }
            written
        };
        self.after_write(&file, active_base, log_end, durably);
        let write_seq = self.sync.written_seq.get() + 1;
        self.sync.written_seq.set(write_seq);
        if durably {
            self.sync
                .write_throughs
                .set(self.sync.write_throughs.get() + 1);
            self.mark_synced(write_seq);
        }
        for (member, base_offset) in &done.members {
            answers.set(*member, Ok((*base_offset, write_seq)));
        }
        self.appended.notify_all();
        Ok(())
    }

    /// Whether the active segment must be rolled before an append of `len_bytes` reaching
    /// `last_offset`, with `pending_bytes` of the round already bound for it. An empty segment
    /// takes any append, however large.
    fn needs_roll(&self, pending_bytes: u64, len_bytes: u64, last_offset: i64) -> bool {
        let state = self.state.borrow();
        let active = state.active();
        let size_bytes = active.size_bytes + pending_bytes;
        if size_bytes == 0 {
            return false;
        }
        let config = self.config.borrow();
        size_bytes + len_bytes > config.segment_bytes
            || now_ms() - active.created_ms > config.segment_ms
            || active.index.is_full()
            || !active.fits_offset(last_offset)
    }

    /// Starts a new segment at `base_offset`. Only creating the file holds up appends: the old
    /// segment's data rides the next sync, the new file's name is synced before anything in it
    /// counts as synced, and the old segment's final indexes and a producer snapshot are written
    /// by a background task. Under writeback load those syncs took up to half a second inline.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let old_file = Rc::clone(&self.state.borrow().active().file);
        old_file.end_durable_writes();
        // Zeros written ahead, or blocks allocated ahead: a truncate to the end cuts both.
        let cut_zeros = self
            .write_ahead
            .forget(self.state.borrow().active().base_offset)
            || old_file.has_preallocation();
        if self.sync.synced_seq.get() < self.sync.written_seq.get() {
            self.sync.unsynced_rolled.borrow_mut().push(old_file);
        }
        let old_base = self.state.borrow().active().base_offset;
        let file = Rc::new(SegmentFile::open(&self.segment_log_path(base_offset)).await?);
        self.sync.dir_unsynced.set(true);
        let segment = Segment::new(base_offset, file, now_ms());
        {
            let mut state = self.state.borrow_mut();
            assert_eq!(
                state.high_watermark, base_offset,
                "rolls happen at the log end"
            );
            state.segments.push(segment);
        }
        if let Some(log) = self.me.upgrade() {
            file::spawn_detached(async move { log.finish_roll(old_base, cut_zeros).await });
        }
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        Ok(())
    }

    /// What a restart wants after a roll, off the write path: the rolled segment's final indexes
    /// (rebuilt by a scan when missing) and a producer snapshot (open ignores one past the
    /// recovered log end, so one describing batches a power loss took is harmless). With
    /// `cut_zeros`, the zeros written ahead of the segment's end are cut off first.
    async fn finish_roll(&self, base_offset: i64, cut_zeros: bool) {
        let _housekeeping = self.housekeeping.lock().await;
        if self.state.borrow().closed {
            return; // close wrote everything; recovery cuts zeros close left.
        }
        if cut_zeros {
            let segment = self.state.borrow().segments.iter().find_map(|s| {
                (s.base_offset == base_offset).then(|| (Rc::clone(&s.file), s.size_bytes))
            });
            // Retention may have deleted the segment meanwhile.
            if let Some((file, size_bytes)) = segment
                && let Err(e) = file.truncate(size_bytes).await
            {
                // Recovery cuts them at the next open.
                tracing::warn!(dir = %self.dir.display(), base_offset, error = %e, "cutting the zeros past a rolled segment's end failed");
            }
        }
        let mut result = self.persist_indexes(base_offset).await.map(drop);
        if result.is_ok() {
            result = self.write_producer_snapshot().await;
        }
        if let Err(e) = result {
            // Rebuildable files: a restart rescans; close tries the indexes again.
            tracing::warn!(dir = %self.dir.display(), base_offset, error = %e, "writing indexes after a roll failed");
        }
    }

    /// After a failed fdatasync the kernel may have dropped the dirty pages, and a retried sync
    /// can succeed without them; nothing more is acknowledged from this log.
    pub(super) fn fail_on_sync_error(&self, e: &std::io::Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "fdatasync failed; log closed");
        self.sync.failed.set(true);
        self.state.borrow_mut().closed = true;
    }

    fn mark_synced(&self, seq: u64) {
        if seq > self.sync.synced_seq.get() {
            self.sync.synced_seq.set(seq);
        }
    }

    /// Returns once an fdatasync issued after write `seq` completed has succeeded. While one
    /// sync is in flight, callers wait and then share the next: many appends, one sync.
    /// `gather` lets it wait for queued writers first; a caller holding the write lock must not.
    pub(super) async fn sync_through(&self, seq: u64, gather: bool) -> Result<(), LogError> {
        loop {
            if self.sync.synced_seq.get() >= seq {
                return Ok(());
            }
            if self.sync.failed.get() {
                return Err(LogError::SyncFailed);
            }
            if self.sync.in_flight.get() {
                self.progress.notified().await;
                continue;
            }
            // Writes queued behind ours will want a sync too: let them land and share one,
            // but not so many that a steady stream of writers postpones the sync for ever.
            let unsynced = self.sync.written_seq.get() - self.sync.synced_seq.get();
            if gather && self.write_lock.is_contended() && unsynced < SYNC_GROUP_WRITES_MAX {
                self.progress.notified().await;
                continue;
            }
            let round = SyncRound::start(self);
            let target = self.sync.written_seq.get();
            // A segment created by a roll: its name first, or its synced data could vanish.
            if self.sync.dir_unsynced.replace(false)
                && let Err(e) = file::sync_dir(&self.dir).await
            {
                self.sync.dir_unsynced.set(true);
                self.fail_on_sync_error(&e);
                return Err(e.into());
            }
            // Every write up to `target` is in the active file or in a segment rolled before now.
            let mut files = self.sync.unsynced_rolled.borrow().clone();
            files.push(Rc::clone(&self.state.borrow().active().file));
            for file in &files {
                let result = file.fdatasync().await;
                self.sync.syncs.set(self.sync.syncs.get() + 1);
                if let Err(e) = result {
                    self.fail_on_sync_error(&e);
                    return Err(e.into());
                }
            }
            self.sync
                .unsynced_rolled
                .borrow_mut()
                .retain(|f| !files.iter().any(|s| Rc::ptr_eq(s, f)));
            self.mark_synced(target);
            drop(round);
        }
    }
}

/// Most completed writes one fdatasync waits to gather while more writers are queued.
pub(crate) const SYNC_GROUP_WRITES_MAX: u64 = 128;

/// Marks a sync in flight; ending it (even by cancellation) lets the next caller start one.
struct SyncRound<'a> {
    log: &'a PartitionLog,
}

impl<'a> SyncRound<'a> {
    fn start(log: &'a PartitionLog) -> SyncRound<'a> {
        assert!(!log.sync.in_flight.get(), "one sync at a time");
        log.sync.in_flight.set(true);
        SyncRound { log }
    }
}

impl Drop for SyncRound<'_> {
    fn drop(&mut self) {
        self.log.sync.in_flight.set(false);
        self.log.progress.notify_all();
    }
}

/// Idempotence checks of every batch of a record set, in order, against `table` (which the
/// caller updates only once the set is written), the set starting at `next_offset`. Returns the
/// original base offset when the record set is one batch already written (a retry).
fn check_producers(
    table: &ProducerStateTable,
    records: &Bytes,
    next_offset: i64,
) -> Result<Option<i64>, LogError> {
    // The common case (no producer id) costs one header walk and no allocation.
    if !is_idempotent(records) {
        return Ok(None);
    }
    let headers: Vec<BatchHeader> = BatchHeaders::new(records)
        .map(|found| found.expect("append takes validated record sets").header)
        .collect();
    if let [only] = headers.as_slice() {
        return match table.check(only)? {
            Verdict::Append => Ok(None),
            Verdict::Duplicate(meta) => Ok(Some(meta.base_offset)),
        };
    }
    // Several batches (not sent by Kafka clients, which put one batch per partition):
    // each is checked against the state the previous ones leave.
    let mut tentative = table.clone();
    let mut next_offset = next_offset;
    for header in headers {
        match tentative.check(&header)? {
            Verdict::Append => {}
            Verdict::Duplicate(_) => {
                return Err(LogError::DuplicateSequence {
                    producer_id: header.producer_id,
                });
            }
        }
        let placed = BatchHeader {
            base_offset: next_offset,
            ..header
        };
        next_offset = placed.next_offset();
        tentative.on_written(&placed);
    }
    Ok(None)
}

/// Offsets a validated record set occupies.
fn count_offsets(records: &Bytes) -> i64 {
    let mut offsets = 0;
    let mut batches = BatchHeaders::new(records);
    for found in batches.by_ref() {
        let header = found.expect("append takes validated record sets").header;
        offsets += i64::from(header.last_offset_delta) + 1;
    }
    assert_eq!(
        batches.stop(),
        records.len(),
        "validated record sets are whole batches"
    );
    assert!(offsets > 0, "validated record sets hold records");
    offsets
}
