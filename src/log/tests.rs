//! Log tests on a real executor and real files (through `file::run_local`, so the runtime stays in
//! file.rs): round trips across rolls, read plans, recovery of every torn tail, index rebuilds,
//! timestamp lookups, group commit.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::file::{run_local, sleep_ms, spawn_local};
use super::*;
use crate::protocol::batch::{BATCH_HEADER_BYTES, BatchHeader, BatchHeaders, check_crc};
use crate::protocol::records::fixtures;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

/// For tests that cut or read a segment file by its length: no zeros written past the log end
/// (`a_lone_writer_gets_zeros_written_ahead_and_recovery_cuts_them_after_a_crash` tests those).
fn raw_file_config() -> LogConfig {
    LogConfig {
        write_ahead_bytes: 0,
        ..LogConfig::default()
    }
}

/// Waits until no fill of zeros ahead of the log end is running (they hold the write lock
/// while writing).
async fn settle_write_ahead(log: &PartitionLog) {
    while log.write_ahead.filling() {
        file::sleep_ms(1).await;
    }
}

fn batch(timestamp: i64, value_bytes: usize) -> Bytes {
    Bytes::from(fixtures::simple(timestamp, value_bytes))
}

/// Opens as after a crash: every tail is checked, CRCs included.
async fn open(dir: &Path, config: &LogConfig) -> Rc<PartitionLog> {
    open_after(dir, config, LastStop::Unclean).await
}

async fn open_after(dir: &Path, config: &LogConfig, last_stop: LastStop) -> Rc<PartitionLog> {
    PartitionLog::open(dir.to_path_buf(), config.clone(), 7, last_stop)
        .await
        .expect("open")
}

/// The bytes of a read, concatenated, and the headers of the batches in them.
async fn read_bytes(log: &PartitionLog, from: i64, max_bytes: u64) -> (Vec<u8>, Vec<BatchHeader>) {
    let slice = log.read(Offset(from), max_bytes).await.expect("read");
    let mut bytes = Vec::new();
    for region in &slice.regions {
        let got = region
            .file
            .read_at(region.position, region.len as usize)
            .await
            .expect("region read");
        assert_eq!(got.len() as u64, region.len, "regions cover written bytes");
        bytes.extend(got);
    }
    assert_eq!(bytes.len() as u64, slice.len_bytes);
    let mut headers = Vec::new();
    let mut iter = BatchHeaders::new(&bytes);
    for found in iter.by_ref() {
        let found = found.expect("whole batches");
        let end = found.position + found.header.total_bytes();
        check_crc(&bytes[found.position..end]).expect("stored CRC valid");
        headers.push(found.header);
    }
    assert_eq!(iter.stop(), bytes.len(), "only whole batches");
    (bytes, headers)
}

fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

#[test]
fn append_and_read_round_trip_across_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        let mut expected = Vec::new();
        for i in 0..40 {
            let records = batch(1_000 + i, 100);
            let info = log.append(records, Acks::Leader).await.expect("append");
            assert_eq!(info.base_offset, Offset(i));
            assert_eq!(info.log_start_offset, Offset(0));
            expected.push(i);
        }
        assert_eq!(log.high_watermark(), Offset(40));
        assert!(log.state.borrow().segment_count() > 3, "segments rolled");
        assert!(segment_files(dir.path(), ".log").len() > 3);
        // Every offset reads back as the batch holding it, stamped with our offset and epoch.
        for from in 0..40 {
            let (_, headers) = read_bytes(&log, from, 1).await;
            assert_eq!(headers.len(), 1, "at least one batch, even over max_bytes");
            assert_eq!(headers[0].base_offset, from);
            assert_eq!(headers[0].partition_leader_epoch, 7);
        }
        // A big read spans segments and returns everything in order.
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        let offsets: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
        assert_eq!(offsets, expected);
    });
}

#[test]
fn read_respects_max_bytes_and_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let config = LogConfig {
            index_interval_bytes: 300,
            ..LogConfig::default()
        };
        let log = open(dir.path(), &config).await;
        let one = batch(1, 100).len() as u64;
        let mut multi = batch(1, 100).to_vec();
        multi.extend_from_slice(&batch(2, 100));
        log.append(Bytes::from(multi), Acks::Leader)
            .await
            .expect("append");
        for i in 0..30 {
            log.append(batch(i, 100), Acks::Leader)
                .await
                .expect("append");
        }
        assert_eq!(log.high_watermark(), Offset(32));
        for take in 1..10u64 {
            let (_, headers) = read_bytes(&log, 5, take * one).await;
            assert_eq!(headers.len() as u64, take, "whole batches within max_bytes");
            let (_, headers) = read_bytes(&log, 5, take * one + one - 1).await;
            assert_eq!(headers.len() as u64, take, "never a partial batch");
        }
        let slice = log
            .read(Offset(32), 1 << 20)
            .await
            .expect("read at the end");
        assert!(slice.regions.is_empty() && slice.len_bytes == 0);
        assert!(matches!(
            log.read(Offset(33), 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.read(Offset(-1), 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
    });
}

#[test]
fn header_walks_read_a_chunk_for_small_batches_and_only_headers_for_large_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &raw_file_config()).await;
        let small = batch(0, 100).len();
        for i in 0..200 {
            log.append(batch(i, 100), Acks::Leader)
                .await
                .expect("append");
        }
        let large = batch(0, 40_000).len();
        assert!(large >= read::HEADER_READ_CHUNK_BYTES / 2 && small < 1000);
        for i in 0..20 {
            log.append(batch(i, 40_000), Acks::Leader)
                .await
                .expect("append");
        }
        let (file, size) = {
            let state = log.state.borrow();
            let segment = &state.segments[0];
            (Rc::clone(&segment.file), segment.size_bytes)
        };
        // (batches, reads, bytes read) of a walk from `from` to `to`.
        let walk = |from: u64, to: u64| {
            let file = Rc::clone(&file);
            async move {
                // The reader sees a segment that ends where the walk does.
                let mut reader = read::HeaderReader::new(file, to);
                let (mut position, mut batches) = (from, 0);
                while position < to {
                    position += reader
                        .header_at(position)
                        .await
                        .expect("header")
                        .total_bytes() as u64;
                    batches += 1;
                }
                assert_eq!(position, to, "the walk lands on the boundary");
                let (reads, bytes) = reader.reads();
                (batches, reads, bytes)
            }
        };
        let chunk = read::HEADER_READ_CHUNK_BYTES as u64;
        let small_end = 200 * small as u64;
        let (batches, reads, bytes) = walk(0, small_end).await;
        assert_eq!(batches, 200);
        assert!(
            reads <= 2 + small_end / (chunk - small as u64) + 1 && bytes <= small_end + chunk,
            "a header, then chunks: {reads} reads of {bytes} bytes for {small_end}"
        );
        let tail_from = 150 * small as u64;
        assert_eq!(
            walk(tail_from, small_end).await,
            (50, 1, small_end - tail_from),
            "within a chunk of the end, one read to the end"
        );
        assert_eq!(
            walk(small_end, size).await,
            (20, 20, 20 * BATCH_HEADER_BYTES as u64),
            "one header read per large batch"
        );
    });
}

