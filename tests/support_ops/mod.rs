//! The ops tests' own harness: the real `sable` binary with 2 shards on a free port range and a
//! temp data dir, plus its metrics endpoint. Dropping a `Broker` kills the process.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHARDS: u16 = 2;
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A base port with base..=base+SHARDS free, and a separate free metrics port.
fn free_ports() -> (u16, u16) {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let base = l.local_addr().unwrap().port();
        if base > u16::MAX - SHARDS - 2 {
            continue;
        }
        let rest: Vec<_> = (1..=SHARDS + 1)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            // base + SHARDS + 1 is the metrics port: free as checked above.
            return (base, base + SHARDS + 1);
        }
    }
    panic!("no free port range");
}

impl Broker {
    pub fn start() -> Broker {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut b = Broker::start_in(&dir, &[]);
        b._tmp = Some(tmp);
        b
    }

    /// Starts on `dir` (kept by the caller: used for restarts) with extra flags.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Broker {
        let (port, metrics_port) = free_ports();
        let child = Command::new(env!("CARGO_BIN_EXE_sable"))
            .args(["--shards", &SHARDS.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--group-initial-rebalance-delay-ms", "0"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sable");
        let b = Broker {
            child: Some(child),
            port,
            metrics_port,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        let ports: Vec<u16> = (0..=SHARDS)
            .map(|i| self.port + i)
            .chain([self.metrics_port])
            .collect();
        while !ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            assert!(started.elapsed() < START_TIMEOUT, "sable did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: a clean stop (flush, clean markers).
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().expect("wait");
            assert!(status.success(), "sable exited with {status}");
        }
    }

    /// GET /metrics: the body.
    pub fn scrape(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("metrics response");
        let (head, body) = out.split_once("\r\n\r\n").expect("http head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
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

/// Prometheus text -> (name{labels}, value) samples.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_string(), value.parse().expect("numeric value"))
        })
        .collect()
}

/// Sum of the samples of `family` whose labels contain every `label` ("api=\"Produce\"").
pub fn sum(samples: &[(String, f64)], family: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| {
            n.split('{').next() == Some(family) && labels.iter().all(|l| n.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}
