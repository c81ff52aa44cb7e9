//! Opening a segment after a restart: load its indexes if plausible, resume at the last index
//! entry that still points at its batch, then scan whole batches forward to the end of the file,
//! rebuilding index entries. The active segment of an unclean shutdown is CRC-checked and its
//! torn or corrupt tail truncated. Indexes are hints: the ones a roll writes in the background
//! may be missing or stale after a crash, and are then rebuilt by the scan.

use std::io;
use std::path::Path;
use std::rc::Rc;

use super::LogError;
use super::ahead::ZEROS_PAST_END_MAX_BYTES;
use super::file::{self, SegmentFile};
use super::index::{INDEX_FILE_SIZE_MAX_BYTES, OffsetIndex, TimeIndex};
use super::producer::{ProducerStateTable, SNAPSHOT_FILE, SNAPSHOT_SIZE_MAX_BYTES};
use super::read::HeaderReader;
use super::segment::{INDEX_SUFFIX, Segment, TIME_INDEX_SUFFIX};
use crate::limits::REQUEST_SIZE_MAX_BYTES;
use crate::protocol::batch::{BATCH_HEADER_BYTES, BatchHeader, BatchHeaders, MAGIC_V2, check_crc};

/// Bytes read per step of a recovery scan; the shard may run other tasks between steps.
pub(crate) const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Largest batch a segment can legitimately hold: one produce request. A length field above
/// it is corruption, and must not size a read.
pub(crate) const BATCH_SIZE_MAX_BYTES: usize = REQUEST_SIZE_MAX_BYTES as usize;

/// How to treat one segment while opening the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecoveryMode {
    /// CRC-check every batch scanned (the active segment after an unclean shutdown).
    pub verify_crc: bool,
    /// Truncate the file at the end of the last valid batch.
    pub truncate_tail: bool,
}

/// What the scan of one segment found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Bytes of whole valid batches.
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<&'static str>,
}

/// Opens one segment file and brings its bookkeeping up to date with its contents.
pub(crate) async fn open_segment(
    dir: &Path,
    base_offset: i64,
    index_interval_bytes: u32,
    mode: RecoveryMode,
    now_ms: i64,
) -> Result<Segment, LogError> {
    let path = dir.join(super::segment::file_name(
        base_offset,
        super::segment::LOG_SUFFIX,
    ));
    let file = Rc::new(SegmentFile::open(&path).await?);
    let file_bytes = file.size().await?;
    let mut segment = Segment::new(base_offset, file, now_ms);
    let loaded = load_indexes(&segment, dir, file_bytes).await?;
    let (index_bytes, time_index_bytes) = (loaded.0.encode(), loaded.1.encode());
    segment.index = loaded.0;
    segment.time_index = loaded.1;
    let (position, next_offset) = resume_point(&segment, file_bytes).await?;
    segment.resume_at(position, next_offset);
    let end = scan_forward(&mut segment, file_bytes, index_interval_bytes, mode).await?;
    if end.stopped.is_some() && is_zeros(&segment.file, end.valid_bytes, file_bytes).await? {
        // Zeros a crash left past the log end (`ahead`): not damage, in any segment.
        tracing::debug!(
            path = %path.display(),
            valid_bytes = end.valid_bytes,
            file_bytes,
            "cutting the zeros written ahead of the last batch"
        );
        segment.file.truncate(end.valid_bytes).await?;
        segment.file.fdatasync().await?;
    } else if let Some(reason) = end.stopped {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = end.valid_bytes,
            file_bytes,
            reason,
            "segment tail is not whole valid batches"
        );
        if mode.truncate_tail {
            segment.file.truncate(end.valid_bytes).await?;
            segment.file.fdatasync().await?;
        }
    }
    // Blocks a crash left allocated past the end (`SegmentFile::preallocate_ahead`): data-less,
    // but they hold disk space until a truncate frees them.
    if end.stopped.is_none()
        && segment.file.allocated_bytes()? > file_bytes + PREALLOCATED_SLACK_BYTES
    {
        segment.file.truncate(file_bytes).await?;
    }
    segment.index_dirty = segment.index.encode() != index_bytes
        || segment.time_index_for_disk().encode() != time_index_bytes;
    Ok(segment)
}

/// Blocks past a segment's end that recovery leaves alone: less than a preallocation chunk, more
/// than a file system rounds up to.
const PREALLOCATED_SLACK_BYTES: u64 = 1 << 20;

