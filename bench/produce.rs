//! The produce workload, and the pipelined producer connection e2e reuses.
//!
//! Each connection has a writer thread and a reader thread on one socket. The writer sends
//! pre-encoded Produce frames (one batch for one partition each, the connection's partitions in
//! turn) and hands the reader what it sent through a bounded channel: the channel's capacity is
//! the in-flight window, so a full window stops the writer and TCP pushes back on nothing else.
//! Kafka answers in order on a connection, so the reader matches responses by position and checks
//! the correlation id.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use serde_json::json;

use crate::batch::{self, BatchTemplate};
use crate::cluster::{self, TopicLayout};
use crate::report::{CpuProbe, Report};
use crate::stats::{self, Stats, now_ns};
use crate::wire::{self, Conn, WireError, error_name};
use crate::{Common, ProduceArgs};

/// Produce responses are small; anything bigger than this is a broken peer.
const PRODUCE_RESPONSE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// A socket that accepts or answers nothing for this long is reported as an error.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Largest batch we build (record values alone); brokers reject far less (Kafka's
/// message.max.bytes defaults to 1 MiB), this only keeps a typo from allocating gigabytes.
const BATCH_VALUES_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Refuses batch shapes we will not build.
pub fn check_batch_shape(record_bytes: usize, records_per_batch: usize) -> wire::Result<()> {
    match record_bytes.checked_mul(records_per_batch) {
        Some(n) if n <= BATCH_VALUES_MAX_BYTES => Ok(()),
        _ => Err(WireError::Broker(format!(
            "--record-size {record_bytes} x --batch-records {records_per_batch} exceeds \
             {BATCH_VALUES_MAX_BYTES} bytes per batch"
        ))),
    }
}

/// One Produce frame for one partition, and where its batch and record values sit, so e2e can
/// stamp each value with its scheduled send time.
pub struct FrameTemplate {
    pub bytes: Vec<u8>,
    batch_at: usize,
    batch_len: usize,
    value_offsets: Vec<usize>,
}

impl FrameTemplate {
    pub fn new(topic: &str, partition: i32, acks: i16, version: i16, b: &BatchTemplate) -> Self {
        let records = bytes::Bytes::copy_from_slice(&b.bytes);
        let data = PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(records));
        let topic_data = TopicProduceData::default()
            .with_name(cluster::topic_name(topic))
            .with_partition_data(vec![data]);
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![topic_data]);
        let bytes = wire::encode_frame(&req, version, 0).expect("a Produce request encodes");
        // The records field is the last thing written before the trailing tagged fields, and
        // its bytes are unique in the frame, so the first exact match is the batch.
        let batch_at = bytes
            .windows(b.bytes.len())
            .position(|w| w == b.bytes.as_slice())
            .expect("the batch is inside its frame");
        let value_offsets = b.value_offsets.clone();
        FrameTemplate {
            bytes,
            batch_at,
            batch_len: b.bytes.len(),
            value_offsets,
        }
    }

    /// Writes each record's scheduled time into its value and reseals the batch CRC. Record `i`
    /// of `n` was due `(n - 1 - i) * record_interval_ns` before the batch.
    pub fn stamp(&mut self, batch_due_ns: u64, record_interval_ns: u64) {
        let n = self.value_offsets.len() as u64;
        let batch = &mut self.bytes[self.batch_at..self.batch_at + self.batch_len];
        for (i, at) in self.value_offsets.iter().enumerate() {
            let due = batch_due_ns.saturating_sub((n - 1 - i as u64) * record_interval_ns);
            batch[*at..*at + 8].copy_from_slice(&due.to_be_bytes());
        }
        batch::reseal(batch);
    }
}

/// What one producer connection does.
pub struct ProducerPlan {
    pub addr: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    pub acks: i16,
    pub records_per_batch: usize,
    pub record_bytes: usize,
    /// Time between batches; 0 = as fast as the window allows.
    pub batch_interval_ns: u64,
    pub batches_max: Option<u64>,
    pub inflight_max: usize,
    /// e2e: write the scheduled time into every record value.
    pub stamp_values: bool,
    pub worker: usize,
}

/// Sent from writer to reader for each request that expects a response.
struct InFlight {
    correlation_id: i32,
    due_ns: u64,
}

