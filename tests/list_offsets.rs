//! ListOffsets: earliest and latest, and by timestamp at record (not batch) granularity.

mod common;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Timestamp;
use rdkafka::{Message, Offset, TopicPartitionList};

use common::{Broker, WAIT_MAX};

/// An arbitrary CreateTime in the past (2023-11-14T22:13:20Z).
const T0_MS: i64 = 1_700_000_000_000;

/// The offset ListOffsets answers for `timestamp_ms` on partition 0 of `topic`.
fn offset_for_time(consumer: &BaseConsumer, topic: &str, timestamp_ms: i64) -> Offset {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(timestamp_ms))
        .expect("add partition");
    let answer = consumer
        .offsets_for_times(tpl, WAIT_MAX)
        .unwrap_or_else(|e| panic!("ListOffsets for timestamp {timestamp_ms}: {e}"));
    let elements = answer.elements();
    assert_eq!(elements.len(), 1);
    elements[0]
        .error()
        .unwrap_or_else(|e| panic!("ListOffsets for timestamp {timestamp_ms}: {e}"));
    elements[0].offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_and_latest_of_empty_and_filled_partitions() {
    let broker = Broker::start();
    let topic = "marks";
    broker.create_topic(topic, 2).await;
    let consumer = broker.consumer();
    for p in 0..2 {
        assert_eq!(
            consumer
                .fetch_watermarks(topic, p, WAIT_MAX)
                .expect("watermarks"),
            (0, 0)
        );
    }
    let producer = broker.producer(&[]);
    let values: Vec<Vec<u8>> = (0..7).map(|i| format!("v{i}").into_bytes()).collect();
    let records = values
        .iter()
        .map(|v| common::record(topic, None, Some(v)).partition(0))
        .collect();
    common::produce_all(&producer, records).await;
    assert_eq!(
        consumer
            .fetch_watermarks(topic, 0, WAIT_MAX)
            .expect("watermarks"),
        (0, 7)
    );
    assert_eq!(
        consumer
            .fetch_watermarks(topic, 1, WAIT_MAX)
            .expect("watermarks"),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_finds_the_record_inside_a_batch() {
    let broker = Broker::start();
    let topic = "times";
    broker.create_topic(topic, 1).await;
    // A long linger puts each group of records, enqueued back to back, into one batch.
    let producer = broker.producer(&[("linger.ms", "500"), ("batch.num.messages", "10000")]);
    // Batch A: rising timestamps. Batch B: out of order, so its max timestamp is not its last.
    let batches: [&[i64]; 2] = [&[0, 10, 20, 30, 40], &[100, 110, 130, 120, 140]];
    let mut offset = 0;
    for deltas in batches {
        let records = deltas
            .iter()
            .map(|d| common::record(topic, None, Some(b"t")).timestamp(T0_MS + d))
            .collect();
        for d in common::produce_all(&producer, records).await {
            assert_eq!(d.offset, offset);
            offset += 1;
        }
    }

    let consumer = broker.consumer();
    // Kafka's rule: the first offset whose record timestamp is >= the target.
    let cases: [(i64, Offset); 11] = [
        (-5, Offset::Offset(0)),
        (0, Offset::Offset(0)),
        (15, Offset::Offset(2)), // inside batch A: its record, not the batch's base offset 0
        (20, Offset::Offset(2)),
        (40, Offset::Offset(4)),
        (41, Offset::Offset(5)),
        (105, Offset::Offset(6)),
        (111, Offset::Offset(7)), // 130 at offset 7 comes before 120 at offset 8
        (125, Offset::Offset(7)),
        (135, Offset::Offset(9)),
        (141, Offset::End), // no such record: Kafka answers offset -1
    ];
    for (delta, want) in cases {
        assert_eq!(
            offset_for_time(&consumer, topic, T0_MS + delta),
            want,
            "T0 + {delta} ms"
        );
    }

    // The producer's timestamps are kept per record (CreateTime).
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(&consumer, 10);
    let stamps: Vec<Timestamp> = got.iter().map(Message::timestamp).collect();
    let want: Vec<Timestamp> = batches
        .iter()
        .flat_map(|b| b.iter())
        .map(|d| Timestamp::CreateTime(T0_MS + d))
        .collect();
    assert_eq!(stamps, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_on_an_empty_partition_is_end() {
    let broker = Broker::start();
    let topic = "times-empty";
    broker.create_topic(topic, 1).await;
    let consumer = broker.consumer();
    assert_eq!(offset_for_time(&consumer, topic, T0_MS), Offset::End);
}

/// Every ListOffsets version the broker serves answers a filled partition (kafkajs asks v1-v3,
/// whose answers lack the leader epoch: setting it once aborted the broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_version_answers_a_filled_partition() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    const LATEST: i64 = -1;
    let broker = Broker::start_with(&["--shards", "1"]);
    let topic = "versions";
    broker.create_topic(topic, 1).await;
    let producer = broker.producer(&[]);
    let values: Vec<Vec<u8>> = (0..3).map(|i| format!("r{i}").into_bytes()).collect();
    let records = values
        .iter()
        .map(|v| common::record(topic, None, Some(v)).partition(0))
        .collect();
    common::produce_all(&producer, records).await;
    let mut stream = common::wire::connect(broker.bootstrap());
    for version in 1..=10 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(LATEST),
                    ]),
            ]);
        let resp: ListOffsetsResponse =
            common::codec::try_call(&mut stream, ApiKey::ListOffsets, version, &req)
                .unwrap_or_else(|_| {
                    panic!("ListOffsets v{version}: the broker closed the connection")
                });
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "v{version}");
        assert_eq!(p.offset, 3, "v{version}: latest offset");
        let want_epoch = if version >= 4 { 0 } else { -1 };
        assert_eq!(p.leader_epoch, want_epoch, "v{version}: leader epoch");
    }
}
