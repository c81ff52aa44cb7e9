//! The produce workload, and the pipelined producer connection e2e reuses.
//!
//! Each connection is a state machine (`Producer`) on one non-blocking socket, driven by one of
//! the client's worker threads together with many others (bench/cores.rs). It sends pre-encoded
//! Produce frames (one batch for one partition each, the connection's partitions in turn) and
//! keeps what it sent in an in-flight queue of at most `--inflight` requests, so a full window
//! stops the sending and TCP pushes back on nothing else. Kafka answers in order on a
//! connection, so responses are matched by position and the correlation id is checked.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use serde_json::json;

use crate::batch::{self, BatchTemplate};
use crate::cluster::{self, TopicLayout};
use crate::cores;
use crate::framed::FramedConn;
use crate::report::{CpuProbe, Report};
use crate::stats::{self, Stats, now_ns};
use crate::wire::{self, Conn, WireError, error_name};
use crate::{Common, ProduceArgs};

/// Produce responses are small; anything bigger than this is a broken peer.
const PRODUCE_RESPONSE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Read buffer of each producer connection, enough for a window of responses in one
/// receive (a response to a one-partition Produce is ~100 bytes); grown for a bigger frame.
const RESPONSE_READ_BUFFER_BYTES: usize = 16 * 1024;
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

/// A request that expects a response, oldest first in `Producer::inflight`.
struct InFlight {
    correlation_id: i32,
    due_ns: u64,
}

/// Connects (blocking: ApiVersions and version picking are control-plane calls), then hands
/// the socket to a `Producer`.
fn connect_producer(plan: ProducerPlan, stats: Arc<Stats>) -> wire::Result<Producer> {
    let conn = Conn::connect(&plan.addr)?;
    let version = conn.versions.pick(ApiKey::Produce, 3..=12)?;
    Producer::new(conn.stream, plan, version, stats)
}

/// Connects the producer connections one after the other (each with its ApiVersions handshake)
/// before any of them sends: a run's clock starts with every connection up, so a run of 1,000
/// connections measures 1,000 connections, not a ramp whose handshakes queue behind the load
/// of the first ones.
pub fn connect_producers(
    plans: Vec<ProducerPlan>,
    stats: &Arc<Stats>,
) -> wire::Result<Vec<Producer>> {
    plans
        .into_iter()
        .map(|plan| connect_producer(plan, stats.clone()))
        .collect()
}

/// One pipelined producer connection, as a state machine for a worker's event loop. It sends
/// batch after batch (as fast as the window allows, or each at its scheduled time), keeps what
/// it sent in `inflight` until the response arrives, and is done once it stopped sending and
/// every response is in.
pub struct Producer {
    conn: FramedConn,
    frames: Vec<FrameTemplate>,
    plan: ProducerPlan,
    reader: ReaderPlan,
    stats: Arc<Stats>,
    /// When the first call came: batch `i` of a rate-limited run is due `(i + 1)` intervals
    /// after it.
    started_ns: Option<u64>,
    /// Batches started.
    sent: u64,
    /// The next batch's scheduled time once decided: kept while the batch waits for a window
    /// slot, so that the wait counts as latency (no coordinated omission).
    next_due_ns: Option<u64>,
    /// Set while the next batch waits for its scheduled time: the loop calls back then.
    wake_at_ns: Option<u64>,
    /// The frame being written (index into `frames`); `conn` knows how much went out.
    writing: Option<usize>,
    sending_done: bool,
    inflight: VecDeque<InFlight>,
}

impl cores::Session for Producer {
    fn fd(&self) -> RawFd {
        self.conn.fd()
    }

    fn advance(&mut self, now_ns: u64, readable: bool) -> cores::Step {
        self.started_ns.get_or_insert(now_ns);
        if let Err(e) = self.step(now_ns, readable) {
            self.stats.error(e);
            return cores::Step::Done;
        }
        let finished = self.sending_done && self.writing.is_none() && self.inflight.is_empty();
        if finished {
            cores::Step::Done
        } else {
            cores::Step::Wait {
                wake_at_ns: self.wake_at_ns,
            }
        }
    }
}

impl Producer {
    /// Pre-encodes one Produce frame per partition of the connection and makes the connected
    /// `stream` non-blocking: from here on a worker's event loop drives it.
    fn new(
        stream: TcpStream,
        plan: ProducerPlan,
        version: i16,
        stats: Arc<Stats>,
    ) -> wire::Result<Producer> {
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
        let conn = FramedConn::new(
            stream,
            "produce",
            &plan.addr,
            RESPONSE_READ_BUFFER_BYTES,
            PRODUCE_RESPONSE_SIZE_MAX_BYTES,
        )?;
        Ok(Producer {
            conn,
            frames,
            reader: ReaderPlan::from(&plan, version, template.bytes.len()),
            plan,
            stats,
            started_ns: None,
            sent: 0,
            next_due_ns: None,
            wake_at_ns: None,
            writing: None,
            sending_done: false,
            inflight: VecDeque::new(),
        })
    }