/// Builds a log of `count` batches with an unclean shutdown (no close), returns its bytes.
fn build_crashed_log(dir: &Path, config: &LogConfig, count: i64) {
    run_local(async {
        let log = open(dir, config).await;
        for i in 0..count {
            log.append(batch(i, 50 + i as usize), Acks::All)
                .await
                .expect("append");
        }
        // Dropped without close: the marker is absent, as after a crash.
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
}

#[test]
fn recovery_truncates_every_torn_tail_of_the_last_two_batches() {
    let template = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        index_interval_bytes: 150,
        ..raw_file_config()
    };
    build_crashed_log(template.path(), &config, 12);
    let log_path = segment_files(template.path(), ".log")
        .pop()
        .expect("a segment");
    let bytes = std::fs::read(&log_path).expect("read log");
    let ends: Vec<usize> = BatchHeaders::new(&bytes)
        .map(|b| {
            let b = b.expect("ok");
            b.position + b.header.total_bytes()
        })
        .collect();
    assert_eq!(ends.len(), 12);
    let work = tempfile::tempdir().expect("tempdir");
    for cut in ends[9]..=bytes.len() {
        let dir = work.path().join(format!("cut-{cut}"));
        copy_dir(template.path(), &dir);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(log_path.file_name().expect("name")))
            .expect("open");
        file.set_len(cut as u64).expect("truncate");
        let whole = ends.iter().filter(|&&end| end <= cut).count() as i64;
        run_local(async {
            let log = open(&dir, &config).await;
            assert_eq!(log.high_watermark(), Offset(whole), "cut at {cut}");
            let (read, headers) = read_bytes(&log, 0, u64::MAX).await;
            assert_eq!(headers.len() as i64, whole);
            assert_eq!(read, bytes[..ends[whole as usize - 1]]);
            let info = log.append(batch(99, 10), Acks::All).await.expect("append");
            assert_eq!(
                info.base_offset,
                Offset(whole),
                "appends continue after the tail"
            );
            let (_, headers) = read_bytes(&log, whole, 1).await;
            assert_eq!(headers[0].max_timestamp, 99);
        });
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_is_truncated_unless_shutdown_was_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = raw_file_config();
    build_crashed_log(dir.path(), &config, 5);
    let log_path = segment_files(dir.path(), ".log").pop().expect("a segment");
    let mut bytes = std::fs::read(&log_path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&log_path, &bytes).expect("write");
    // After a clean stop the tail is trusted: the scan checks framing, not CRCs.
    run_local(async {
        let log = open_after(dir.path(), &config, LastStop::Clean).await;
        assert_eq!(log.high_watermark(), Offset(5));
    });
    // So is it with the marker an earlier version left in the partition's own directory, which
    // open consumes.
    std::fs::write(dir.path().join(CLEAN_SHUTDOWN_FILE), b"").expect("marker");
    run_local(async {
        let log = open(dir.path(), &config).await;
        assert_eq!(log.high_watermark(), Offset(5));
    });
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "marker consumed at open"
    );
    run_local(async {
        let log = open(dir.path(), &config).await;
        assert_eq!(
            log.high_watermark(),
            Offset(4),
            "corrupt last batch dropped"
        );
        log.close().await.expect("close");
    });
    assert!(
        !dir.path().join(CLEAN_SHUTDOWN_FILE).exists(),
        "the broker writes the marker, not a log's close"
    );
    assert!(file_len(&log_path) < bytes.len() as u64);
}

#[test]
fn a_roll_leaves_index_writes_and_the_directory_sync_off_the_write_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        for i in 0..4 {
            log.append(batch(i, 300), Acks::Leader)
                .await
                .expect("append");
        }
        assert!(log.state.borrow().segment_count() > 1, "rolled");
        // The acks=1 appends returned without any sync: the new file's name is not durable yet.
        assert_eq!(log.sync_count(), 0);
        assert!(log.sync.dir_unsynced.get());
        // The background task writes the rolled segments' indexes and the producer snapshot.
        drop(log.housekeeping.lock().await);
        let bases: Vec<i64> = {
            let state = log.state.borrow();
            let segments = &state.segments;
            segments[..segments.len() - 1]
                .iter()
                .map(|s| s.base_offset)
                .collect()
        };
        for base in bases {
            let state = log.state.borrow();
            let segment = state
                .segments
                .iter()
                .find(|s| s.base_offset == base)
                .expect("segment");
            assert!(!segment.index_dirty, "indexes of segment {base} written");
            let index = std::fs::read(segment.path(dir.path(), INDEX_SUFFIX)).expect("index");
            assert_eq!(index, segment.index.encode());
        }
        assert!(dir.path().join(super::producer::SNAPSHOT_FILE).exists());
        // The next acks=all append syncs the directory before its data counts as synced.
        log.append(batch(9, 10), Acks::All).await.expect("append");
        assert!(!log.sync.dir_unsynced.get());
        assert_eq!(log.sync.synced_seq.get(), log.sync.written_seq.get());
    });
}

