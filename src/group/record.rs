//! The records a coordinator shard writes to its `__consumer_offsets-<shard>` log, in Kafka's own
//! key/value schemas (offset commit key v1 + value v3, group metadata key v2), wrapped in plain
//! v2 record batches (uncompressed, CRC-32C) so the partition log validates them like any other.
//! Pure: bytes in, entries out; `replay` turns read batches back into state.

use bytes::{BufMut, Bytes, BytesMut};

use super::manager::GroupManager;
use super::offsets::CommittedOffset;
use crate::protocol::batch::BATCH_HEADER_BYTES;
use crate::types::TopicPartition;

/// Kafka's OffsetCommitKey version.
const KEY_OFFSET_COMMIT: i16 = 1;
/// Kafka's GroupMetadataKey version.
const KEY_GROUP_METADATA: i16 = 2;
/// Kafka's OffsetCommitValue version carrying the leader epoch.
const VALUE_OFFSET_COMMIT_V3: i16 = 3;
/// Offset of the CRC-covered part (attributes..end) in a v2 batch.
const BATCH_CRC_START: usize = 21;

/// One thing the coordinator remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A committed offset; `None` is a tombstone (OffsetDelete, expiry, topic deletion).
    Offset {
        group_id: String,
        tp: TopicPartition,
        offset: Option<CommittedOffset>,
    },
    /// The group was deleted (a group metadata tombstone).
    GroupDeleted { group_id: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("bad batch: {0}")]
    BadBatch(&'static str),
    #[error("unknown record key version {0}")]
    UnknownKey(i16),
}

fn put_str(b: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("names are bounded below i16::MAX");
    b.put_i16(len);
    b.put_slice(s.as_bytes());
}

