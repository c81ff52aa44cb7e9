//! The partition log: segments of record batches stored exactly as produced, a sparse offset index
//! and a time index per segment, group-committed fdatasync, recovery of a torn tail.
//!
//! Only `file.rs` touches glommio; the rest is runtime-free.
//!
//! CONTRACT (used by handlers and net; keep these signatures):
//! * `PartitionLog::open(dir, config, leader_epoch).await` recovers and opens one partition.
//! * `append(records, acks).await` appends a validated record set (one or more v2 batches, as
//!   `protocol::batch::validate_record_set` accepted them) and answers per `acks`.
//! * `read(from, max_bytes, isolation_end).await` returns whole batches as file regions.
//! * `appended()` is a future that completes at the next append (long poll).
//! * `offset_for_timestamp(ts)` / `max_timestamp()` for ListOffsets.
//! * `close().await` flushes and writes the clean-shutdown marker; `delete().await` removes it all.

pub mod file;

use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use crate::types::{Acks, Offset};

pub use file::SegmentFile;

/// Per-partition settings; Kafka's topic config names in the docs.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes
    pub segment_bytes: u64,
    /// segment.ms
    pub segment_ms: i64,
    /// index.interval.bytes
    pub index_interval_bytes: u32,
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
    #[error(transparent)]
    Io(#[from] std::io::Error),
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

pub struct PartitionLog {
    _todo: (),
}

impl PartitionLog {
    pub async fn open(
        _dir: PathBuf,
        _config: LogConfig,
        _leader_epoch: i32,
    ) -> Result<Rc<PartitionLog>, LogError> {
        todo!()
    }

    /// Appends a validated record set. Offsets are assigned here; baseOffset and
    /// partitionLeaderEpoch are patched in place (both lie outside the CRC).
    /// `Acks::All` returns only after an fdatasync covering the batches; the others after the write.
    pub async fn append(&self, _records: Bytes, _acks: Acks) -> Result<AppendInfo, LogError> {
        todo!()
    }

    /// Next offset to be written; everything below is readable.
    pub fn high_watermark(&self) -> Offset {
        todo!()
    }

    pub fn log_start_offset(&self) -> Offset {
        todo!()
    }

    /// The leader epoch this log stamps into batches (partitionLeaderEpoch).
    pub fn leader_epoch(&self) -> i32 {
        todo!()
    }

    /// Whole batches from the one holding `from`, up to `max_bytes` (at least one batch, KIP-74),
    /// never past the high watermark. `from` == high watermark gives an empty slice.
    pub async fn read(&self, _from: Offset, _max_bytes: u64) -> Result<ReadSlice, LogError> {
        todo!()
    }

    /// Completes at the next successful append (or when the log closes).
    pub fn appended(&self) -> impl std::future::Future<Output = ()> + 'static {
        async {}
    }

    /// The first record (not batch) with timestamp >= `timestamp_ms`: (offset, its timestamp).
    pub async fn offset_for_timestamp(
        &self,
        _timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        todo!()
    }

    /// The record with the largest timestamp (KIP-734): (offset, timestamp).
    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        todo!()
    }

    /// Flushes everything and writes the clean-shutdown marker.
    pub async fn close(&self) -> Result<(), LogError> {
        todo!()
    }

    /// Closes and removes the partition directory.
    pub async fn delete(&self) -> Result<(), LogError> {
        todo!()
    }
}
