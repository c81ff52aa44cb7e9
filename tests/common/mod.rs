//! The harness every integration test shares: it runs the real `sable` binary on free ports with a
//! temporary data directory, stops, restarts and SIGKILLs it, and hands out clients pointed at
//! it: rdkafka clients (`kafka`, `group`), raw Kafka frames (`wire`, hand-encoded; `codec`, through
//! the kafka-protocol crate) and the metrics endpoint (`metrics`).
//!
//! Every wait here is bounded, so a broken broker fails a test within seconds instead of hanging
//! the suite; on failure the broker's thread states and the tail of its stderr are printed.
//!
//! The broker's stderr goes to a file in its temp dir. Its log level is `info`, or what
//! `SABLE_TEST_LOG` says (as `RUST_LOG` would): tests read the log, so a `RUST_LOG` meant for
//! something else must not change it.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod codec;
pub mod group;
pub mod kafka;
pub mod metrics;
mod ports;
pub mod wire;

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tempfile::TempDir;

// The rdkafka helpers are the ones most tests use: `common::produce_all` and so on.
#[allow(unused_imports)]
pub use kafka::*;

/// Shards every test broker runs unless a test passes its own `--shards`.
pub const SHARDS_DEFAULT: u16 = 2;
/// How long the broker may take to start, stop, or answer a client before the test fails.
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a killed or stopped broker's ports may keep accepting before the test fails.
const PORTS_CLOSE_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long one readiness probe may wait for a TCP connection.
const CONNECT_PROBE_WAIT: Duration = Duration::from_millis(200);
/// Pause between two readiness probes of a port.
const PORT_PROBE_PAUSE: Duration = Duration::from_millis(50);
/// How long one Metadata request of the readiness check may take.
const METADATA_PROBE_WAIT: Duration = Duration::from_secs(2);
/// Pause between two Metadata requests of the readiness check.
const METADATA_PROBE_PAUSE: Duration = Duration::from_millis(100);
/// Pause between two looks at whether the broker exited after SIGTERM.
const EXIT_POLL_PAUSE: Duration = Duration::from_millis(20);
/// Pause between two probes of a port that should stop accepting.
const PORT_CLOSE_PROBE_PAUSE: Duration = Duration::from_millis(5);
/// Lines of the broker's stderr printed when a test fails.
const STDERR_TAIL_LINES: usize = 200;
/// The broker's log level unless `SABLE_TEST_LOG` says otherwise.
const LOG_LEVEL_DEFAULT: &str = "info";
/// The test process's variable that sets the broker's `RUST_LOG`.
const LOG_LEVEL_VAR: &str = "SABLE_TEST_LOG";
/// The data dir the broker is given, relative to its working directory (its temp dir).
const DATA_DIR_RELATIVE: &str = "data";
/// The broker's stderr (and stdout), in its temp dir; appended to by every run.
const STDERR_FILE: &str = "broker.stderr";

/// How to start a broker, for tests that need more than `Broker::start_with`'s extra arguments.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Extra command-line arguments; `--shards` among them replaces `SHARDS_DEFAULT`.
    args: Vec<String>,
    /// stdout and stderr go to /dev/full: every log write fails, as on a full disk.
    log_to_dev_full: bool,
    /// Also serve Prometheus metrics on a port of its own.
    metrics: bool,
    /// Where `data` (still given to the broker as the relative `data`) really lives.
    data_on: Option<PathBuf>,
}

impl Launch {
    /// A broker with `args` added to the harness's own.
    pub fn new(args: &[&str]) -> Launch {
        Launch {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Launch::default()
        }
    }

    /// stdout and stderr are /dev/full, where every write fails with ENOSPC: a broker whose log
    /// sits on its own full data disk.
    pub fn log_to_dev_full(mut self) -> Launch {
        self.log_to_dev_full = true;
        self
    }

    /// Serves metrics on a free port of its own (see `Broker::metrics_addr`).
    pub fn with_metrics(mut self) -> Launch {
        self.metrics = true;
        self
    }

