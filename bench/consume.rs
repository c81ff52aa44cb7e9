//! The consume workload, and the fetch loop e2e reuses.
//!
//! One fetch in flight per connection, as a Kafka consumer does (the next offsets depend on the
//! answer); parallelism comes from one connection per leader (times --connections). Records are
//! counted from batch headers, never decoded.

use std::io::{BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use serde_json::json;

use crate::batch::{self, BatchInfo};
use crate::cluster::{self, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, TopicLayout};
use crate::produce::{SOCKET_TIMEOUT, connection_plan};
use crate::report::{CpuProbe, Report};
use crate::stats::{self, Stats, now_ns};
use crate::wire::{self, Conn, WireError, error_name};
use crate::{Common, ConsumeArgs};

/// Room above fetch.max.bytes for response framing and the one oversized batch KIP-74 allows.
const FETCH_RESPONSE_SLACK_BYTES: usize = 16 * 1024 * 1024;

/// One partition's position in a fetch loop.
#[derive(Clone, Debug)]
pub struct PartitionCursor {
    pub partition: i32,
    pub next_offset: i64,
    /// Stop at this offset (the high watermark when the run started); `None` = follow forever.
    pub end_offset: Option<i64>,
    failed: bool,
}

impl PartitionCursor {
    pub fn new(partition: i32, next_offset: i64, end_offset: Option<i64>) -> PartitionCursor {
        PartitionCursor {
            partition,
            next_offset,
            end_offset,
            failed: false,
        }
    }

    fn active(&self) -> bool {
        !self.failed && self.end_offset.is_none_or(|end| self.next_offset < end)
    }
}

pub struct FetchPlan {
    pub addr: String,
    pub topic: String,
    pub cursors: Vec<PartitionCursor>,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub min_bytes: i32,
    pub max_wait_ms: i32,
    pub worker: usize,
    /// Record each fetch's round trip in the worker's histogram (consume); e2e records the
    /// records' own latencies there instead.
    pub record_fetch_latency: bool,
}

/// Fetches until every cursor reached its end, a cursor failed, or `keep_going` says stop.
/// `on_batch` sees each complete data batch (control batches only move the offset).
pub fn fetch_loop(
    mut plan: FetchPlan,
    stats: &Stats,
    keep_going: impl Fn() -> bool,
    mut on_batch: impl FnMut(&BatchInfo, &[u8]),
) -> wire::Result<()> {
    let mut conn = Conn::connect(&plan.addr)?;
    conn.stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .map_err(wire::io_err("read timeout"))?;
    let version = conn.versions.pick(ApiKey::Fetch, 4..=12)?;
    let response_max = (plan.max_bytes.max(0) as usize).saturating_add(FETCH_RESPONSE_SLACK_BYTES);
    let mut reader = BufReader::with_capacity(
        256 * 1024,
        conn.stream.try_clone().map_err(wire::io_err("clone"))?,
    );
    while keep_going() && plan.cursors.iter().any(PartitionCursor::active) {
        let correlation_id = conn.next_correlation_id();
        let frame = wire::encode_frame(&fetch_request(&plan), version, correlation_id)?;
        let sent_ns = now_ns();
        conn.stream
            .write_all(&frame)
            .map_err(wire::io_err(format!("fetch to {}", plan.addr)))?;
        let reply = wire::read_frame(&mut reader, response_max)?;
        if plan.record_fetch_latency {
            stats.record_latency(plan.worker, now_ns() - sent_ns, 1);
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let (got, resp) = wire::decode_response::<FetchRequest>(reply, version)?;
        if got != correlation_id {
            return Err(WireError::Correlation {
                got,
                want: correlation_id,
            });
        }
        apply_response(&mut plan, &resp, stats, &mut on_batch);
    }
    Ok(())
}

fn fetch_request(plan: &FetchPlan) -> FetchRequest {
    let partitions = plan
        .cursors
        .iter()
        .filter(|c| c.active())
        .map(|c| {
            FetchPartition::default()
                .with_partition(c.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(c.next_offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(plan.partition_max_bytes)
        })
        .collect();
    let topic = FetchTopic::default()
        .with_topic(cluster::topic_name(&plan.topic))
        .with_partitions(partitions);
    // Session id 0 with epoch -1 is a full fetch without a fetch session (KIP-227).
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(plan.max_wait_ms)
        .with_min_bytes(plan.min_bytes)
        .with_max_bytes(plan.max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![topic])
}

fn apply_response(
    plan: &mut FetchPlan,
    resp: &FetchResponse,
    stats: &Stats,
    on_batch: &mut impl FnMut(&BatchInfo, &[u8]),
) {
    if resp.error_code != 0 {
        stats.error(format!(
            "fetch from {}: {}",
            plan.addr,
            error_name(resp.error_code)
        ));
        plan.cursors.iter_mut().for_each(|c| c.failed = true);
        return;
    }
    for t in &resp.responses {
        for p in &t.partitions {
            let Some(cursor) = plan
                .cursors
                .iter_mut()
                .find(|c| c.partition == p.partition_index)
            else {
                stats.error(format!(
                    "fetch answered partition {} we did not ask for",
                    p.partition_index
                ));
                continue;
            };
            if p.error_code != 0 {
                stats.error(format!(
                    "fetch {}-{} at {}: {}",
                    plan.topic,
                    p.partition_index,
                    cursor.next_offset,
                    error_name(p.error_code)
                ));
                cursor.failed = true;
                continue;
            }
            let records = p.records.as_deref().unwrap_or(&[]);
            for item in batch::batches(records) {
                match item {
                    // A batch before the fetch offset (the broker may start at a batch boundary
                    // below it) is skipped.
                    Ok((info, _)) if info.next_offset <= cursor.next_offset => {}
                    Ok((info, bytes)) => {
                        cursor.next_offset = info.next_offset;
                        if !info.is_control {
                            on_batch(&info, bytes);
                        }
                    }
                    Err(e) => {
                        stats.error(format!("fetch {}-{}: {e}", plan.topic, p.partition_index));
                        cursor.failed = true;
                        break;
                    }
                }
            }
        }
    }
}

/// The topic's layout, restricted to partitions 0..N with --partitions N.
fn topic_layout(common: &Common, args: &ConsumeArgs) -> wire::Result<TopicLayout> {
    let mut boot = Conn::connect(&common.bootstrap)?;
    let (_, layout) = cluster::describe(&mut boot, &args.topic)?;
    let Some(mut layout) = layout else {
        let topic = &args.topic;
        return Err(WireError::Broker(format!(
            "topic {topic} does not exist: run `produce` first"
        )));
    };
    if args.partitions > 0 {
        layout
            .leaders
            .retain(|p, _| (*p as usize) < args.partitions);
    }
    Ok(layout)
}

/// A thread that fetches its partitions to their end offsets, counting batches.
fn spawn_counter(plan: FetchPlan, stats: Arc<Stats>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let keep_going = || !stats.stopped();
        let count = |info: &BatchInfo, bytes: &[u8]| stats.add(info.records, bytes.len() as u64);
        if let Err(e) = fetch_loop(plan, &stats, keep_going, count) {
            stats.error(format!("consume: {e}"));
        }
    })
}

pub fn run(common: &Common, args: &ConsumeArgs) -> wire::Result<Report> {
    let layout = topic_layout(common, args)?;
    let all: Vec<i32> = layout.leaders.keys().copied().collect();
    let starts = cluster::list_offsets(&layout, &all, EARLIEST_TIMESTAMP)?;
    let ends = cluster::list_offsets(&layout, &all, LATEST_TIMESTAMP)?;
    let available: i64 = all.iter().map(|p| ends[p] - starts[p]).sum();
    let conns = connection_plan(&layout, args.connections, false);
    eprintln!(
        "consume: topic {} partitions {} connections {} records available {available}",
        args.topic,
        all.len(),
        conns.len()
    );
    let stats = Stats::new(conns.len(), common.stop.clone());
    let cpu = CpuProbe::start(common.broker_pid);
    let progress = stats::spawn_progress(stats.clone(), "consume");
    let started = Instant::now();
    let mut handles = Vec::new();
    for (worker, (addr, partitions)) in conns.into_iter().enumerate() {
        let cursor = |p: &i32| PartitionCursor::new(*p, starts[p], Some(ends[p]));
        let plan = FetchPlan {
            addr,
            topic: args.topic.clone(),
            cursors: partitions.iter().map(cursor).collect(),
            max_bytes: args.fetch_max_bytes,
            partition_max_bytes: args.partition_max_bytes,
            min_bytes: 1,
            max_wait_ms: args.max_wait_ms,
            worker,
            record_fetch_latency: true,
        };
        handles.push(spawn_counter(plan, stats.clone()));
    }
    let elapsed = stats::run_workers(&stats, started, Some(args.duration), handles);
    stats.finished.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let mut report = Report::from_stats("consume", "fetch round trip", &stats, elapsed, &cpu);
    let settings = [
        ("records_available", json!(available)),
        (
            "reached_high_watermark",
            json!(report.records as i64 >= available),
        ),
        ("fetch_max_bytes", json!(args.fetch_max_bytes)),
        ("partition_max_bytes", json!(args.partition_max_bytes)),
        ("partitions", json!(all.len())),
    ];
    report
        .extra
        .extend(settings.map(|(k, v)| (k.to_string(), v)));
    Ok(report)
}
