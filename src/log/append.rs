//! The write path: offsets assigned and batches patched under the FIFO write lock, one write per
//! append call, segment rolls, and group-committed fdatasync.

use std::rc::Rc;

use bytes::Bytes;

use super::file::{self, SegmentFile};
use super::producer::Verdict;
use super::segment::Segment;
use super::{LogError, PartitionLog, now_ms};
use crate::protocol::batch::{
    BatchHeader, BatchHeaders, set_base_offset, set_partition_leader_epoch,
};

/// The batches of one append, patched, with where each starts in the buffer.
struct PreparedAppend {
    buf: Vec<u8>,
    batches: Vec<(usize, BatchHeader)>,
    base_offset: i64,
    next_offset: i64,
}

impl PartitionLog {
    /// Writes one validated record set at the end of the active segment and advances the high
    /// watermark. Returns the base offset and the write's sequence number for `sync_through`.
    pub(super) async fn write(&self, records: Bytes) -> Result<(i64, u64), LogError> {
        // Releasing the lock, however the write ends, fires `progress` for waiting syncs.
        let _turn = self.write_lock.lock().await;
        if self.state.borrow().closed {
            return Err(LogError::Closed);
        }
        if let Some(original) = self.check_producers(&records)? {
            // A retry of a batch already written: Kafka answers success with the original
            // offsets. The original write may still be unsynced; ride the next sync.
            return Ok((original, self.sync.written_seq.get()));
        }
        let record_offsets = count_offsets(&records);
        let base_offset = self.state.borrow().high_watermark;
        let last_offset = base_offset + record_offsets - 1;
        if self.needs_roll(records.len() as u64, last_offset) {
            self.roll(base_offset).await?;
        }
        let prepared = self.prepare(&records, base_offset);
        let (file, position) = {
            let state = self.state.borrow();
            (Rc::clone(&state.active().file), state.active().size_bytes)
        };
        if let Err(e) = file.write_at(prepared.buf, position).await {
            // Nothing was accounted; trim whatever part of the write landed so the file ends
            // where the log does. Recovery would trim it too.
            let _ = file.truncate(position).await;
            return Err(e.into());
        }
        {
            let mut state = self.state.borrow_mut();
            let interval = self.config.borrow().index_interval_bytes;
            let active = state.active_mut();
            for (at, header) in &prepared.batches {
                active.on_batch(header, position + *at as u64, interval);
            }
            assert_eq!(active.next_offset, prepared.next_offset);
            assert!(
                prepared.next_offset > state.high_watermark,
                "appends are not empty"
            );
            state.high_watermark = prepared.next_offset;
            let mut producers = self.producers.borrow_mut();
            for (_, header) in &prepared.batches {
                producers.on_written(header);
            }
        }
        let write_seq = self.sync.written_seq.get() + 1;
        self.sync.written_seq.set(write_seq);
        self.appended.notify_all();
        Ok((prepared.base_offset, write_seq))
    }

    /// Idempotence checks of every batch, in order, before anything is written. Returns the
    /// original base offset when the record set is one batch already written (a retry).
    fn check_producers(&self, records: &Bytes) -> Result<Option<i64>, LogError> {
        // The common case (no producer id) costs one header walk and no allocation.
        let idempotent = BatchHeaders::new(records).any(|found| {
            found
                .expect("append takes validated record sets")
                .header
                .producer_id
                >= 0
        });
        if !idempotent {
            return Ok(None);
        }
        let headers: Vec<BatchHeader> = BatchHeaders::new(records)
            .map(|found| found.expect("append takes validated record sets").header)
            .collect();
        let producers = self.producers.borrow();
        if let [only] = headers.as_slice() {
            return match producers.check(only)? {
                Verdict::Append => Ok(None),
                Verdict::Duplicate(meta) => Ok(Some(meta.base_offset)),
            };
        }
        // Several batches (not sent by Kafka clients, which put one batch per partition):
        // each is checked against the state the previous ones leave.
        let mut tentative = producers.clone();
        let mut next_offset = self.state.borrow().high_watermark;
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

    /// Copies the record set into a write buffer and stamps offsets and the leader epoch.
    fn prepare(&self, records: &Bytes, base_offset: i64) -> PreparedAppend {
        let mut buf = records.to_vec();
        let mut batches = Vec::new();
        let mut next_offset = base_offset;
        for found in BatchHeaders::new(records) {
            let found = found.expect("append takes validated record sets");
            let at = found.position;
            // baseOffset and partitionLeaderEpoch lie outside the CRC, so patching them in
            // place keeps the producer's checksum valid and spares re-encoding the batch.
            set_base_offset(&mut buf[at..], next_offset);
            set_partition_leader_epoch(&mut buf[at..], self.leader_epoch);
            let header = BatchHeader {
                base_offset: next_offset,
                partition_leader_epoch: self.leader_epoch,
                ..found.header
            };
            next_offset = header.next_offset();
            batches.push((at, header));
        }
        PreparedAppend {
            buf,
            batches,
            base_offset,
            next_offset,
        }
    }

    /// Whether the active segment must be rolled before an append of `len_bytes` reaching
    /// `last_offset`. An empty segment takes any append, however large.
    fn needs_roll(&self, len_bytes: u64, last_offset: i64) -> bool {
        let state = self.state.borrow();
        let active = state.active();
        if active.size_bytes == 0 {
            return false;
        }
        let config = self.config.borrow();
        active.size_bytes + len_bytes > config.segment_bytes
            || now_ms() - active.created_ms > config.segment_ms
            || active.index.is_full()
            || !active.fits_offset(last_offset)
    }

    /// Starts a new segment at `base_offset`. The old one is synced first, so everything in
    /// it is durable and its indexes are final; the new file's name is made durable too.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let old_file = Rc::clone(&self.state.borrow().active().file);
        if self.sync.synced_seq.get() < self.sync.written_seq.get() {
            self.sync.unsynced_rolled.borrow_mut().push(old_file);
        }
        let old = self.state.borrow().segments.len() - 1;
        self.persist_indexes(old).await?;
        // The snapshot may describe batches not synced yet (the old segment's sync is deferred);
        // open ignores a snapshot past the recovered log end and rescans, so a power loss that
        // takes them cannot leave it describing batches that are gone.
        self.write_producer_snapshot().await?;
        let file = Rc::new(SegmentFile::open(&self.segment_log_path(base_offset)).await?);
        file::sync_dir(&self.dir).await?;
        let segment = Segment::new(base_offset, file, now_ms());
        let mut state = self.state.borrow_mut();
        assert_eq!(
            state.high_watermark, base_offset,
            "rolls happen at the log end"
        );
        state.segments.push(segment);
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        Ok(())
    }

    /// After a failed fdatasync the kernel may have dropped the dirty pages, and a retried sync
    /// can succeed without them; nothing more is acknowledged from this log.
    fn fail_on_sync_error(&self, e: &std::io::Error) {
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
                return Err(LogError::Io(std::io::Error::other(
                    "an earlier fdatasync of this log failed",
                )));
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