    /// Everything the connection can do now; an error ends it (and is counted by the caller).
    fn step(&mut self, now_ns: u64, readable: bool) -> Result<(), String> {
        if readable && self.plan.acks != 0 {
            self.read_responses()?;
        }
        self.send_due();
        let awaiting = !self.inflight.is_empty();
        self.conn.check_timeouts(now_ns, awaiting)
    }

    /// Sends batches while one is due and the window has room, finishing the frame in progress
    /// first. Returns when the socket is full, the window is full, or the next batch is not yet
    /// due (then `wake_at_ns` says when).
    fn send_due(&mut self) {
        self.wake_at_ns = None;
        loop {
            match self.write_pending() {
                Ok(true) => {}
                Ok(false) => return, // the socket is full: EPOLLOUT calls us back
                Err(e) => return self.stop_after_write_error(e),
            }
            if self.sending_done {
                return;
            }
            if self.stats.stopped() || self.plan.batches_max.is_some_and(|m| self.sent >= m) {
                self.sending_done = true;
                return;
            }
            let due_ns = match self.next_due_ns {
                Some(due_ns) => due_ns,
                None => *self.next_due_ns.insert(self.schedule()),
            };
            if due_ns > now_ns() {
                self.wake_at_ns = Some(due_ns);
                return;
            }
            if self.plan.acks != 0 && self.inflight.len() >= self.plan.inflight_max {
                return; // a response frees a slot and calls us back
            }
            self.next_due_ns = None;
            self.start_batch(due_ns);
        }
    }

    /// The scheduled send time of the next batch: now when sending as fast as the window
    /// allows, else its slot in the fixed-rate schedule.
    fn schedule(&self) -> u64 {
        match self.plan.batch_interval_ns {
            0 => now_ns(),
            interval => self.started_ns.unwrap_or_else(now_ns) + (self.sent + 1) * interval,
        }
    }

    /// Makes the next batch's frame (the connection's partitions in turn) and queues it.
    fn start_batch(&mut self, due_ns: u64) {
        let record_interval_ns = self.plan.batch_interval_ns / self.plan.records_per_batch as u64;
        let correlation_id = (self.sent % i32::MAX as u64) as i32;
        let index = (self.sent % self.frames.len() as u64) as usize;
        let frame = &mut self.frames[index];
        wire::patch_correlation_id(&mut frame.bytes, correlation_id);
        if self.plan.stamp_values {
            frame.stamp(due_ns, record_interval_ns);
        }
        if self.plan.acks != 0 {
            if self.inflight.is_empty() {
                self.conn.awaiting_from(now_ns());
            }
            self.inflight.push_back(InFlight {
                correlation_id,
                due_ns,
            });
        }
        self.writing = Some(index);
        self.sent += 1;
    }

    /// Writes what is left of the frame in progress, if any; true once it is all out, false
    /// if the socket is full.
    fn write_pending(&mut self) -> io::Result<bool> {
        let Some(index) = self.writing else {
            return Ok(true);
        };
        if !self.conn.write_pending(&self.frames[index].bytes)? {
            return Ok(false);
        }
        self.writing = None;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if self.plan.acks == 0 {
            let batch_bytes = self.frames[index].batch_len as u64;
            self.stats
                .add(self.plan.records_per_batch as u64, batch_bytes);
        }
        Ok(true)
    }

    /// A failed write stops the sending; no response will come for that request, but the
    /// responses to the earlier ones are still read.
    fn stop_after_write_error(&mut self, e: io::Error) {
        self.stats
            .error(format!("produce write to {}: {e}", self.plan.addr));
        self.writing = None;
        self.conn.abandon_write();
        self.sending_done = true;
        if self.plan.acks != 0 {
            self.inflight.pop_back();
        }
    }

    /// Reads until the socket is empty, handling every complete response as it comes.
    fn read_responses(&mut self) -> Result<(), String> {
        let (inflight, reader, stats) = (&mut self.inflight, &self.reader, &*self.stats);
        self.conn
            .read_frames(|body, acked_ns| handle_response(inflight, reader, stats, body, acked_ns))
    }
}