#[test]
fn missing_short_and_garbage_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 4000,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    run_local(async {
        let log = open(dir.path(), &config).await;
        for i in 0..60 {
            log.append(batch(i * 10, 60), Acks::Leader)
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    let indexes = segment_files(dir.path(), ".index");
    let time_indexes = segment_files(dir.path(), ".timeindex");
    assert!(indexes.len() > 1);
    let originals: Vec<Vec<u8>> = indexes
        .iter()
        .chain(&time_indexes)
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert!(originals.iter().all(|o| !o.is_empty()));
    let damage: [&dyn Fn(&Path); 3] = [
        &|p| std::fs::remove_file(p).expect("remove"),
        &|p| {
            let len = file_len(p);
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open")
                .set_len(len - 3)
                .expect("truncate");
        },
        &|p| std::fs::write(p, [0xff; 24]).expect("garbage"),
    ];
    for harm in damage {
        for path in indexes.iter().chain(&time_indexes) {
            harm(path);
        }
        run_local(async {
            let log = open(dir.path(), &config).await;
            assert_eq!(log.high_watermark(), Offset(60));
            for from in [0, 17, 33, 59] {
                let (_, headers) = read_bytes(&log, from, 1).await;
                assert_eq!(headers[0].base_offset, from);
            }
            assert_eq!(
                log.offset_for_timestamp(301).await.expect("lookup"),
                Some((Offset(31), 310))
            );
            log.close().await.expect("close");
        });
        let rebuilt: Vec<Vec<u8>> = indexes
            .iter()
            .chain(&time_indexes)
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        assert_eq!(
            rebuilt, originals,
            "rebuilt indexes equal the ones appends wrote"
        );
    }
}

#[test]
fn offset_for_timestamp_finds_records_inside_compressed_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    run_local(async {
        let log = open(dir.path(), &config).await;
        let sets = [
            (vec![100, 105, 103], Compression::None),
            (vec![200, 150, 250], Compression::Gzip),
            (vec![240, 260], Compression::Zstd),
            (vec![255, 300, 299], Compression::Lz4),
            (vec![310], Compression::Snappy),
        ];
        for (timestamps, compression) in &sets {
            let records = fixtures::batch(timestamps, *compression, 200);
            log.append(Bytes::from(records), Acks::Leader)
                .await
                .expect("append");
        }
        assert!(log.state.borrow().segment_count() > 1);
        let cases = [
            (0, Some((0, 100))),
            (101, Some((1, 105))),
            (106, Some((3, 200))),
            (201, Some((5, 250))),
            (251, Some((7, 260))),
            (261, Some((9, 300))),
            (301, Some((11, 310))),
            (311, None),
        ];
        for (timestamp, expected) in cases {
            let found = log.offset_for_timestamp(timestamp).await.expect("lookup");
            assert_eq!(
                found,
                expected.map(|(o, t)| (Offset(o), t)),
                "ts {timestamp}"
            );
        }
        assert_eq!(
            log.max_timestamp().await.expect("max"),
            Some((Offset(11), 310))
        );
    });
}

#[test]
fn max_timestamp_is_the_record_not_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        assert_eq!(log.max_timestamp().await.expect("max"), None);
        let records = fixtures::batch(&[5, 900, 7], Compression::Zstd, 10);
        log.append(Bytes::from(records), Acks::Leader)
            .await
            .expect("append");
        log.append(batch(100, 10), Acks::Leader)
            .await
            .expect("append");
        assert_eq!(
            log.max_timestamp().await.expect("max"),
            Some((Offset(1), 900))
        );
    });
}

#[test]
fn concurrent_acks_all_appends_share_syncs_and_keep_call_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        let producers = 64;
        let tasks: Vec<_> = (0..producers)
            .map(|i| {
                let log = Rc::clone(&log);
                spawn_local(async move {
                    let info = log.append(batch(i, 100), Acks::All).await.expect("append");
                    (i, info.base_offset)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await);
        }
        for (i, base) in &results {
            assert_eq!(*base, Offset(*i), "appends land in call order");
        }
        assert_eq!(log.high_watermark(), Offset(producers));
        // Made durable by an fdatasync or by a write through O_DSYNC.
        let syncs = log.sync_count() + log.sync.write_throughs.get();
        assert!(
            syncs >= 1 && syncs < producers as u64 / 2,
            "{syncs} syncs for {producers} appends"
        );
        assert_eq!(log.sync.synced_seq.get(), log.sync.written_seq.get());
        settle_write_ahead(&log).await;
        assert!(!log.write_lock.is_held());
    });
}

#[test]
fn appended_wakes_long_polls_and_close_ends_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        let waiter = spawn_local(log.appended());
        let writer = {
            let log = Rc::clone(&log);
            spawn_local(async move { log.append(batch(1, 1), Acks::None).await })
        };
        waiter.await;
        writer.await.expect("append");
        let waiter = spawn_local(log.appended());
        log.close().await.expect("close");
        waiter.await;
        log.appended().await; // Already closed: completes at once.
        assert!(matches!(
            log.append(batch(1, 1), Acks::Leader).await,
            Err(LogError::Closed)
        ));
        log.flush().await.expect("nothing to flush");
    });
}

#[test]
fn reopen_after_clean_close_continues_and_delete_removes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topic-0");
    run_local(async {
        let log = open(&path, &small_config()).await;
        for i in 0..20 {
            log.append(batch(i, 80), Acks::All).await.expect("append");
        }
        log.close().await.expect("close");
        let log = open(&path, &small_config()).await;
        assert_eq!(log.high_watermark(), Offset(20));
        let info = log.append(batch(20, 80), Acks::All).await.expect("append");
        assert_eq!(info.base_offset, Offset(20));
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        assert_eq!(headers.len(), 21);
        log.delete().await.expect("delete");
    });
    assert!(!path.exists());
}

#[test]
fn a_steady_stream_of_writers_does_not_postpone_syncs_for_ever() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        let producers = 3 * super::append::SYNC_GROUP_WRITES_MAX as i64;
        // Each append is over half a write round, so every write carries one: the writes
        // queue as a steady stream and the sync must not wait for it to end.
        let value_bytes = super::append::WRITE_ROUND_BYTES_MAX / 2 + 1;
        let tasks: Vec<_> = (0..producers)
            .map(|i| {
                let log = Rc::clone(&log);
                spawn_local(async move { log.append(batch(i, value_bytes), Acks::All).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("append");
        }
        assert_eq!(
            log.sync.written_seq.get(),
            producers as u64,
            "one write each"
        );
        assert!(
            log.sync_count() >= 2,
            "a sync every SYNC_GROUP_WRITES_MAX writes at most"
        );
        assert_eq!(log.high_watermark(), Offset(producers));
    });
}

#[test]
fn appends_queued_together_share_one_write_in_call_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        let appends = 50;
        let tasks: Vec<_> = (0..appends)
            .map(|i| {
                let log = Rc::clone(&log);
                spawn_local(async move { log.append(batch(i, 100), Acks::Leader).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let info = task.await.expect("append");
            assert_eq!(
                info.base_offset,
                Offset(i as i64),
                "offsets follow call order"
            );
        }
        let writes = log.sync.written_seq.get();
        assert!(
            writes < appends as u64 / 2,
            "{appends} queued appends took {writes} writes"
        );
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        let timestamps: Vec<i64> = headers.iter().map(|h| h.max_timestamp).collect();
        assert_eq!(timestamps, (0..appends).collect::<Vec<_>>());
    });
}

