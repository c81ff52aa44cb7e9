//! Retention and DeleteRecords through the real binary: old segments go by retention.ms on the
//! shard's periodic check, DeleteRecords moves the log start, and both survive restarts.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;

use common::{Broker, codec, wire};

/// The log start offset of `topic`-0. Takes the bootstrap address, not the `Broker`, so that it
/// can run on a blocking thread.
fn low_watermark(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = common::client_config(bootstrap)
        .create()
        .expect("create consumer");
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
        .0
}

/// The files of `dir` whose names end in `suffix`, sorted (none if `dir` does not exist).
fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("read a directory entry").path())
                .collect()
        })
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(suffix));
    files.sort();
    files
}

async fn produce(broker: &Broker, topic: &str, count: usize, timestamp_ms: i64) {
    let producer = broker.producer(&[("linger.ms", "0")]);
    for i in 0..count {
        let value = format!("{i:0200}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&value)
                    .timestamp(timestamp_ms),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_are_deleted_by_retention_ms_and_the_start_survives_restart() {
    let mut broker = Broker::start_with(&[
        "--segment-bytes",
        "2048",
        "--retention-ms",
        "60000",
        "--log-retention-check-interval-ms",
        "200",
    ]);
    let bootstrap = broker.bootstrap();
    broker.create_topic("old", 1).await;
    produce(&broker, "old", 50, now_ms() - 3_600_000).await;
    produce(&broker, "old", 5, now_ms()).await;
    let dir = broker.partition_dir("old", 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let b = bootstrap.clone();
    let start = loop {
        let b = b.clone();
        let start = tokio::task::spawn_blocking(move || low_watermark(&b, "old"))
            .await
            .unwrap();
        if start > 0 {
            break start;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        start <= 50,
        "records newer than retention.ms are kept (start {start})"
    );
    let first = files_in(&dir, ".log")[0].clone();
    assert!(
        !first.ends_with("00000000000000000000.log"),
        "first segment deleted"
    );
    // A clean stop (which must exit 0), then a new process.
    broker.restart();
    let b = bootstrap.clone();
    let after = tokio::task::spawn_blocking(move || low_watermark(&b, "old"))
        .await
        .unwrap();
    assert!(
        after >= start,
        "log start {after} after restart, {start} before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_across_a_crash() {
    let mut broker = Broker::start_with(&["--segment-bytes", "2048"]);
    let bootstrap = broker.bootstrap();
    broker.create_topic("del", 1).await;
    produce(&broker, "del", 60, now_ms()).await;
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("del")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(42),
                ]),
        ]);
    // The owning shard answers; the other says NOT_LEADER_OR_FOLLOWER.
    let mut answered = false;
    for shard in 0..broker.shards() {
        let mut s = wire::connect(broker.shard_addr(shard));
        let resp: DeleteRecordsResponse = codec::call(&mut s, ApiKey::DeleteRecords, 2, &req);
        let p = &resp.topics[0].partitions[0];
        if p.error_code == 0 {
            assert_eq!(p.low_watermark, 42);
            answered = true;
        } else {
            assert_eq!(p.error_code, 6);
        }
    }
    assert!(answered);
    let b = bootstrap.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || low_watermark(&b, "del"))
            .await
            .unwrap(),
        42
    );
    broker.kill9();
    broker.start_again();
    let b = bootstrap.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || low_watermark(&b, "del"))
            .await
            .unwrap(),
        42
    );
    let records = tokio::task::spawn_blocking(move || common::read_partition(&bootstrap, "del", 0))
        .await
        .unwrap();
    assert_eq!(
        records.first().map(|r| r.0),
        Some(42),
        "reading from the beginning starts at 42"
    );
}

/// Fetch v4 of `topic`-0 from offset 0 asking for up to 10 MB; the record bytes returned.
fn fetch_all_asked(broker: &Broker, topic: &str) -> usize {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(10_000_000)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(10_000_000),
                ]),
        ]);
    // A fresh broker's first topic has its one partition on shard 0.
    let mut s = wire::connect(broker.shard_addr(0));
    let resp: FetchResponse = codec::call(&mut s, ApiKey::Fetch, 4, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 20);
    p.records.as_ref().map_or(0, |r| r.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_max_bytes_caps_what_a_client_asks_for() {
    for (cap, expect_all) in [(None, true), (Some("1000"), false)] {
        let args: Vec<&str> = cap.map_or(vec![], |c| vec!["--fetch-max-bytes", c]);
        let broker = Broker::start_with(&args);
        broker.create_topic("capped", 1).await;
        // Twenty single-record batches of about 270 bytes each.
        produce(&broker, "capped", 20, now_ms()).await;
        let got = fetch_all_asked(&broker, "capped");
        if expect_all {
            assert!(got > 20 * 200, "uncapped fetch returned only {got} bytes");
        } else {
            assert!(got > 0 && got <= 1000, "capped fetch returned {got} bytes");
        }
    }
}
