//! Idempotent producer state of one partition: per producer id, its epoch and the last
//! `PRODUCER_BATCHES_KEPT` batches' sequence ranges with the offsets they were given.
//!
//! `check` runs under the log's write lock in offset-assignment order, so "the last batch"
//! is well defined. The table is rebuilt at open from a snapshot (written at roll and clean
//! close) plus a scan of the batch headers after the snapshot's offset: headers carry producer
//! id, epoch, base sequence and last offset delta, so no record is decoded.

use std::collections::{HashMap, VecDeque};

use super::LogError;
use crate::protocol::batch::BatchHeader;

/// Batches remembered per producer, as Kafka (max.in.flight.requests.per.connection <= 5).
pub(crate) const PRODUCER_BATCHES_KEPT: usize = 5;
/// Producer ids a snapshot may hold; a longer snapshot file is corrupt and ignored.
pub(crate) const PRODUCERS_SNAPSHOT_MAX: usize = 1 << 20;
/// Name of the snapshot file in the partition directory.
pub(crate) const SNAPSHOT_FILE: &str = "producer_state.snapshot";
const SNAPSHOT_MAGIC: u32 = 0x5342_5053; // "SBPS"
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 4 + 2 + 8 + 4;
const SNAPSHOT_ENTRY_FIXED_BYTES: usize = 8 + 2 + 8 + 1;
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;
/// Largest snapshot file: every producer with every batch, plus header and CRC.
pub(crate) const SNAPSHOT_SIZE_MAX_BYTES: u64 = (SNAPSHOT_HEADER_BYTES
    + PRODUCERS_SNAPSHOT_MAX
        * (SNAPSHOT_ENTRY_FIXED_BYTES + PRODUCER_BATCHES_KEPT * SNAPSHOT_BATCH_BYTES)
    + 4) as u64;

/// One batch of a producer, as remembered for duplicate detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Largest batch maxTimestamp seen from this producer, for expiry (Kafka's lastTimestamp).
    pub last_timestamp_ms: i64,
    /// Oldest first; at most `PRODUCER_BATCHES_KEPT`.
    pub batches: VecDeque<BatchMeta>,
}

/// A producer as DescribeProducers shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
}

/// What `check` decided for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it (also for batches without a producer id).
    Append,
    /// Already written: acknowledge with the original offsets, write nothing.
    Duplicate(BatchMeta),
}

