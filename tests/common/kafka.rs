//! rdkafka clients of a test broker and what tests do with them: create topics, produce and wait
//! for every delivery report, consume an exact number of records, read a partition back.

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Broker, WAIT_MAX};

/// How long a consumer keeps polling after it has what it expected, to catch extra records.
const CONSUME_EXTRA_WAIT: Duration = Duration::from_millis(1000);
/// How long one consumer poll may block.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a delivery report may take: a produce may wait out one broker restart.
const DELIVERY_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long one ListOffsets request of `high_watermark` may take before it is tried again.
const WATERMARK_PROBE_WAIT: Duration = Duration::from_secs(5);
/// Pause before a failed ListOffsets of `high_watermark` is tried again.
const WATERMARK_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long one poll of `read_partition` may block.
const READ_POLL_WAIT: Duration = Duration::from_millis(500);
/// How long `read_partition` may take to read a whole partition (thousands of records).
const READ_PARTITION_WAIT_MAX: Duration = Duration::from_secs(60);
/// The group.id of consumers that only `assign`: librdkafka insists on one, but these consumers
/// never subscribe or commit, so consumer groups are not what they check.
const UNUSED_GROUP_ID: &str = "sable-tests-unused";
/// librdkafka's default reconnect backoff (100 ms, up to 10 s) would leave a client idle for
/// seconds after a broker restart; tests restart brokers often.
const RECONNECT_BACKOFF_MS: &str = "50";
const RECONNECT_BACKOFF_MAX_MS: &str = "500";
/// How long a client waits for one answer from the broker.
const SOCKET_TIMEOUT_MS: &str = "20000";
/// How long a producer waits to fill a batch: librdkafka's default since 1.9, stated so that
/// tests do not depend on the version.
const LINGER_MS: &str = "5";
/// How long a producer keeps trying to deliver a record (librdkafka's default is 5 minutes).
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// Client settings every client of the broker at `bootstrap` shares. A free function so that
/// clients can be made where the `Broker` is not at hand (a spawned task or thread).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // The broker listens on 127.0.0.1 only.
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", SOCKET_TIMEOUT_MS)
        .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS);
    config
}

/// `config` with `settings` added, each replacing a setting of the same name.
pub fn with_settings(mut config: ClientConfig, settings: &[(&str, &str)]) -> ClientConfig {
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config
}

/// Settings for a consumer used with manual `assign`; `extra` overrides or adds settings.
fn consumer_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", UNUSED_GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    with_settings(config, extra)
}

impl Broker {
    /// Client settings every client of this broker shares.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap())
    }

    /// Settings of an acks=all producer; `extra` overrides or adds settings. For producers other
    /// than `FutureProducer` (a `ThreadedProducer` polled by a synchronous test).
    pub fn producer_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .set("linger.ms", LINGER_MS);
        with_settings(config, extra)
    }

    /// An acks=all producer; `extra` overrides or adds settings.
    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        self.producer_config(extra)
            .create()
            .expect("create producer")
    }

    /// A consumer for manual `assign`; `extra` overrides or adds settings (a real `group.id` for
    /// one that commits).
    pub fn consumer_with(&self, extra: &[(&str, &str)]) -> BaseConsumer {
        consumer_config(&self.bootstrap(), extra)
            .create()
            .expect("create consumer")
    }

    pub fn consumer(&self) -> BaseConsumer {
        self.consumer_with(&[])
    }

    /// The async flavour of `consumer_with`, polled by the tokio runtime of the test.
    pub fn stream_consumer(&self, extra: &[(&str, &str)]) -> StreamConsumer {
        consumer_config(&self.bootstrap(), extra)
            .create()
            .expect("create stream consumer")
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("create admin client")
    }

    /// Creates a topic with replication factor 1 and panics unless the broker says yes.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin = self.admin();
        let results = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &admin_options(),
            )
            .await
            .expect("CreateTopics request");
        assert_eq!(results, vec![Ok(name.to_string())], "create topic {name}");
    }

    /// The partition count Metadata reports for `topic` (0 when it is unknown).
    pub fn partition_count(&self, topic: &str) -> usize {
        let md = self
            .consumer()
            .fetch_metadata(None, WAIT_MAX)
            .expect("Metadata");
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len())
    }
}

/// AdminOptions with a bounded wait.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(WAIT_MAX))
}

/// Runs a future to completion on a small runtime, for synchronous tests (those that poll an
/// rdkafka `BaseConsumer` from the test thread) that need an async admin call.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(f)
}

