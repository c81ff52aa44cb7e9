//! The Prometheus endpoint against the real binary: it parses, and values move with traffic.

mod common;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::producer::FutureRecord;

use common::metrics::{parse_metrics, sum};
use common::{Broker, Launch, WAIT_MAX};

/// A broker that serves metrics.
fn start_broker() -> Broker {
    Launch::new(&[]).with_metrics().start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let b = start_broker();
    let before = parse_metrics(&b.scrape());
    for shard in ["shard=\"0\"", "shard=\"1\""] {
        assert!(
            before
                .iter()
                .any(|(n, _)| n.starts_with("sable_partitions{") && n.contains(shard)),
            "every shard reports: {before:?}"
        );
    }
    let a = b.admin();
    let t = NewTopic::new("m", 2, TopicReplication::Fixed(1));
    assert!(
        a.create_topics([&t], &common::admin_options())
            .await
            .unwrap()[0]
            .is_ok()
    );
    let p = b.producer(&[]);
    for i in 0..20 {
        p.send(
            FutureRecord::<(), _>::to("m")
                .partition(i % 2)
                .payload("hello metrics"),
            WAIT_MAX,
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("{e}"));
    }
    let after = parse_metrics(&b.scrape());
    let produce = |s: &[(String, f64)]| sum(s, "sable_requests_total", &["api=\"Produce\""]);
    assert!(
        produce(&after) >= produce(&before) + 1.0,
        "Produce requests counted"
    );
    assert!(sum(&after, "sable_records_in_total", &[]) >= 20.0);
    assert!(sum(&after, "sable_log_size_bytes", &[]) > sum(&before, "sable_log_size_bytes", &[]));
    assert_eq!(sum(&after, "sable_partitions", &[]), 2.0);
    assert!(sum(&after, "sable_fsyncs_total", &[]) >= 1.0);
    assert!(
        sum(&after, "sable_received_bytes_total", &[])
            > sum(&before, "sable_received_bytes_total", &[])
    );
    assert!(sum(&after, "sable_sent_bytes_total", &[]) > 0.0);
    assert!(
        sum(
            &after,
            "sable_request_latency_seconds_count",
            &["api=\"Produce\""]
        ) >= 1.0
    );
    assert!(sum(&after, "sable_mesh_messages_received_total", &[]) >= 1.0);
    assert!(sum(&after, "sable_connections_active", &[]) >= 1.0);
    // The producer's acks=all sends, one at a time, are lone durable writes: a background task
    // writes zeros past their partitions' ends, and the gauge shows them.
    let started = std::time::Instant::now();
    loop {
        let now = parse_metrics(&b.scrape());
        if sum(&now, "sable_log_write_ahead_bytes", &[]) > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < WAIT_MAX,
            "no zeros written ahead: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn metrics_endpoint_refuses_other_paths() {
    let b = start_broker();
    let out = b.metrics_exchange(b"GET / HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
}