fn put_varint(b: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

fn key_value(e: &Entry) -> (Bytes, Option<Bytes>) {
    let mut k = BytesMut::new();
    match e {
        Entry::Offset {
            group_id,
            tp,
            offset,
        } => {
            k.put_i16(KEY_OFFSET_COMMIT);
            put_str(&mut k, group_id);
            put_str(&mut k, &tp.topic);
            k.put_i32(tp.partition.0);
            let value = offset.as_ref().map(|o| {
                let mut v = BytesMut::new();
                v.put_i16(VALUE_OFFSET_COMMIT_V3);
                v.put_i64(o.offset);
                v.put_i32(o.leader_epoch);
                put_str(&mut v, &o.metadata);
                v.put_i64(o.commit_timestamp_ms);
                v.freeze()
            });
            (k.freeze(), value)
        }
        Entry::GroupDeleted { group_id } => {
            k.put_i16(KEY_GROUP_METADATA);
            put_str(&mut k, group_id);
            (k.freeze(), None)
        }
    }
}

/// One uncompressed v2 batch holding `entries`; base offset and leader epoch are left for the
/// log to patch (both lie outside the CRC).
pub fn encode_batch(entries: &[Entry], now_ms: i64) -> Bytes {
    assert!(!entries.is_empty(), "a batch holds at least one record");
    let mut records = BytesMut::new();
    for (i, e) in entries.iter().enumerate() {
        let (key, value) = key_value(e);
        let mut r = BytesMut::new();
        r.put_i8(0); // attributes
        put_varint(&mut r, 0); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        put_varint(&mut r, key.len() as i64);
        r.put_slice(&key);
        match &value {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.put_slice(v);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 0); // headers
        put_varint(&mut records, r.len() as i64);
        records.put_slice(&r);
    }
    let mut b = BytesMut::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.put_i64(0); // base offset
    b.put_i32((BATCH_HEADER_BYTES - 12 + records.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, below
    b.put_i16(0); // attributes: no compression, create time
    b.put_i32(entries.len() as i32 - 1);
    b.put_i64(now_ms);
    b.put_i64(now_ms);
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(entries.len() as i32);
    b.put_slice(&records);
    assert_eq!(b.len(), BATCH_HEADER_BYTES + records.len());
    let crc = crc32c::crc32c(&b[BATCH_CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        let len = usize::try_from(self.i16(what)?).map_err(|_| RecordError::Truncated(what))?;
        String::from_utf8(self.take(len, what)?.to_vec()).map_err(|_| RecordError::Truncated(what))
    }
    fn varint(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.take(1, what)?[0];
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(RecordError::Truncated(what))
    }
    /// A varint-length-prefixed byte string; -1 is null.
    fn bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        let len = self.varint(what)?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated(what))?;
        self.take(len, what).map(Some)
    }
}

fn decode_entry(key: &[u8], value: Option<&[u8]>) -> Result<Entry, RecordError> {
    let mut k = Reader(key);
    match k.i16("key version")? {
        0 | KEY_OFFSET_COMMIT => {
            let group_id = k.string("group id")?;
            let topic = k.string("topic")?;
            let partition = k.i32("partition")?;
            let offset = value.map(decode_offset_value).transpose()?;
            Ok(Entry::Offset {
                group_id,
                tp: TopicPartition::new(topic, partition),
                offset,
            })
        }
        KEY_GROUP_METADATA => Ok(Entry::GroupDeleted {
            group_id: k.string("group id")?,
        }),
        v => Err(RecordError::UnknownKey(v)),
    }
}

fn decode_offset_value(value: &[u8]) -> Result<CommittedOffset, RecordError> {
    let mut v = Reader(value);
    let version = v.i16("value version")?;
    let offset = v.i64("offset")?;
    let leader_epoch = if version >= 3 { v.i32("epoch")? } else { -1 };
    let metadata = v.string("metadata")?;
    let commit_timestamp_ms = v.i64("timestamp")?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Decodes the whole batches at the start of `buf`. Returns the entries and the offset after
/// the last whole batch (where the next read starts); a partial batch at the end is left.
pub fn decode_batches(buf: &[u8]) -> Result<(Vec<Entry>, Option<i64>, usize), RecordError> {
    let mut entries = Vec::new();
    let mut next_offset = None;
    let mut pos = 0;
    while buf.len() - pos >= 12 {
        let base = i64::from_be_bytes(buf[pos..pos + 8].try_into().expect("8"));
        let len = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().expect("4"));
        let total = usize::try_from(len).map_err(|_| RecordError::BadBatch("length"))? + 12;
        if total < BATCH_HEADER_BYTES {
            return Err(RecordError::BadBatch("length"));
        }
        if buf.len() - pos < total {
            break;
        }
        let batch = &buf[pos..pos + total];
        if batch[16] != 2 {
            return Err(RecordError::BadBatch("magic"));
        }
        let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4"));
        if crc32c::crc32c(&batch[BATCH_CRC_START..]) != crc {
            return Err(RecordError::BadBatch("crc"));
        }
        let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2"));
        if attributes & 0x07 != 0 {
            return Err(RecordError::BadBatch("compressed"));
        }
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4"));
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4"));
        let mut r = Reader(&batch[BATCH_HEADER_BYTES..]);
        for _ in 0..count {
            let len = usize::try_from(r.varint("record length")?)
                .map_err(|_| RecordError::BadBatch("record length"))?;
            let mut rec = Reader(r.take(len, "record")?);
            rec.take(1, "attributes")?;
            rec.varint("timestamp delta")?;
            rec.varint("offset delta")?;
            let key = rec.bytes("key")?.ok_or(RecordError::BadBatch("null key"))?;
            let value = rec.bytes("value")?;
            entries.push(decode_entry(key, value)?);
        }
        next_offset = Some(base + i64::from(last_delta) + 1);
        pos += total;
    }
    Ok((entries, next_offset, pos))
}

/// Applies replayed entries to a shard's groups, in log order.
pub fn replay(groups: &mut GroupManager, entries: Vec<Entry>) {
    for e in entries {
        match e {
            Entry::Offset {
                group_id,
                tp,
                offset,
            } => groups.restore_offset(&group_id, tp, offset),
            Entry::GroupDeleted { group_id } => groups.restore_deleted(&group_id),
        }
    }
}
