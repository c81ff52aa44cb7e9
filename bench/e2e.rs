//! End-to-end latency: a fixed-rate producer and a long-polling consumer in one process.
//!
//! Every record value starts with the time the record was scheduled to be sent (nanoseconds on
//! the process's monotonic clock). The consumer subtracts it from the moment it holds the
//! record, so a stalled broker or a full in-flight window shows up as latency instead of
//! silently slowing the sender (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::batch::{self, BatchInfo};
use crate::cluster::{self, LATEST_TIMESTAMP};
use crate::consume::{FetchPlan, PartitionCursor, spawn_fetchers};
use crate::cores;
use crate::produce::{
    ProducerPlan, check_batch_shape, connect_producers, connection_plan, parse_acks,
};
use crate::report::{CpuProbe, Report};
use crate::stats::{self, Stats, now_ns};
use crate::wire::{self, Conn, WireError};
use crate::{Common, E2eArgs};

/// After the producers stop, how long the consumers may take to see every acknowledged record.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(15);
/// The scheduled time is a big-endian u64 at the start of each value.
const STAMP_BYTES: usize = 8;

pub fn run(common: &Common, args: &E2eArgs) -> wire::Result<Report> {
    if args.rate == 0 || args.record_size < STAMP_BYTES {
        return Err(WireError::Broker(format!(
            "e2e needs --rate > 0 and --record-size >= {STAMP_BYTES}"
        )));
    }
    let acks = parse_acks(&args.acks).map_err(WireError::Broker)?;
    check_batch_shape(args.record_size, args.batch_records)?;
    let mut boot = Conn::connect(&common.bootstrap)?;
    let layout = cluster::ensure_topic(&mut boot, &args.topic, args.partitions)?;
    let all: Vec<i32> = layout.leaders.keys().copied().collect();
    let starts = cluster::list_offsets(&layout, &all, LATEST_TIMESTAMP)?;
    let producers = connection_plan(&layout, args.connections, true);
    let consumers = connection_plan(&layout, 1, false);
    let rate_per_connection = args.rate as f64 / producers.len() as f64;
    let batch_interval_ns = (args.batch_records as f64 * 1e9 / rate_per_connection) as u64;
    say!(
        "e2e: topic {} partitions {} producer connections {} batch {} x {} B acks {} rate {}/s",
        args.topic,
        all.len(),
        producers.len(),
        args.batch_records,
        args.record_size,
        args.acks,
        args.rate
    );
    let cpus = common.cpus.as_deref();
    let produced = Stats::new(
        cores::worker_count(cpus, producers.len()),
        common.stop.clone(),
    );
    let consumed = Stats::new(
        cores::worker_count(cpus, consumers.len()),
        Arc::new(AtomicBool::new(false)),
    );
    let cpu = CpuProbe::start(common.broker_pid);
    let progress = stats::spawn_progress(consumed.clone(), "e2e");
    let consumer_handles = spawn_consumers(common, args, consumers, &starts, &consumed)?;
    let plans = producers
        .iter()
        .enumerate()
        .map(|(worker, (addr, partitions))| ProducerPlan {
            addr: addr.clone(),
            topic: args.topic.clone(),
            partitions: partitions.clone(),
            acks,
            records_per_batch: args.batch_records,
            record_bytes: args.record_size,
            batch_interval_ns,
            batches_max: None,
            inflight_max: args.inflight,
            stamp_values: true,
            worker,
        });
    let connected = connect_producers(plans.collect(), &produced)?;
    let started = Instant::now();
    let count = connected.len();
    let handles = cores::start_sessions(connected, count, cpus, &produced)?;
    let produce_elapsed = stats::run_workers(&produced, started, Some(args.duration), handles);
    let drained = drain(&produced, &consumed);
    // The run ends when the consumers hold every record, not when their last long poll expires.
    let consumed_elapsed = started.elapsed().as_secs_f64();
    consumed.stop.store(true, Ordering::Relaxed);
    stats::run_workers(&consumed, started, None, consumer_handles);
    consumed.finished.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let label = "scheduled send -> consumer has it, per record";
    let mut report = Report::from_stats("e2e", label, &consumed, consumed_elapsed, &cpu);
    add_producer_side(&mut report, &produced, produce_elapsed, drained);
    let settings = [
        ("target_rate", json!(args.rate)),
        ("acks", json!(args.acks)),
        ("batch_records", json!(args.batch_records)),
        ("record_size", json!(args.record_size)),
        ("partitions", json!(all.len())),
        ("producer_connections", json!(producers.len())),
    ];
    report
        .extra
        .extend(settings.map(|(k, v)| (k.to_string(), v)));
    Ok(report)
}