/// Record sets of several batches, some copied into the write whole and some written from the
/// request body with only their head patched, queued together: the log holds every batch byte
/// for byte as sent, but for its offsets and leader epoch, whichever way the write goes.
#[test]
fn batches_of_every_size_are_stored_as_sent_with_offsets_patched_in_place_or_through_io_uring() {
    for in_place in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        run_local(async move {
            super::pagecache::set_budget_for_tests(if in_place { 1 << 30 } else { 0 });
            let ways = super::pagecache::shard_writes();
            let log = open(dir.path(), &LogConfig::default()).await;
            // Batches under and over the size that is copied whole, several per record set.
            let sizes = [[10, 3_000, 100], [2_000, 1, 400], [5_000, 6_000, 20]];
            let sets: Vec<Vec<Bytes>> = sizes
                .iter()
                .enumerate()
                .map(|(s, set)| {
                    let at = |(b, len): (usize, &usize)| batch((s * 3 + b) as i64, *len);
                    set.iter().enumerate().map(at).collect()
                })
                .collect();
            let tasks: Vec<_> = sets
                .iter()
                .map(|set| {
                    let log = Rc::clone(&log);
                    let records = Bytes::from(set.concat());
                    spawn_local(async move { log.append(records, Acks::Leader).await })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let info = task.await.expect("append");
                assert_eq!(info.base_offset, Offset(i as i64 * 3));
            }
            let (bytes, headers) = read_bytes(&log, 0, u64::MAX).await;
            let sent: Vec<&Bytes> = sets.iter().flatten().collect();
            assert_eq!(headers.len(), sent.len());
            let mut at = 0;
            for (i, (header, sent)) in headers.iter().zip(sent).enumerate() {
                assert_eq!(header.base_offset, i as i64, "offsets patched in order");
                assert_eq!(header.partition_leader_epoch, 7);
                let stored = &bytes[at..at + sent.len()];
                assert_eq!(stored[8..12], sent[8..12], "batch {i}: batchLength");
                assert!(
                    stored[16..] == sent[16..],
                    "batch {i} differs from what was sent"
                );
                at += sent.len();
            }
            assert_eq!(at, bytes.len());
            let after = super::pagecache::shard_writes();
            let (shard, uring) = (after.0 - ways.0, after.1 - ways.1);
            match in_place {
                true => assert!(shard > 0, "written by the shard ({shard}, {uring})"),
                false => assert!(
                    shard == 0 && uring > 0,
                    "through io_uring ({shard}, {uring})"
                ),
            }
        });
    }
}

#[test]
fn a_log_whose_sync_failed_refuses_writes_as_a_storage_error_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        log.append(batch(0, 100), Acks::All).await.expect("append");
        log.fail_on_sync_error(&std::io::Error::from_raw_os_error(libc::EIO));
        for acks in [Acks::Leader, Acks::All] {
            assert!(matches!(
                log.append(batch(1, 100), acks).await,
                Err(LogError::SyncFailed)
            ));
        }
        assert_eq!(log.high_watermark(), Offset(1), "nothing more was written");
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        assert_eq!(headers.len(), 1, "what was written is still read");
    });
}

#[test]
fn rounds_without_acks_all_are_capped_smaller_than_rounds_that_sync() {
    use super::append::{WRITE_ROUND_BYTES_MAX, WRITE_ROUND_BYTES_MAX_UNSYNCED};
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        // 40 appends of 16 KiB: 640 KiB, queued at once behind the first writer.
        let (appends, value_bytes) = (40, 16 * 1024);
        let total = appends * value_bytes;
        for (round, acks) in [(0, Acks::Leader), (1, Acks::All)] {
            let before = log.sync.written_seq.get();
            let tasks: Vec<_> = (0..appends)
                .map(|i| {
                    let log = Rc::clone(&log);
                    let ts = (round * appends + i) as i64;
                    spawn_local(async move { log.append(batch(ts, value_bytes), acks).await })
                })
                .collect();
            for task in tasks {
                task.await.expect("append");
            }
            let writes = (log.sync.written_seq.get() - before) as usize;
            let (cap, other) = match acks {
                Acks::All => (WRITE_ROUND_BYTES_MAX, WRITE_ROUND_BYTES_MAX_UNSYNCED),
                _ => (WRITE_ROUND_BYTES_MAX_UNSYNCED, WRITE_ROUND_BYTES_MAX),
            };
            // The first append is written alone; the rest queue up and go in rounds of `cap`.
            let (fewest, most) = (1 + total.div_ceil(cap), 2 + total / (cap / 2));
            assert!(
                (fewest..=most).contains(&writes),
                "{acks:?}: {writes} writes for {total} bytes, cap {cap}"
            );
            assert_ne!(
                writes,
                1 + total.div_ceil(other),
                "{acks:?} used the other cap"
            );
        }
        assert_eq!(log.high_watermark(), Offset(2 * appends as i64));
    });
}

#[test]
fn a_lone_acks_all_append_is_written_through_only_when_the_log_before_it_is_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        // Alone and on a fully synced log: one O_DSYNC write, no fdatasync.
        log.append(batch(1, 10), Acks::All).await.expect("append");
        assert_eq!(log.sync.write_throughs.get(), 1);
        assert_eq!(log.sync_count(), 0);
        assert_eq!(log.sync.synced_seq.get(), log.sync.written_seq.get());
        // After an acks=1 write the O_DSYNC range would not cover it: write, then fdatasync.
        log.append(batch(2, 10), Acks::Leader)
            .await
            .expect("append");
        log.append(batch(3, 10), Acks::All).await.expect("append");
        assert_eq!(log.sync.write_throughs.get(), 1);
        assert_eq!(log.sync_count(), 1);
        // Synced again, the next lone one is written through, also across rolls (the 1000-byte
        // segments fill up): a segment rolled while durable needs no sync of its data, but the
        // new file's name must be synced, so the append that starts a segment is written, then
        // synced (directory and file).
        log.append(batch(4, 10), Acks::All).await.expect("append");
        assert_eq!(log.sync.write_throughs.get(), 2);
        let segments_before = log.state.borrow().segment_count();
        for i in 5..12 {
            log.append(batch(i, 200), Acks::All).await.expect("append");
        }
        let rolls = (log.state.borrow().segment_count() - segments_before) as u64;
        assert!(rolls > 1, "rolled");
        assert_eq!(log.sync.write_throughs.get(), 2 + 7 - rolls);
        assert_eq!(log.sync_count(), 1 + rolls);
        assert!(!log.sync.dir_unsynced.get());
        assert_eq!(log.sync.synced_seq.get(), log.sync.written_seq.get());
        assert_eq!(log.high_watermark(), Offset(11));
    });
    // Everything reads back after a reopen.
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        let timestamps: Vec<i64> = headers.iter().map(|h| h.max_timestamp).collect();
        assert_eq!(timestamps, (1..12).collect::<Vec<_>>());
    });
}