    /// Keeps the data in `dir` (say a small tmpfs): the broker's `data` is a symlink to it, so the
    /// broker is still given the relative `--data-dir data`.
    pub fn data_on(mut self, dir: &Path) -> Launch {
        self.data_on = Some(dir.to_path_buf());
        self
    }

    /// Starts the broker and waits until it serves.
    pub fn start(self) -> Broker {
        Broker::launch(self)
    }

    /// The shard count `args` asks for, or the harness's default.
    fn shards(&self) -> u16 {
        match self.args.iter().position(|a| a == "--shards") {
            Some(i) => self
                .args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .expect("--shards takes a number"),
            None => SHARDS_DEFAULT,
        }
    }
}

/// The ports one broker listens on.
#[derive(Clone, Copy, Debug)]
struct Ports {
    /// The bootstrap port P; shard i listens on P + 1 + i.
    base: u16,
    shards: u16,
    /// Where metrics are served, when they are.
    metrics: Option<u16>,
}

impl Ports {
    /// Bootstrap and shard ports, with the metrics port right after them when asked for.
    fn pick(shards: u16, metrics: bool) -> Ports {
        let kafka_ports = shards + 1;
        let base = ports::pick_consecutive_free(kafka_ports + u16::from(metrics));
        Ports {
            base,
            shards,
            metrics: metrics.then_some(base + kafka_ports),
        }
    }

    /// Every port the broker listens on.
    fn all(&self) -> Vec<u16> {
        (self.base..=self.base + self.shards)
            .chain(self.metrics)
            .collect()
    }
}

/// A running `sable` process, its ports and its data directory.
pub struct Broker {
    child: Option<Child>,
    ports: Ports,
    launch: Launch,
    /// Holds `data/` and `broker.stderr`; removed when the broker is dropped.
    dir: TempDir,
    /// Set once a failure message carried the stderr, so `Drop` does not print it again.
    stderr_printed: Cell<bool>,
}

impl Broker {
    /// A broker with two shards and every other option at its default.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with two shards (unless `args` holds `--shards`) and the extra `args`.
    pub fn start_with(args: &[&str]) -> Broker {
        Launch::new(args).start()
    }

    /// As `start_with`, but the broker's stdout and stderr are /dev/full, where every write fails
    /// with ENOSPC: a broker whose log sits on its own full data disk.
    pub fn start_logging_to_dev_full(args: &[&str]) -> Broker {
        Launch::new(args).log_to_dev_full().start()
    }