/// Waits until the consumers saw as many records as the producers got acknowledged (with
/// acks=0: as many as were written), up to DRAIN_WAIT_MAX. True if they did.
fn drain(produced: &Stats, consumed: &Stats) -> bool {
    let started = Instant::now();
    loop {
        let want = produced.records.load(Ordering::Relaxed);
        if consumed.records.load(Ordering::Relaxed) >= want {
            return true;
        }
        if started.elapsed() > DRAIN_WAIT_MAX {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One long-polling consumer per leader, from the offsets the partitions had at the start,
/// on the client's worker threads.
fn spawn_consumers(
    common: &Common,
    args: &E2eArgs,
    consumers: Vec<(String, Vec<i32>)>,
    starts: &BTreeMap<i32, i64>,
    consumed: &Arc<Stats>,
) -> wire::Result<Vec<thread::JoinHandle<()>>> {
    let mut plans = Vec::new();
    for (worker, (addr, partitions)) in consumers.into_iter().enumerate() {
        let cursors = partitions
            .iter()
            .map(|p| PartitionCursor::new(*p, starts[p], None))
            .collect();
        plans.push(FetchPlan {
            addr,
            topic: args.topic.clone(),
            cursors,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            min_bytes: 1,
            max_wait_ms: args.max_wait_ms,
            worker,
            record_fetch_latency: false,
        });
    }
    let on_batch = |worker| {
        let stats = consumed.clone();
        move |info: &BatchInfo, bytes: &[u8]| record_latencies(&stats, worker, info, bytes)
    };
    let cpus = common.cpus.as_deref();
    spawn_fetchers(plans, cpus, consumed, "e2e consumer", on_batch)
}

/// Records each record's latency from the send time stamped in its value to now, when the
/// consumer holds it.
fn record_latencies(stats: &Stats, worker: usize, info: &BatchInfo, bytes: &[u8]) {
    let held_ns = now_ns();
    if info.is_compressed {
        stats.error("e2e: compressed batch; cannot read the embedded send times");
        return;
    }
    let mut latencies = Vec::with_capacity(info.records as usize);
    let walked = batch::for_each_value_u64(bytes, |due_ns| {
        latencies.push(held_ns.saturating_sub(due_ns));
    });
    if let Err(e) = walked {
        stats.error(format!("e2e record at offset {}: {e}", info.base_offset));
        return;
    }
    stats.with_histogram(worker, |h| {
        for ns in &latencies {
            h.saturating_record((ns / 1000).max(1));
        }
    });
    stats.add(info.records, bytes.len() as u64);
}

fn add_producer_side(report: &mut Report, produced: &Stats, produce_elapsed: f64, drained: bool) {
    let sent = produced.records.load(Ordering::Relaxed);
    let acked_latency = produced.merged_histogram();
    let produce_errors = produced.errors.load(Ordering::Relaxed);
    report.errors += produce_errors;
    report.error_samples.extend(produced.error_samples());
    if !drained {
        let missing = sent.saturating_sub(report.records);
        report.errors += 1;
        report.error_samples.push(format!(
            "{missing} acknowledged records never reached the consumer"
        ));
    }
    report.extra.insert("produced_records".into(), json!(sent));
    report
        .extra
        .insert("produce_elapsed_s".into(), json!(produce_elapsed));
    report.extra.insert(
        "produced_msgs_per_s".into(),
        json!(sent as f64 / produce_elapsed.max(1e-9)),
    );
    report.extra.insert(
        "produce_ack_latency_us".into(),
        json!({
            "p50": acked_latency.value_at_quantile(0.5),
            "p99": acked_latency.value_at_quantile(0.99),
            "max": acked_latency.max(),
        }),
    );
}
