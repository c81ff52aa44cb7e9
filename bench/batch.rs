//! Kafka v2 record batches (magic 2) written and read by hand.
//!
//! Writing: one template per batch size, built once and re-sent unchanged; the broker assigns
//! offsets, so nothing needs patching. The e2e workload writes its scheduled send times into
//! the record values and reseals the CRC (CRC-32C over attributes..end).
//!
//! Reading: batch headers only, to count records and find the next offset; record values are
//! decoded only by e2e, which needs the embedded timestamp.

/// baseOffset(8) batchLength(4) partitionLeaderEpoch(4) magic(1) crc(4) attributes(2)
/// lastOffsetDelta(4) baseTimestamp(8) maxTimestamp(8) producerId(8) producerEpoch(2)
/// baseSequence(4) recordCount(4).
pub const BATCH_HEADER_BYTES: usize = 61;
/// baseOffset + batchLength: the bytes not counted by batchLength.
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const RECORD_COUNT_OFFSET: usize = 57;
const ATTRIBUTE_CONTROL: u16 = 1 << 5;
const ATTRIBUTE_COMPRESSION_MASK: u16 = 0x7;

/// A batch ready to send, and where each record's value starts inside it.
#[derive(Clone, Debug)]
pub struct BatchTemplate {
    pub bytes: Vec<u8>,
    pub value_offsets: Vec<usize>,
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64; // zigzag
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Builds an uncompressed batch of `records` records, each with a null key and a value of
/// `value_bytes` bytes, all stamped `timestamp_ms`.
pub fn build(records: usize, value_bytes: usize, timestamp_ms: i64) -> BatchTemplate {
    assert!(records > 0, "a batch holds at least one record");
    let mut bytes = vec![0u8; BATCH_HEADER_BYTES];
    let mut value_offsets = Vec::with_capacity(records);
    let mut body = Vec::with_capacity(value_bytes + 16);
    for i in 0..records {
        body.clear();
        body.push(0); // attributes
        put_varint(&mut body, 0); // timestampDelta
        put_varint(&mut body, i as i64); // offsetDelta
        put_varint(&mut body, -1); // key: null
        put_varint(&mut body, value_bytes as i64);
        let value_at = body.len();
        // A printable pattern: compressible data would flatter a broker that compresses.
        body.extend((0..value_bytes).map(|j| b'a' + ((i * 7 + j) % 26) as u8));
        put_varint(&mut body, 0); // headers
        put_varint(&mut bytes, body.len() as i64);
        value_offsets.push(bytes.len() + value_at);
        bytes.extend_from_slice(&body);
    }
    let batch_length = (bytes.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
    let h = &mut bytes[..BATCH_HEADER_BYTES];
    h[0..8].copy_from_slice(&0i64.to_be_bytes()); // baseOffset: assigned by the broker
    h[8..12].copy_from_slice(&batch_length.to_be_bytes());
    h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    h[MAGIC_OFFSET] = 2;
    h[21..23].copy_from_slice(&0u16.to_be_bytes()); // attributes: no compression, CreateTime
    h[23..27].copy_from_slice(&((records - 1) as i32).to_be_bytes());
    h[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
    h[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    h[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producerId: not idempotent
    h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    h[57..61].copy_from_slice(&(records as i32).to_be_bytes());
    reseal(&mut bytes);
    BatchTemplate {
        bytes,
        value_offsets,
    }
}

/// Recomputes the CRC-32C of a batch after its attributes..end changed.
pub fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// What a batch header says, read without touching the records.
#[derive(Clone, Copy, Debug)]
pub struct BatchInfo {
    pub base_offset: i64,
    /// Whole batch including baseOffset and batchLength.
    pub size_bytes: usize,
    pub records: u64,
    pub next_offset: i64,
    pub is_control: bool,
    pub is_compressed: bool,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the batch at the start of `buf`. `Ok(None)`: only a partial batch is left (a fetch may
/// end inside one). `Err`: not a v2 batch.
pub fn parse_header(buf: &[u8]) -> Result<Option<BatchInfo>, String> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Ok(None);
    }
    let base_offset = i64::from_be_bytes(buf[0..8].try_into().expect("8 bytes"));
    let batch_length = be_i32(buf, 8);
    if batch_length < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32 {
        return Err(format!(
            "batch length {batch_length} at offset {base_offset}"
        ));
    }
    if buf[MAGIC_OFFSET] != 2 {
        return Err(format!(
            "magic {} at offset {base_offset} (want 2)",
            buf[MAGIC_OFFSET]
        ));
    }
    let size_bytes = batch_length as usize + BATCH_LOG_OVERHEAD_BYTES;
    if buf.len() < size_bytes {
        return Ok(None);
    }
    let attributes = u16::from_be_bytes([buf[ATTRIBUTES_OFFSET], buf[ATTRIBUTES_OFFSET + 1]]);
    let last_offset_delta = be_i32(buf, LAST_OFFSET_DELTA_OFFSET);
    let record_count = be_i32(buf, RECORD_COUNT_OFFSET);
    if last_offset_delta < 0 || record_count < 0 {
        return Err(format!("negative counts in batch at offset {base_offset}"));
    }
    Ok(Some(BatchInfo {
        base_offset,
        size_bytes,
        records: record_count as u64,
        next_offset: base_offset + i64::from(last_offset_delta) + 1,
        is_control: attributes & ATTRIBUTE_CONTROL != 0,
        is_compressed: attributes & ATTRIBUTE_COMPRESSION_MASK != 0,
    }))
}

/// Complete batches of a fetched record set, in order; stops at a trailing partial batch.
pub fn batches(mut buf: &[u8]) -> impl Iterator<Item = Result<(BatchInfo, &[u8]), String>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match parse_header(buf) {
            Ok(None) => None,
            Ok(Some(info)) => {
                let (this, rest) = buf.split_at(info.size_bytes);
                buf = rest;
                Some(Ok((info, this)))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<i64, String> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let Some(&b) = buf.get(*at) else {
            return Err("varint past end".into());
        };
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err("varint too long".into())
}

/// Calls `f` with the first 8 bytes of each record's value (big-endian u64) in an uncompressed
/// batch. Records whose value is shorter are reported as errors.
pub fn for_each_value_u64(batch: &[u8], mut f: impl FnMut(u64)) -> Result<(), String> {
    let mut at = BATCH_HEADER_BYTES;
    while at < batch.len() {
        let len = get_varint(batch, &mut at)?;
        let end = at.checked_add(usize::try_from(len).map_err(|_| "record length")?);
        let end = end
            .filter(|e| *e <= batch.len())
            .ok_or("record past batch end")?;
        at += 1; // attributes
        get_varint(batch, &mut at)?; // timestampDelta
        get_varint(batch, &mut at)?; // offsetDelta
        let key_len = get_varint(batch, &mut at)?;
        at += usize::try_from(key_len.max(0)).map_err(|_| "key length")?;
        let value_len = get_varint(batch, &mut at)?;
        if value_len < 8 || at + 8 > end {
            return Err(format!(
                "record value of {value_len} bytes holds no timestamp"
            ));
        }
        f(u64::from_be_bytes(
            batch[at..at + 8].try_into().expect("8 bytes"),
        ));
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips() {
        let t = build(5, 16, 1234);
        let info = parse_header(&t.bytes).unwrap().unwrap();
        assert_eq!(
            (info.records, info.next_offset, info.size_bytes),
            (5, 5, t.bytes.len())
        );
        let mut seen = 0;
        for_each_value_u64(&t.bytes, |_| seen += 1).unwrap();
        assert_eq!(seen, 5);
        let crc = u32::from_be_bytes(t.bytes[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&t.bytes[21..]));
    }

    #[test]
    fn kafka_protocol_decodes_our_batch() {
        let t = build(4, 20, 1_700_000_000_000);
        let mut buf = bytes::Bytes::from(t.bytes.clone());
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(set.records.len(), 4);
        for (i, r) in set.records.iter().enumerate() {
            assert_eq!(
                (r.offset, r.timestamp, r.key.is_none()),
                (i as i64, 1_700_000_000_000, true)
            );
            let value = r.value.as_ref().unwrap();
            assert_eq!(
                &value[..],
                &t.bytes[t.value_offsets[i]..t.value_offsets[i] + 20]
            );
        }
    }
}