    fn launch(launch: Launch) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("sable-test-")
            .tempdir()
            .expect("create temp dir");
        if let Some(target) = &launch.data_on {
            std::fs::create_dir_all(target).expect("create the data dir's target");
            std::os::unix::fs::symlink(target, dir.path().join(DATA_DIR_RELATIVE))
                .expect("link data to its target");
        }
        let mut broker = Broker {
            child: None,
            ports: Ports::pick(launch.shards(), launch.metrics),
            launch,
            dir,
            stderr_printed: Cell::new(false),
        };
        broker.spawn();
        broker.wait_ready();
        broker
    }

    /// The bootstrap address, `127.0.0.1:P`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.base)
    }

    /// The bootstrap address as a socket address.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.ports.base)
    }

    /// The bootstrap port P; shard i listens on P + 1 + i.
    pub fn base_port(&self) -> u16 {
        self.ports.base
    }

    /// The port of `shard` alone (the one Metadata advertises for it).
    pub fn shard_port(&self, shard: u16) -> u16 {
        assert!(shard < self.ports.shards, "no shard {shard}");
        self.ports.base + 1 + shard
    }

    /// The address of `shard` alone.
    pub fn shard_addr(&self, shard: u16) -> SocketAddr {
        loopback(self.shard_port(shard))
    }

    pub fn shards(&self) -> u16 {
        self.ports.shards
    }

    /// Where metrics are served; panics unless the broker was launched `with_metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        loopback(
            self.ports
                .metrics
                .expect("broker launched without metrics: use Launch::with_metrics"),
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(DATA_DIR_RELATIVE)
    }

    /// The directory of one partition's log.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir().join(format!("{topic}-{partition}"))
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(STDERR_FILE)
    }

    /// The running broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is running").id()
    }

    /// Resident set size of the broker in KiB (/proc/PID/status VmRSS): memory a hostile client
    /// must not be able to grow.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM and waits for the process to exit and its ports to close; returns its status.
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
                self.wait_ports_closed();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "broker did not exit within {WAIT_MAX:?} of SIGTERM"
                ));
            }
            std::thread::sleep(EXIT_POLL_PAUSE);
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

    /// SIGKILL: no chance to flush or write a clean-shutdown marker. Returns once the ports are
    /// closed, so `start_again` can follow.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is running");
        child.kill().expect("SIGKILL broker");
        child.wait().expect("reap broker");
        self.wait_ports_closed();
    }

    /// Starts a stopped broker again on the same ports and data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker is still running");
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let stderr = if self.launch.log_to_dev_full {
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
        cmd.env("NO_COLOR", "1").env("RUST_LOG", log_level());
        // Run from the temp dir with a relative data dir, as `cargo run --release` uses ./data:
        // relative paths once broke every directory open (glommio resolves none of them).
        cmd.current_dir(self.dir.path())
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(DATA_DIR_RELATIVE);
        if !self.launch.args.iter().any(|a| a == "--shards") {
            cmd.arg("--shards").arg(self.ports.shards.to_string());
        }
        if let Some(port) = self.ports.metrics {
            cmd.arg("--metrics-listen").arg(loopback(port).to_string());
        }
        cmd.args(&self.launch.args)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup stderr file"))
            .stderr(stderr);
        self.child = Some(cmd.spawn().expect("spawn sable"));
    }

    /// Waits until the bootstrap, every shard and the metrics port accept TCP and a Metadata
    /// request through librdkafka lists one broker per shard.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT_MAX;
        for port in self.ports.all() {
            let addr = loopback(port);
            while TcpStream::connect_timeout(&addr, CONNECT_PROBE_WAIT).is_err() {
                self.check_alive_before(deadline, &format!("port {port} to accept TCP"));
                std::thread::sleep(PORT_PROBE_PAUSE);
            }
        }
        let consumer = self.consumer();
        loop {
            let last = match consumer.fetch_metadata(None, METADATA_PROBE_WAIT) {
                Ok(md) if md.brokers().len() == usize::from(self.ports.shards) => return,
                Ok(md) => format!("Metadata listed {} brokers", md.brokers().len()),
                Err(e) => format!("Metadata failed: {e}"),
            };
            self.check_alive_before(deadline, &format!("Metadata to succeed ({last})"));
            std::thread::sleep(METADATA_PROBE_PAUSE);
        }
    }

    /// A dead broker's listening sockets can outlive its process for a few ms (an io_uring
    /// accept in flight holds them until the ring is torn down), and with SO_REUSEPORT a new
    /// broker binds beside them: a readiness probe would then reach the dead one, and the next
    /// connection be reset. Waits until every port refuses.
    fn wait_ports_closed(&self) {
        let deadline = Instant::now() + PORTS_CLOSE_WAIT_MAX;
        for port in self.ports.all() {
            let addr = loopback(port);
            while TcpStream::connect_timeout(&addr, CONNECT_PROBE_WAIT).is_ok() {
                if Instant::now() > deadline {
                    self.fail(&format!(
                        "port {port} still accepts {PORTS_CLOSE_WAIT_MAX:?} after the broker exited"
                    ));
                }
                std::thread::sleep(PORT_CLOSE_PROBE_PAUSE);
            }
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

    /// Everything the broker wrote to stderr so far, over all its runs (empty when it logs to
    /// /dev/full): for tests that check what the broker logged.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.stderr_path()) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn stderr_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
        format!(
            "----- sable stderr (last {} lines of {}) -----\n{}\n----- end of sable stderr -----",
            tail.len(),
            lines.len(),
            tail.join("\n")
        )
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

/// `127.0.0.1:port`: the broker listens on loopback only.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The broker's `RUST_LOG`: `SABLE_TEST_LOG` if set, else `info`.
fn log_level() -> String {
    std::env::var(LOG_LEVEL_VAR).unwrap_or_else(|_| LOG_LEVEL_DEFAULT.to_string())
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
