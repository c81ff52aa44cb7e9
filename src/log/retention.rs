//! Retention: whole old segments are deleted by retention.ms (the segment's newest batch
//! timestamp is older than now - retention.ms) and retention.bytes (the partition is larger than
//! that without the segment), and below an explicit log start offset (DeleteRecords). The
//! active segment is never deleted. The explicit log start offset is persisted in
//! `LOG_START_FILE`; otherwise the first segment's base offset is the log start.

use std::path::Path;
use std::rc::Rc;

use super::file;
use super::segment::{INDEX_SUFFIX, LOG_SUFFIX, NO_TIMESTAMP, Segment, TIME_INDEX_SUFFIX};
use super::{LogError, LogState, PartitionLog};
use crate::limits::PRODUCER_ID_EXPIRATION_MS;
use crate::types::Offset;

/// Holds the log start offset moved by DeleteRecords: 8 bytes big-endian + CRC-32C of them.
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
const LOG_START_FILE_BYTES: u64 = 12;

/// How many of the oldest segments retention may delete (never the active one).
pub(crate) fn expired_prefix(
    segments: &[Segment],
    log_start: i64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> usize {
    let closed = segments.len().saturating_sub(1);
    let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut count = 0;
    while count < closed {
        let s = &segments[count];
        let below_start = s.next_offset <= log_start;
        let too_old = retention_ms >= 0
            && s.max_timestamp != NO_TIMESTAMP
            && s.max_timestamp < now_ms.saturating_sub(retention_ms);
        let too_big = retention_bytes >= 0 && total_bytes - s.size_bytes >= retention_bytes as u64;
        if !(below_start || too_old || too_big) {
            break;
        }
        total_bytes -= s.size_bytes;
        count += 1;
    }
    count
}

pub(crate) fn encode_log_start(offset: i64) -> Vec<u8> {
    let mut out = offset.to_be_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(&out).to_be_bytes());
    out
}

pub(crate) fn decode_log_start(bytes: &[u8]) -> Option<i64> {
    if bytes.len() as u64 != LOG_START_FILE_BYTES {
        return None;
    }
    let (value, crc) = bytes.split_at(8);
    (crc32c::crc32c(value).to_be_bytes() == crc)
        .then(|| i64::from_be_bytes(value.try_into().expect("8 bytes")))
}

/// The persisted explicit log start offset, or -1. A damaged file is ignored with a warning:
/// the segments' base offsets still bound what can be read.
pub(crate) async fn load_log_start(dir: &Path) -> Result<i64, LogError> {
    let path = dir.join(LOG_START_FILE);
    match file::read_small_file(&path, LOG_START_FILE_BYTES).await {
        Ok(Some(bytes)) => Ok(decode_log_start(&bytes).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "damaged log start offset file ignored");
            -1
        })),
        Ok(None) => Ok(-1),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(-1),
        Err(e) => Err(e.into()),
    }
}

impl LogState {
    /// The first offset a fetch may ask for.
    pub(crate) fn log_start(&self) -> i64 {
        self.segments[0].base_offset.max(self.log_start_explicit)
    }
}

impl PartitionLog {
    /// Deletes whole segments past retention.ms / retention.bytes or below the log start
    /// offset, never the active one, and forgets idempotent producers silent for longer than
    /// `PRODUCER_ID_EXPIRATION_MS`. Returns how many segments were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let turn = self.write_lock.lock().await;
        if self.state.borrow().closed {
            return Ok(0);
        }
        let (retention_ms, retention_bytes) = {
            let config = self.config.borrow();
            (config.retention_ms, config.retention_bytes)
        };
        let expired = self
            .producers
            .borrow_mut()
            .expire(now_ms, PRODUCER_ID_EXPIRATION_MS);
        if expired > 0 {
            tracing::debug!(dir = %self.dir.display(), expired, "idempotent producers expired");
        }
        let removed: Vec<Segment> = {
            let mut state = self.state.borrow_mut();
            let count = expired_prefix(
                &state.segments,
                state.log_start_explicit,
                retention_ms,
                retention_bytes,
                now_ms,
            );
            state.segments.drain(..count).collect()
        };
        if removed.is_empty() {
            return Ok(0);
        }
        // Out of the state first, so no new read plans them; reads holding the files keep them.
        // Appends need not wait for the deletion and its directory sync.
        drop(turn);
        let _housekeeping = self.housekeeping.lock().await;
        // A deleted segment's data needs no sync, and a pending one would keep its file open.
        self.sync
            .unsynced_rolled
            .borrow_mut()
            .retain(|f| !removed.iter().any(|s| Rc::ptr_eq(&s.file, f)));
        for segment in &removed {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                file::remove_file(&segment.path(&self.dir, suffix)).await?;
            }
            // Dropping `removed` closes the files on this shard: free them first, elsewhere.
            file::SegmentFile::free_unlinked(&segment.file, 0).await;
        }
        file::sync_dir(&self.dir).await?;
        tracing::info!(
            dir = %self.dir.display(),
            segments = removed.len(),
            log_start = self.state.borrow().log_start(),
            "retention deleted segments"
        );
        Ok(removed.len())
    }

    /// DeleteRecords: moves the log start offset to `offset` (at most the high watermark),
    /// persists it, and deletes the segments entirely below it. Returns the new log start.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let offset = {
            let _turn = self.write_lock.lock().await;
            let (log_start, high_watermark, closed) = {
                let state = self.state.borrow();
                (state.log_start(), state.high_watermark, state.closed)
            };
            if closed {
                return Err(LogError::Closed);
            }
            if offset.value() > high_watermark || offset.value() < 0 {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    log_start: Offset(log_start),
                    high_watermark: Offset(high_watermark),
                });
            }
            if offset.value() <= log_start {
                return Ok(Offset(log_start));
            }
            file::replace_small_file(
                &self.dir.join(LOG_START_FILE),
                encode_log_start(offset.value()),
            )
            .await?;
            file::sync_dir(&self.dir).await?;
            self.state.borrow_mut().log_start_explicit = offset.value();
            offset
        };
        self.enforce_retention(super::now_ms()).await?;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_start_file_round_trips_and_rejects_damage() {
        let bytes = encode_log_start(1234);
        assert_eq!(decode_log_start(&bytes), Some(1234));
        assert_eq!(decode_log_start(&bytes[..11]), None);
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        assert_eq!(decode_log_start(&flipped), None);
    }
}
