//! Consumer-group members over rdkafka: consumers that record their rebalance callbacks, records
//! whose payload names their place, per-record commits and bounded polling of several members.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};

use super::{Broker, WAIT_MAX, with_settings};

/// The test brokers' group.initial.rebalance.delay.ms: short, so tests do not wait 3 s a group.
pub const TEST_REBALANCE_DELAY_MS: u32 = 300;
/// The cap on waiting for a group to settle or deliver: a rebalance after a member vanished
/// takes its session timeout and a join round, longer than one request's `WAIT_MAX`.
pub const GROUP_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long one poll of one member may block while several are polled in turn.
const MEMBER_POLL_WAIT: Duration = Duration::from_millis(20);
/// Pause before a commit refused during a rebalance is tried again.
const COMMIT_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long the producer waits for queue room before it is polled again.
const QUEUE_FULL_POLL_WAIT: Duration = Duration::from_millis(10);
/// Member settings: a dead member is noticed within seconds, heartbeats are frequent enough to
/// hear of a rebalance quickly, and new partitions are seen within seconds.
const SESSION_TIMEOUT_MS: &str = "10000";
const HEARTBEAT_INTERVAL_MS: &str = "500";
const METADATA_REFRESH_MS: &str = "2000";
/// The offset librdkafka reports for a partition without a committed offset.
pub const NO_OFFSET: i64 = -1001;
/// FNV-1a 32-bit, as `sable::group::coordinator_shard` hashes group ids.
const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

impl Broker {
    /// A broker whose groups wait `delay_ms` for more members before their first rebalance.
    pub fn start_with_rebalance_delay(delay_ms: u32) -> Broker {
        Broker::start_with(&["--group-initial-rebalance-delay-ms", &delay_ms.to_string()])
    }
}

/// The shard coordinating `group_id` among `shards`: the same FNV-1a as
/// `sable::group::coordinator_shard`, computed here independently so a change there shows up as
/// a test failure.
pub fn coordinator_shard(group_id: &str, shards: u16) -> u16 {
    let mut hash = FNV_OFFSET_BASIS;
    for b in group_id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    u16::try_from(hash % u32::from(shards)).expect("a shard index fits u16")
}

/// A group id starting with `prefix` whose coordinator is `shard` of `shards`.
pub fn group_on_shard(prefix: &str, shard: u16, shards: u16) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|g| coordinator_shard(g, shards) == shard)
        .expect("some id hashes to every shard")
}

/// The payload of record `i` of `partition`: consumers check it against where it came from.
pub fn payload(partition: i32, i: usize) -> String {
    format!("p{partition}-r{i}")
}

/// Produces records `from..to` to every partition, acks=all, and waits for every delivery.
pub fn produce(b: &Broker, topic: &str, partitions: i32, from: usize, to: usize) {
    let p: ThreadedProducer<DefaultProducerContext> =
        b.producer_config(&[]).create().expect("create producer");
    for i in from..to {
        for partition in 0..partitions {
            let v = payload(partition, i);
            let mut rec = BaseRecord::<(), String>::to(topic)
                .partition(partition)
                .payload(&v);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert_eq!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::QueueFull),
                            "enqueue: {e}"
                        );
                        rec = r;
                        p.poll(QUEUE_FULL_POLL_WAIT);
                    }
                }
            }
        }
    }
    p.flush(WAIT_MAX).expect("every record delivered");
    assert_eq!(p.in_flight_count(), 0, "records still in flight");
}

/// A rebalance callback as the consumer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
}

/// Records every assignment and revocation, in order.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    pub fn revokes(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Revoke(_)))
            .count()
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for Recorder {
    /// librdkafka's log lines (and `debug` output) go to the test's captured stderr.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("librdkafka {level:?} {fac}: {log_message}");
    }
}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            self.lock().push(Event::Revoke(partitions_of(tpl)));
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            self.lock().push(Event::Assign(partitions_of(tpl)));
        }
    }
}

/// A group member. Dropping it closes it on a thread of its own and waits at most
/// `CONSUMER_CLOSE_WAIT_MAX`: librdkafka can hang for ever in the rebalance callback of a
/// consumer that closes while its group rebalances (confluentinc/librdkafka#4884, open), and that
/// client bug must not hang the suite. A close that finishes, as they nearly all do, still sends
/// its LeaveGroup before the test goes on.
pub struct GroupConsumer(Option<BaseConsumer<Recorder>>);

/// How long dropping a `GroupConsumer` waits for librdkafka's close.
const CONSUMER_CLOSE_WAIT_MAX: Duration = Duration::from_secs(15);

impl GroupConsumer {
    fn new(consumer: BaseConsumer<Recorder>) -> GroupConsumer {
        GroupConsumer(Some(consumer))
    }
}

impl std::ops::Deref for GroupConsumer {
    type Target = BaseConsumer<Recorder>;

    fn deref(&self) -> &BaseConsumer<Recorder> {
        self.0.as_ref().expect("a consumer is there until dropped")
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        if wait.recv_timeout(CONSUMER_CLOSE_WAIT_MAX).is_err() {
            eprintln!(
                "a consumer's close hung for {CONSUMER_CLOSE_WAIT_MAX:?} (librdkafka#4884); \
                 leaving it on its thread"
            );
        }
    }
}

