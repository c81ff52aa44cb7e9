//! Topic administration: CreateTopics and DeleteTopics with their errors, auto-creation, and the
//! shard-as-broker view Metadata gives clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::MetadataTopic;
use rdkafka::types::RDKafkaRespErr;

use common::wire;
use common::{Broker, WAIT_MAX};

/// CreateTopics for each (name, partitions, replication factor); the answer per name.
async fn create(
    broker: &Broker,
    topics: &[(&str, i32, i32)],
) -> BTreeMap<String, Result<(), RDKafkaErrorCode>> {
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions, rf)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(*rf))
        })
        .collect();
    let results = broker
        .admin()
        .create_topics(&new_topics, &common::admin_options())
        .await
        .expect("CreateTopics request");
    assert_eq!(results.len(), topics.len());
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => (name, Ok(())),
            Err((name, code)) => (name, Err(code)),
        })
        .collect()
}

async fn delete(broker: &Broker, name: &str) -> Result<(), RDKafkaErrorCode> {
    let results = broker
        .admin()
        .delete_topics(&[name], &common::admin_options())
        .await
        .expect("DeleteTopics request");
    assert_eq!(results.len(), 1);
    match &results[0] {
        Ok(n) => {
            assert_eq!(n, name);
            Ok(())
        }
        Err((n, code)) => {
            assert_eq!(n, name);
            Err(*code)
        }
    }
}

/// One topic's Metadata as (partition id, leader, replicas, isr), sorted by partition id.
type PartitionView = Vec<(i32, i32, Vec<i32>, Vec<i32>)>;

fn partitions_of(topic: &MetadataTopic) -> PartitionView {
    let mut v: PartitionView = topic
        .partitions()
        .iter()
        .map(|p| {
            assert_eq!(p.error(), None, "partition {} of {}", p.id(), topic.name());
            (p.id(), p.leader(), p.replicas().to_vec(), p.isr().to_vec())
        })
        .collect();
    v.sort();
    v
}

/// Metadata for one topic through `consumer`, which decides whether the request may auto-create.
fn topic_metadata(consumer: &BaseConsumer, name: &str) -> (Option<RDKafkaRespErr>, PartitionView) {
    let md = consumer
        .fetch_metadata(Some(name), WAIT_MAX)
        .expect("Metadata");
    assert_eq!(md.topics().len(), 1);
    let t = &md.topics()[0];
    assert_eq!(t.name(), name);
    let partitions = if t.error().is_none() {
        partitions_of(t)
    } else {
        Vec::new()
    };
    (t.error(), partitions)
}

