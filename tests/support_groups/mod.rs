//! The group tests' own harness: the real `sable` binary with 2 shards on a free port range and
//! a temp data dir (kept across a SIGKILL and restart), plus rdkafka helpers: topics, producing
//! records whose payload names their place, consumers that record their rebalance callbacks,
//! and bounded polling. Dropping a `Broker` kills the process.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

pub const SHARDS: u16 = 2;
/// The test brokers' group.initial.rebalance.delay.ms: short, so tests do not wait 3 s a group.
pub const TEST_REBALANCE_DELAY_MS: u32 = 300;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The cap on any wait: a broken broker fails the test instead of hanging it.
pub const WAIT_CAP: Duration = Duration::from_secs(60);
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    delay_ms: u32,
    _tmp: Option<tempfile::TempDir>,
}

/// A base port with base..=base+SHARDS free.
fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let base = l.local_addr().unwrap().port();
        if base > u16::MAX - SHARDS - 1 {
            continue;
        }
        let rest: Vec<_> = (1..=SHARDS)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range");
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_delay(TEST_REBALANCE_DELAY_MS)
    }

    pub fn start_with_delay(delay_ms: u32) -> Broker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut b = Broker::start_in(tmp.path(), delay_ms);
        b._tmp = Some(tmp);
        b
    }

    fn start_in(dir: &Path, delay_ms: u32) -> Broker {
        // A free range can be taken between the probe and the bind (clients' ephemeral ports
        // come from the same pool): a broker that exits at start is tried on a new range.
        for _ in 0..5 {
            if let Some(b) = Broker::try_start_on(dir, delay_ms, free_port()) {
                return b;
            }
        }
        panic!("sable did not start on any of 5 port ranges");
    }

    fn start_on(dir: &Path, delay_ms: u32, port: u16) -> Broker {
        Broker::try_start_on(dir, delay_ms, port).expect("sable exited at start")
    }

    /// Starts sable and waits for its ports; `None` if it exited first.
    fn try_start_on(dir: &Path, delay_ms: u32, port: u16) -> Option<Broker> {
        let child = Command::new(env!("CARGO_BIN_EXE_sable"))
            .args(["--shards", &SHARDS.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--group-initial-rebalance-delay-ms", &delay_ms.to_string()])
            .arg("--data-dir")
            .arg(dir)
            // Quiet unless the test run asks for the broker's log.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sable");
        let mut b = Broker {
            child: Some(child),
            port,
            data_dir: dir.to_path_buf(),
            delay_ms,
            _tmp: None,
        };
        let started = Instant::now();
        while !(0..=SHARDS).all(|i| TcpStream::connect(("127.0.0.1", port + i)).is_ok()) {
            if let Some(status) = b.child.as_mut().unwrap().try_wait().expect("try_wait") {
                eprintln!("sable exited at start on port {port}: {status}");
                b.child = None;
                return None;
            }
            assert!(started.elapsed() < START_TIMEOUT, "sable did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(b)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no clean stop) and start again on the same data dir and a new port range.
    pub fn kill_and_restart(mut self) -> Broker {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL sable");
            c.wait().expect("wait");
        }
        let tmp = self._tmp.take();
        let mut b = Broker::start_in(&self.data_dir, self.delay_ms);
        b._tmp = tmp;
        b
    }
}

impl Broker {
    /// SIGKILL and start again on the same data dir and the same ports, so connected clients
    /// reconnect to it.
    pub fn kill_and_restart_in_place(mut self) -> Broker {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL sable");
            c.wait().expect("wait");
        }
        let tmp = self._tmp.take();
        let mut b = Broker::start_on(&self.data_dir, self.delay_ms, self.port);
        b._tmp = tmp;
        b
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The shard coordinating `group_id`: the same FNV-1a as `sable::group::coordinator_shard`,
/// computed here independently so a change there shows up as a test failure.
pub fn coordinator_shard(group_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in group_id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(SHARDS)) as u16
}

/// A group id starting with `prefix` whose coordinator is `shard`.
pub fn group_on_shard(prefix: &str, shard: u16) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|g| coordinator_shard(g) == shard)
        .expect("some id hashes to every shard")
}

pub fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin client")
}

pub fn opts() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(TIMEOUT))
}

pub fn create_topic(b: &Broker, topic: &str, partitions: i32) {
    let a = admin(b);
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = futures_block(a.create_topics([&t], &opts())).expect("create_topics");
    assert!(r[0].is_ok(), "{r:?}");
}

/// Runs a future to completion on a small runtime (the tests themselves are synchronous:
/// rdkafka's BaseConsumer is polled from the test thread).
pub fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The payload of record `i` of `partition`: consumers check it against where it came from.
pub fn payload(partition: i32, i: usize) -> String {
    format!("p{partition}-r{i}")
}

/// Produces records `from..to` to every partition, acks=all, and waits for every delivery.
pub fn produce(b: &Broker, topic: &str, partitions: i32, from: usize, to: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
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
                        assert!(
                            e.rdkafka_error_code()
                                == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                            "{e}"
                        );
                        rec = r;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    p.flush(TIMEOUT).expect("every record delivered");
    let stats_failed = p.in_flight_count();
    assert_eq!(stats_failed, 0, "records still in flight");
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
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
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
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("librdkafka {level:?} {fac}: {log_message}");
    }
}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            self.events
                .lock()
                .unwrap()
                .push(Event::Revoke(partitions_of(tpl)));
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            self.events
                .lock()
                .unwrap()
                .push(Event::Assign(partitions_of(tpl)));
        }
    }
}

pub type GroupConsumer = BaseConsumer<Recorder>;

/// A consumer in `group` subscribed to `topic`, committing by hand, reading from the start.
/// `extra` overrides or adds settings (assignor, group.instance.id, session.timeout.ms).
pub fn consumer(b: &Broker, group: &str, topic: &str, extra: &[(&str, &str)]) -> GroupConsumer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "2000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    let c: GroupConsumer = cfg
        .create_with_context(Recorder::default())
        .expect("consumer");
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
                Some(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                        | rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                )
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
        match c.commit_message(&m, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => return Some(got),
            // The group is between JoinGroup and SyncGroup (Kafka refuses commits in
            // CompletingRebalance): a cooperative member keeps its partitions, so it retries.
            Err(e)
                if e.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::RebalanceInProgress) =>
            {
                assert!(started.elapsed() < WAIT_CAP, "rebalance never completed");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("commit of {}/{} refused: {e}", got.partition, got.offset);
                return None;
            }
        }
    }
}

/// Polls every consumer in turn, committing each record, until `done` holds on what each one
/// received so far; panics after `WAIT_CAP`.
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
            started.elapsed() < WAIT_CAP,
            "timed out waiting for {what}; got {:?} records per consumer",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (c, g) in consumers.iter().zip(got.iter_mut()) {
            if let Some(r) = poll_commit(c, Duration::from_millis(20)) {
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

/// Committed offsets of `partitions` of `topic` for the group of `c` (-1001 = none).
pub fn committed(c: &GroupConsumer, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let r = c
        .committed_offsets(tpl, TIMEOUT)
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
            started.elapsed() < WAIT_CAP,
            "timed out waiting for {what}; assignments {a:?}"
        );
        for c in consumers {
            if let Some(r) = c.poll(Duration::from_millis(20)) {
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
