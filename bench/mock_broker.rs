//! A stand-in Kafka broker for checking sable-bench's wire client when no real broker is at
//! hand: librdkafka's in-process mock cluster (via the `rdkafka` dev-dependency).
//!
//! It serves ApiVersions (v0..=2, so it also exercises the KIP-511 fallback), Metadata, Produce,
//! Fetch and ListOffsets, but not CreateTopics: topics are created here up front. It is a
//! protocol check only; its speed says nothing about any broker.
//!
//! Usage: cargo run --release --example mock-broker -- [BROKERS] [TOPIC:PARTITIONS ...]
//! Prints the bootstrap address on stdout and serves until killed.

use std::io::Write;

use rdkafka::mocking::MockCluster;

fn main() {
    let mut args = std::env::args().skip(1);
    let brokers: i32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let cluster = MockCluster::new(brokers).expect("mock cluster");
    for spec in args {
        let (topic, partitions) = spec.split_once(':').unwrap_or((spec.as_str(), "2"));
        let partitions: i32 = partitions.parse().expect("partition count");
        cluster
            .create_topic(topic, partitions, 1)
            .expect("create topic");
    }
    println!("{}", cluster.bootstrap_servers());
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::park();
    }
}
