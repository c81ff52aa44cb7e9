//! A small harness for the safety tests (crash, idempotence, hostile input, retention): runs the
//! real `sable` binary with two shards on a free port range and a temp data dir, and can SIGKILL
//! and restart it on the same ports and data. Dropping it kills the broker.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const SHARDS: u16 = 2;

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
    /// Data directory other than `<dir>/data` (a small tmpfs, for disk-full tests).
    pub data_dir_override: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

/// A base port P such that P..=P+SHARDS are free right now.
fn free_port_range() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for attempt in 0..1000u64 {
        let base = 20_000
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % 40_000) as u16;
        let all_free = (0..=SHARDS).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Broker {
        Broker::start_in(args, None)
    }

    pub fn start_in(args: &[&str], data_dir: Option<PathBuf>) -> Broker {
        let mut broker = Broker {
            port: free_port_range(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            data_dir_override: data_dir,
            child: None,
            starts: 0,
        };
        broker.spawn();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir_override
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("broker-{}.log", self.starts)))
                .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sable"))
            .arg("--shards")
            .arg(SHARDS.to_string())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("SABLE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn sable");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the bootstrap port and every shard port accept connections.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..=SHARDS {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port + i));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("sable exited during start: {status}; log:\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "sable did not start; log:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("broker-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// SIGKILL: no clean shutdown, no flush, no markers.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.wait_ports_closed();
        }
    }

    /// A dead broker's listening sockets can outlive its process for a few ms (an io_uring
    /// accept in flight holds them until the ring is torn down), and with SO_REUSEPORT a new
    /// broker binds beside them: a readiness probe would then reach the dead one, and the next
    /// connection be reset. Wait until every port refuses.
    fn wait_ports_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..=SHARDS {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port + i));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "port {} still accepts after exit",
                    addr.port()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: the pid is our own child's, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            self.wait_ports_closed();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill or stop first");
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Resident set size of the broker in KiB (/proc/PID/status VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir().join(format!("{topic}-{partition}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(suffix));
    files.sort();
    files
}

pub mod kafka {
    //! rdkafka helpers.
    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    pub fn config(bootstrap: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        c
    }

    pub async fn create_topic(
        bootstrap: &str,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) {
        let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().expect("admin");
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&[topic], &opts)
            .await
            .expect("create_topics");
        for r in results {
            r.expect("topic created");
        }
    }
}

pub mod read {
    //! Reading a partition back with a plain (assigned, group-less) consumer.
    use std::time::{Duration, Instant};

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    /// Offsets (high watermark) of a partition, retried while the broker restarts.
    pub fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
        let consumer: BaseConsumer = super::kafka::config(bootstrap)
            .set("group.id", "sable-safety-reader")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                Ok((_, high)) => return high,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "watermarks of {topic}-{partition}: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Every record of the partition below its high watermark: (offset, value).
    pub fn all_records(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
        let high = high_watermark(bootstrap, topic, partition);
        let consumer: BaseConsumer = super::kafka::config(bootstrap)
            .set("group.id", "sable-safety-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.last().map_or(0, |(o, _)| o + 1) < high {
            assert!(
                Instant::now() < deadline,
                "read {} of {high} records",
                out.len()
            );
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
                Some(Err(e)) => eprintln!("consumer error (retrying): {e}"),
                None => {}
            }
        }
        out
    }
}

pub mod wire {
    //! Raw Kafka requests over a std TcpStream, encoded with the kafka-protocol crate.
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    pub fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A whole frame (length prefix included) for `body` at `version`.
    pub fn frame<T: Encodable>(
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &T,
    ) -> Vec<u8> {
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("safety")))
            .encode(&mut b, key.request_header_version(version))
            .unwrap();
        body.encode(&mut b, version).unwrap();
        let mut out = (b.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&b);
        out
    }

    /// Reads one response frame: (correlation id, body after the header).
    pub fn read_response(
        s: &mut TcpStream,
        key: ApiKey,
        version: i16,
    ) -> std::io::Result<(i32, Bytes)> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        assert!((4..=64 << 20).contains(&len), "response length {len}");
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body)?;
        let correlation_id = i32::from_be_bytes(body[..4].try_into().unwrap());
        let skip = if key.response_header_version(version) >= 1 {
            5
        } else {
            4
        };
        Ok((correlation_id, Bytes::from(body).slice(skip..)))
    }

    pub fn try_call<Req: Encodable, Resp: Decodable>(
        s: &mut TcpStream,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        s.write_all(&frame(key, version, 7, req))?;
        let (correlation_id, mut body) = read_response(s, key, version)?;
        assert_eq!(correlation_id, 7);
        Ok(Resp::decode(&mut body, version).expect("decode response"))
    }

    pub fn call<Req: Encodable, Resp: Decodable>(
        s: &mut TcpStream,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        s.write_all(&frame(key, version, 7, req)).expect("send");
        let (correlation_id, mut body) = read_response(s, key, version).expect("response");
        assert_eq!(correlation_id, 7);
        Resp::decode(&mut body, version).expect("decode response")
    }
}
