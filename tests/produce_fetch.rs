//! Produce and Fetch round trips through librdkafka: every record comes back byte-identical at
//! the offset the producer was told.

mod common;

use std::collections::{BTreeMap, HashMap};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};

use common::{Broker, WAIT_MAX};

/// (partition, offset) -> (key, value) as produced.
type Expected = BTreeMap<(i32, i64), (Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Checks that `got` holds exactly the records of `expected`, byte for byte, each at its offset.
#[track_caller]
fn assert_records(topic: &str, got: &[OwnedMessage], expected: &Expected) {
    let mut seen = BTreeMap::new();
    for m in got {
        assert_eq!(m.topic(), topic);
        let pos = (m.partition(), m.offset());
        let want = expected
            .get(&pos)
            .unwrap_or_else(|| panic!("unexpected record {}", common::describe(m)));
        assert_eq!(m.key().map(<[u8]>::to_vec), want.0, "key at {pos:?}");
        assert!(
            m.payload().map(<[u8]>::to_vec) == want.1,
            "value at {pos:?} differs: got {:?} bytes, want {:?} bytes",
            m.payload().map(<[u8]>::len),
            want.1.as_ref().map(Vec::len)
        );
        assert!(
            seen.insert(pos, ()).is_none(),
            "record at {pos:?} delivered twice"
        );
    }
    assert_eq!(seen.len(), expected.len(), "records consumed vs produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_every_partition_of_a_six_partition_topic() {
    check_six_partition_round_trip(&[]).await;
}

/// The same round trip with fetched data copied through user space instead of sendfile: both
/// paths stay tested whichever one is the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_the_fetch_copy_path() {
    check_six_partition_round_trip(&["--fetch-sendfile", "false"]).await;
}

async fn check_six_partition_round_trip(broker_args: &[&str]) {
    const PARTITIONS: i32 = 6;
    const RECORDS_PER_PARTITION: i64 = 20;
    let broker = Broker::start_with(broker_args);
    let topic = "round-trip";
    broker.create_topic(topic, PARTITIONS).await;

    // Interleave partitions so each produce request carries batches for several partitions.
    let mut values = Vec::new();
    for i in 0..RECORDS_PER_PARTITION {
        for p in 0..PARTITIONS {
            let seed = u64::try_from(i64::from(p) * 1000 + i).expect("positive");
            let len = usize::try_from((i64::from(p) * 37 + i * 53) % 700).expect("positive");
            values.push((
                p,
                format!("p{p}-r{i}").into_bytes(),
                common::pseudo_random_bytes(seed, len),
            ));
        }
    }
    let producer = broker.producer(&[]);
    let records = values
        .iter()
        .map(|(p, k, v)| common::record(topic, Some(k), Some(v)).partition(*p))
        .collect();
    let deliveries = common::produce_all(&producer, records).await;

    let mut expected = Expected::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for ((p, k, v), d) in values.iter().zip(&deliveries) {
        assert_eq!(d.partition, *p);
        let want = next_offset.entry(*p).or_insert(0);
        assert_eq!(
            d.offset, *want,
            "offsets of one partition follow send order from 0"
        );
        *want += 1;
        expected.insert((*p, d.offset), (Some(k.clone()), Some(v.clone())));
    }

    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, PARTITIONS);
    let got = common::consume_exactly(&consumer, expected.len());
    assert_records(topic, &got, &expected);
    for p in 0..PARTITIONS {
        let marks = consumer
            .fetch_watermarks(topic, p, WAIT_MAX)
            .expect("watermarks");
        assert_eq!(
            marks,
            (0, RECORDS_PER_PARTITION),
            "watermarks of partition {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_goes_to_same_partition_in_order() {
    const PARTITIONS: i32 = 4;
    const RECORDS_PER_KEY: usize = 25;
    let broker = Broker::start();
    let topic = "keyed";
    broker.create_topic(topic, PARTITIONS).await;
    let keys: Vec<String> = (0..8).map(|k| format!("customer-{k}")).collect();

    let mut sent = Vec::new();
    for i in 0..RECORDS_PER_KEY {
        for k in &keys {
            sent.push((k.clone(), format!("{k}:{i}")));
        }
    }
    // One request in flight per connection, so client retries cannot reorder; what is left to
    // check is the broker.
    let producer = broker.producer(&[("max.in.flight.requests.per.connection", "1")]);
    let records = sent
        .iter()
        .map(|(k, v)| common::record(topic, Some(k.as_bytes()), Some(v.as_bytes())))
        .collect();
    let deliveries = common::produce_all(&producer, records).await;

    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut last_offset: HashMap<&str, i64> = HashMap::new();
    for ((k, _), d) in sent.iter().zip(&deliveries) {
        let p = *partition_of.entry(k).or_insert(d.partition);
        assert_eq!(d.partition, p, "key {k} moved partition");
        if let Some(prev) = last_offset.insert(k, d.offset) {
            assert!(d.offset > prev, "key {k}: offset {} after {prev}", d.offset);
        }
    }
    let used = common::distinct(partition_of.values().copied());
    assert!(used.len() >= 2, "8 keys all hashed to partitions {used:?}");

    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, PARTITIONS);
    let got = common::consume_exactly(&consumer, sent.len());
    let mut per_key: HashMap<String, Vec<(i32, i64, String)>> = HashMap::new();
    for m in &got {
        let k = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
        let v = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8 value");
        per_key
            .entry(k)
            .or_default()
            .push((m.partition(), m.offset(), v));
    }
    for k in &keys {
        let records = &per_key[k];
        // Records of one partition arrive in offset order.
        let values: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
        let want: Vec<String> = (0..RECORDS_PER_KEY).map(|i| format!("{k}:{i}")).collect();
        assert_eq!(values, want, "values of key {k} in consumption order");
        assert!(records.iter().all(|r| r.0 == partition_of[k.as_str()]));
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "offsets of key {k} rise"
        );
    }
}