#[test]
fn a_write_round_rolls_segments_and_checks_each_producer_batch_in_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        // One round: seq 0, its retry, seq 2, a gap (seq 9), seq 4, then plain batches that
        // cross the 1000-byte segment size several times.
        let mut sets = vec![
            idempotent_batch(5, 0, 0, 2),
            idempotent_batch(5, 0, 0, 2),
            idempotent_batch(5, 0, 2, 2),
            idempotent_batch(5, 0, 9, 1),
            idempotent_batch(5, 0, 4, 1),
        ];
        sets.extend((0..12).map(|i| batch(100 + i, 200)));
        let tasks: Vec<_> = sets
            .into_iter()
            .map(|records| {
                let log = Rc::clone(&log);
                spawn_local(async move { log.append(records, Acks::All).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.map(|info| info.base_offset.value()));
        }
        assert_eq!(results[0].as_ref().ok(), Some(&0));
        assert_eq!(
            results[1].as_ref().ok(),
            Some(&0),
            "the retry gets the original"
        );
        assert_eq!(results[2].as_ref().ok(), Some(&2));
        assert!(matches!(
            results[3],
            Err(LogError::OutOfOrderSequence {
                expected: 4,
                got: 9,
                ..
            })
        ));
        assert_eq!(results[4].as_ref().ok(), Some(&4));
        let plain: Vec<i64> = results[5..]
            .iter()
            .map(|r| *r.as_ref().expect("plain append"))
            .collect();
        assert_eq!(plain, (5..17).collect::<Vec<_>>());
        assert!(
            log.state.borrow().segment_count() > 2,
            "rolled inside the round"
        );
        assert_eq!(log.high_watermark(), Offset(17));
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        let bases: Vec<i64> = headers.iter().map(|h| h.base_offset).collect();
        let mut want = vec![0, 2, 4];
        want.extend(5..17);
        assert_eq!(bases, want);
        // The producer state the round left is the log's: seq 5 is next.
        log.append(idempotent_batch(5, 0, 5, 1), Acks::All)
            .await
            .expect("next sequence");
    });
    // And it survives a reopen: every batch recovered, in order.
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        assert_eq!(log.high_watermark(), Offset(18));
        assert!(matches!(
            log.append(idempotent_batch(5, 0, 4, 1), Acks::All).await,
            Ok(info) if info.base_offset == Offset(4)
        ));
    });
}

#[test]
fn oversized_batches_get_their_own_segment_and_segment_ms_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        log.append(batch(1, 10), Acks::Leader)
            .await
            .expect("append");
        log.append(batch(2, 3000), Acks::Leader)
            .await
            .expect("append");
        log.append(batch(3, 10), Acks::Leader)
            .await
            .expect("append");
        assert_eq!(log.state.borrow().segment_count(), 3);
        let (_, headers) = read_bytes(&log, 1, 1).await;
        assert_eq!(
            headers[0].max_timestamp, 2,
            "the big batch reads back whole"
        );
    });
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let config = LogConfig {
            segment_ms: -1, // Every non-empty segment is already too old.
            ..LogConfig::default()
        };
        let log = open(dir.path(), &config).await;
        for i in 0..4 {
            log.append(batch(i, 10), Acks::Leader)
                .await
                .expect("append");
        }
        assert_eq!(log.state.borrow().segment_count(), 4);
    });
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    let template = tempfile::tempdir().expect("tempdir");
    let config = raw_file_config();
    build_crashed_log(template.path(), &config, 3);
    let log_name = segment_files(template.path(), ".log")
        .pop()
        .expect("a segment")
        .file_name()
        .expect("name")
        .to_owned();
    let valid_len = file_len(&template.path().join(&log_name));
    let work = tempfile::tempdir().expect("tempdir");
    // A small deterministic generator: the cases are data, reproducible without a seed file.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..40 {
        let dir = work.path().join(format!("case-{case}"));
        copy_dir(template.path(), &dir);
        let len = 1 + (next() % 300) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if case % 4 == 0 && len >= 17 {
            // A plausible header: right magic and a length that fits, but no valid CRC.
            garbage[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
            garbage[16] = 2;
        }
        let path = dir.join(&log_name);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&garbage);
        std::fs::write(&path, bytes).expect("write");
        run_local(async {
            let log = open(&dir, &config).await;
            assert_eq!(log.high_watermark(), Offset(3), "case {case}");
            let info = log.append(batch(9, 10), Acks::All).await.expect("append");
            assert_eq!(info.base_offset, Offset(3));
        });
        let appended_len = batch(9, 10).len() as u64;
        assert_eq!(
            file_len(&path),
            valid_len + appended_len,
            "the garbage was cut before the new batch"
        );
    }
}

