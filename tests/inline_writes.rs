//! acks=1 appends copied into the page cache by the shards themselves (`log::pagecache`), against
//! the real binary and librdkafka: the metrics count them on the shard's path, every record reads
//! back with its bytes, and they outlive a SIGKILL of the broker (the page cache is the kernel's);
//! with `--log-inline-writes false` every write goes through io_uring.

mod common;

use common::metrics::{parse_metrics, sum};
use common::{Broker, Launch};

const PARTITIONS: i32 = 2;
const RECORDS: usize = 200;

/// (partition, offset, value) of every acknowledged record.
type Acked = Vec<(i32, i64, Vec<u8>)>;

fn log_writes(b: &Broker, path: &str) -> f64 {
    let metrics = parse_metrics(&b.scrape());
    sum(
        &metrics,
        "sable_log_writes_total",
        &[&format!("path=\"{path}\"")],
    )
}

/// One acks=1 request per record (each awaited), so each is an append of its own at the end of
/// its partition, most starting inside the page the previous one ended in.
async fn produce_acks_1(b: &Broker, topic: &str) -> Acked {
    b.create_topic(topic, PARTITIONS).await;
    let producer = b.producer(&[("acks", "1"), ("linger.ms", "0")]);
    let mut acked = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let value = common::pseudo_random_bytes(i as u64, 100 + i * 37 % 3000);
        let partition = i as i32 % PARTITIONS;
        let record = common::record(topic, None, Some(&value)).partition(partition);
        let delivery = common::produce_one(&producer, record)
            .await
            .unwrap_or_else(|e| panic!("acks=1 produce {i}: {e}"));
        acked.push((delivery.partition, delivery.offset, value));
    }
    acked
}

async fn assert_readable(b: &Broker, topic: &str, acked: &Acked, when: &str) {
    for partition in 0..PARTITIONS {
        let (bootstrap, t) = (b.bootstrap(), topic.to_string());
        let records =
            tokio::task::spawn_blocking(move || common::read_partition(&bootstrap, &t, partition))
                .await
                .unwrap();
        let mine: Vec<_> = acked.iter().filter(|a| a.0 == partition).collect();
        assert_eq!(
            records.len(),
            mine.len(),
            "{when}: records of {topic}-{partition}"
        );
        for (_, offset, value) in mine {
            assert_eq!(
                &records[*offset as usize].1, value,
                "{when}: bytes at {topic}-{partition}/{offset}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_1_appends_are_copied_in_place_and_outlive_a_kill() {
    let mut b = Launch::new(&[]).with_metrics().start();
    let before = log_writes(&b, "shard");
    let acked = produce_acks_1(&b, "inline").await;
    let in_place = log_writes(&b, "shard") - before;
    let io_uring = log_writes(&b, "io_uring");
    // The budget can run out on a machine busy writing elsewhere; most appends still fit.
    assert!(
        in_place >= (RECORDS / 2) as f64,
        "{in_place} of {RECORDS} appends written by the shard, {io_uring} through io_uring"
    );
    assert_readable(&b, "inline", &acked, "before the kill").await;

    b.kill9();
    b.start_again();
    assert_readable(&b, "inline", &acked, "after SIGKILL and restart").await;
    let producer = b.producer(&[("acks", "1")]);
    let next = common::produce_one(
        &producer,
        common::record("inline", None, Some(b"next")).partition(0),
    )
    .await
    .expect("produce after restart");
    let before_kill = acked.iter().filter(|a| a.0 == 0).count() as i64;
    assert_eq!(next.offset, before_kill, "the log continues where it ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inline_writes_every_append_goes_through_io_uring() {
    let b = Launch::new(&["--log-inline-writes", "false"])
        .with_metrics()
        .start();
    let acked = produce_acks_1(&b, "uring").await;
    assert_eq!(log_writes(&b, "shard"), 0.0);
    assert!(
        log_writes(&b, "io_uring") >= RECORDS as f64,
        "every append counted"
    );
    assert_readable(&b, "uring", &acked, "io_uring only").await;
}
