//! `--tcp-congestion-control` against the real binary: the broker's side of every client
//! connection uses the algorithm asked for (read back with `ss`, from iproute2), and a name the
//! kernel does not offer stops the broker at start with what it does offer.

mod common;

use std::process::Command;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use sable::net::congestion;

use common::Broker;

/// The algorithm new sockets get when nothing is set.
fn system_default() -> String {
    congestion::system_default().expect("read net.ipv4.tcp_congestion_control")
}

/// An algorithm other than the system's default, so that finding it proves the broker set it:
/// reno is built into every kernel; cubic is the kernel's own default where reno is the system's.
fn an_algorithm_not_the_default() -> &'static str {
    if system_default() == "reno" {
        "cubic"
    } else {
        "reno"
    }
}

/// (local port, algorithm) of every established TCP socket, from `ss -tin`.
fn established_sockets() -> Vec<(u16, String)> {
    let out = Command::new("ss")
        .args(["-H", "-t", "-i", "-n", "state", "established"])
        .output()
        .expect("run ss (iproute2; .ci/run installs it)");
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut sockets = Vec::new();
    let mut port = None;
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            // The socket's info line; its first word is the congestion control.
            if let (Some(p), Some(cc)) = (port.take(), line.split_whitespace().next()) {
                sockets.push((p, cc.to_string()));
            }
        } else {
            // "Recv-Q Send-Q Local:Port Peer:Port"
            port = line
                .split_whitespace()
                .nth(2)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|p| p.parse().ok());
        }
    }
    sockets
}

/// The algorithms of the broker's side of a producer's connections, once it has produced.
async fn broker_side_of_a_producer(b: &Broker) -> Vec<(u16, String)> {
    let producer = b.producer(&[]);
    producer
        .send(
            FutureRecord::<(), _>::to("cc").payload("x"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let ports: Vec<u16> = std::iter::once(b.base_port())
        .chain((0..b.shards()).map(|s| b.shard_port(s)))
        .collect();
    let broker_side: Vec<(u16, String)> = established_sockets()
        .into_iter()
        .filter(|(port, _)| ports.contains(port))
        .collect();
    assert!(
        !broker_side.is_empty(),
        "the broker's connections to the producer are established: {broker_side:?}"
    );
    drop(producer);
    broker_side
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_use_the_congestion_control_asked_for() {
    let name = an_algorithm_not_the_default();
    let b = Broker::start_with(&["--tcp-congestion-control", name]);
    for (port, cc) in broker_side_of_a_producer(&b).await {
        assert_eq!(cc, name, "connection on port {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_keep_the_system_algorithm_when_none_is_asked_for() {
    let b = Broker::start();
    let want = system_default();
    for (port, cc) in broker_side_of_a_producer(&b).await {
        assert_eq!(cc, want, "connection on port {port}");
    }
}

#[test]
fn an_unknown_congestion_control_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sable"))
        .args([
            "--tcp-congestion-control",
            "no-such-cc",
            "--listen",
            "127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SABLE_TCP_CONGESTION_CONTROL")
        .output()
        .expect("run sable");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG; stderr: {stderr}");
    assert!(
        stderr.contains("--tcp-congestion-control no-such-cc") && stderr.contains("available:"),
        "says what was wrong and what is offered: {stderr}"
    );
}