/// A batch of `records` records from producer `pid` at `epoch`, first sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
    let timestamps: Vec<i64> = (0..records as i64).map(|i| 1_000 + i).collect();
    let mut b = fixtures::batch(&timestamps, Compression::None, 20);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    // The producer fields lie inside the CRC (attributes..end).
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn idempotent_retries_get_original_offsets_and_gaps_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        let a = log
            .append(idempotent_batch(5, 0, 0, 3), Acks::All)
            .await
            .unwrap();
        let b = log
            .append(idempotent_batch(5, 0, 3, 2), Acks::All)
            .await
            .unwrap();
        assert_eq!((a.base_offset, b.base_offset), (Offset(0), Offset(3)));
        // Retries of both: the original offsets, nothing written.
        let again = log
            .append(idempotent_batch(5, 0, 0, 3), Acks::All)
            .await
            .unwrap();
        assert_eq!(again.base_offset, Offset(0));
        let again = log
            .append(idempotent_batch(5, 0, 3, 2), Acks::Leader)
            .await
            .unwrap();
        assert_eq!(again.base_offset, Offset(3));
        assert_eq!(log.high_watermark(), Offset(5));
        assert!(matches!(
            log.append(idempotent_batch(5, 0, 9, 1), Acks::All).await,
            Err(LogError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        assert!(matches!(
            log.append(idempotent_batch(5, 1, 4, 1), Acks::All).await,
            Err(LogError::OutOfOrderSequence { .. })
        ));
        log.append(idempotent_batch(5, 1, 0, 1), Acks::All)
            .await
            .unwrap();
        assert!(matches!(
            log.append(idempotent_batch(5, 0, 5, 1), Acks::All).await,
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        // Non-idempotent batches are untouched by all this.
        log.append(batch(1, 10), Acks::All).await.unwrap();
        assert_eq!(log.high_watermark(), Offset(7));
    });
}

/// Producer state after reopening `dir` must recognise every batch of `written` as a
/// duplicate (with its offset) and accept the next sequence.
/// Appends `batches` batches of 2 records from producer 9, epoch 0, sequences 0, 2, ...;
/// returns each batch's (first sequence, base offset).
async fn append_idempotent(log: &PartitionLog, batches: i32) -> Vec<(i32, i64)> {
    let mut written = Vec::new();
    for i in 0..batches {
        let info = log
            .append(idempotent_batch(9, 0, i * 2, 2), Acks::All)
            .await
            .unwrap();
        written.push((i * 2, info.base_offset.value()));
    }
    written
}

async fn assert_producer_state_survived(dir: &Path, written: &[(i32, i64)], next_seq: i32) {
    let log = open(dir, &small_config()).await;
    let hw = log.high_watermark();
    for &(seq, offset) in written.iter().rev().take(5) {
        let info = log
            .append(idempotent_batch(9, 0, seq, 2), Acks::All)
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(offset), "retry of seq {seq}");
    }
    assert_eq!(log.high_watermark(), hw, "retries write nothing");
    assert!(matches!(
        log.append(idempotent_batch(9, 0, next_seq + 2, 2), Acks::All)
            .await,
        Err(LogError::OutOfOrderSequence { .. })
    ));
    let info = log
        .append(idempotent_batch(9, 0, next_seq, 2), Acks::All)
        .await
        .unwrap();
    assert_eq!(info.base_offset, hw);
}

#[test]
fn producer_state_survives_clean_close_crash_and_rolls() {
    for (crash, batches) in [(false, 3), (true, 3), (false, 30), (true, 30)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut written = Vec::new();
        run_local(async {
            let log = open(dir.path(), &small_config()).await;
            written = append_idempotent(&log, batches).await;
            if !crash {
                log.close().await.unwrap();
            }
        });
        if batches == 30 {
            assert!(segment_files(dir.path(), ".log").len() > 1, "rolled");
        }
        run_local(assert_producer_state_survived(
            dir.path(),
            &written,
            batches * 2,
        ));
    }
}

#[test]
fn close_writes_a_producer_snapshot_only_where_it_saves_a_longer_scan() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = dir.path().join(producer::SNAPSHOT_FILE);
    let config = raw_file_config();
    let mut written = Vec::new();
    run_local(async {
        let log = open(dir.path(), &config).await;
        written = append_idempotent(&log, 3).await;
        log.close().await.unwrap();
    });
    assert!(
        !snapshot.exists(),
        "three small batches: the next open reads their headers instead"
    );
    // Which it does: retries still get their original offsets. (Appends one batch more.)
    run_local(assert_producer_state_survived(dir.path(), &written, 6));
    written.push((6, 6));
    let hw = run_local(async {
        let log = open(dir.path(), &config).await;
        log.append(batch(2_000, SNAPSHOT_SKIP_MAX_BYTES as usize), Acks::All)
            .await
            .unwrap();
        let hw = log.high_watermark().value();
        log.close().await.unwrap();
        hw
    });
    let read = || producer::ProducerStateTable::decode(&std::fs::read(&snapshot).unwrap());
    let (table, offset) = read().expect("a snapshot once more was written than it is worth");
    assert_eq!(offset, hw, "taken at the log end");
    assert_eq!(table.len(), 1, "with the producer the scan found");
    // Opened and closed with nothing written: the snapshot is left as it was.
    let inode = std::fs::metadata(&snapshot).unwrap().ino();
    run_local(async { open(dir.path(), &config).await.close().await.unwrap() });
    assert_eq!(std::fs::metadata(&snapshot).unwrap().ino(), inode);
    run_local(assert_producer_state_survived(dir.path(), &written, 8));
}

#[test]
fn a_damaged_or_future_producer_snapshot_falls_back_to_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = Vec::new();
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        written = append_idempotent(&log, 30).await;
        log.close().await.unwrap();
    });
    let snapshot = dir.path().join(producer::SNAPSHOT_FILE);
    std::fs::write(&snapshot, b"garbage").unwrap();
    run_local(assert_producer_state_survived(dir.path(), &written, 60));
    // A snapshot claiming offsets past the log end (as if the tail were lost) is ignored too.
    let table = producer::ProducerStateTable::default();
    std::fs::write(&snapshot, table.encode(1_000_000)).unwrap();
    written.push((60, 60));
    run_local(assert_producer_state_survived(dir.path(), &written, 62));
    // Close replaces an unusable snapshot, however little was written since.
    std::fs::write(&snapshot, table.encode(1_000_000)).unwrap();
    let hw = run_local(async {
        let log = open(dir.path(), &small_config()).await;
        let hw = log.high_watermark().value();
        log.close().await.unwrap();
        hw
    });
    let (_, offset) =
        producer::ProducerStateTable::decode(&std::fs::read(&snapshot).unwrap()).expect("whole");
    assert_eq!(offset, hw, "rewritten at the log end");
}

#[test]
fn retention_deletes_old_and_excess_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let config = LogConfig {
            retention_ms: -1,
            ..small_config()
        };
        let log = open(dir.path(), &config).await;
        // Timestamps 1_000.. : ten segments or so of ~180-byte batches.
        for i in 0..40 {
            log.append(batch(1_000 + i * 100, 100), Acks::Leader)
                .await
                .unwrap();
        }
        let segments = segment_files(dir.path(), ".log").len();
        assert!(segments >= 5, "{segments} segments");
        assert_eq!(
            log.enforce_retention(1_000_000).await.unwrap(),
            0,
            "retention.ms -1 keeps all"
        );

        // By time: segments whose newest batch is older than now - retention.ms.
        log.set_config(LogConfig {
            retention_ms: 1_000,
            ..config.clone()
        });
        let now = 1_000 + 20 * 100 + 1_000; // batches with timestamp < 2_000+... expire
        let deleted = log.enforce_retention(now).await.unwrap();
        assert!(deleted > 0);
        let start = log.log_start_offset().value();
        assert!(start > 0 && start <= 20, "log start {start}");
        assert_eq!(segment_files(dir.path(), ".log").len(), segments - deleted);
        assert!(matches!(
            log.read(Offset(start - 1), 1 << 20).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let (_, headers) = read_bytes(&log, start, u64::MAX).await;
        assert_eq!(headers.first().unwrap().base_offset, start);

        // Everything expired: the active segment stays.
        log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert_eq!(segment_files(dir.path(), ".log").len(), 1);
        assert_eq!(log.high_watermark(), Offset(40));

        // By size: keep at most ~2 segments' worth.
        for i in 40..80 {
            log.append(batch(1_000 + i, 100), Acks::Leader)
                .await
                .unwrap();
        }
        log.set_config(LogConfig {
            retention_ms: -1,
            retention_bytes: 1_500,
            ..config.clone()
        });
        log.enforce_retention(0).await.unwrap();
        let kept: u64 = segment_files(dir.path(), ".log")
            .iter()
            .map(|p| file_len(p))
            .sum();
        assert!(kept <= 1_500 + 1_000, "kept {kept} bytes");
        let start = log.log_start_offset();
        log.close().await.unwrap();
        let log = open(dir.path(), &config).await;
        assert_eq!(
            log.log_start_offset(),
            start,
            "a restart keeps the log start"
        );
    });
}