/// Kafka's sequence arithmetic: sequences wrap from i32::MAX to 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Every known producer with its epoch, last sequence and last timestamp, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut all: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp_ms: e.last_timestamp_ms,
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }

    #[cfg(test)]
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a batch about to be written (Kafka's ProducerAppendInfo rules).
    /// A producer we know nothing of may start at any sequence (its state may have expired).
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, LogError> {
        if header.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let first_seq = header.base_sequence;
        let last_seq = increment_sequence(first_seq, header.last_offset_delta);
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(Verdict::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            if first_seq != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: header.producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(Verdict::Append);
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        let expected = match entry.batches.back() {
            Some(last) => increment_sequence(last.last_seq, 1),
            None => 0,
        };
        if first_seq != expected {
            return Err(LogError::OutOfOrderSequence {
                producer_id: header.producer_id,
                expected,
                got: first_seq,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records a batch written at its (patched) base offset. Also used by the open scan, which
    /// trusts what is on disk: a new epoch resets the batches, any sequence is taken.
    pub fn on_written(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(header.max_timestamp);
        if entry.batches.len() == PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: increment_sequence(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
    }

    /// Forgets producers whose newest batch timestamp is `expiration_ms` or more before
    /// `now_ms` (Kafka: producer.id.expiration.ms). A forgotten producer that comes back is
    /// treated as new: any sequence is accepted. Returns how many were forgotten.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// The snapshot file: header (magic, version, offset, count), entries, CRC-32C of all before.
    /// `next_offset` is the log offset the snapshot covers up to (exclusive).
    pub fn encode(&self, next_offset: i64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&next_offset.to_be_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let entry = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot: (table, next offset), or `None` if it is not a whole, valid one.
    pub fn decode(bytes: &[u8]) -> Option<(ProducerStateTable, i64)> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader { buf: body, at: 0 };
        if r.u32()? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return None;
        }
        let next_offset = r.i64()?;
        let count = r.u32()? as usize;
        // Bounded by the bytes present before anything is sized by it.
        if count > PRODUCERS_SNAPSHOT_MAX || count > body.len() / SNAPSHOT_ENTRY_FIXED_BYTES {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.u16()? as i16;
            let last_timestamp_ms = r.i64()?;
            let n = r.u8()? as usize;
            if n > PRODUCER_BATCHES_KEPT {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.u32()? as i32,
                    last_seq: r.u32()? as i32,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    last_timestamp_ms,
                    batches,
                },
            );
        }
        (r.at == body.len()).then_some((ProducerStateTable { producers }, next_offset))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.at..self.at + N)?;
        self.at += N;
        bytes.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
        base: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut t = ProducerStateTable::default();
        let h0 = header(7, 0, 0, 3, 10);
        assert_eq!(t.check(&h0).unwrap(), Verdict::Append);
        t.on_written(&h0);
        let h1 = header(7, 0, 3, 2, 13);
        assert_eq!(t.check(&h1).unwrap(), Verdict::Append);
        t.on_written(&h1);
        // Retry of either: the original offsets.
        match t.check(&header(7, 0, 0, 3, 99)).unwrap() {
            Verdict::Duplicate(m) => assert_eq!((m.base_offset, m.last_offset), (10, 12)),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            t.check(&header(7, 0, 3, 2, 99)).unwrap(),
            Verdict::Duplicate(_)
        ));
        // Gap and overlap that is not an exact retry.
        assert!(matches!(
            t.check(&header(7, 0, 6, 1, 99)),
            Err(LogError::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        assert!(matches!(
            t.check(&header(7, 0, 1, 1, 99)),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        // Old epoch fenced, new epoch must start at 0.
        assert!(matches!(
            t.check(&header(7, -1, 5, 1, 99)),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            t.check(&header(7, 1, 5, 1, 99)),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        let e1 = header(7, 1, 0, 1, 15);
        assert_eq!(t.check(&e1).unwrap(), Verdict::Append);
        t.on_written(&e1);
        assert!(matches!(
            t.check(&header(7, 0, 5, 1, 99)),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        // Unknown producers and non-idempotent batches go through.
        assert_eq!(t.check(&header(8, 0, 42, 1, 99)).unwrap(), Verdict::Append);
        assert_eq!(
            t.check(&header(-1, -1, -1, 1, 99)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.on_written(&header(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(t.entry(1).unwrap().batches.len(), PRODUCER_BATCHES_KEPT);
        assert!(matches!(
            t.check(&header(1, 0, 2, 1, 0)).unwrap(),
            Verdict::Duplicate(_)
        ));
        // Seq 1 is older than the window: neither duplicate nor next, so out of order.
        assert!(t.check(&header(1, 0, 1, 1, 0)).is_err());
    }

    #[test]
    fn producers_expire_by_their_newest_batch_timestamp() {
        let mut t = ProducerStateTable::default();
        let mut old = header(1, 0, 0, 1, 0);
        old.max_timestamp = 1_000;
        let mut new = header(2, 0, 0, 1, 1);
        new.max_timestamp = 9_000;
        t.on_written(&old);
        t.on_written(&new);
        assert_eq!(t.expire(10_000, 5_000), 1);
        assert!(t.entry(1).is_none() && t.entry(2).is_some());
        // Back after expiry: accepted at any sequence, like a new producer.
        assert_eq!(t.check(&header(1, 0, 17, 1, 2)).unwrap(), Verdict::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut t = ProducerStateTable::default();
        t.on_written(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.check(&header(1, 0, 0, 1, 2)).unwrap(), Verdict::Append);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut t = ProducerStateTable::default();
        for p in 0..20 {
            for s in 0..(p as i32 % 8) {
                t.on_written(&header(p, (p % 3) as i16, s, 2, i64::from(s) * 2));
            }
        }
        let bytes = t.encode(1234);
        assert_eq!(ProducerStateTable::decode(&bytes), Some((t.clone(), 1234)));
        for len in 0..bytes.len() {
            assert_eq!(
                ProducerStateTable::decode(&bytes[..len]),
                None,
                "truncated at {len}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(ProducerStateTable::decode(&flipped), None);
    }
}