/// Names of all topics Metadata lists.
fn all_topics(broker: &Broker) -> Vec<String> {
    let md = broker
        .consumer()
        .fetch_metadata(None, WAIT_MAX)
        .expect("Metadata");
    let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_topic_is_listed_with_its_partitions() {
    let broker = Broker::start();
    assert_eq!(create(&broker, &[("orders", 3, 1)]).await["orders"], Ok(()));
    let (err, partitions) = topic_metadata(&broker.consumer(), "orders");
    assert_eq!(err, None);
    let ids: Vec<i32> = partitions.iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    assert_eq!(all_topics(&broker), vec!["orders".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_existing_topic_fails_with_topic_already_exists() {
    let broker = Broker::start();
    assert_eq!(create(&broker, &[("twice", 2, 1)]).await["twice"], Ok(()));
    assert_eq!(
        create(&broker, &[("twice", 5, 1)]).await["twice"],
        Err(RDKafkaErrorCode::TopicAlreadyExists)
    );
    // The failed attempt changed nothing.
    assert_eq!(broker.partition_count("twice"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_names_fail_with_invalid_topic_exception() {
    let broker = Broker::start();
    let too_long = "a".repeat(250);
    let longest = "b".repeat(249);
    let answers = create(
        &broker,
        &[
            (".", 1, 1),
            ("..", 1, 1),
            (&too_long, 1, 1),
            ("bad name!", 1, 1),
            ("slash/name", 1, 1),
            (&longest, 1, 1),
            ("ok.name_with-all-Legal-chars.9", 1, 1),
        ],
    )
    .await;
    let invalid = Err(RDKafkaErrorCode::InvalidTopic);
    assert_eq!(answers["."], invalid);
    assert_eq!(answers[".."], invalid);
    assert_eq!(
        answers[&too_long], invalid,
        "250 characters is one too many"
    );
    assert_eq!(answers["bad name!"], invalid);
    assert_eq!(answers["slash/name"], invalid);
    assert_eq!(answers[&longest], Ok(()), "249 characters is the limit");
    assert_eq!(answers["ok.name_with-all-Legal-chars.9"], Ok(()));
    assert_eq!(
        all_topics(&broker),
        vec![longest, "ok.name_with-all-Legal-chars.9".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_partitions_fail_with_invalid_partitions() {
    let broker = Broker::start();
    assert_eq!(
        create(&broker, &[("zero", 0, 1)]).await["zero"],
        Err(RDKafkaErrorCode::InvalidPartitions)
    );
    assert!(all_topics(&broker).is_empty());
}

/// Sends one CreateTopics v4 by hand (librdkafka refuses to send what this test needs) and
/// returns the error code the broker gives the topic.
fn create_raw(broker: &Broker, name: &str, partitions: i32, replication_factor: i16) -> i16 {
    let mut s = wire::connect(broker.bootstrap());
    wire::send_frame(
        &mut s,
        &wire::create_topics_v4_request(9, name, partitions, replication_factor),
    );
    let (correlation_id, topics) = wire::decode_create_topics_v4(&wire::read_frame(&mut s));
    assert_eq!(correlation_id, 9);
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].0, name);
    topics[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_create_topics_rejects_negative_partitions_and_empty_names() {
    let broker = Broker::start_with(&["--default-partitions", "3"]);
    assert_eq!(
        create_raw(&broker, "minus-two", -2, 1),
        wire::ERROR_INVALID_PARTITIONS
    );
    assert_eq!(
        create_raw(&broker, "minus-many", i32::MIN, 1),
        wire::ERROR_INVALID_PARTITIONS
    );
    assert_eq!(
        create_raw(&broker, "zero-raw", 0, 1),
        wire::ERROR_INVALID_PARTITIONS
    );
    assert_eq!(
        create_raw(&broker, "rf-minus-two", 1, -2),
        wire::ERROR_INVALID_REPLICATION_FACTOR
    );
    assert_eq!(
        create_raw(&broker, "rf-zero", 1, 0),
        wire::ERROR_INVALID_REPLICATION_FACTOR
    );
    assert_eq!(
        create_raw(&broker, "", 1, 1),
        wire::ERROR_INVALID_TOPIC_EXCEPTION
    );
    assert!(all_topics(&broker).is_empty());
    // -1 means the broker's default for both (KIP-464): 3 partitions, replication factor 1.
    assert_eq!(create_raw(&broker, "defaults", -1, -1), wire::ERROR_NONE);
    let (err, partitions) = topic_metadata(&broker.consumer(), "defaults");
    assert_eq!(err, None);
    assert_eq!(partitions.len(), 3);
    assert!(partitions.iter().all(|p| p.2.len() == 1), "{partitions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_factor_above_one_fails_with_invalid_replication_factor() {
    let broker = Broker::start();
    let answers = create(
        &broker,
        &[("rf3", 1, 3), ("rf2", 1, 2), ("rf-default", 2, -1)],
    )
    .await;
    assert_eq!(
        answers["rf3"],
        Err(RDKafkaErrorCode::InvalidReplicationFactor)
    );
    assert_eq!(
        answers["rf2"],
        Err(RDKafkaErrorCode::InvalidReplicationFactor)
    );
    assert_eq!(answers["rf-default"], Ok(()), "-1 means the default, 1");
    assert_eq!(all_topics(&broker), vec!["rf-default".to_string()]);
    let (_, partitions) = topic_metadata(&broker.consumer(), "rf-default");
    for (id, leader, replicas, isr) in partitions {
        assert_eq!(replicas, vec![leader], "replicas of partition {id}");
        assert_eq!(isr, vec![leader], "isr of partition {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_and_unknown_topic() {
    let broker = Broker::start();
    assert_eq!(
        create(&broker, &[("doomed", 2, 1), ("kept", 1, 1)])
            .await
            .len(),
        2
    );
    assert_eq!(delete(&broker, "doomed").await, Ok(()));
    assert_eq!(all_topics(&broker), vec!["kept".to_string()]);
    assert_eq!(
        delete(&broker, "doomed").await,
        Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "a second delete finds nothing"
    );
    assert_eq!(
        delete(&broker, "never-created").await,
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    assert_eq!(all_topics(&broker), vec!["kept".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_data_is_gone_when_recreated() {
    let broker = Broker::start();
    let topic = "reborn";
    broker.create_topic(topic, 2).await;
    let producer = broker.producer(&[]);
    let old: Vec<Vec<u8>> = (0..10).map(|i| format!("old-{i}").into_bytes()).collect();
    let records = old
        .iter()
        .enumerate()
        .map(|(i, v)| {
            common::record(topic, None, Some(v)).partition(i32::try_from(i % 2).expect("small"))
        })
        .collect();
    common::produce_all(&producer, records).await;
    drop(producer);
    assert_eq!(delete(&broker, topic).await, Ok(()));

    // Kafka may report a topic being deleted as existing for a moment; retry only that answer.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match create(&broker, &[(topic, 2, 1)]).await[topic] {
            Ok(()) => break,
            Err(RDKafkaErrorCode::TopicAlreadyExists) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("recreate {topic}: {e:?}"),
        }
    }
    let consumer = broker.consumer();
    for p in 0..2 {
        assert_eq!(
            consumer
                .fetch_watermarks(topic, p, WAIT_MAX)
                .expect("watermarks"),
            (0, 0),
            "partition {p} of the new topic must start empty"
        );
    }
    let producer = broker.producer(&[]);
    let d = common::produce_one(
        &producer,
        common::record(topic, None, Some(b"new")).partition(1),
    )
    .await
    .expect("produce to recreated topic");
    assert_eq!((d.partition, d.offset), (1, 0));
    common::assign_from_beginning(&consumer, topic, 2);
    let got = common::consume_exactly(&consumer, 1);
    assert_eq!(rdkafka::Message::payload(&got[0]), Some(b"new".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_new_topic_creates_it_by_default() {
    let broker = Broker::start();
    let producer = broker.producer(&[]);
    let d = common::produce_one(&producer, common::record("auto-produce", None, Some(b"x")))
        .await
        .expect("auto-created on produce");
    assert_eq!((d.partition, d.offset), (0, 0));
    assert_eq!(all_topics(&broker), vec!["auto-produce".to_string()]);
    assert_eq!(
        broker.partition_count("auto-produce"),
        1,
        "--default-partitions is 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_for_a_new_topic_creates_it_with_default_partitions() {
    let broker = Broker::start_with(&["--default-partitions", "3"]);
    // librdkafka lets Metadata auto-create only when allow.auto.create.topics is set.
    let consumer = broker.consumer_with(&[("allow.auto.create.topics", "true")]);
    let deadline = Instant::now() + WAIT_MAX;
    let partitions = loop {
        match topic_metadata(&consumer, "auto-meta") {
            (None, partitions) => break partitions,
            // Kafka answers LEADER_NOT_AVAILABLE while a fresh topic's leaders are elected.
            (Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE), _)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            (Some(e), _) => panic!("Metadata for auto-meta: {e:?}"),
        }
    };
    assert_eq!(
        partitions.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(all_topics(&broker), vec!["auto-meta".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_disallows_auto_creation_creates_nothing() {
    let broker = Broker::start();
    // librdkafka's consumer default: allow.auto.create.topics=false.
    let (err, _) = topic_metadata(&broker.consumer(), "not-asked-for");
    assert_eq!(
        err,
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
    assert!(all_topics(&broker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_off_rejects_unknown_topics() {
    let broker = Broker::start_with(&["--auto-create-topics", "false"]);
    let producer = broker.producer(&[("message.timeout.ms", "5000")]);
    let err = common::produce_one(&producer, common::record("missing", None, Some(b"x")))
        .await
        .expect_err("produce to a missing topic with auto-create off");
    let code = match err {
        KafkaError::MessageProduction(code) => code,
        other => panic!("unexpected error {other:?}"),
    };
    assert!(
        matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::MessageTimedOut
        ),
        "got {code:?}"
    );
    // Even a client that allows auto-creation gets UNKNOWN_TOPIC_OR_PARTITION.
    let consumer = broker.consumer_with(&[("allow.auto.create.topics", "true")]);
    let (err, _) = topic_metadata(&consumer, "missing");
    assert_eq!(
        err,
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
    assert!(all_topics(&broker).is_empty());

    // Explicit creation still works.
    broker.create_topic("explicit", 1).await;
    let d = common::produce_one(&producer, common::record("explicit", None, Some(b"x")))
        .await
        .expect("produce to a created topic");
    assert_eq!(d.offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_one_broker_per_shard() {
    let broker = Broker::start_with(&["--node-id-base", "100"]);
    let p = broker.base_port();
    let md = broker
        .consumer()
        .fetch_metadata(None, WAIT_MAX)
        .expect("Metadata");
    let mut brokers: Vec<(i32, String, i32)> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    brokers.sort();
    let host = "127.0.0.1".to_string();
    assert_eq!(
        brokers,
        vec![
            (100, host.clone(), i32::from(p) + 1),
            (101, host, i32::from(p) + 2)
        ]
    );

    broker.create_topic("spread", 4).await;
    let (_, partitions) = topic_metadata(&broker.consumer(), "spread");
    let mut per_leader: HashMap<i32, usize> = HashMap::new();
    for (id, leader, replicas, isr) in &partitions {
        *per_leader.entry(*leader).or_default() += 1;
        assert_eq!(replicas, &vec![*leader], "replicas of partition {id}");
        assert_eq!(isr, &vec![*leader], "isr of partition {id}");
    }
    // Partitions are spread evenly over the shards.
    assert_eq!(per_leader, HashMap::from([(100, 2), (101, 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_host_is_what_metadata_returns() {
    let broker = Broker::start_with(&["--advertise", "localhost"]);
    let md = broker
        .consumer()
        .fetch_metadata(None, WAIT_MAX)
        .expect("Metadata");
    let hosts = common::distinct(md.brokers().iter().map(|b| b.host().to_string()));
    assert_eq!(hosts, common::distinct(["localhost".to_string()]));
}
