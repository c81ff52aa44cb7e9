//! A view over v2 record batch headers, validation of client record sets, and in-place patching.
//! Never decodes records to validate: a hostile record count must not size an allocation.
//!
//! Batch layout (magic 2): baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C over attributes..end), attributes i16, lastOffsetDelta i32, baseTimestamp i64,
//! maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, recordCount i32, records.

use bytes::Bytes;

pub const BATCH_HEADER_BYTES: usize = 61;
/// baseOffset and batchLength precede the bytes that batchLength counts.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
/// The smallest batchLength a v2 batch can have: the header after the length field.
pub const BATCH_LENGTH_MIN_BYTES: i32 = (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32;
/// The only record format we store. Magic 0 and 1 (message sets) are refused.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_POS: usize = 0;
const BATCH_LENGTH_POS: usize = 8;
const PARTITION_LEADER_EPOCH_POS: usize = 12;
/// The magic byte sits at 16 in every format (v0 and v1 too), so it can be read before the rest.
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
/// The CRC covers attributes..end of batch.
const CRC_START_POS: usize = 21;

/// Compression codec in attribute bits 0-2.
pub const ATTRIBUTES_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are the broker's LogAppendTime (maxTimestamp), not the records'.
pub const ATTRIBUTES_LOG_APPEND_TIME: i16 = 0x08;

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

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf`. Checks only what framing needs
    /// (enough bytes, a batchLength that covers the header); magic and CRC are the caller's.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Corrupt {
                position_bytes: buf.len(),
                reason: "batch header truncated",
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_POS),
            batch_length: be_i32(buf, BATCH_LENGTH_POS),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_POS),
            magic: buf[MAGIC_POS] as i8,
            crc: u32::from_be_bytes(buf[CRC_POS..CRC_POS + 4].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if header.batch_length < BATCH_LENGTH_MIN_BYTES {
            return Err(BatchError::Corrupt {
                position_bytes: BATCH_LENGTH_POS,
                reason: "batchLength shorter than the header",
            });
        }
        Ok(header)
    }

    /// Bytes of the whole batch, length prefix included.
    pub fn total_bytes(&self) -> usize {
        assert!(
            self.batch_length >= BATCH_LENGTH_MIN_BYTES,
            "parse() checks the length"
        );
        BATCH_LENGTH_PREFIX_BYTES + self.batch_length as usize
    }

    /// Offset of the batch's last record (the last offset the batch occupies).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset after the batch: where the next batch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & ATTRIBUTES_COMPRESSION_MASK
    }
}

/// Checks a whole batch's CRC-32C (attributes..end) against its crc field.
/// `batch` must be exactly one complete batch.
pub fn check_crc(batch: &[u8]) -> Result<(), BatchError> {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "callers pass whole batches"
    );
    let stored = u32::from_be_bytes(batch[CRC_POS..CRC_POS + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&batch[CRC_START_POS..]) != stored {
        return Err(BatchError::Corrupt {
            position_bytes: CRC_POS,
            reason: "CRC-32C mismatch",
        });
    }
    Ok(())
}

/// Validates a producer's record set: one or more complete v2 batches, each CRC-checked and
/// within `max_message_bytes`.
pub fn validate_record_set(
    records: &Bytes,
    max_message_bytes: u32,
) -> Result<RecordSetInfo, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid("empty record set"));
    }
    let mut info = RecordSetInfo {
        batch_count: 0,
        record_count: 0,
    };
    let mut position = 0;
    while position < records.len() {
        let rest = &records[position..];
        let header = validate_batch(rest, max_message_bytes).map_err(|e| match e {
            BatchError::Corrupt {
                position_bytes,
                reason,
            } => BatchError::Corrupt {
                position_bytes: position + position_bytes,
                reason,
            },
            other => other,
        })?;
        info.batch_count += 1;
        info.record_count += header.record_count as u64;
        position += header.total_bytes();
    }
    assert_eq!(position, records.len(), "batches tile the record set");
    Ok(info)
}

/// Validates the batch at the start of `buf` (which may hold more after it).
fn validate_batch(buf: &[u8], max_message_bytes: u32) -> Result<BatchHeader, BatchError> {
    let truncated = |reason| BatchError::Corrupt {
        position_bytes: 0,
        reason,
    };
    if buf.len() < MAGIC_POS + 1 {
        return Err(truncated("batch truncated before the magic byte"));
    }
    let batch_length = be_i32(buf, BATCH_LENGTH_POS);
    if batch_length < 0 || BATCH_LENGTH_PREFIX_BYTES + batch_length as usize > buf.len() {
        return Err(truncated("batchLength runs past the record set"));
    }
    // Old message formats carry the magic byte at the same place; refuse them by name before
    // reading a v2 header out of bytes that are not one.
    if buf[MAGIC_POS] as i8 != MAGIC_V2 {
        return Err(BatchError::Invalid("record batch magic is not 2"));
    }
    let header = BatchHeader::parse(buf)?;
    let size_bytes = header.total_bytes();
    if size_bytes > max_message_bytes as usize {
        return Err(BatchError::TooLarge {
            size_bytes,
            max_bytes: max_message_bytes,
        });
    }
    check_crc(&buf[..size_bytes])?;
    if header.record_count < 1 {
        return Err(BatchError::Invalid("record batch holds no records"));
    }
    if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
        return Err(BatchError::Invalid(
            "lastOffsetDelta does not match recordCount",
        ));
    }
    Ok(header)
}

/// Sets baseOffset of the batch at the start of `buf`. It lies outside the CRC, so the
/// producer's checksum stays valid.
pub fn set_base_offset(buf: &mut [u8], base: i64) {
    buf[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base.to_be_bytes());
}

/// Sets partitionLeaderEpoch of the batch at the start of `buf`; outside the CRC as well.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// One batch found by [`BatchHeaders`]: its header and where it starts in the slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPosition {
    pub position: usize,
    pub header: BatchHeader,
}

/// Iterates the headers of the complete batches of a byte slice. Stops at the first batch
/// that is incomplete (`stop()` tells where) or whose header does not parse (yielded once as
/// an error). Checks neither magic nor CRC: recovery does that on the yielded ranges.
pub struct BatchHeaders<'a> {
    buf: &'a [u8],
    position: usize,
    done: bool,
}

impl<'a> BatchHeaders<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchHeaders {
            buf,
            position: 0,
            done: false,
        }
    }

    /// Where iteration stopped: the start of the first batch not yielded as complete.
    pub fn stop(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchHeaders<'_> {
    type Item = Result<BatchPosition, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.buf[self.position..];
        if rest.len() < BATCH_HEADER_BYTES {
            self.done = true;
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(header) => header,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if header.total_bytes() > rest.len() {
            self.done = true;
            return None;
        }
        let found = BatchPosition {
            position: self.position,
            header,
        };
        self.position += header.total_bytes();
        Some(Ok(found))
    }
}

/// Where maxTimestamp sits: after attributes (21), lastOffsetDelta (23) and baseTimestamp (27).
const MAX_TIMESTAMP_POS: usize = 35;
const ATTRIBUTES_POS: usize = CRC_START_POS;

/// Stamps every batch of a validated record set with the broker's clock
/// (message.timestamp.type=LogAppendTime, as Kafka does): maxTimestamp = `now_ms`, the
/// timestamp-type attribute bit set, and the CRC-32C recomputed, since both lie inside it.
/// Only a batch that changes is re-checksummed.
pub fn set_log_append_time(records: &mut [u8], now_ms: i64) {
    let mut position = 0;
    while position < records.len() {
        let header =
            BatchHeader::parse(&records[position..]).expect("the record set was validated");
        let batch = &mut records[position..position + header.total_bytes()];
        let attributes = header.attributes | ATTRIBUTES_LOG_APPEND_TIME;
        if attributes != header.attributes || header.max_timestamp != now_ms {
            batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
            batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&now_ms.to_be_bytes());
            let crc = crc32c::crc32c(&batch[CRC_START_POS..]);
            batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        }
        position += header.total_bytes();
    }
}

#[cfg(test)]
mod log_append_time_tests {
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::protocol::records::fixtures;

    #[test]
    fn stamps_every_batch_and_keeps_the_crc_valid() {
        let mut set = fixtures::batch(&[10, 30], Compression::None, 0).to_vec();
        set.extend_from_slice(&fixtures::batch(&[5], Compression::None, 2));
        set_log_append_time(&mut set, 1_700_000_000_000);
        let info = validate_record_set(&Bytes::from(set.clone()), 1 << 20).expect("still valid");
        assert_eq!(info.batch_count, 2);
        for b in BatchHeaders::new(&set) {
            let h = b.expect("parses").header;
            assert_eq!(h.max_timestamp, 1_700_000_000_000);
            assert_ne!(h.attributes & ATTRIBUTES_LOG_APPEND_TIME, 0);
            assert_ne!(
                h.base_timestamp, 0,
                "record timestamps are left as produced"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::records::fixtures;

    const MAX: u32 = 1 << 20;

    fn validate(bytes: &[u8]) -> Result<RecordSetInfo, BatchError> {
        validate_record_set(&Bytes::copy_from_slice(bytes), MAX)
    }

    #[test]
    fn header_parses_fields() {
        let batch = fixtures::batch(&[10, 30, 20], Compression::None, 5);
        let header = BatchHeader::parse(&batch).expect("parses");
        assert_eq!(header.magic, MAGIC_V2);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.base_timestamp, 10);
        assert_eq!(header.max_timestamp, 30);
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.next_offset(), 3);
    }

    #[test]
    fn valid_single_and_multi_batch_sets() {
        let one = fixtures::batch(&[1, 2], Compression::None, 10);
        assert_eq!(
            validate(&one),
            Ok(RecordSetInfo {
                batch_count: 1,
                record_count: 2
            })
        );
        let mut many = one.clone();
        many.extend(fixtures::batch(&[3], Compression::Gzip, 10));
        many.extend(fixtures::batch(&[4, 5, 6], Compression::Zstd, 10));
        many.extend(fixtures::batch(&[7], Compression::Lz4, 10));
        many.extend(fixtures::batch(&[8], Compression::Snappy, 10));
        assert_eq!(
            validate(&many),
            Ok(RecordSetInfo {
                batch_count: 5,
                record_count: 8
            })
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let mut two = fixtures::batch(&[1, 2], Compression::None, 10);
        let first_len = two.len();
        two.extend(fixtures::batch(&[3], Compression::None, 10));
        for cut in (0..two.len()).filter(|&cut| cut != first_len) {
            let result = validate(&two[..cut]);
            assert!(result.is_err(), "cut at {cut} accepted");
        }
        assert!(
            validate(&two[..first_len]).is_ok(),
            "a whole first batch stands alone"
        );
    }

    #[test]
    fn every_flipped_byte_after_the_crc_is_corrupt() {
        let batch = fixtures::batch(&[1, 2], Compression::None, 10);
        for at in CRC_START_POS..batch.len() {
            let mut bad = batch.clone();
            bad[at] ^= 0x01;
            assert!(
                matches!(validate(&bad), Err(BatchError::Corrupt { .. })),
                "flip at {at}"
            );
        }
        let mut bad_crc = batch.clone();
        bad_crc[CRC_POS] ^= 0x80;
        assert!(matches!(
            validate(&bad_crc),
            Err(BatchError::Corrupt { .. })
        ));
    }

    #[test]
    fn old_magic_is_invalid() {
        let mut batch = fixtures::batch(&[1], Compression::None, 10);
        batch[MAGIC_POS] = 1;
        assert_eq!(
            validate(&batch),
            Err(BatchError::Invalid("record batch magic is not 2"))
        );
    }

    #[test]
    fn too_large_batch_is_refused() {
        let batch = fixtures::batch(&[1], Compression::None, 2000);
        let result = validate_record_set(&Bytes::from(batch.clone()), 1000);
        assert_eq!(
            result,
            Err(BatchError::TooLarge {
                size_bytes: batch.len(),
                max_bytes: 1000
            })
        );
    }

    #[test]
    fn empty_set_and_mismatched_counts_are_invalid() {
        assert!(matches!(validate(&[]), Err(BatchError::Invalid(_))));
        let mut batch = fixtures::batch(&[1, 2], Compression::None, 10);
        batch[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START_POS..]);
        batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&batch),
            Err(BatchError::Invalid(
                "lastOffsetDelta does not match recordCount"
            ))
        );
    }

    #[test]
    fn nonzero_producer_base_offset_is_accepted() {
        let mut batch = fixtures::batch(&[1], Compression::None, 10);
        set_base_offset(&mut batch, 77);
        assert!(validate(&batch).is_ok());
    }

    #[test]
    fn patching_keeps_the_crc_valid() {
        let mut batch = fixtures::batch(&[1, 2], Compression::Gzip, 10);
        set_base_offset(&mut batch, 1234);
        set_partition_leader_epoch(&mut batch, 9);
        let header = BatchHeader::parse(&batch).expect("parses");
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.partition_leader_epoch, 9);
        check_crc(&batch).expect("CRC still valid");
    }

    #[test]
    fn header_iterator_stops_at_the_first_incomplete_batch() {
        let first = fixtures::batch(&[1], Compression::None, 10);
        let second = fixtures::batch(&[2, 3], Compression::None, 10);
        let mut both = first.clone();
        both.extend(&second);
        for cut in 0..=both.len() {
            let mut iter = BatchHeaders::new(&both[..cut]);
            let found: Vec<usize> = iter.by_ref().map(|b| b.expect("ok").position).collect();
            let expected: Vec<usize> = [(0, first.len()), (first.len(), both.len())]
                .iter()
                .filter(|(_, end)| *end <= cut)
                .map(|(start, _)| *start)
                .collect();
            assert_eq!(found, expected, "cut at {cut}");
            let stop = expected.len().min(2);
            assert_eq!(iter.stop(), [0, first.len(), both.len()][stop]);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = validate(&bytes);
            for header in BatchHeaders::new(&bytes) { let _ = header; }
        }

        #[test]
        fn mutated_batches_never_panic(at in 0usize..200, value in any::<u8>()) {
            let mut batch = fixtures::batch(&[1, 2, 3], Compression::None, 20);
            let at = at % batch.len();
            batch[at] = value;
            let _ = validate(&batch);
        }
    }
}