/// Connects and starts the writer and reader threads of one producer connection.
pub fn spawn_producer(
    plan: ProducerPlan,
    stats: Arc<Stats>,
) -> wire::Result<thread::JoinHandle<()>> {
    let conn = Conn::connect(&plan.addr)?;
    let version = conn.versions.pick(ApiKey::Produce, 3..=12)?;
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let template = batch::build(
        plan.records_per_batch,
        plan.record_bytes,
        timestamp_ms as i64,
    );
    let frames: Vec<FrameTemplate> = plan
        .partitions
        .iter()
        .map(|p| FrameTemplate::new(&plan.topic, *p, plan.acks, version, &template))
        .collect();
    let stream = conn.stream;
    stream
        .set_write_timeout(Some(SOCKET_TIMEOUT))
        .map_err(wire::io_err("write timeout"))?;
    stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .map_err(wire::io_err("read timeout"))?;
    let reader_stream = stream.try_clone().map_err(wire::io_err("clone socket"))?;
    Ok(thread::spawn(move || {
        // A rendezvous channel (capacity 0) still lets one request be in flight: the reader
        // holds it while it waits for the response.
        let (tx, rx) = mpsc::sync_channel(plan.inflight_max.saturating_sub(1));
        let reader = (plan.acks != 0).then(|| {
            let (stats, plan_copy) = (
                stats.clone(),
                ReaderPlan::from(&plan, version, template.bytes.len()),
            );
            thread::spawn(move || read_responses(reader_stream, rx, &stats, &plan_copy))
        });
        let tx = (plan.acks != 0).then_some(tx);
        write_requests(stream, frames, tx, &stats, &plan);
        if let Some(r) = reader {
            let _ = r.join();
        }
    }))
}

fn write_requests(
    mut stream: TcpStream,
    mut frames: Vec<FrameTemplate>,
    inflight: Option<SyncSender<InFlight>>,
    stats: &Stats,
    plan: &ProducerPlan,
) {
    stats::tighten_timer_slack();
    let record_interval_ns = plan.batch_interval_ns / plan.records_per_batch as u64;
    let started_ns = now_ns();
    let mut sent: u64 = 0;
    while !stats.stopped() && plan.batches_max.is_none_or(|m| sent < m) {
        let due_ns = if plan.batch_interval_ns == 0 {
            now_ns()
        } else {
            started_ns + (sent + 1) * plan.batch_interval_ns
        };
        if !stats::sleep_until(due_ns, stats) {
            break;
        }
        let correlation_id = (sent % i32::MAX as u64) as i32;
        let frame = &mut frames[(sent % plan.partitions.len() as u64) as usize];
        wire::patch_correlation_id(&mut frame.bytes, correlation_id);
        if plan.stamp_values {
            frame.stamp(due_ns, record_interval_ns);
        }
        if let Some(tx) = &inflight
            && tx
                .send(InFlight {
                    correlation_id,
                    due_ns,
                })
                .is_err()
        {
            break; // the reader stopped on an error it reported
        }
        if let Err(e) = stream.write_all(&frame.bytes) {
            stats.error(format!("produce write to {}: {e}", plan.addr));
            break;
        }
        stats
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if inflight.is_none() {
            stats.add(plan.records_per_batch as u64, frame.batch_len as u64);
        }
        sent += 1;
    }
}

struct ReaderPlan {
    addr: String,
    version: i16,
    worker: usize,
    records: u64,
    batch_bytes: u64,
    record_interval_ns: u64,
}

impl ReaderPlan {
    fn from(plan: &ProducerPlan, version: i16, batch_bytes: usize) -> ReaderPlan {
        ReaderPlan {
            addr: plan.addr.clone(),
            version,
            worker: plan.worker,
            records: plan.records_per_batch as u64,
            batch_bytes: batch_bytes as u64,
            record_interval_ns: plan.batch_interval_ns / plan.records_per_batch as u64,
        }
    }
}

fn read_responses(
    stream: TcpStream,
    inflight: Receiver<InFlight>,
    stats: &Stats,
    plan: &ReaderPlan,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    while let Ok(sent) = inflight.recv() {
        let result = wire::read_frame(&mut reader, PRODUCE_RESPONSE_SIZE_MAX_BYTES)
            .and_then(|f| wire::decode_response::<ProduceRequest>(f, plan.version));
        let acked_ns = now_ns();
        let resp = match result {
            Ok((got, _)) if got != sent.correlation_id => {
                let want = sent.correlation_id;
                stats.error(format!(
                    "{}: {}",
                    plan.addr,
                    WireError::Correlation { got, want }
                ));
                return;
            }
            Ok((_, resp)) => resp,
            Err(e) => {
                stats.error(format!("produce response from {}: {e}", plan.addr));
                return;
            }
        };
        if !check_response(&resp, stats) {
            continue;
        }
        stats.add(plan.records, plan.batch_bytes);
        record_batch_latency(stats, plan, sent.due_ns, acked_ns);
    }
}