/// A member of `group` that does not subscribe: it only commits and reads offsets.
pub fn offsets_client(b: &Broker, group: &str) -> GroupConsumer {
    GroupConsumer::new(
        b.client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create_with_context(Recorder::default())
            .expect("create consumer"),
    )
}

/// A consumer in `group` subscribed to `topic`, committing by hand, reading from the start.
/// `extra` overrides or adds settings (assignor, group.instance.id, session.timeout.ms).
pub fn consumer(b: &Broker, group: &str, topic: &str, extra: &[(&str, &str)]) -> GroupConsumer {
    let mut cfg = b.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS)
        .set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
    let c = GroupConsumer::new(
        with_settings(cfg, extra)
            .create_with_context(Recorder::default())
            .expect("create consumer"),
    );
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// The partitions a consumer owns now.
pub fn assigned(c: &GroupConsumer) -> BTreeSet<i32> {
    partitions_of(&c.assignment().expect("assignment"))
}

/// A record as a consumer received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub payload: String,
}

/// Polls once (`wait` at most); a record is committed (sync) before it is returned, so a
/// returned record is one the group will not deliver again. A record whose commit fails (the
/// partition was revoked meanwhile) is not returned: its next owner gets it.
pub fn poll_commit(c: &GroupConsumer, wait: Duration) -> Option<Got> {
    let m = match c.poll(wait)? {
        Ok(m) => m,
        // The broker is away (a restart test): librdkafka reconnects by itself.
        Err(e)
            if matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
            ) =>
        {
            return None;
        }
        Err(e) => panic!("consume error: {e}"),
    };
    let got = Got {
        partition: m.partition(),
        offset: m.offset(),
        payload: String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf8"),
    };
    let started = Instant::now();
    loop {
        match c.commit_message(&m, CommitMode::Sync) {
            Ok(()) => return Some(got),
            // The group is between JoinGroup and SyncGroup (Kafka refuses commits in
            // CompletingRebalance): a cooperative member keeps its partitions, so it retries.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::RebalanceInProgress) => {
                assert!(
                    started.elapsed() < GROUP_WAIT_MAX,
                    "rebalance never completed"
                );
                std::thread::sleep(COMMIT_RETRY_PAUSE);
            }
            Err(e) => {
                eprintln!("commit of {}/{} refused: {e}", got.partition, got.offset);
                return None;
            }
        }
    }
}

/// Polls every consumer in turn, committing each record, until `done` holds on what each one
/// received so far; panics after `GROUP_WAIT_MAX`.
pub fn poll_until(
    consumers: &[&GroupConsumer],
    got: &mut [Vec<Got>],
    what: &str,
    mut done: impl FnMut(&[Vec<Got>]) -> bool,
) {
    assert_eq!(consumers.len(), got.len());
    let started = Instant::now();
    while !done(got) {
        assert!(
            started.elapsed() < GROUP_WAIT_MAX,
            "timed out waiting for {what}; got {:?} records per consumer",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (c, g) in consumers.iter().zip(got.iter_mut()) {
            if let Some(r) = poll_commit(c, MEMBER_POLL_WAIT) {
                g.push(r);
            }
        }
    }
}

/// Every record of `partitions` × `from..to`, as (partition, payload).
pub fn expected(
    partitions: impl IntoIterator<Item = i32>,
    from: usize,
    to: usize,
) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = partitions
        .into_iter()
        .flat_map(|p| (from..to).map(move |i| (p, payload(p, i))))
        .collect();
    v.sort();
    v
}

/// What a set of consumers received, as sorted (partition, payload), duplicates kept.
pub fn received(got: &[Vec<Got>]) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = got
        .iter()
        .flatten()
        .map(|g| (g.partition, g.payload.clone()))
        .collect();
    v.sort();
    v
}

/// Committed offsets of `partitions` of `topic` for the group of `c` (`NO_OFFSET` = none).
pub fn committed(c: &GroupConsumer, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let r = c
        .committed_offsets(tpl, WAIT_MAX)
        .expect("committed offsets");
    r.elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
        .collect()
}

/// Polls until `done` holds for the consumers' assignments (records must not arrive: the
/// topic is empty while this runs).
pub fn wait_assignments(
    consumers: &[&GroupConsumer],
    what: &str,
    mut done: impl FnMut(&[BTreeSet<i32>]) -> bool,
) -> Vec<BTreeSet<i32>> {
    let started = Instant::now();
    loop {
        let a: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&a) {
            return a;
        }
        assert!(
            started.elapsed() < GROUP_WAIT_MAX,
            "timed out waiting for {what}; assignments {a:?}"
        );
        for c in consumers {
            if let Some(r) = c.poll(MEMBER_POLL_WAIT) {
                panic!(
                    "unexpected record or error while waiting for {what}: {:?}",
                    r.map(|m| m.offset())
                );
            }
        }
    }
}

/// Assignments that cover `0..partitions` with each partition owned exactly once.
pub fn is_partition_of(a: &[BTreeSet<i32>], partitions: i32) -> bool {
    let mut all: Vec<i32> = a.iter().flatten().copied().collect();
    all.sort();
    all == (0..partitions).collect::<Vec<_>>()
}