/// Produces compressible and incompressible records with `codec` in batches of many records,
/// then checks that the records and their offsets come back unchanged.
async fn check_compression_round_trip(codec: &str) {
    const PARTITIONS: i32 = 2;
    const RECORDS: usize = 200;
    let broker = Broker::start();
    let topic = format!("compressed-{codec}");
    broker.create_topic(&topic, PARTITIONS).await;

    let values: Vec<(i32, Option<Vec<u8>>, Vec<u8>)> = (0..RECORDS)
        .map(|i| {
            let p = i32::try_from(i % 2).expect("small");
            let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
            let value = if i % 2 == 0 {
                format!("order {i} for customer John Doe; ")
                    .repeat(1 + i % 40)
                    .into_bytes()
            } else {
                common::pseudo_random_bytes(u64::try_from(i).expect("small"), 100 + i * 5)
            };
            (p, key, value)
        })
        .collect();
    let producer = broker.producer(&[
        ("compression.type", codec),
        ("linger.ms", "100"),
        ("batch.num.messages", "1000"),
    ]);
    let records = values
        .iter()
        .map(|(p, k, v)| common::record(&topic, k.as_deref(), Some(v)).partition(*p))
        .collect();
    let deliveries = common::produce_all(&producer, records).await;
    let mut expected = Expected::new();
    for (i, ((p, k, v), d)) in values.iter().zip(&deliveries).enumerate() {
        assert_eq!(
            (d.partition, d.offset),
            (*p, i64::try_from(i / 2).expect("small"))
        );
        expected.insert((*p, d.offset), (k.clone(), Some(v.clone())));
    }

    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, &topic, PARTITIONS);
    let got = common::consume_exactly(&consumer, RECORDS);
    assert_records(&topic, &got, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_gzip_round_trip() {
    check_compression_round_trip("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_snappy_round_trip() {
    check_compression_round_trip("snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_lz4_round_trip() {
    check_compression_round_trip("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_zstd_round_trip() {
    check_compression_round_trip("zstd").await;
}

/// A record's key and value; None is Kafka's null.
type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Headers as (key, value) pairs, None for a null header value.
fn headers_of(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers().map_or_else(Vec::new, |h| {
        h.iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_null_key_null_value_and_empty_value_round_trip() {
    let broker = Broker::start();
    let topic = "nulls";
    broker.create_topic(topic, 1).await;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some(b"abc-123".as_slice()),
        })
        .insert(Header {
            key: "empty",
            value: Some(b"".as_slice()),
        })
        .insert(Header {
            key: "null",
            value: None::<&[u8]>,
        })
        .insert(Header {
            key: "trace",
            value: Some(b"second".as_slice()),
        })
        .insert(Header {
            key: "bin\u{e9}",
            value: Some([0xff, 0x00, 0x80].as_slice()),
        });
    let want_headers = vec![
        ("trace".to_string(), Some(b"abc-123".to_vec())),
        ("empty".to_string(), Some(Vec::new())),
        ("null".to_string(), None),
        ("trace".to_string(), Some(b"second".to_vec())),
        ("bin\u{e9}".to_string(), Some(vec![0xff, 0x00, 0x80])),
    ];
    let cases: Vec<KeyValue> = vec![
        (None, Some(b"no key")),
        (Some(b"tombstone"), None),
        (Some(b""), Some(b"")),
        (None, None),
        (Some(b"with headers"), Some(b"v")),
    ];
    let producer = broker.producer(&[]);
    let mut records: Vec<_> = cases
        .iter()
        .map(|(k, v)| common::record(topic, *k, *v))
        .collect();
    records[4] = common::record(topic, cases[4].0, cases[4].1).headers(headers);
    let deliveries = common::produce_all(&producer, records).await;
    let offsets: Vec<i64> = deliveries.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);

    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(&consumer, cases.len());
    for (i, (m, (k, v))) in got.iter().zip(&cases).enumerate() {
        assert_eq!(m.offset(), i64::try_from(i).expect("small"));
        assert_eq!(
            m.key(),
            *k,
            "key of record {i} (None is null, Some(b\"\") is empty)"
        );
        assert_eq!(
            m.payload(),
            *v,
            "value of record {i} (None is null, Some(b\"\") is empty)"
        );
        let want = if i == 4 {
            want_headers.clone()
        } else {
            Vec::new()
        };
        assert_eq!(headers_of(m), want, "headers of record {i}");
    }
}

/// Producer settings that let librdkafka send records up to 3 MiB, so the broker's limit is the
/// one that decides.
const BIG_PRODUCER: [(&str, &str); 3] = [
    ("message.max.bytes", "3145728"),
    ("batch.size", "3145728"),
    ("compression.type", "none"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_just_under_one_mib_round_trips() {
    let broker = Broker::start();
    let topic = "big";
    broker.create_topic(topic, 1).await;
    // The default max.message.bytes is 1048588 (1 MiB + 12) for the whole batch; a 1 MiB - 1 KiB
    // value leaves room for the batch and record headers.
    let value = common::pseudo_random_bytes(7, 1024 * 1024 - 1024);
    let producer = broker.producer(&BIG_PRODUCER);
    let d = common::produce_one(&producer, common::record(topic, Some(b"big"), Some(&value)))
        .await
        .expect("a record under max.message.bytes is accepted");
    assert_eq!((d.partition, d.offset), (0, 0));

    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(&consumer, 1);
    assert_eq!(got[0].offset(), 0);
    assert_eq!(got[0].key(), Some(b"big".as_slice()));
    assert_eq!(got[0].payload().map(<[u8]>::len), Some(value.len()));
    assert!(
        got[0].payload() == Some(value.as_slice()),
        "1 MiB value differs"
    );
}

/// Request bodies over 4 KiB are read into buffers the broker recycles (`net/recycle.rs`): sent
/// one at a time, each request's buffer is back in the pool before the next arrives, and a
/// shorter body lands in a buffer that held a longer one. Every record must come back as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_recycled_request_buffers_come_back_unchanged() {
    let broker = Broker::start();
    let topic = "recycled";
    broker.create_topic(topic, 1).await;
    let sizes = [
        10_200, 9_000, 10_200, 8_300, 20_000, 16_500, 20_000, 9_000, 600_000, 530_000, 600_000,
        5_000,
    ];
    let producer = broker.producer(&[]);
    let mut expected = Expected::new();
    for (i, len) in sizes.iter().chain(sizes.iter().rev()).enumerate() {
        let key = format!("r{i}").into_bytes();
        let value = common::pseudo_random_bytes(i as u64 + 100, *len);
        let d = common::produce_one(&producer, common::record(topic, Some(&key), Some(&value)))
            .await
            .unwrap_or_else(|e| panic!("record {i} of {len} bytes refused: {e:?}"));
        assert_eq!((d.partition, d.offset), (0, i as i64));
        expected.insert((0, d.offset), (Some(key), Some(value)));
    }
    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(&consumer, expected.len());
    assert_records(topic, &got, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_max_message_bytes_is_rejected_with_message_too_large() {
    let broker = Broker::start();
    let topic = "too-big";
    broker.create_topic(topic, 1).await;
    let producer = broker.producer(&BIG_PRODUCER);
    let small = common::produce_one(&producer, common::record(topic, None, Some(b"before")))
        .await
        .expect("small record");
    assert_eq!(small.offset, 0);

    // The value alone is as large as the limit, so its batch is over it.
    let value = common::pseudo_random_bytes(8, 1_048_588);
    let err = common::produce_one(&producer, common::record(topic, None, Some(&value)))
        .await
        .expect_err("a batch over max.message.bytes must be rejected");
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );

    // Nothing of the rejected batch was written, and the partition takes the next record.
    let after = common::produce_one(&producer, common::record(topic, None, Some(b"after")))
        .await
        .expect("record after the rejected one");
    assert_eq!(after.offset, 1);
    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(&consumer, 2);
    let values: Vec<Option<&[u8]>> = got.iter().map(|m| m.payload()).collect();
    assert_eq!(
        values,
        vec![Some(b"before".as_slice()), Some(b"after".as_slice())]
    );
    assert_eq!(
        consumer
            .fetch_watermarks(topic, 0, WAIT_MAX)
            .expect("watermarks"),
        (0, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_message_max_bytes_is_enforced() {
    let broker = Broker::start_with(&["--message-max-bytes", "10000"]);
    let topic = "small-limit";
    broker.create_topic(topic, 1).await;
    let producer = broker.producer(&BIG_PRODUCER);
    let fits = common::pseudo_random_bytes(9, 9000);
    let d = common::produce_one(&producer, common::record(topic, None, Some(&fits)))
        .await
        .expect("9000-byte value under a 10000-byte limit");
    assert_eq!(d.offset, 0);
    let too_big = common::pseudo_random_bytes(10, 10_000);
    let err = common::produce_one(&producer, common::record(topic, None, Some(&too_big)))
        .await
        .expect_err("10000-byte value over a 10000-byte batch limit");
    assert_eq!(
        err,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
}

/// Produce at every served version (v3-v12 by topic name, v13 by topic id, as sarama's old
/// versions and the newest clients send them): each answers with the next offset, and a
/// librdkafka consumer reads every record back in order. Then Fetch at every served version
/// (v4-v12 by name, v13-v18 by id) returns all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_at_every_served_version() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    const FIRST_VERSION: i16 = 3;
    const LAST_VERSION: i16 = 13;
    const TOPIC_ID_MIN_VERSION: i16 = 13;
    const METADATA_VERSION: i16 = 12;
    let topic = "every-produce-version";
    let broker = Broker::start_with(&["--shards", "1"]);
    broker.create_topic(topic, 1).await;
    let mut stream = common::wire::connect(broker.bootstrap());
    let metadata: MetadataResponse = common::codec::call(
        &mut stream,
        ApiKey::Metadata,
        METADATA_VERSION,
        &MetadataRequest::default().with_topics(None),
    );
    let topic_id = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .expect("the topic is listed")
        .topic_id;
    for version in FIRST_VERSION..=LAST_VERSION {
        let value = bytes::Bytes::from(format!("v{version}"));
        let records = common::codec::record_batch(-1, -1, -1, &[value]);
        let mut topic_data = TopicProduceData::default().with_partition_data(vec![
            PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records)),
        ]);
        topic_data = if version >= TOPIC_ID_MIN_VERSION {
            topic_data.with_topic_id(topic_id)
        } else {
            topic_data.with_name(TopicName(StrBytes::from_static_str(topic)))
        };
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![topic_data]);
        let resp: ProduceResponse =
            common::codec::try_call(&mut stream, ApiKey::Produce, version, &req)
                .unwrap_or_else(|_| panic!("Produce v{version}: the broker closed the connection"));
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "Produce v{version}");
        assert_eq!(
            p.base_offset,
            i64::from(version - FIRST_VERSION),
            "Produce v{version}: base offset"
        );
    }
    let consumer = broker.consumer();
    common::assign_from_beginning(&consumer, topic, 1);
    let got = common::consume_exactly(
        &consumer,
        usize::from((LAST_VERSION - FIRST_VERSION + 1) as u16),
    );
    let values: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8"))
        .collect();
    let want: Vec<String> = (FIRST_VERSION..=LAST_VERSION)
        .map(|v| format!("v{v}"))
        .collect();
    assert_eq!(values, want);
}

/// A Produce naming a topic that does not exist creates it when auto-create is on (the
/// default), with no Metadata request before it, and the records land at offset 0; with
/// `--auto-create-topics false` it is answered UNKNOWN_TOPIC_OR_PARTITION and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_a_missing_topic_creates_it_only_when_auto_create_is_on() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    let produce = |broker: &Broker, topic: &'static str| -> (i16, i64) {
        let records = common::codec::record_batch(-1, -1, -1, &[bytes::Bytes::from("first")]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ]),
            ]);
        let mut stream = common::wire::connect(broker.bootstrap());
        let resp: ProduceResponse = common::codec::call(&mut stream, ApiKey::Produce, 9, &req);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };

    // One shard: with two, the bootstrap connection may land on the shard that does not own
    // the new partition, which answers NOT_LEADER_OR_FOLLOWER (a client then asks Metadata).
    let on = Broker::start_with(&["--shards", "1"]);
    assert_eq!(
        produce(&on, "made-by-produce"),
        (0, 0),
        "created and written"
    );
    assert_eq!(on.partition_count("made-by-produce"), 1);
    let consumer = on.consumer();
    common::assign_from_beginning(&consumer, "made-by-produce", 1);
    let got = common::consume_exactly(&consumer, 1);
    assert_eq!(got[0].payload(), Some(&b"first"[..]));

    let off = Broker::start_with(&["--shards", "1", "--auto-create-topics", "false"]);
    assert_eq!(
        produce(&off, "not-made-by-produce").0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(off.partition_count("not-made-by-produce"), 0);
}
