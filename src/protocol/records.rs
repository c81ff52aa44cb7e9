//! Record-level reading of one stored v2 batch: (offset, timestamp) of each record, for
//! ListOffsets by timestamp. Decompresses the records section when the batch says so, within
//! a named bound, so a hostile batch cannot blow memory. Only the fields needed are decoded,
//! but every length is checked against the bytes present.

use std::borrow::Cow;
use std::io::Read;

use super::batch::{ATTRIBUTES_LOG_APPEND_TIME, BATCH_HEADER_BYTES, BatchError, BatchHeader};

/// Largest decompressed records section we inflate. A batch is at most max.message.bytes
/// (about 1 MiB by default, 100 MiB by request size), and real codecs rarely pass 20x; past this
/// the batch is treated as corrupt rather than allowed to take the shard's memory.
pub const RECORDS_DECOMPRESSED_MAX_BYTES: usize = 64 << 20;

/// xerial snappy-java framing used by Kafka's Java client: magic, version, compatible version.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("records section does not decompress: {0}")]
    Decompress(&'static str),
    #[error("decompressed records exceed {RECORDS_DECOMPRESSED_MAX_BYTES} bytes")]
    TooLarge,
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: i32, reason: &'static str },
}

/// What ListOffsets needs of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset: i64,
    pub timestamp: i64,
}

/// Iterates the records of one batch. Stops after recordCount records or the first error; every
/// record consumes at least one byte, so a hostile recordCount cannot make it run long.
pub struct RecordIter<'a> {
    records: Cow<'a, [u8]>,
    position: usize,
    index: i32,
    header: BatchHeader,
    failed: bool,
}

/// Opens the batch that `batch` holds exactly (header included), decompressing its records.
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != batch.len() {
        return Err(RecordsError::Batch(BatchError::Corrupt {
            position_bytes: 8,
            reason: "batchLength does not match the bytes given",
        }));
    }
    let section = &batch[BATCH_HEADER_BYTES..];
    let records = match header.compression() {
        0 => Cow::Borrowed(section),
        1 => Cow::Owned(read_bounded(flate2::read::MultiGzDecoder::new(section))?),
        2 => Cow::Owned(snappy(section)?),
        3 => Cow::Owned(read_bounded(lz4_flex::frame::FrameDecoder::new(section))?),
        4 => {
            let decoder = zstd::stream::read::Decoder::with_buffer(section)
                .map_err(|_| RecordsError::Decompress("zstd frame header"))?;
            Cow::Owned(read_bounded(decoder)?)
        }
        codec => return Err(RecordsError::UnknownCompression(codec)),
    };
    Ok(RecordIter {
        records,
        position: 0,
        index: 0,
        header,
        failed: false,
    })
}

fn read_bounded(reader: impl Read) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(RECORDS_DECOMPRESSED_MAX_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| RecordsError::Decompress("stream is corrupt"))?;
    if out.len() > RECORDS_DECOMPRESSED_MAX_BYTES {
        return Err(RecordsError::TooLarge);
    }
    Ok(out)
}

/// Kafka's snappy: usually xerial-framed blocks, but raw snappy is accepted too.
fn snappy(section: &[u8]) -> Result<Vec<u8>, RecordsError> {
    if !section.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(section, &mut out)?;
        return Ok(out);
    }
    if section.len() < XERIAL_HEADER_BYTES {
        return Err(RecordsError::Decompress("xerial header truncated"));
    }
    let mut out = Vec::new();
    let mut rest = &section[XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RecordsError::Decompress("xerial block length truncated"));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(RecordsError::Decompress("xerial block truncated"));
        }
        snappy_block(&rest[..len], &mut out)?;
        rest = &rest[len..];
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its announced size against the bound first.
fn snappy_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len =
        snap::raw::decompress_len(block).map_err(|_| RecordsError::Decompress("snappy length"))?;
    if out.len() + len > RECORDS_DECOMPRESSED_MAX_BYTES {
        return Err(RecordsError::TooLarge);
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| RecordsError::Decompress("snappy block"))?;
    Ok(())
}

impl RecordIter<'_> {
    fn malformed(&mut self, reason: &'static str) -> RecordsError {
        self.failed = true;
        RecordsError::Malformed {
            index: self.index,
            reason,
        }
    }

    fn read_record(&mut self) -> Result<RecordMeta, RecordsError> {
        let buf = &self.records[..];
        let mut cursor = Cursor {
            buf,
            position: self.position,
        };
        let length = cursor.varint().ok_or("record length")?;
        if length < 0 || length as usize > buf.len() - cursor.position {
            return Err(RecordsError::Malformed {
                index: self.index,
                reason: "record length runs past the batch",
            });
        }
        let end = cursor.position + length as usize;
        let mut record = Cursor {
            buf: &buf[..end],
            position: cursor.position,
        };
        record.skip(1).ok_or("attributes")?;
        let timestamp_delta = record.varlong().ok_or("timestampDelta")?;
        let offset_delta = record.varint().ok_or("offsetDelta")?;
        // Key, value and headers are not needed; the record length already bounds them.
        self.position = end;
        let timestamp = if self.header.attributes & ATTRIBUTES_LOG_APPEND_TIME != 0 {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(timestamp_delta)
        };
        Ok(RecordMeta {
            offset: self.header.base_offset + i64::from(offset_delta),
            timestamp,
        })
    }
}