/// Matches one response to the oldest request in flight and counts it.
fn handle_response(
    inflight: &mut VecDeque<InFlight>,
    reader: &ReaderPlan,
    stats: &Stats,
    body: bytes::Bytes,
    acked_ns: u64,
) -> wire::Result<()> {
    let Some(sent) = inflight.pop_front() else {
        return Err(WireError::Broker("no request is waiting for it".into()));
    };
    let resp = wire::decode_reply::<ProduceRequest>(body, reader.version, sent.correlation_id)?;
    if check_response(&resp, stats) {
        stats.add(reader.records, reader.batch_bytes);
        record_batch_latency(stats, reader, sent.due_ns, acked_ns);
    }
    Ok(())
}

/// What handling a response needs to know about its connection.
struct ReaderPlan {
    version: i16,
    worker: usize,
    records: u64,
    batch_bytes: u64,
    record_interval_ns: u64,
}

impl ReaderPlan {
    fn from(plan: &ProducerPlan, version: i16, batch_bytes: usize) -> ReaderPlan {
        ReaderPlan {
            version,
            worker: plan.worker,
            records: plan.records_per_batch as u64,
            batch_bytes: batch_bytes as u64,
            record_interval_ns: plan.batch_interval_ns / plan.records_per_batch as u64,
        }
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
    say!(
        "produce: topic {} partitions {} connections {} batch {} x {} B acks {} rate {rate}",
        args.topic,
        layout.leaders.len(),
        conns.len(),
        shape.records_per_batch,
        args.record_size,
        args.acks,
    );
    let workers = cores::worker_count(common.cpus.as_deref(), conns.len());
    let stats = Stats::new(workers, common.stop.clone());
    let connecting = Instant::now();
    let producers = connect_producers(producer_plans(args, &shape, &conns), &stats)?;
    let connect_s = connecting.elapsed().as_secs_f64();
    let cpu = CpuProbe::start(common.broker_pid);
    let progress = stats::spawn_progress(stats.clone(), "produce");
    let started = Instant::now();
    let count = producers.len();
    let handles = cores::start_sessions(producers, count, common.cpus.as_deref(), &stats)?;
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
        ("connect_s", json!(connect_s)),
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
    use std::sync::atomic::AtomicBool;
    use std::thread;

    use crate::framed::stand_in;

    /// Produce version the tests speak (flexible, so the header has tagged fields).
    const TEST_PRODUCE_VERSION: i16 = 9;

    /// A stand-in broker answering each Produce request with an empty response whose
    /// correlation id is off by `skew` (0: correct).
    fn stand_in_broker(skew: i32) -> (String, thread::JoinHandle<u64>) {
        stand_in::broker(TEST_PRODUCE_VERSION, skew, |_: ProduceRequest| {
            ProduceResponse::default()
        })
    }

    fn test_plan(addr: &str, batches: u64, inflight_max: usize) -> ProducerPlan {
        ProducerPlan {
            addr: addr.to_string(),
            topic: "t".into(),
            partitions: vec![0, 1, 2],
            acks: 1,
            records_per_batch: 10,
            record_bytes: 16,
            batch_interval_ns: 0,
            batches_max: Some(batches),
            inflight_max,
            stamp_values: false,
            worker: 0,
        }
    }

    /// Runs one producer connection to `addr` on one worker until it is done.
    fn run_one(plan: ProducerPlan) -> Arc<Stats> {
        let stats = Stats::new(1, Arc::new(AtomicBool::new(false)));
        let stream = TcpStream::connect(&plan.addr).expect("connect");
        let producer =
            Producer::new(stream, plan, TEST_PRODUCE_VERSION, stats.clone()).expect("producer");
        stand_in::run_session(producer, &stats);
        stats
    }

    #[test]
    fn every_response_is_matched_counted_and_timed() {
        let (addr, broker) = stand_in_broker(0);
        let stats = run_one(test_plan(&addr, 50, 4));
        let counted = (
            stats.records.load(Ordering::Relaxed),
            stats.requests.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
        );
        assert_eq!(counted, (500, 50, 0));
        assert_eq!(
            stats.merged_histogram().len(),
            500,
            "one latency per record"
        );
        assert_eq!(broker.join().expect("broker thread"), 50);
    }

    #[test]
    fn a_wrong_correlation_id_ends_the_connection_with_an_error() {
        let (addr, broker) = stand_in_broker(1);
        let stats = run_one(test_plan(&addr, 50, 4));
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.records.load(Ordering::Relaxed), 0);
        let samples = stats.error_samples();
        assert!(
            samples[0].contains("correlation id 1 where 0"),
            "{samples:?}"
        );
        broker.join().expect("broker thread");
    }

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
