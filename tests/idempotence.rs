//! The idempotent producer across a broker SIGKILL: librdkafka with enable.idempotence retries
//! every in-flight batch after the restart, and the broker must recognise the ones it already
//! wrote. Every acknowledged record must be in the log exactly once, in order.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use common::Broker;

const MESSAGES: usize = 4000;
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_sigkill_exactly_once_in_order() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    broker.create_topic("idem", 1).await;
    let producer = broker.producer(&[
        ("enable.idempotence", "true"),
        ("linger.ms", "2"),
        ("message.timeout.ms", "120000"),
    ]);
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut deliveries = Vec::new();
            for i in 0..MESSAGES {
                let value = format!("value-{i:06}");
                let record = FutureRecord::<(), _>::to("idem")
                    .partition(0)
                    .payload(&value);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue");
                let acked = acked.clone();
                deliveries.push(tokio::spawn(async move {
                    let result = delivery.await.expect("delivery not cancelled");
                    acked.fetch_add(1, Ordering::SeqCst);
                    result.map(|d| d.offset).map_err(|(e, _)| e.to_string())
                }));
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let mut offsets = Vec::new();
            for d in deliveries {
                offsets.push(d.await.unwrap());
            }
            offsets
        })
    };
    // Several kills make it likely that some batch was written but not answered, which
    // librdkafka then retries; the raw test below covers that case for certain.
    for kill in 1..=KILLS {
        while acked.load(Ordering::SeqCst) < MESSAGES * kill / (KILLS + 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        broker.kill9();
        broker.start_again();
    }
    let offsets = sender.await.unwrap();

    let records =
        tokio::task::spawn_blocking(move || common::read_partition(&bootstrap, "idem", 0))
            .await
            .unwrap();
    let by_value: HashMap<&[u8], i64> = records.iter().map(|(o, v)| (v.as_slice(), *o)).collect();
    assert_eq!(
        by_value.len(),
        records.len(),
        "a value appears twice in the log"
    );
    let mut last = -1;
    for (i, result) in offsets.iter().enumerate() {
        let offset = result
            .as_ref()
            .unwrap_or_else(|e| panic!("message {i} failed: {e}"));
        let value = format!("value-{i:06}");
        assert_eq!(
            by_value.get(value.as_bytes()),
            Some(offset),
            "message {i} at its acked offset"
        );
        assert!(*offset > last, "message {i} in order");
        last = *offset;
    }
    assert_eq!(records.len(), MESSAGES, "nothing but the produced messages");
    drop(broker);
}

mod raw {
    //! The same retries, sent by hand so each case happens for certain.
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
        InitProducerIdResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::common::{Broker, codec, wire};

    /// How often a produce cut off by a reset is sent again, as a client would.
    const PRODUCE_ATTEMPTS_MAX: u32 = 10;
    /// Pause before a produce cut off by a reset is sent again.
    const PRODUCE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> bytes::Bytes {
        let values: Vec<bytes::Bytes> = (0..count)
            .map(|i| bytes::Bytes::from(format!("{pid}-{epoch}-{}", seq + i)))
            .collect();
        codec::record_batch(pid, epoch, seq, &values)
    }

    /// Produces one batch to raw-0 on the owning shard; (error code, base offset).
    fn produce(broker: &Broker, shard: u16, records: bytes::Bytes) -> (i16, i64) {
        let req = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("raw")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ]),
            ]);
        // Like a client, retry on a reset (a retry is what idempotence is about). Resets right
        // after a restart came from the dead broker's lingering sockets; the harness now waits
        // for those to close, so this loop should not be needed.
        let mut attempt = 0;
        let resp: ProduceResponse = loop {
            let mut s = wire::connect(broker.shard_addr(shard));
            match codec::try_call(&mut s, ApiKey::Produce, 9, &req) {
                Ok(resp) => break resp,
                Err(e) if attempt < PRODUCE_ATTEMPTS_MAX => {
                    eprintln!("produce attempt {attempt}: {e:?}");
                    attempt += 1;
                    std::thread::sleep(PRODUCE_RETRY_PAUSE);
                }
                Err(e) => broker.fail(&format!("produce: {e:?}")),
            }
        };
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// The shard owning raw-0: the one that does not answer NOT_LEADER_OR_FOLLOWER.
    fn owner_shard(broker: &Broker, records: bytes::Bytes) -> (u16, i64) {
        for shard in 0..broker.shards() {
            let (code, offset) = produce(broker, shard, records.clone());
            if code == 0 {
                return (shard, offset);
            }
            assert_eq!(code, 6, "not the owner");
        }
        panic!("no shard owns raw-0");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retried_batches_get_their_original_offsets_across_a_sigkill() {
        let mut broker = Broker::start();
        broker.create_topic("raw", 1).await;
        let mut s = wire::connect(broker.addr());
        let init: InitProducerIdResponse = codec::call(
            &mut s,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
        );
        assert_eq!(init.error_code, 0);
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
        let (shard, first) = owner_shard(&broker, batch(pid, epoch, 0, 3));
        assert_eq!(first, 0);
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 3, 2)), (0, 3));
        // A plain retry, before any restart.
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 0, 3)), (0, 0));

        broker.kill9();
        broker.start_again();
        // After the crash (no snapshot: state comes from the header scan) both are known.
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 3, 2)), (0, 3));
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 0, 3)), (0, 0));
        assert_eq!(
            produce(&broker, shard, batch(pid, epoch, 9, 1)).0,
            45,
            "gap: OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 5, 1)), (0, 5));

        // A clean stop (which must exit 0), then a new process.
        broker.restart();
        // After a clean stop (state from the snapshot).
        assert_eq!(produce(&broker, shard, batch(pid, epoch, 5, 1)), (0, 5));
        assert_eq!(
            produce(&broker, shard, batch(pid, epoch + 1, 4, 1)).0,
            45,
            "new epoch starts at 0"
        );
        assert_eq!(produce(&broker, shard, batch(pid, epoch + 1, 0, 1)), (0, 6));
        assert_eq!(
            produce(&broker, shard, batch(pid, epoch, 6, 1)).0,
            47,
            "INVALID_PRODUCER_EPOCH"
        );
        let high = super::common::high_watermark(&broker.bootstrap(), "raw", 0);
        assert_eq!(high, 7, "no retry was written twice");

        // DescribeProducers (KIP-664) shows the producer at its new epoch and last sequence.
        let mut s = wire::connect(broker.shard_addr(shard));
        let described: DescribeProducersResponse = codec::call(
            &mut s,
            ApiKey::DescribeProducers,
            0,
            &DescribeProducersRequest::default().with_topics(vec![
                TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_static_str("raw")))
                    .with_partition_indexes(vec![0]),
            ]),
        );
        let p = &described.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let states: Vec<(i64, i32, i32)> = p
            .active_producers
            .iter()
            .map(|a| (a.producer_id.0, a.producer_epoch, a.last_sequence))
            .collect();
        assert_eq!(states, [(pid, i32::from(epoch) + 1, 0)]);
    }
}