impl From<&'static str> for RecordsError {
    fn from(field: &'static str) -> Self {
        RecordsError::Malformed {
            index: -1,
            reason: field,
        }
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<RecordMeta, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.header.record_count {
            return None;
        }
        let result = self.read_record().map_err(|e| match e {
            RecordsError::Malformed { reason, .. } => self.malformed(reason),
            other => {
                self.failed = true;
                other
            }
        });
        self.index += 1;
        Some(result)
    }
}

/// A bounds-checked reader of Kafka's zigzag varints.
struct Cursor<'a> {
    buf: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        if self.buf.len() - self.position < n {
            return None;
        }
        self.position += n;
        Some(())
    }

    fn unsigned(&mut self, max_bytes: usize) -> Option<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = *self.buf.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        let raw = self.unsigned(5)? as u32;
        Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    fn varlong(&mut self) -> Option<i64> {
        let raw = self.unsigned(10)?;
        Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }
}

/// Real batches for tests, encoded by the `kafka-protocol` crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One batch whose records carry `timestamps`, offsets 0.., values of `value_bytes` bytes.
    pub(crate) fn batch(
        timestamps: &[i64],
        compression: Compression,
        value_bytes: usize,
    ) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &timestamp)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch when offset - sequence changes; keep it constant
                // so the first record carries baseSequence -1 (no idempotence).
                sequence: i as i32 - 1,
                timestamp,
                key: Some(bytes::Bytes::from(format!("key-{i}"))),
                value: Some(bytes::Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        buf.to_vec()
    }

    /// A single-record uncompressed batch with the given timestamp and value size.
    pub(crate) fn simple(timestamp: i64, value_bytes: usize) -> Vec<u8> {
        batch(&[timestamp], Compression::None, value_bytes)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::batch::set_base_offset;

    fn metas(batch: &[u8]) -> Vec<(i64, i64)> {
        records(batch)
            .expect("opens")
            .map(|r| r.map(|m| (m.offset, m.timestamp)).expect("record"))
            .collect()
    }

    #[test]
    fn every_codec_yields_offsets_and_timestamps() {
        let timestamps = [1_000, 1_005, 999, 2_000, 1_500];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = fixtures::batch(&timestamps, compression, 300);
            set_base_offset(&mut batch, 100);
            let expected: Vec<(i64, i64)> = timestamps
                .iter()
                .enumerate()
                .map(|(i, &t)| (100 + i as i64, t))
                .collect();
            assert_eq!(metas(&batch), expected, "{compression:?}");
        }
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let plain = fixtures::batch(&[5, 6], Compression::None, 10);
        let section = &plain[BATCH_HEADER_BYTES..];
        let compressed = snap::raw::Encoder::new()
            .compress_vec(section)
            .expect("snappy");
        let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&compressed);
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[21..23].copy_from_slice(&2i16.to_be_bytes());
        assert_eq!(metas(&batch), vec![(0, 5), (1, 6)]);
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let mut batch = fixtures::batch(&[5, 6], Compression::None, 10);
        batch[22] |= ATTRIBUTES_LOG_APPEND_TIME as u8;
        assert_eq!(metas(&batch), vec![(0, 6), (1, 6)]);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let batch = fixtures::batch(&[1, 2, 3], Compression::None, 50);
        for cut in BATCH_HEADER_BYTES..batch.len() {
            let mut short = batch[..cut].to_vec();
            let length = (cut - 12) as i32;
            short[8..12].copy_from_slice(&length.to_be_bytes());
            let results: Vec<_> = records(&short).expect("header parses").collect();
            assert!(results.iter().any(|r| r.is_err()), "cut at {cut}");
        }
    }

    #[test]
    fn unknown_codec_is_refused() {
        let mut batch = fixtures::batch(&[1], Compression::None, 1);
        batch[22] |= 0x07;
        assert!(matches!(
            records(&batch),
            Err(RecordsError::UnknownCompression(7))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            codec in 0u8..5,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut batch = fixtures::batch(&[1, 2], Compression::None, 4)[..BATCH_HEADER_BYTES].to_vec();
            batch.extend_from_slice(&body);
            let length = (batch.len() - 12) as i32;
            batch[8..12].copy_from_slice(&length.to_be_bytes());
            batch[22] = codec;
            batch[57..61].copy_from_slice(&1000i32.to_be_bytes());
            if let Ok(iter) = records(&batch) {
                for r in iter { let _ = r; }
            }
        }
    }
}