/// Opens every `.log` file of `dir` again: a descriptor of our own keeps each inode alive after
/// the log unlinks and closes it, so the test can see what was freed before that close.
fn hold_segment_files(dir: &Path) -> Vec<std::fs::File> {
    segment_files(dir, ".log")
        .iter()
        .map(|p| std::fs::File::open(p).expect("open"))
        .collect()
}

fn held_bytes(files: &[std::fs::File]) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| f.metadata().expect("fstat").blocks() * 512)
        .collect()
}

/// A log of several segments, all but the active one past a 1 s retention once time is moved
/// far enough, flushed.
async fn log_of_expiring_segments(dir: &Path) -> Rc<PartitionLog> {
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_config()
    };
    let log = open(dir, &config).await;
    for i in 0..40 {
        log.append(batch(1_000 + i, 100), Acks::Leader)
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    log
}

/// Retention and topic deletion cut the files of deleted segments to nothing on the blocking
/// pool before the log lets go of them: a last close frees a file's cached pages and blocks in the
/// closing thread, and the log closes its files on the shard.
#[test]
fn deleted_segments_are_freed_before_their_files_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = log_of_expiring_segments(dir.path()).await;
        let held = hold_segment_files(dir.path());
        assert!(held.len() >= 5 && held_bytes(&held).iter().all(|&b| b > 0));
        // Everything but the active segment expires.
        let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert_eq!(deleted, held.len() - 1);
        let bytes = held_bytes(&held);
        assert!(
            bytes[..deleted].iter().all(|&b| b == 0),
            "deleted segments still hold blocks: {bytes:?}"
        );
        assert!(bytes[deleted] > 0, "the active segment is kept");
        // Deleting the partition frees the rest, though the log still holds its files.
        let held = hold_segment_files(dir.path());
        log.delete().await.unwrap();
        assert!(!dir.path().join(segment::file_name(0, LOG_SUFFIX)).exists());
        assert_eq!(held_bytes(&held), vec![0; held.len()]);
        assert_eq!(
            log.high_watermark(),
            Offset(40),
            "the closed log still answers"
        );
    });
}

/// A deleted segment that a read still holds keeps its data for that read, and is freed off the
/// shard when the read lets go of it: its last close would free it on the shard.
#[test]
fn a_deleted_segment_a_read_holds_is_freed_when_the_read_drops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = log_of_expiring_segments(dir.path()).await;
        let held = hold_segment_files(dir.path());
        let (before, _) = read_bytes(&log, 0, u64::MAX).await;
        // A fetch in flight: its regions hold the files of the segments it reads.
        let slice = log.read(Offset(0), u64::MAX).await.expect("read");
        let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
        assert_eq!(deleted, held.len() - 1);
        assert!(
            held_bytes(&held)[..deleted].iter().all(|&b| b > 0),
            "a segment being read was freed under the read"
        );
        let mut after = Vec::new();
        for region in &slice.regions {
            after.extend(
                region
                    .file
                    .read_at(region.position, region.len as usize)
                    .await
                    .expect("region read"),
            );
        }
        assert_eq!(after, before, "the read still sends what it planned");
        drop(slice);
        // Freed on a thread of its own: wait for it, boundedly.
        for _ in 0..500 {
            if held_bytes(&held)[..deleted].iter().all(|&b| b == 0) {
                break;
            }
            sleep_ms(10).await;
        }
        let bytes = held_bytes(&held);
        assert!(
            bytes[..deleted].iter().all(|&b| b == 0),
            "deleted segments still hold blocks after the read dropped them: {bytes:?}"
        );
        assert!(bytes[deleted] > 0, "the active segment is kept");
    });
}

#[test]
fn delete_records_moves_and_persists_the_log_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let config = LogConfig {
            retention_ms: -1,
            ..small_config()
        };
        let log = open(dir.path(), &config).await;
        for i in 0..40 {
            log.append(batch(i, 100), Acks::All).await.unwrap();
        }
        let before = segment_files(dir.path(), ".log").len();
        assert_eq!(
            log.delete_records_before(Offset(25)).await.unwrap(),
            Offset(25)
        );
        assert_eq!(log.log_start_offset(), Offset(25));
        assert!(segment_files(dir.path(), ".log").len() < before);
        assert!(log.read(Offset(24), 1 << 20).await.is_err());
        let (_, headers) = read_bytes(&log, 25, u64::MAX).await;
        assert!(headers[0].base_offset <= 25 && headers[0].last_offset() >= 25);
        // Lower than the current start: no change. Past the high watermark: refused.
        assert_eq!(
            log.delete_records_before(Offset(3)).await.unwrap(),
            Offset(25)
        );
        assert!(log.delete_records_before(Offset(41)).await.is_err());
        drop(log); // crash: no clean close
        let log = open(dir.path(), &config).await;
        assert_eq!(log.log_start_offset(), Offset(25));
        // Up to the high watermark empties the log but keeps the active segment.
        assert_eq!(
            log.delete_records_before(Offset(40)).await.unwrap(),
            Offset(40)
        );
        assert_eq!(log.log_start_offset(), Offset(40));
        let info = log.append(batch(99, 10), Acks::All).await.unwrap();
        assert_eq!(info.base_offset, Offset(40));
    });
}

#[test]
fn a_roll_defers_the_old_segments_sync_to_the_next_acks_all_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(dir.path(), &small_config()).await;
        // acks=1 appends never sync, not even when they roll segments.
        for i in 0..20 {
            log.append(batch(i, 100), Acks::Leader)
                .await
                .expect("append");
        }
        assert!(
            log.state.borrow().segments.len() > 2,
            "the small segments rolled"
        );
        assert_eq!(log.sync_count(), 0, "rolls do not sync inline");
        let pending = log.sync.unsynced_rolled.borrow().len();
        assert!(pending >= 2, "{pending} rolled segments wait for a sync");
        // acks=all covers everything written before it: the rolled segments and the active one.
        log.append(batch(20, 100), Acks::All).await.expect("append");
        // (That append may roll once more, adding one more file to the same sync.)
        let syncs = log.sync_count();
        assert!(
            syncs == pending as u64 + 1 || syncs == pending as u64 + 2,
            "{syncs} syncs"
        );
        assert!(log.sync.unsynced_rolled.borrow().is_empty());
        assert_eq!(log.sync.synced_seq.get(), log.sync.written_seq.get());
    });
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// Whether every byte of `path` from `from` to its end is zero.
fn zeros_from(path: &Path, from: u64) -> bool {
    let bytes = std::fs::read(path).expect("read");
    bytes[from as usize..].iter().all(|&b| b == 0)
}

