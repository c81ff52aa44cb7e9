//! The harness every integration test shares: it runs the real `sable` binary on free ports with a
//! temporary data directory and hands out rdkafka clients pointed at it.
//!
//! Every wait here is bounded, so a broken broker fails a test within seconds instead of hanging
//! the suite; on failure the broker's stderr is printed.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod wire;

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
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
use tempfile::TempDir;

/// Shards every test broker runs unless a test passes its own `--shards`.
pub const SHARDS_DEFAULT: u16 = 2;
/// How long the broker may take to start, stop, or answer a client before the test fails.
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a consumer keeps polling after it has what it expected, to catch extra records.
const CONSUME_EXTRA_WAIT: Duration = Duration::from_millis(1000);
/// Ports are drawn below Linux's default ephemeral range (32768..60999), so client sockets of
/// parallel tests never sit on a port we are about to hand to a broker.
const PORT_RANGE_LOW: u16 = 20_000;
const PORT_RANGE_HIGH: u16 = 32_000;
const PORT_PICK_ATTEMPTS_MAX: usize = 200;
/// Lines of the broker's stderr printed when a test fails.
const STDERR_TAIL_LINES: usize = 200;

/// Base ports handed out in this test process, so two brokers of parallel tests never overlap even
/// while a picked port is briefly unbound between the bind test and the broker's own bind.
static PORTS_TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

/// A running `sable` process, its ports and its data directory.
pub struct Broker {
    child: Option<Child>,
    base_port: u16,
    shards: u16,
    extra_args: Vec<String>,
    /// Holds `data/` and `broker.stderr`; removed when the broker is dropped.
    dir: TempDir,
    /// Set once a failure message carried the stderr, so `Drop` does not print it again.
    stderr_printed: Cell<bool>,
    /// stdout and stderr go to /dev/full: every log write fails, as on a full disk.
    log_to_dev_full: bool,
}

impl Broker {
    /// A broker with two shards and every other option at its default.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with two shards (unless `args` holds `--shards`) and the extra `args`.
    pub fn start_with(args: &[&str]) -> Broker {
        Broker::launch(args, false)
    }

    /// As `start_with`, but the broker's stdout and stderr are /dev/full, where every write fails
    /// with ENOSPC: a broker whose log sits on its own full data disk.
    pub fn start_logging_to_dev_full(args: &[&str]) -> Broker {
        Broker::launch(args, true)
    }

    fn launch(args: &[&str], log_to_dev_full: bool) -> Broker {
        let shards = match args.iter().position(|a| *a == "--shards") {
            Some(i) => args[i + 1].parse().expect("--shards takes a number"),
            None => SHARDS_DEFAULT,
        };
        let dir = tempfile::Builder::new()
            .prefix("sable-test-")
            .tempdir()
            .expect("create temp dir");
        let mut broker = Broker {
            child: None,
            base_port: pick_base_port(shards),
            shards,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            dir,
            stderr_printed: Cell::new(false),
            log_to_dev_full,
        };
        broker.spawn();
        broker.wait_ready();
        broker
    }

