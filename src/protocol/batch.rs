//! A view over v2 record batch headers, validation of client record sets, and in-place patching.
//! Never decodes records to validate: a hostile record count must not size an allocation.
//!
//! Batch layout (magic 2): baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C over attributes..end), attributes i16, lastOffsetDelta i32, baseTimestamp i64,
//! maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, recordCount i32, records.

use bytes::Bytes;

pub const BATCH_HEADER_BYTES: usize = 61;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// CORRUPT_MESSAGE: CRC mismatch, bad length or framing.
    #[error("corrupt batch at byte {position_bytes}: {reason}")]
    Corrupt {
        position_bytes: usize,
        reason: &'static str,
    },
    /// INVALID_RECORD: well-framed but not acceptable (magic < 2, record count mismatch, ...).
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
    /// MESSAGE_TOO_LARGE.
    #[error("batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: u32 },
}

/// Parsed header fields of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Summary of a validated record set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSetInfo {
    pub batch_count: u32,
    pub record_count: u64,
}

/// Validates a producer's record set: one or more complete v2 batches, each CRC-checked and
/// within `max_message_bytes`.
pub fn validate_record_set(
    _records: &Bytes,
    _max_message_bytes: u32,
) -> Result<RecordSetInfo, BatchError> {
    todo!()
}