/// Sends every record without waiting in between (so records may share a batch), then waits for
/// all delivery reports; panics on the first failed delivery.
pub async fn produce_all(
    producer: &FutureProducer,
    records: Vec<FutureRecord<'_, [u8], [u8]>>,
) -> Vec<Delivery> {
    let mut futures = Vec::with_capacity(records.len());
    for record in records {
        match producer.send_result(record) {
            Ok(f) => futures.push(f),
            Err((e, _)) => panic!("enqueue failed: {e}"),
        }
    }
    let mut deliveries = Vec::with_capacity(futures.len());
    for f in futures {
        match tokio::time::timeout(DELIVERY_WAIT_MAX, f).await {
            Ok(Ok(Ok(delivery))) => deliveries.push(delivery),
            Ok(Ok(Err((e, _)))) => panic!("delivery failed: {e}"),
            Ok(Err(_)) => panic!("delivery future cancelled"),
            Err(_) => panic!("no delivery report within {DELIVERY_WAIT_MAX:?}"),
        }
    }
    deliveries
}

/// Sends one record and returns the broker's answer as librdkafka reports it.
pub async fn produce_one(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
) -> Result<Delivery, KafkaError> {
    let f = match producer.send_result(record) {
        Ok(f) => f,
        Err((e, _)) => return Err(e),
    };
    match tokio::time::timeout(DELIVERY_WAIT_MAX, f).await {
        Ok(Ok(result)) => result.map_err(|(e, _)| e),
        Ok(Err(_)) => panic!("delivery future cancelled"),
        Err(_) => panic!("no delivery report within {DELIVERY_WAIT_MAX:?}"),
    }
}

/// A record for `topic`, with an optional key and value (None is Kafka's null).
pub fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut r = FutureRecord::to(topic);
    if let Some(k) = key {
        r = r.key(k);
    }
    if let Some(v) = value {
        r = r.payload(v);
    }
    r
}

/// Assigns `partitions` of `topic` from the beginning.
pub fn assign_from_beginning(consumer: &BaseConsumer, topic: &str, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign");
}

/// Polls until exactly `count` records arrived, then a little longer to catch extra ones.
/// Panics on a consumer error, on timeout, and on any record beyond `count`.
pub fn consume_exactly(consumer: &BaseConsumer, count: usize) -> Vec<OwnedMessage> {
    let mut got = Vec::with_capacity(count);
    let deadline = Instant::now() + WAIT_MAX;
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count} records within {WAIT_MAX:?}; last: {:?}",
            got.len(),
            got.last().map(describe)
        );
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(m)) => got.push(m.detach()),
            Some(Err(e)) => panic!("consumer error after {} records: {e}", got.len()),
        }
    }
    let extra_until = Instant::now() + CONSUME_EXTRA_WAIT;
    while Instant::now() < extra_until {
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(m)) => panic!(
                "record beyond the {count} expected: {}",
                describe(&m.detach())
            ),
            Some(Err(e)) => panic!("consumer error after {count} records: {e}"),
        }
    }
    got
}

/// One line naming a record's position and sizes, for assertion messages.
pub fn describe(m: &OwnedMessage) -> String {
    format!(
        "{}/{}@{} key={:?} value_len={:?}",
        m.topic(),
        m.partition(),
        m.offset(),
        m.key().map(String::from_utf8_lossy),
        m.payload().map(<[u8]>::len)
    )
}

/// The high watermark of a partition, asked again while the broker is still coming back from a
/// restart (until `WAIT_MAX`).
pub fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = consumer_config(bootstrap, &[])
        .create()
        .expect("create consumer");
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match consumer.fetch_watermarks(topic, partition, WATERMARK_PROBE_WAIT) {
            Ok((_, high)) => return high,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "watermarks of {topic}-{partition}: {e}"
                );
                std::thread::sleep(WATERMARK_RETRY_PAUSE);
            }
        }
    }
}

/// Every record of a partition below its high watermark, as (offset, value). Consumer errors
/// are retried (the broker may have just restarted): what must hold is the records read.
pub fn read_partition(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let high = high_watermark(bootstrap, topic, partition);
    let consumer: BaseConsumer = consumer_config(bootstrap, &[])
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("add partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + READ_PARTITION_WAIT_MAX;
    while out.last().map_or(0, |(o, _)| o + 1) < high {
        assert!(
            Instant::now() < deadline,
            "read {} of {high} records of {topic}-{partition} within {READ_PARTITION_WAIT_MAX:?}",
            out.len()
        );
        match consumer.poll(READ_POLL_WAIT) {
            Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(e)) => eprintln!("consumer error (retrying): {e}"),
            None => {}
        }
    }
    out
}