    /// The bootstrap address, `127.0.0.1:P`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.base_port)
    }

    /// The bootstrap port P; shard i listens on P + 1 + i.
    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("broker.stderr")
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped, so the
        // number cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = child.try_wait().expect("wait for broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "broker did not exit within {WAIT_MAX:?} of SIGTERM"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clean shutdown (which must exit 0), then a new process on the same ports and data dir.
    pub fn restart(&mut self) {
        let status = self.stop();
        if !status.success() {
            self.fail(&format!(
                "broker exited with {status} after SIGTERM, want exit 0"
            ));
        }
        self.start_again();
    }

    /// SIGKILL: no chance to flush or write a clean-shutdown marker.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is running");
        child.kill().expect("SIGKILL broker");
        child.wait().expect("reap broker");
    }

    /// Starts a stopped broker again on the same ports and data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker is still running");
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let stderr = if self.log_to_dev_full {
            OpenOptions::new().write(true).open("/dev/full")
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.stderr_path())
        }
        .expect("open broker stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sable"));
        // A SABLE_* variable in the developer's shell would silently change what we test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SABLE_") {
                cmd.env_remove(key);
            }
        }
        // Plain text in the captured log: no ANSI colour codes.
        cmd.env("NO_COLOR", "1");
        // Run from the temp dir with a relative data dir, as `cargo run --release` uses ./data:
        // relative paths once broke every directory open (glommio resolves none of them).
        cmd.current_dir(self.dir.path())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg("data");
        if !self.extra_args.iter().any(|a| a == "--shards") {
            cmd.arg("--shards").arg(self.shards.to_string());
        }
        cmd.args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup stderr file"))
            .stderr(stderr);
        self.child = Some(cmd.spawn().expect("spawn sable"));
    }

    /// Waits until the bootstrap port and every shard port accept TCP and a Metadata request
    /// through librdkafka lists one broker per shard.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT_MAX;
        let ports: Vec<u16> = (0..=self.shards).map(|i| self.base_port + i).collect();
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                self.check_alive_before(deadline, &format!("port {port} to accept TCP"));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let consumer = self.consumer();
        loop {
            let last = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) if md.brokers().len() == usize::from(self.shards) => return,
                Ok(md) => format!("Metadata listed {} brokers", md.brokers().len()),
                Err(e) => format!("Metadata failed: {e}"),
            };
            self.check_alive_before(deadline, &format!("Metadata to succeed ({last})"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive_before(&mut self, deadline: Instant, what: &str) {
        let child = self.child.as_mut().expect("broker is running");
        if let Some(status) = child.try_wait().expect("wait for broker") {
            self.child = None;
            self.fail(&format!(
                "broker exited with {status} while waiting for {what}"
            ));
        }
        if Instant::now() > deadline {
            self.fail(&format!("timed out after {WAIT_MAX:?} waiting for {what}"));
        }
    }

    /// Panics with `why`, what the broker's threads are blocked in (if it still runs), and the
    /// tail of its stderr.
    pub fn fail(&self, why: &str) -> ! {
        self.stderr_printed.set(true);
        panic!("{why}\n{}{}", self.thread_states(), self.stderr_tail());
    }

    /// One line per broker thread: name, scheduler state and kernel wait channel, read from
    /// /proc. A shard parked in `io_cqring_wait` while work is pending points at a lost wakeup.
    fn thread_states(&self) -> String {
        let Some(child) = &self.child else {
            return String::new();
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", child.id())) else {
            return String::new();
        };
        let mut lines = vec!["----- sable threads (name, state, wchan) -----".to_string()];
        for task in tasks.flatten() {
            let read = |f: &str| {
                std::fs::read_to_string(task.path().join(f))
                    .map_or_else(|_| "?".into(), |s| s.trim().to_string())
            };
            // The state is the field after the parenthesised name in /proc/<pid>/task/<tid>/stat.
            let stat = read("stat");
            let state = stat
                .rsplit(") ")
                .next()
                .and_then(|r| r.split(' ').next())
                .unwrap_or("?")
                .to_string();
            lines.push(format!("{} {} {}", read("comm"), state, read("wchan")));
        }
        lines.push(String::new());
        lines.join("\n")
    }

    pub fn stderr_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.stderr_path()) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
        format!(
            "----- sable stderr (last {} lines of {}) -----\n{}\n----- end of sable stderr -----",
            tail.len(),
            lines.len(),
            tail.join("\n")
        )
    }

    /// Client settings every client of this broker shares.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            // The broker listens on 127.0.0.1 only.
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "20000");
        config
    }

    /// An acks=all producer; `extra` overrides or adds settings.
    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config.create().expect("create producer")
    }

    /// Settings for a consumer used with manual `assign`. librdkafka insists on a `group.id`,
    /// but these consumers never subscribe or commit: consumer groups are not what they check.
    fn consumer_config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", "sable-tests-unused")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config
    }

    pub fn consumer_with(&self, extra: &[(&str, &str)]) -> BaseConsumer {
        self.consumer_config(extra)
            .create()
            .expect("create consumer")
    }

    pub fn consumer(&self) -> BaseConsumer {
        self.consumer_with(&[])
    }

    /// The async flavour of `consumer_with`, polled by the tokio runtime of the test.
    pub fn stream_consumer(&self, extra: &[(&str, &str)]) -> StreamConsumer {
        self.consumer_config(extra)
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

impl Drop for Broker {
    fn drop(&mut self) {
        // Read the threads before the kill: a test that timed out waiting for the broker wants
        // to know where the broker was stuck.
        if std::thread::panicking() && !self.stderr_printed.get() {
            eprintln!("{}{}", self.thread_states(), self.stderr_tail());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// AdminOptions with a bounded wait.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(WAIT_MAX))
}

/// A base port P with P..=P+shards all free, not handed to another broker of this process.
fn pick_base_port(shards: u16) -> u16 {
    let span = shards + 1;
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..PORT_PICK_ATTEMPTS_MAX {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(attempt);
        h.write_u32(std::process::id());
        let range = u64::from(PORT_RANGE_HIGH - PORT_RANGE_LOW - span);
        let base = PORT_RANGE_LOW + u16::try_from(h.finish() % range).expect("port fits u16");
        let overlaps = taken
            .iter()
            .any(|&(t, t_span)| base < t + t_span && t < base + span);
        if overlaps {
            continue;
        }
        let all_free = (base..base + span)
            .all(|port| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
        if all_free {
            taken.push((base, span));
            return base;
        }
    }
    panic!("found no {span} consecutive free ports in {PORT_RANGE_LOW}..{PORT_RANGE_HIGH}");
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
        match tokio::time::timeout(WAIT_MAX * 2, f).await {
            Ok(Ok(Ok(delivery))) => deliveries.push(delivery),
            Ok(Ok(Err((e, _)))) => panic!("delivery failed: {e}"),
            Ok(Err(_)) => panic!("delivery future cancelled"),
            Err(_) => panic!("no delivery report within {:?}", WAIT_MAX * 2),
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
    match tokio::time::timeout(WAIT_MAX * 2, f).await {
        Ok(Ok(result)) => result.map_err(|(e, _)| e),
        Ok(Err(_)) => panic!("delivery future cancelled"),
        Err(_) => panic!("no delivery report within {:?}", WAIT_MAX * 2),
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
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => got.push(m.detach()),
            Some(Err(e)) => panic!("consumer error after {} records: {e}", got.len()),
        }
    }
    let extra_until = Instant::now() + CONSUME_EXTRA_WAIT;
    while Instant::now() < extra_until {
        match consumer.poll(Duration::from_millis(100)) {
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

/// Deterministic bytes that are not valid UTF-8 and not trivially compressible.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: enough to defeat compression, no dependency needed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// A topic name unique within the test process, readable in broker logs.
pub fn topic_name(prefix: &str) -> String {
    static SEQ: Mutex<u32> = Mutex::new(0);
    let mut seq = SEQ.lock().unwrap_or_else(|e| e.into_inner());
    *seq += 1;
    format!("{prefix}-{}", *seq)
}

/// Distinct values of an iterator, for "which brokers lead" style checks.
pub fn distinct<T: std::hash::Hash + Eq, I: IntoIterator<Item = T>>(items: I) -> HashSet<T> {
    items.into_iter().collect()
}
