//! What survives a restart: a clean SIGTERM keeps everything; a SIGKILL keeps every record
//! acknowledged with acks=all, and the log continues at the next offset.

mod common;

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::consumer::Consumer;

use common::{Broker, WAIT_MAX};

/// Produces `per_partition` records to each of `partitions`, values unique to `round`, and
/// returns (partition, offset) -> value as acknowledged.
async fn produce_round(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    round: &str,
) -> BTreeMap<(i32, i64), Vec<u8>> {
    let producer = broker.producer(&[("acks", "all")]);
    let mut values = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let mut v = format!("{round}/p{p}/r{i}/").into_bytes();
            v.extend(common::pseudo_random_bytes(
                u64::try_from(i).expect("small"),
                i % 300,
            ));
            values.push((p, v));
        }
    }
    let records = values
        .iter()
        .map(|(p, v)| common::record(topic, None, Some(v)).partition(*p))
        .collect();
    let deliveries = common::produce_all(&producer, records).await;
    values
        .into_iter()
        .zip(deliveries)
        .map(|((p, v), d)| {
            assert_eq!(d.partition, p);
            ((p, d.offset), v)
        })
        .collect()
}

/// Consumes the whole topic and checks it holds exactly `expected`.
#[track_caller]
fn assert_topic_holds(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    expected: &BTreeMap<(i32, i64), Vec<u8>>,
) {
    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, partitions);
    let got: BTreeMap<(i32, i64), Vec<u8>> = common::consume_exactly(&consumer, expected.len())
        .iter()
        .map(|m| {
            (
                (m.partition(), m.offset()),
                m.payload().expect("value").to_vec(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "a position was delivered twice");
    for (pos, want) in expected {
        let have = got
            .get(pos)
            .unwrap_or_else(|| panic!("record at {pos:?} is missing"));
        assert!(have == want, "record at {pos:?} changed");
    }
    for p in 0..partitions {
        let count = expected.keys().filter(|(q, _)| *q == p).count();
        let high = i64::try_from(count).expect("small");
        assert_eq!(
            consumer
                .fetch_watermarks(topic, p, WAIT_MAX)
                .expect("watermarks"),
            (0, high),
            "watermarks of partition {p}"
        );
    }
}

/// Offsets of one partition must be exactly 0..n: no gap, no overwrite.
#[track_caller]
fn assert_dense(expected: &BTreeMap<(i32, i64), Vec<u8>>, partitions: i32) {
    for p in 0..partitions {
        let offsets: Vec<i64> = expected
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        let want: Vec<i64> = (0..i64::try_from(offsets.len()).expect("small")).collect();
        assert_eq!(offsets, want, "offsets of partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_keeps_topics_and_records() {
    let mut broker = Broker::start();
    broker.create_topic("kept", 2).await;
    broker.create_topic("empty-but-kept", 3).await;
    let mut expected = produce_round(&broker, "kept", 2, 10, "before").await;
    assert_dense(&expected, 2);

    broker.restart();

    assert_eq!(broker.partition_count("kept"), 2);
    assert_eq!(broker.partition_count("empty-but-kept"), 3);
    assert_topic_holds(&broker, "kept", 2, &expected);
    // New records continue each partition at offset 10.
    expected.extend(produce_round(&broker, "kept", 2, 3, "after").await);
    assert_dense(&expected, 2);
    assert_topic_holds(&broker, "kept", 2, &expected);

    // And a second restart sees both rounds.
    broker.restart();
    assert_topic_holds(&broker, "kept", 2, &expected);
}

/// The clean-shutdown marker is the broker's, in its data directory: a clean stop writes it once
/// every partition is closed, a start consumes it, a SIGKILL leaves none. It decides what a start
/// checks: after a clean stop a segment's tail is trusted as written (its framing is checked, not
/// its CRCs); after a crash every batch of the tail is checked and a damaged last batch is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_writes_the_marker_that_lets_the_next_start_trust_the_tails() {
    let mut broker = Broker::start();
    broker.create_topic("marked", 1).await;
    let producer = broker.producer(&[("acks", "all")]);
    let mut values = Vec::new();
    for i in 0..5u64 {
        // One batch each: awaited one by one.
        let mut v = format!("marked/r{i}/").into_bytes();
        v.extend(common::pseudo_random_bytes(i, 40));
        let d = common::produce_one(
            &producer,
            common::record("marked", None, Some(&v)).partition(0),
        )
        .await
        .expect("delivered");
        assert_eq!(d.offset, i64::try_from(i).expect("small"));
        values.push(v);
    }
    drop(producer);
    let marker = broker.data_dir().join(".sable_clean_shutdown");
    let partition_dir = broker.partition_dir("marked", 0);
    assert!(!marker.exists(), "a running broker has none");
    assert!(broker.stop().success(), "SIGTERM exits 0");
    assert!(marker.exists(), "a clean stop writes it");
    assert!(
        !partition_dir.join(".sable_clean_shutdown").exists(),
        "one for the broker, none per partition"
    );

    // Damage the last value byte of the last batch (its last byte is the header count).
    let segment = partition_dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let at = bytes.len() - 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write segment");
    let mut damaged = values.clone();
    *damaged[4].last_mut().expect("non-empty") ^= 0x40;

    let read_all = |broker: &Broker, count: usize| -> Vec<Vec<u8>> {
        let consumer = broker.consumer();
        common::assign_from_beginning(&consumer, "marked", 1);
        common::consume_exactly(&consumer, count)
            .iter()
            .map(|m| m.payload().expect("value").to_vec())
            .collect()
    };
    broker.start_again();
    assert!(!marker.exists(), "a start consumes it");
    assert_eq!(
        read_all(&broker, 5),
        damaged,
        "after a clean stop the tail is served as it is on disk"
    );

    broker.kill9();
    assert!(!marker.exists(), "a SIGKILL leaves none");
    broker.start_again();
    let consumer = broker.consumer();
    assert_eq!(
        consumer
            .fetch_watermarks("marked", 0, WAIT_MAX)
            .expect("watermarks"),
        (0, 4),
        "after a crash the batch that fails its CRC is cut"
    );
    assert_eq!(read_all(&broker, 4), values[..4].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_every_acknowledged_record() {
    let mut broker = Broker::start();
    broker.create_topic("crash", 2).await;
    let mut expected = produce_round(&broker, "crash", 2, 50, "acked").await;
    assert_dense(&expected, 2);

    broker.kill9();
    broker.start_again();

    assert_eq!(broker.partition_count("crash"), 2);
    assert_topic_holds(&broker, "crash", 2, &expected);
    // The next record of each partition lands right after the last acknowledged one.
    let next = produce_round(&broker, "crash", 2, 1, "next").await;
    assert_eq!(
        next.keys().copied().collect::<Vec<_>>(),
        vec![(0, 50), (1, 50)],
        "no gap, no overwrite"
    );
    expected.extend(next);
    assert_topic_holds(&broker, "crash", 2, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_created_topics() {
    let mut broker = Broker::start();
    // CreateTopics is answered only once the topic is persisted.
    broker.create_topic("made-before-crash", 4).await;
    broker.kill9();
    broker.start_again();
    assert_eq!(broker.partition_count("made-before-crash"), 4);
    let expected = produce_round(&broker, "made-before-crash", 4, 2, "after-crash").await;
    assert_dense(&expected, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twice_in_a_row_recovers() {
    let mut broker = Broker::start();
    broker.create_topic("double", 1).await;
    let mut expected = produce_round(&broker, "double", 1, 20, "one").await;
    broker.kill9();
    broker.start_again();
    expected.extend(produce_round(&broker, "double", 1, 20, "two").await);
    assert_dense(&expected, 1);
    broker.kill9();
    broker.start_again();
    assert_topic_holds(&broker, "double", 1, &expected);
}

/// A broker whose log cannot be written (its stderr on its own full data disk) keeps serving,
/// restarts, and stops with exit 0. It used to abort on the first log line that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_does_not_stop_the_broker() {
    let mut broker = Broker::start_logging_to_dev_full(&[]);
    broker.create_topic("unlogged", 2).await;
    let expected = produce_round(&broker, "unlogged", 2, 20, "unlogged").await;
    assert_dense(&expected, 2);
    assert_topic_holds(&broker, "unlogged", 2, &expected);
    broker.restart();
    assert_topic_holds(&broker, "unlogged", 2, &expected);
}