/// Each record of the batch was due `record_interval_ns` after the previous one; its latency
/// runs from its own due time (no coordinated omission).
fn record_batch_latency(stats: &Stats, plan: &ReaderPlan, batch_due_ns: u64, acked_ns: u64) {
    let batch_latency_ns = acked_ns.saturating_sub(batch_due_ns);
    if plan.record_interval_ns == 0 {
        stats.record_latency(plan.worker, batch_latency_ns, plan.records);
        return;
    }
    stats.with_histogram(plan.worker, |h| {
        for waited in 0..plan.records {
            let ns = batch_latency_ns + waited * plan.record_interval_ns;
            h.saturating_record((ns / 1000).max(1));
        }
    });
}

/// Counts every partition-level error; true if the batch was accepted.
fn check_response(resp: &ProduceResponse, stats: &Stats) -> bool {
    let mut ok = true;
    for t in &resp.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                ok = false;
                let msg = p.error_message.as_ref().map_or("", |m| m.as_str());
                stats.error(format!(
                    "produce {}-{}: {} {msg}",
                    t.name.as_str(),
                    p.index,
                    error_name(p.error_code)
                ));
            }
        }
    }
    ok
}

/// Parses --acks: 0, 1, all or -1.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        other => Err(format!("--acks {other}: expected 0, 1 or all")),
    }
}

/// Partitions of each connection: `connections` per leader, the leader's partitions dealt out
/// in turn. With fewer partitions than connections, `share` gives the extra connections a
/// partition already taken (producers may share one); otherwise they are left out.
pub fn connection_plan(
    layout: &TopicLayout,
    connections: usize,
    share: bool,
) -> Vec<(String, Vec<i32>)> {
    let all: Vec<i32> = layout.leaders.keys().copied().collect();
    let mut out = Vec::new();
    for (leader, parts) in layout.by_leader(&all) {
        let addr = layout
            .addr(leader)
            .expect("leaders come from the broker list")
            .to_string();
        for c in 0..connections.max(1) {
            let mine: Vec<i32> = parts
                .iter()
                .skip(c)
                .step_by(connections.max(1))
                .copied()
                .collect();
            if !mine.is_empty() {
                out.push((addr.clone(), mine));
            } else if share {
                out.push((addr.clone(), vec![parts[c % parts.len()]]));
            }
        }
    }
    out
}

/// Batch size after --linger-ms: in a rate-limited run a batch leaves when it is full or its
/// oldest record has waited linger-ms, which for a steady rate is a smaller batch.
fn effective_batch_records(args: &ProduceArgs, rate_per_connection: f64) -> usize {
    match args.linger_ms {
        Some(linger_ms) if rate_per_connection > 0.0 => {
            let fits = (rate_per_connection * linger_ms / 1000.0).floor() as usize + 1;
            args.batch_records.min(fits).max(1)
        }
        _ => args.batch_records,
    }
}

/// How a run's records are cut into batches and spread over its connections.
struct Shape {
    acks: i16,
    records_per_batch: usize,
    batch_interval_ns: u64,
    batches_total: Option<u64>,
}

fn shape(args: &ProduceArgs, acks: i16, connections: usize) -> Shape {
    let rate_per_connection = args.rate as f64 / connections as f64;
    let records_per_batch = effective_batch_records(args, rate_per_connection);
    let batch_interval_ns = match args.rate {
        0 => 0,
        _ => (records_per_batch as f64 * 1e9 / rate_per_connection) as u64,
    };
    let batches_total = args.count.map(|c| c.div_ceil(records_per_batch as u64));
    Shape {
        acks,
        records_per_batch,
        batch_interval_ns,
        batches_total,
    }
}

fn producer_plans(
    args: &ProduceArgs,
    s: &Shape,
    conns: &[(String, Vec<i32>)],
) -> Vec<ProducerPlan> {
    let plan = |(worker, (addr, partitions)): (usize, &(String, Vec<i32>))| ProducerPlan {
        addr: addr.clone(),
        topic: args.topic.clone(),
        partitions: partitions.clone(),
        acks: s.acks,
        records_per_batch: s.records_per_batch,
        record_bytes: args.record_size,
        batch_interval_ns: s.batch_interval_ns,
        batches_max: s.batches_total.map(|t| split_share(t, conns.len(), worker)),
        inflight_max: args.inflight,
        stamp_values: false,
        worker,
    };
    conns.iter().enumerate().map(plan).collect()
}

