//! Admin APIs against the real binary with librdkafka's AdminClient.

mod common;

use rdkafka::admin::{
    AdminClient, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;

use common::{Broker, Launch, WAIT_MAX, admin_options};

async fn topic_configs(
    a: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> rdkafka::admin::ConfigResource {
    let mut r = a
        .describe_configs([&ResourceSpecifier::Topic(topic)], &admin_options())
        .await
        .expect("describe_configs");
    r.remove(0).expect("topic resource")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_round_trip() {
    let b = Broker::start();
    let a = b.admin();
    let t = NewTopic::new("cfg", 2, TopicReplication::Fixed(1))
        .set("retention.ms", "100000")
        .set("max.message.bytes", "2000");
    let r = a.create_topics([&t], &admin_options()).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");

    let c = topic_configs(&a, "cfg").await;
    let e = c.get("retention.ms").unwrap();
    assert_eq!(e.value.as_deref(), Some("100000"));
    assert_eq!(e.source, ConfigSource::DynamicTopic);
    let e = c.get("cleanup.policy").unwrap();
    assert_eq!(e.value.as_deref(), Some("delete"));
    assert_eq!(e.source, ConfigSource::Default);
    assert!(c.get("segment.bytes").is_some());

    // AlterConfigs replaces the whole set: max.message.bytes goes back to the default.
    let alter = AlterConfig::new(ResourceSpecifier::Topic("cfg")).set("retention.ms", "5000");
    let r = a.alter_configs([&alter], &admin_options()).await.unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let c = topic_configs(&a, "cfg").await;
    assert_eq!(
        c.get("retention.ms").unwrap().value.as_deref(),
        Some("5000")
    );
    assert_eq!(
        c.get("max.message.bytes").unwrap().value.as_deref(),
        Some("1048588")
    );
    assert_eq!(
        c.get("max.message.bytes").unwrap().source,
        ConfigSource::Default
    );

    // Invalid values are refused and change nothing. (rust-rdkafka 0.39 drops per-resource
    // AlterConfigs errors, so the refusal is checked by its effect; the kafka-python script
    // checks the error code.)
    let bad = AlterConfig::new(ResourceSpecifier::Topic("cfg")).set("cleanup.policy", "compact");
    a.alter_configs([&bad], &admin_options()).await.unwrap();
    let c = topic_configs(&a, "cfg").await;
    assert_eq!(
        c.get("retention.ms").unwrap().value.as_deref(),
        Some("5000")
    );

    // Unknown topic: no entries (rust-rdkafka 0.39 drops the per-resource error code).
    let r = a
        .describe_configs([&ResourceSpecifier::Topic("nope")], &admin_options())
        .await
        .unwrap();
    assert!(r[0].as_ref().is_ok_and(|c| c.entries.is_empty()), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validates_configs() {
    // No auto-create: the Metadata request below must not create the topic it looks for.
    let b = Broker::start_with(&["--auto-create-topics", "false"]);
    let a = b.admin();
    let bad = NewTopic::new("bad", 1, TopicReplication::Fixed(1)).set("compression.type", "zstd");
    let unknown = NewTopic::new("unknown", 1, TopicReplication::Fixed(1)).set("no.such", "1");
    let r = a
        .create_topics([&bad, &unknown], &admin_options())
        .await
        .unwrap();
    assert!(
        matches!(r[0], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{r:?}"
    );
    assert!(
        matches!(r[1], Err((_, RDKafkaErrorCode::InvalidConfig))),
        "{r:?}"
    );
    // validate_only with a good config creates nothing.
    let good = NewTopic::new("good", 1, TopicReplication::Fixed(1)).set("retention.ms", "1000");
    let r = a
        .create_topics([&good], &admin_options().validate_only(true))
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    let md = a
        .inner()
        .fetch_metadata(Some("good"), WAIT_MAX)
        .expect("metadata");
    assert!(
        md.topics()[0].error().is_some(),
        "validate_only created the topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_are_described_and_read_only() {
    let b = Broker::start();
    let a = b.admin();
    let r = a
        .describe_configs(
            [&ResourceSpecifier::Broker(1)],
            &admin_options().broker_id(1),
        )
        .await
        .unwrap();
    let c = r[0].as_ref().expect("broker resource");
    assert_eq!(c.get("node.id").unwrap().value.as_deref(), Some("1"));
    assert_eq!(c.get("num.partitions").unwrap().value.as_deref(), Some("1"));
    assert!(c.get("log.retention.ms").unwrap().is_read_only);
    let adv = c
        .get("advertised.listeners")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert_eq!(adv, format!("PLAINTEXT://127.0.0.1:{}", b.shard_port(1)));
    // Broker configs are static: an AlterConfigs changes nothing (the error code itself is
    // checked by the kafka-python script; rust-rdkafka drops it).
    let alter = AlterConfig::new(ResourceSpecifier::Broker(0)).set("log.retention.ms", "1");
    a.alter_configs([&alter], &admin_options().broker_id(0))
        .await
        .unwrap();
    let r = a
        .describe_configs(
            [&ResourceSpecifier::Broker(0)],
            &admin_options().broker_id(0),
        )
        .await
        .unwrap();
    let c = r[0].as_ref().expect("broker resource");
    assert_eq!(
        c.get("log.retention.ms").unwrap().value.as_deref(),
        Some("604800000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_then_produce_to_them() {
    let b = Broker::start();
    let a = b.admin();
    let t = NewTopic::new("grow", 1, TopicReplication::Fixed(1));
    assert!(a.create_topics([&t], &admin_options()).await.unwrap()[0].is_ok());
    let r = a
        .create_partitions([&NewPartitions::new("grow", 4)], &admin_options())
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    // Shrinking (or staying) is refused.
    let r = a
        .create_partitions([&NewPartitions::new("grow", 2)], &admin_options())
        .await
        .unwrap();
    assert!(
        matches!(r[0], Err((_, RDKafkaErrorCode::InvalidPartitions))),
        "{r:?}"
    );

    let md = a.inner().fetch_metadata(Some("grow"), WAIT_MAX).unwrap();
    let parts = md.topics()[0].partitions();
    assert_eq!(parts.len(), 4);
    let leaders: std::collections::HashSet<i32> = parts.iter().map(|p| p.leader()).collect();
    assert_eq!(leaders.len(), 2, "partitions spread over both shards");

    let p = b.producer(&[]);
    for partition in 0..4 {
        let r = p
            .send(
                FutureRecord::<(), _>::to("grow")
                    .partition(partition)
                    .payload("x"),
                WAIT_MAX,
            )
            .await;
        let delivery = r.unwrap_or_else(|(e, _)| panic!("partition {partition}: {e}"));
        assert_eq!(delivery.partition, partition);
        assert_eq!(delivery.offset, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_id_is_stable_across_restart() {
    let mut b = Broker::start();
    let a = b.admin();
    let t = NewTopic::new("keep", 1, TopicReplication::Fixed(1)).set("retention.ms", "123456");
    assert!(a.create_topics([&t], &admin_options()).await.unwrap()[0].is_ok());
    let id = a.inner().fetch_cluster_id(WAIT_MAX).expect("cluster id");
    assert!(!id.is_empty());
    drop(a);
    // A clean stop (which must exit 0) and a new process on the same data dir.
    b.restart();
    let a = b.admin();
    assert_eq!(
        a.inner().fetch_cluster_id(WAIT_MAX).as_deref(),
        Some(id.as_str())
    );
    // Topic configs are persisted with the metadata.
    let c = topic_configs(&a, "keep").await;
    assert_eq!(
        c.get("retention.ms").unwrap().value.as_deref(),
        Some("123456")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_max_message_bytes_is_enforced_by_produce() {
    let b = Broker::start();
    let a = b.admin();
    let t = NewTopic::new("small", 1, TopicReplication::Fixed(1)).set("max.message.bytes", "1024");
    assert!(a.create_topics([&t], &admin_options()).await.unwrap()[0].is_ok());
    let p = b.producer(&[
        ("compression.type", "none"),
        ("message.send.max.retries", "0"),
    ]);
    let big = vec![b'x'; 4000];
    let r = p
        .send(FutureRecord::<(), _>::to("small").payload(&big), WAIT_MAX)
        .await;
    assert!(
        r.is_err(),
        "a 4000-byte batch was accepted under max.message.bytes=1024"
    );
    let r = p
        .send(FutureRecord::<(), _>::to("small").payload("ok"), WAIT_MAX)
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_segment_bytes_applies_without_restart() {
    use common::metrics::{parse_metrics, sum};
    let b = Launch::new(&[]).with_metrics().start();
    let a = b.admin();
    let t = NewTopic::new("roll", 1, TopicReplication::Fixed(1));
    assert!(a.create_topics([&t], &admin_options()).await.unwrap()[0].is_ok());
    let segments = || sum(&parse_metrics(&b.scrape()), "sable_log_segments", &[]);
    let before = segments();
    let alter = AlterConfig::new(ResourceSpecifier::Topic("roll")).set("segment.bytes", "1024");
    a.alter_configs([&alter], &admin_options()).await.unwrap();
    let p = b.producer(&[("linger.ms", "0"), ("compression.type", "none")]);
    let payload = vec![b'y'; 600];
    for _ in 0..6 {
        p.send(
            FutureRecord::<(), _>::to("roll").payload(&payload),
            WAIT_MAX,
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("{e}"));
    }
    let after = segments();
    assert!(
        after >= before + 2.0,
        "segments {before} -> {after}: segment.bytes not applied live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topic_stamps_batches() {
    use rdkafka::Message;
    use rdkafka::Timestamp;
    use rdkafka::consumer::Consumer;
    // The consumer below joins a group: no need to wait out the default initial delay.
    let b = Broker::start_with_rebalance_delay(0);
    let a = b.admin();
    let t = NewTopic::new("lat", 1, TopicReplication::Fixed(1))
        .set("message.timestamp.type", "LogAppendTime");
    assert!(a.create_topics([&t], &admin_options()).await.unwrap()[0].is_ok());
    let p = b.producer(&[]);
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    p.send(
        FutureRecord::<(), _>::to("lat")
            .payload("old")
            .timestamp(1_000),
        WAIT_MAX,
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("{e}"));
    let c = b.stream_consumer(&[("group.id", "lat")]);
    c.subscribe(&["lat"]).unwrap();
    let m = tokio::time::timeout(WAIT_MAX, c.recv())
        .await
        .expect("a message")
        .unwrap();
    match m.timestamp() {
        Timestamp::LogAppendTime(ts) => assert!(ts >= started_ms - 1000, "{ts} < {started_ms}"),
        other => panic!("expected LogAppendTime, got {other:?}"),
    }
}

/// DescribeLogDirs reports the data dir's file system: its size and the space still usable, as
/// Kafka does (they were -1 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_log_dirs_reports_disk_size_and_usable_space() {
    use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};

    const VERSION: i16 = 4;
    let broker = Broker::start_with(&["--shards", "1"]);
    let mut stream = common::wire::connect(broker.bootstrap());
    let resp: DescribeLogDirsResponse = common::codec::call(
        &mut stream,
        ApiKey::DescribeLogDirs,
        VERSION,
        &DescribeLogDirsRequest::default().with_topics(None),
    );
    let dir = &resp.results[0];
    assert_eq!(dir.error_code, 0);
    assert!(
        dir.log_dir.as_str().ends_with("/data"),
        "log dir {}",
        dir.log_dir.as_str()
    );
    assert!(dir.total_bytes > 0, "total bytes {}", dir.total_bytes);
    assert!(
        dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes,
        "usable bytes {} of {}",
        dir.usable_bytes,
        dir.total_bytes
    );
}