/// True when [from, to) of the file holds only zeros and is no longer than the zeros a log
/// writes ahead of its end can be (`ZEROS_PAST_END_MAX_BYTES`).
async fn is_zeros(file: &SegmentFile, from: u64, to: u64) -> io::Result<bool> {
    if to <= from || to - from > ZEROS_PAST_END_MAX_BYTES {
        return Ok(false);
    }
    let mut position = from;
    while position < to {
        let want = (to - position).min(SCAN_CHUNK_BYTES as u64) as usize;
        let chunk = file.read_at(position, want).await?;
        if chunk.is_empty() || chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        position += chunk.len() as u64;
        file::yield_if_needed().await;
    }
    Ok(true)
}

/// Loads both index files, or empty indexes when either is missing or implausible.
async fn load_indexes(
    segment: &Segment,
    dir: &Path,
    file_bytes: u64,
) -> io::Result<(OffsetIndex, TimeIndex)> {
    let index_path = segment.path(dir, INDEX_SUFFIX);
    let time_index_path = segment.path(dir, TIME_INDEX_SUFFIX);
    let index = read_index_file(&index_path)
        .await?
        .and_then(|bytes| OffsetIndex::decode(&bytes, file_bytes));
    let time_index = read_index_file(&time_index_path)
        .await?
        .and_then(|bytes| TimeIndex::decode(&bytes));
    match (index, time_index) {
        (Some(index), Some(time_index)) => Ok((index, time_index)),
        _ => {
            // A new, empty segment has no index files yet: nothing worth an operator's attention.
            if file_bytes > 0 {
                tracing::info!(path = %index_path.display(), "rebuilding indexes");
            }
            Ok((OffsetIndex::default(), TimeIndex::default()))
        }
    }
}

/// An oversized index file is as good as a missing one: it is rebuilt.
async fn read_index_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match file::read_small_file(path, INDEX_FILE_SIZE_MAX_BYTES).await {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
        other => other,
    }
}

/// The last index entry whose position still holds the batch it names, or the file start.
async fn resume_point(segment: &Segment, file_bytes: u64) -> io::Result<(u64, i64)> {
    let Some(entry) = segment.index.last() else {
        return Ok((0, segment.base_offset));
    };
    let offset = segment.base_offset + i64::from(entry.relative_offset);
    let position = u64::from(entry.position);
    let bytes = segment.file.read_at(position, BATCH_HEADER_BYTES).await?;
    let holds_batch = BatchHeader::parse(&bytes)
        .is_ok_and(|h| h.base_offset == offset && position + h.total_bytes() as u64 <= file_bytes);
    if holds_batch {
        Ok((position, offset))
    } else {
        Ok((0, segment.base_offset))
    }
}

/// Scans whole batches from the segment's current end to `file_bytes`, accounting each.
pub(crate) async fn scan_forward(
    segment: &mut Segment,
    file_bytes: u64,
    index_interval_bytes: u32,
    mode: RecoveryMode,
) -> io::Result<ScanEnd> {
    // Positions are u32 in the index; a longer file is corrupt past that point.
    let file_bytes = file_bytes.min(u64::from(u32::MAX));
    loop {
        let position = segment.size_bytes;
        if position >= file_bytes {
            return Ok(ScanEnd {
                valid_bytes: position,
                stopped: None,
            });
        }
        let want = (file_bytes - position).min(SCAN_CHUNK_BYTES as u64) as usize;
        let chunk = segment.file.read_at(position, want).await?;
        if let Err(reason) = account_chunk(segment, &chunk, index_interval_bytes, mode) {
            return Ok(stopped(segment, reason));
        }
        if segment.size_bytes == position {
            // The next batch is larger than a chunk, or torn: read exactly it.
            if let Err(reason) =
                account_large_batch(segment, &chunk, file_bytes, index_interval_bytes, mode).await?
            {
                return Ok(stopped(segment, reason));
            }
        }
        file::yield_if_needed().await;
    }
}

fn stopped(segment: &Segment, reason: &'static str) -> ScanEnd {
    ScanEnd {
        valid_bytes: segment.size_bytes,
        stopped: Some(reason),
    }
}

/// Accounts every whole batch of `chunk`, which starts at the segment's end.
fn account_chunk(
    segment: &mut Segment,
    chunk: &[u8],
    index_interval_bytes: u32,
    mode: RecoveryMode,
) -> Result<(), &'static str> {
    let start = segment.size_bytes;
    for found in BatchHeaders::new(chunk) {
        let found = found.map_err(|_| "batch header does not parse")?;
        let bytes = &chunk[found.position..found.position + found.header.total_bytes()];
        check_stored_batch(segment, &found.header, bytes, mode)?;
        segment.on_batch(
            &found.header,
            start + found.position as u64,
            index_interval_bytes,
        );
    }
    Ok(())
}