pub fn run(common: &Common, args: &ProduceArgs) -> wire::Result<Report> {
    let acks = parse_acks(&args.acks).map_err(WireError::Broker)?;
    check_batch_shape(args.record_size, args.batch_records)?;
    let mut boot = Conn::connect(&common.bootstrap)?;
    let layout = cluster::ensure_topic(&mut boot, &args.topic, args.partitions)?;
    let conns = connection_plan(&layout, args.connections, true);
    let shape = shape(args, acks, conns.len());
    let rate = match args.rate {
        0 => "max".to_string(),
        r => format!("{r}/s"),
    };
    eprintln!(
        "produce: topic {} partitions {} connections {} batch {} x {} B acks {} rate {rate}",
        args.topic,
        layout.leaders.len(),
        conns.len(),
        shape.records_per_batch,
        args.record_size,
        args.acks,
    );
    let stats = Stats::new(conns.len(), common.stop.clone());
    let cpu = CpuProbe::start(common.broker_pid);
    let progress = stats::spawn_progress(stats.clone(), "produce");
    let started = Instant::now();
    let mut handles = Vec::new();
    for plan in producer_plans(args, &shape, &conns) {
        handles.push(spawn_producer(plan, stats.clone())?);
    }
    let duration = match args.count {
        Some(_) => args.duration,
        None => args.duration.or(Some(10.0)),
    };
    let elapsed = stats::run_workers(&stats, started, duration, handles);
    stats
        .finished
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = progress.join();
    let label = match acks {
        0 => "none (acks=0)",
        _ => "scheduled send -> ack, per record",
    };
    let mut report = Report::from_stats("produce", label, &stats, elapsed, &cpu);
    let settings = [
        ("acks", json!(args.acks)),
        ("record_size", json!(args.record_size)),
        ("batch_records", json!(shape.records_per_batch)),
        ("connections", json!(conns.len())),
        ("partitions", json!(layout.leaders.len())),
        ("target_rate", json!(args.rate)),
    ];
    report
        .extra
        .extend(settings.map(|(k, v)| (k.to_string(), v)));
    Ok(report)
}

/// Worker `i`'s part of `total` split over `n` workers, remainders to the first ones.
pub fn split_share(total: u64, n: usize, i: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn layout(leaders: &[(i32, i32)]) -> TopicLayout {
        TopicLayout {
            topic: "t".into(),
            leaders: leaders.iter().copied().collect(),
            brokers: BTreeMap::from([(0, "h:1".into()), (1, "h:2".into())]),
        }
    }

    #[test]
    fn connections_deal_out_partitions_per_leader() {
        let l = layout(&[(0, 0), (1, 1), (2, 0), (3, 1)]);
        let plan = connection_plan(&l, 2, false);
        let want: Vec<(String, Vec<i32>)> = vec![
            ("h:1".into(), vec![0]),
            ("h:1".into(), vec![2]),
            ("h:2".into(), vec![1]),
            ("h:2".into(), vec![3]),
        ];
        assert_eq!(plan, want);
        // More connections than partitions: producers share, consumers do not.
        assert_eq!(connection_plan(&layout(&[(0, 0)]), 3, true).len(), 3);
        assert_eq!(connection_plan(&layout(&[(0, 0)]), 3, false).len(), 1);
    }

    #[test]
    fn shares_add_up() {
        let total: u64 = (0..3).map(|i| split_share(10, 3, i)).sum();
        assert_eq!(
            (split_share(10, 3, 0), split_share(10, 3, 2), total),
            (4, 3, 10)
        );
    }

    #[test]
    fn stamped_frame_keeps_a_valid_crc_and_due_times() {
        let b = batch::build(3, 16, 0);
        let mut f = FrameTemplate::new("t", 0, 1, 9, &b);
        f.stamp(1_000, 10);
        let batch = &f.bytes[f.batch_at..f.batch_at + f.batch_len];
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
        let mut due = Vec::new();
        batch::for_each_value_u64(batch, |v| due.push(v)).unwrap();
        assert_eq!(due, vec![980, 990, 1_000]);
        wire::patch_correlation_id(&mut f.bytes, 77);
        assert_eq!(&f.bytes[8..12], &77i32.to_be_bytes());
    }
}