#[test]
fn a_lone_writer_gets_zeros_written_ahead_and_recovery_cuts_them_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::default();
    let ahead = config.write_ahead_bytes;
    assert!(ahead > 0, "on by default");
    let path = dir.path().join(segment::file_name(0, LOG_SUFFIX));
    run_local(async {
        let log = open(dir.path(), &config).await;
        // A lone acks=all append is written through and starts a fill past its end.
        log.append(batch(0, 100), Acks::All).await.expect("append");
        assert_eq!(log.sync.write_throughs.get(), 1);
        settle_write_ahead(&log).await;
        assert_eq!(log.write_ahead.fills(), 1);
        let end = log.size_bytes();
        let filled_to = end.next_multiple_of(4096) + ahead;
        assert_eq!(file_len(&path), filled_to);
        assert!(zeros_from(&path, end));
        assert_eq!(ahead::shard_ahead_bytes(), filled_to - end);
        // Later writes land on the zeros: the file does not grow, the count shrinks.
        for i in 1..6 {
            let acks = if i % 2 == 0 { Acks::Leader } else { Acks::All };
            log.append(batch(i, 100), acks).await.expect("append");
        }
        settle_write_ahead(&log).await;
        assert_eq!(log.write_ahead.fills(), 1, "still more than enough ahead");
        assert_eq!(file_len(&path), filled_to);
        assert_eq!(ahead::shard_ahead_bytes(), filled_to - log.size_bytes());
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        assert_eq!(
            headers.len(),
            6,
            "reads stop at the log end, not the file's"
        );
        // Dropped without close: a crash with the zeros on disk.
    });
    run_local(async {
        let log = open(dir.path(), &config).await;
        assert_eq!(log.high_watermark(), Offset(6));
        assert_eq!(file_len(&path), log.size_bytes(), "recovery cut the zeros");
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        let timestamps: Vec<i64> = headers.iter().map(|h| h.max_timestamp).collect();
        assert_eq!(timestamps, (0..6).collect::<Vec<_>>());
        // Writes continue where the log ends, and close cuts the zeros they brought.
        log.append(batch(6, 100), Acks::All).await.expect("append");
        settle_write_ahead(&log).await;
        assert!(file_len(&path) > log.size_bytes());
        log.close().await.expect("close");
        assert_eq!(file_len(&path), log.size_bytes());
        assert_eq!(ahead::shard_ahead_bytes(), 0);
    });
    // Off: nothing past the end.
    let off = tempfile::tempdir().expect("tempdir");
    run_local(async {
        let log = open(off.path(), &raw_file_config()).await;
        log.append(batch(0, 100), Acks::All).await.expect("append");
        settle_write_ahead(&log).await;
        assert_eq!(log.write_ahead.fills(), 0);
        let path = off.path().join(segment::file_name(0, LOG_SUFFIX));
        assert_eq!(file_len(&path), log.size_bytes());
    });
}

#[test]
fn a_roll_cuts_the_zeros_past_the_rolled_segment_and_recovery_cuts_any_left_in_any_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    run_local(async {
        let log = open(dir.path(), &config).await;
        log.append(batch(0, 100), Acks::All).await.expect("append");
        settle_write_ahead(&log).await;
        assert_eq!(log.write_ahead.fills(), 1);
        let first = dir.path().join(segment::file_name(0, LOG_SUFFIX));
        assert!(file_len(&first) > log.size_bytes());
        // Fill the 1000-byte segment until it rolls.
        let mut i = 1;
        while log.state.borrow().segment_count() == 1 {
            log.append(batch(i, 200), Acks::All).await.expect("append");
            i += 1;
        }
        let first_size = log.state.borrow().segments[0].size_bytes;
        // The roll's background task cuts the old file at its last batch.
        let mut waited_ms = 0;
        while file_len(&first) != first_size {
            assert!(waited_ms < 10_000, "the rolled segment keeps its zeros");
            file::sleep_ms(1).await;
            waited_ms += 1;
        }
        settle_write_ahead(&log).await;
        log.close().await.expect("close");
    });
    // A crash between a roll and that cut leaves zeros past a segment that is no longer the
    // last one: open cuts them there too, and reads every batch.
    let segments = segment_files(dir.path(), LOG_SUFFIX);
    assert!(segments.len() >= 2);
    let first_len = file_len(&segments[0]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .expect("open");
    file.set_len(first_len + 300_000)
        .expect("extend with zeros");
    drop(file);
    run_local(async {
        let log = open(dir.path(), &config).await;
        assert_eq!(file_len(&segments[0]), first_len);
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        assert_eq!(headers.len() as i64, log.high_watermark().0);
        assert!(log.high_watermark().0 >= 2);
    });
}

/// Bytes of disk blocks a file holds.
fn blocks_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn a_fast_log_gets_blocks_allocated_ahead_and_recovery_frees_them_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        write_ahead_bytes: 0,
        ..LogConfig::default()
    };
    let path = dir.path().join(segment::file_name(0, LOG_SUFFIX));
    let chunk = super::file::PREALLOCATE_CHUNK_BYTES;
    const APPENDS_MAX: i64 = 160;
    let appended = run_local(async {
        // This thread may write in place and allocate ahead, as a shard with the sampler may.
        super::pagecache::set_budget_for_tests(1 << 30);
        let log = open(dir.path(), &config).await;
        // Over 10 MB/s for longer than a rate interval: 1 MiB appends, 2 ms apart, at least 40.
        // A machine busy enough to hold a 1 MiB write for 100 ms (dirty-page throttling) makes
        // the log slow for a while; it gets more appends rather than a wrong verdict.
        let mut appended = 0;
        let mut waited = 0;
        while appended < 40 || blocks_bytes(&path) < log.size_bytes() + chunk / 2 {
            if appended < APPENDS_MAX {
                log.append(batch(appended, 1 << 20), Acks::Leader)
                    .await
                    .expect("append");
                appended += 1;
                super::file::sleep_ms(2).await;
            } else {
                assert!(waited < 2_000, "no blocks allocated ahead of a fast log");
                super::file::sleep_ms(1).await;
                waited += 1;
            }
        }
        assert_eq!(file_len(&path), log.size_bytes(), "the size does not move");
        // Dropped without close: a crash with the blocks allocated.
        appended
    });
    assert!(blocks_bytes(&path) > file_len(&path) + (1 << 20));
    run_local(async {
        let log = open(dir.path(), &LogConfig::default()).await;
        assert_eq!(log.high_watermark(), Offset(appended));
        assert!(
            blocks_bytes(&path) < file_len(&path) + (1 << 20),
            "recovery freed the blocks past the end"
        );
        let (_, headers) = read_bytes(&log, 0, u64::MAX).await;
        assert_eq!(headers.len() as i64, appended);
        log.close().await.expect("close");
    });
}
