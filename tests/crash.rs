//! Crash safety: idempotent acks=all producers and a committing group consumer run, the broker
//! is SIGKILLed at a random moment and restarted, and then every acknowledged record must be
//! readable at its acknowledged offset with identical bytes, offsets must be contiguous,
//! producing must continue at the old high watermark, and the last acknowledged offset commit
//! must be there. `SABLE_CRASH_ITERATIONS` (default 2) sets how many kill/restart rounds run.
//! Also a full disk and a failing one (root only: tmpfs and loop mounts).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::{Broker, Launch};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 2;
const PRODUCERS: usize = 3;
const GROUP: &str = "crash-group";

/// (partition, offset) -> value of every acknowledged record.
type Acked = Arc<Mutex<HashMap<(i32, i64), Vec<u8>>>>;

fn iterations() -> u32 {
    std::env::var("SABLE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// A small xorshift so the kill moment differs per run without a rand dependency.
fn random_ms(seed: &mut u64, low: u64, high: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    low + *seed % (high - low)
}

/// An idempotent acks=all producer whose records give up soon after the broker is killed.
fn idempotent_producer(broker: &Broker) -> FutureProducer {
    broker.producer(&[
        ("enable.idempotence", "true"),
        ("linger.ms", "1"),
        ("message.timeout.ms", "5000"),
    ])
}

async fn produce_until_stopped(
    producer: FutureProducer,
    id: usize,
    round: u32,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    let partition = id as i32 % PARTITIONS;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut deliveries = Vec::new();
        for _ in 0..20 {
            let value = format!("p{id}-r{round}-{i:08}-{}", "x".repeat((i % 97) as usize));
            i += 1;
            let record = FutureRecord::<(), _>::to(TOPIC)
                .partition(partition)
                .payload(&value);
            match producer.send_result(record) {
                Ok(d) => deliveries.push((value, d)),
                Err(_) => break,
            }
        }
        for (value, d) in deliveries {
            let result = d.await;
            if let Ok(Err((e, _))) = &result
                && !stop.load(Ordering::SeqCst)
            {
                eprintln!("producer {id}: delivery failed: {e}");
            }
            if let Ok(Ok(delivery)) = result {
                let prev = acked
                    .lock()
                    .unwrap()
                    .insert((delivery.partition, delivery.offset), value.into_bytes());
                assert!(prev.is_none(), "two acks for offset {}", delivery.offset);
            }
        }
    }
}

/// A consumer of `GROUP` that only commits and reads offsets.
fn group_client(broker: &Broker) -> BaseConsumer {
    broker.consumer_with(&[("group.id", GROUP)])
}

/// Commits a growing offset for partition 0, synchronously; remembers the last acknowledged one.
fn commit_until_stopped(consumer: BaseConsumer, last: Arc<AtomicI64>, stop: Arc<AtomicBool>) {
    let mut next = last.load(Ordering::SeqCst) + 1;
    while !stop.load(Ordering::SeqCst) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(next))
            .unwrap();
        if consumer.commit(&tpl, CommitMode::Sync).is_ok() {
            last.store(next, Ordering::SeqCst);
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn committed(broker: &Broker) -> i64 {
    let consumer = group_client(broker);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    for _ in 0..50 {
        if let Ok(got) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            let elem = got.find_partition(TOPIC, 0).expect("partition");
            if elem.error().is_ok() {
                return match elem.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("committed offsets unavailable");
}

async fn verify(broker: &Broker, acked: &Acked, round: u32) {
    let bootstrap = broker.bootstrap();
    let acked = acked.lock().unwrap().clone();
    for partition in 0..PARTITIONS {
        let b = bootstrap.clone();
        let records =
            tokio::task::spawn_blocking(move || common::read_partition(&b, TOPIC, partition))
                .await
                .unwrap();
        for (i, (offset, _)) in records.iter().enumerate() {
            assert_eq!(
                *offset, i as i64,
                "round {round}: offsets of {TOPIC}-{partition} are contiguous"
            );
        }
        let high = records.len() as i64;
        let mut checked = 0;
        for ((p, offset), value) in &acked {
            if *p != partition {
                continue;
            }
            assert!(
                *offset < high,
                "round {round}: acked offset {offset} of partition {p} lost (high {high})"
            );
            assert_eq!(
                &records[*offset as usize].1, value,
                "round {round}: bytes at {p}/{offset}"
            );
            checked += 1;
        }
        // A fresh produce lands right at the old high watermark.
        let producer = broker.producer(&[]);
        let value = format!("probe-r{round}-{partition}");
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("probe produce");
        assert_eq!(
            delivery.offset, high,
            "round {round}: producing continues at the old high watermark"
        );
        eprintln!(
            "round {round}: partition {partition}: {high} records, {checked} acked ones checked"
        );
    }
}

/// Segment files under `data` whose last 4 KiB are all zeros: space the broker wrote ahead of a
/// log end that the kill left behind, for the restart to cut.
fn files_ending_in_zeros(data: &std::path::Path) -> usize {
    let mut found = 0;
    for dir in std::fs::read_dir(data).unwrap().flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "log")
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.len() >= 4096
                && bytes[bytes.len() - 4096..].iter().all(|&b| b == 0)
            {
                found += 1;
            }
        }
    }
    found
}

/// Aborts the producer tasks and waits until each one is gone. An aborted task is dropped only
/// when a runtime worker gets to it, and dropping a producer blocks its worker (purge, flush,
/// destroy): without the wait, a producer could outlive the restart and land a retried batch
/// after `verify` read the partition. A producer task that panicked (two acks for one offset)
/// fails the test.
async fn stop_producers(producers: Vec<tokio::task::JoinHandle<()>>) {
    for p in &producers {
        p.abort();
    }
    for p in producers {
        if let Err(e) = p.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_and_commits_survive_sigkill() {
    // Small segments: rolls, with their background index writes and deferred directory syncs,
    // are under way whenever the kill lands.
    let mut broker = Broker::start_with(&["--segment-bytes", "16384"]);
    broker.create_topic(TOPIC, PARTITIONS).await;
    let acked: Acked = Arc::default();
    let last_commit = Arc::new(AtomicI64::new(0));
    let mut seed = std::process::id() as u64 * 0x9E37_79B9 + 1;
    let mut kills_meeting_zeros = 0;
    for round in 0..iterations() {
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|id| {
                tokio::spawn(produce_until_stopped(
                    idempotent_producer(&broker),
                    id,
                    round,
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let committer = {
            let (c, last, stop) = (group_client(&broker), last_commit.clone(), stop.clone());
            std::thread::spawn(move || commit_until_stopped(c, last, stop))
        };
        tokio::time::sleep(Duration::from_millis(random_ms(&mut seed, 300, 1500))).await;
        let commit_before_kill = last_commit.load(Ordering::SeqCst);
        broker.kill9();
        stop.store(true, Ordering::SeqCst);
        stop_producers(producers).await;
        let zero_tails = files_ending_in_zeros(&broker.data_dir());
        kills_meeting_zeros += usize::from(zero_tails > 0);
        eprintln!("round {round}: {zero_tails} segment files end in zeros written ahead");
        broker.start_again();
        // The committer's in-flight commit waits for the restarted broker (a sync commit does
        // not give up); it may or may not be acknowledged, so either value may be committed.
        committer.join().unwrap();
        let commit_acked = last_commit.load(Ordering::SeqCst);
        assert!(commit_acked >= commit_before_kill);
        verify(&broker, &acked, round).await;
        let committed = committed(&broker);
        assert!(
            commit_acked > 0,
            "round {round}: some commit was acknowledged"
        );
        assert!(
            committed == commit_acked || committed == commit_before_kill + 1,
            "round {round}: committed {committed}, last acknowledged {commit_acked}, before kill {commit_before_kill}"
        );
        eprintln!(
            "round {round}: {} acked records so far, commit {committed}",
            acked.lock().unwrap().len()
        );
    }
    // Lone acks=all appends keep zeros written past their logs' ends (`log::ahead`), so some
    // kill lands with zeros on disk and the checks above covered recovery cutting them.
    assert!(
        kills_meeting_zeros > 0,
        "no kill left zeros written ahead: the recovery of that path went untested"
    );
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop. None without the rights.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        unmount_lazily(self.dir.path());
    }
}

/// Detaches a mount now and frees it once nothing uses it; errors are ignored (cleanup).
fn unmount_lazily(path: &std::path::Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(path)
        .status();
}

/// A broker whose data dir is `data`, a one-partition `topic`, and an acks=all producer that
/// neither retries nor waits: each send is answered or fails on its own.
async fn broker_on(data: &std::path::Path, topic: &str) -> (Broker, FutureProducer) {
    let broker = Launch::new(&[]).data_on(data).start();
    broker.create_topic(topic, 1).await;
    let producer = broker.producer(&[
        ("retries", "0"),
        ("linger.ms", "0"),
        ("message.timeout.ms", "10000"),
    ]);
    (broker, producer)
}

/// Sends one record to partition 0 of `topic`: its offset, or the client's error.
async fn send_one(producer: &FutureProducer, topic: &str, value: &str) -> Result<i64, String> {
    producer
        .send(
            FutureRecord::<(), _>::to(topic).partition(0).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map(|d| d.offset)
        .map_err(|(e, _)| e.to_string())
}

/// Sends up to `count` records of about `value_bytes` to partition 0 of `topic`, one at a time,
/// until one is refused: the acknowledged (offset, value) pairs, and the refusal.
async fn produce_until_refused(
    producer: &FutureProducer,
    topic: &str,
    value_bytes: usize,
    count: usize,
) -> (Vec<(i64, String)>, Option<String>) {
    let mut acked = Vec::new();
    for i in 0..count {
        let value = format!("{i:08}-{}", "v".repeat(value_bytes));
        match send_one(producer, topic, &value).await {
            Ok(offset) => acked.push((offset, value)),
            Err(e) => return (acked, Some(e)),
        }
    }
    (acked, None)
}

/// The refusal that ended `produce_until_refused` (`why` it was expected) was a storage error,
/// after more than 100 records were acknowledged.
fn assert_refused_for_storage(acked: &[(i64, String)], error: Option<String>, why: &str) {
    let error = error.expect(why);
    assert!(
        error.contains("KafkaStorageError") || error.contains("storage"),
        "error: {error}"
    );
    assert!(acked.len() > 100, "{} acked before {why}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_produce_keeps_reads_and_loses_nothing_acknowledged() {
    let Some(fs) = SmallFs::mount("3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let (mut broker, producer) = broker_on(&fs.dir.path().join("data"), "full").await;
    let bootstrap = broker.bootstrap();
    let (acked, error) = produce_until_refused(&producer, "full", 4000, 10_000).await;
    assert_refused_for_storage(&acked, error, "the disk filled up");
    // Reads keep working on the full disk.
    let check = |records: Vec<(i64, Vec<u8>)>| {
        for (offset, value) in &acked {
            assert_eq!(
                &records[*offset as usize].1,
                value.as_bytes(),
                "acked record at {offset}"
            );
        }
    };
    let b = bootstrap.clone();
    check(
        tokio::task::spawn_blocking(move || common::read_partition(&b, "full", 0))
            .await
            .unwrap(),
    );
    // With room again, after a SIGKILL, everything acknowledged is there and produce works.
    broker.kill9();
    fs.resize("64m");
    broker.start_again();
    let b = bootstrap.clone();
    check(
        tokio::task::spawn_blocking(move || common::read_partition(&b, "full", 0))
            .await
            .unwrap(),
    );
    let offset = send_one(&producer, "full", "after")
        .await
        .expect("produce after freeing space");
    assert_eq!(offset, acked.len() as i64);
    drop(broker);
}

/// An ext4 file system in a file on a small tmpfs, loop-mounted: once the tmpfs is full, the
/// loop device fails writes and fdatasync on the ext4 returns EIO. None without the rights or
/// the tools (mount, mkfs.ext4, loop devices).
struct FailingDisk {
    backing: SmallFs,
    mnt: tempfile::TempDir,
}

impl FailingDisk {
    /// `backing_size`: how much the tmpfs holds before the loop device starts failing.
    fn mount(backing_size: &str) -> Option<FailingDisk> {
        let backing = SmallFs::mount(backing_size)?;
        let image = backing.dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(256 << 20))
            .ok()?;
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg(&image)
            .status()
            .is_ok_and(|s| s.success());
        let disk = FailingDisk {
            backing,
            mnt: tempfile::tempdir().ok()?,
        };
        (made && disk.mount_image()).then_some(disk)
    }

    fn mount_image(&self) -> bool {
        std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(self.backing.dir.path().join("disk.img"))
            .arg(self.mnt.path())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn unmount_image(&self) {
        let status = std::process::Command::new("umount")
            .arg(self.mnt.path())
            .status()
            .unwrap();
        assert!(status.success(), "umount the loop-mounted ext4");
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        unmount_lazily(self.mnt.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_acknowledges_nothing_more_and_loses_nothing_acknowledged() {
    let Some(disk) = FailingDisk::mount("24m") else {
        eprintln!("skipped: cannot loop-mount an ext4 on a tmpfs here (needs root, mkfs.ext4)");
        return;
    };
    let (mut broker, producer) = broker_on(&disk.mnt.path().join("data"), "eio").await;
    let bootstrap = broker.bootstrap();
    // The ext4 sees 256 MiB free; the tmpfs under it fills after about 24 MiB.
    let (acked, error) = produce_until_refused(&producer, "eio", 8000, 20_000).await;
    assert_refused_for_storage(&acked, error, "fdatasync failed once the device did");
    // The log is closed, not written again: a later sync could succeed without the pages the
    // kernel dropped. Its produce requests get KAFKA_STORAGE_ERROR, which the client retries
    // until its message timeout.
    assert!(
        broker.log().contains("fdatasync failed; log closed"),
        "the partition's log was closed"
    );
    send_one(&producer, "eio", "after-failure")
        .await
        .expect_err("acknowledged after a failed fdatasync");
    // The broker itself keeps serving.
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        p.client()
            .fetch_metadata(Some("eio"), Duration::from_secs(10))
            .expect("metadata after the failure")
    })
    .await
    .unwrap();
    // With a working device again, what was acknowledged is there.
    broker.kill9();
    disk.unmount_image();
    disk.backing.resize("300m");
    assert!(disk.mount_image(), "mount the ext4 again");
    broker.start_again();
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || common::read_partition(&b, "eio", 0))
        .await
        .unwrap();
    // All but the last acknowledged record. This rig loses the last one even for a plain
    // O_DSYNC writer (no broker): the loop device takes part of its final write into the full
    // tmpfs and reports success, and ext4 logs "failed to convert unwritten extents -- potential
    // data loss". A real disk that fails a write fails the sync that covers it.
    let (last, rest) = acked.split_last().expect("records were acknowledged");
    for (offset, value) in rest {
        assert_eq!(
            records.get(*offset as usize).map(|r| &r.1[..]),
            Some(value.as_bytes()),
            "acked record at {offset}"
        );
    }
    assert!(
        records.len() as i64 <= last.0 + 1,
        "nothing past the last ack"
    );
    // The partition takes writes again.
    let offset = send_one(&producer, "eio", "after-restart")
        .await
        .expect("produce after the restart");
    assert_eq!(offset, records.len() as i64);
    drop(broker);
}