/// Accounts the one batch at the segment's end that did not fit in `chunk`.
async fn account_large_batch(
    segment: &mut Segment,
    chunk: &[u8],
    file_bytes: u64,
    index_interval_bytes: u32,
    mode: RecoveryMode,
) -> io::Result<Result<(), &'static str>> {
    let position = segment.size_bytes;
    let header = match BatchHeader::parse(chunk) {
        Ok(header) => header,
        Err(_) if chunk.len() < BATCH_HEADER_BYTES => return Ok(Err("torn batch header")),
        Err(_) => return Ok(Err("batch header does not parse")),
    };
    let total = header.total_bytes();
    if total > BATCH_SIZE_MAX_BYTES {
        return Ok(Err("batch length over the largest batch"));
    }
    if position + total as u64 > file_bytes {
        return Ok(Err("torn batch"));
    }
    let bytes = segment.file.read_at(position, total).await?;
    if bytes.len() != total {
        return Ok(Err("torn batch"));
    }
    if let Err(reason) = check_stored_batch(segment, &header, &bytes, mode) {
        return Ok(Err(reason));
    }
    segment.on_batch(&header, position, index_interval_bytes);
    Ok(Ok(()))
}

/// What a stored batch must satisfy to be kept: framing, dense offsets, and (when asked) CRC.
fn check_stored_batch(
    segment: &Segment,
    header: &BatchHeader,
    bytes: &[u8],
    mode: RecoveryMode,
) -> Result<(), &'static str> {
    if header.magic != MAGIC_V2 {
        return Err("magic is not 2");
    }
    if header.base_offset != segment.next_offset {
        return Err("baseOffset does not follow the previous batch");
    }
    if header.last_offset_delta < 0 || !segment.fits_offset(header.last_offset()) {
        return Err("lastOffsetDelta out of range");
    }
    if segment.size_bytes + bytes.len() as u64 > u64::from(u32::MAX) {
        return Err("batch ends past the largest segment position");
    }
    if mode.verify_crc && check_crc(bytes).is_err() {
        return Err("CRC-32C mismatch");
    }
    Ok(())
}

/// Rebuilds the idempotent producer table: the snapshot (if whole and not past the log end),
/// then every batch header from its offset (or the log start) to the high watermark. Returns
/// the table and the offset the scan started from, where the next open's scan starts too until a
/// newer snapshot is written; `None` when a snapshot file is there but unusable (damaged, or past
/// the log end), so that close replaces it.
pub(crate) async fn load_producers(
    dir: &Path,
    segments: &[Segment],
    high_watermark: i64,
) -> Result<(ProducerStateTable, Option<i64>), LogError> {
    let path = dir.join(SNAPSHOT_FILE);
    let (present, snapshot) = match file::read_small_file(&path, SNAPSHOT_SIZE_MAX_BYTES).await {
        Ok(Some(bytes)) => (true, ProducerStateTable::decode(&bytes)),
        Ok(None) => (false, None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => (true, None),
        Err(e) => return Err(e.into()),
    };
    let log_start = segments[0].base_offset;
    // Usable: the snapshot read, or none there to replace.
    let (mut table, from, usable) = match snapshot {
        Some((table, offset)) if offset <= high_watermark => (table, offset.max(log_start), true),
        other => {
            if other.is_some() {
                tracing::warn!(path = %path.display(), "producer snapshot is past the log end; rescanning");
            }
            (ProducerStateTable::default(), log_start, !present)
        }
    };
    for segment in segments.iter().filter(|s| s.next_offset > from) {
        let mut reader = HeaderReader::new(Rc::clone(&segment.file), segment.size_bytes);
        let mut position = scan_start(segment, from);
        while position < reader.size_bytes() {
            let header = reader.header_at(position).await?;
            if header.last_offset() >= from {
                table.on_written(&header);
            }
            position += header.total_bytes() as u64;
            file::yield_if_needed().await;
        }
    }
    Ok((table, usable.then_some(from)))
}

/// Where a scan for the batches from `from` on starts in `segment`: the indexed position at or
/// before it, or the segment's start.
fn scan_start(segment: &Segment, from: i64) -> u64 {
    if from > segment.base_offset {
        segment
            .index
            .lookup(segment.relative(from))
            .map_or(0, |e| u64::from(e.position))
    } else {
        0
    }
}

/// Bytes `load_producers` would read headers from to rebuild the producer table from a snapshot
/// taken at `from`.
pub(crate) fn producer_scan_bytes(segments: &[Segment], from: i64) -> u64 {
    (segments.iter().filter(|s| s.next_offset > from))
        .map(|s| s.size_bytes.saturating_sub(scan_start(s, from)))
        .sum()
}
