//! The consume workload, and the fetch session e2e reuses.
//!
//! One fetch in flight per connection, as a Kafka consumer does (the next offsets depend on the
//! answer); parallelism comes from one connection per leader (times --connections). Each
//! connection is a state machine (`Fetcher`) on one non-blocking socket, driven by one of the
//! client's worker threads together with many others (bench/cores.rs), so many connections cost
//! a handful of threads. Records are counted from batch headers, never decoded.

use std::net::TcpStream;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use serde_json::json;

use crate::batch::{self, BatchInfo};
use crate::cluster::{self, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, TopicLayout};
use crate::cores;
use crate::framed::FramedConn;
use crate::produce::connection_plan;
use crate::report::{CpuProbe, Report};
use crate::stats::{self, Stats, now_ns};
use crate::wire::{self, Conn, WireError, error_name};
use crate::{Common, ConsumeArgs};

/// Room above fetch.max.bytes for response framing and the one oversized batch KIP-74 allows.
const FETCH_RESPONSE_SLACK_BYTES: usize = 16 * 1024 * 1024;
/// Free room of a fetch connection's read buffer per receive; grown to hold a whole response.
const FETCH_READ_BUFFER_BYTES: usize = 256 * 1024;

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

/// Connects (blocking: ApiVersions and version picking are control-plane calls), then hands
/// the socket to a `Fetcher`. `on_batch` sees each complete data batch (control batches only
/// move the offset).
fn connect_fetcher<F: FnMut(&BatchInfo, &[u8])>(
    plan: FetchPlan,
    stats: Arc<Stats>,
    on_batch: F,
) -> wire::Result<Fetcher<F>> {
    let conn = Conn::connect(&plan.addr)?;
    let version = conn.versions.pick(ApiKey::Fetch, 4..=12)?;
    Fetcher::new(conn.stream, plan, version, stats, on_batch)
}

/// Connects each plan's connection one after the other, with `on_batch(worker)` as its batch
/// handler. A connection that cannot be set up is counted as an error (prefixed by `what`) and
/// the others go on.
pub fn connect_fetchers<F: FnMut(&BatchInfo, &[u8])>(
    plans: Vec<FetchPlan>,
    stats: &Arc<Stats>,
    what: &str,
    mut on_batch: impl FnMut(usize) -> F,
) -> Vec<Fetcher<F>> {
    let mut fetchers = Vec::new();
    for plan in plans {
        let on_batch = on_batch(plan.worker);
        match connect_fetcher(plan, stats.clone(), on_batch) {
            Ok(fetcher) => fetchers.push(fetcher),
            Err(e) => stats.error(format!("{what}: {e}")),
        }
    }
    fetchers
}

/// `connect_fetchers`, then `cores::start_sessions`: each connection starts as soon as all are up.
pub fn spawn_fetchers<F: FnMut(&BatchInfo, &[u8]) + Send + 'static>(
    plans: Vec<FetchPlan>,
    cpus: Option<&[usize]>,
    stats: &Arc<Stats>,
    what: &str,
    on_batch: impl FnMut(usize) -> F,
) -> wire::Result<Vec<thread::JoinHandle<()>>> {
    let planned = plans.len();
    let fetchers = connect_fetchers(plans, stats, what, on_batch);
    cores::start_sessions(fetchers, planned, cpus, stats)
}

/// One consumer connection, as a state machine for a worker's event loop: sends a Fetch for
/// its active partitions, applies the response, and fetches again, until every cursor reached
/// its end, a cursor failed, or the run stopped (checked between fetches, as a blocking
/// consumer would).
pub struct Fetcher<F> {
    conn: FramedConn,
    plan: FetchPlan,
    version: i16,
    stats: Arc<Stats>,
    on_batch: F,
    correlation_id: i32,
    /// The encoded Fetch request while it is being written.
    request: Option<Vec<u8>>,
    /// When the fetch in flight was sent, until its response is applied.
    sent_ns: Option<u64>,
}

impl<F: FnMut(&BatchInfo, &[u8])> cores::Session for Fetcher<F> {
    fn fd(&self) -> RawFd {
        self.conn.fd()
    }

    fn advance(&mut self, now_ns: u64, readable: bool) -> cores::Step {
        match self.step(now_ns, readable) {
            Ok(false) => cores::Step::Wait { wake_at_ns: None },
            Ok(true) => cores::Step::Done,
            Err(e) => {
                self.stats.error(e);
                cores::Step::Done
            }
        }
    }
}

impl<F: FnMut(&BatchInfo, &[u8])> Fetcher<F> {
    /// Makes the connected `stream` non-blocking: from here on a worker's event loop drives it.
    fn new(
        stream: TcpStream,
        plan: FetchPlan,
        version: i16,
        stats: Arc<Stats>,
        on_batch: F,
    ) -> wire::Result<Fetcher<F>> {
        let response_max =
            (plan.max_bytes.max(0) as usize).saturating_add(FETCH_RESPONSE_SLACK_BYTES);
        let conn = FramedConn::new(
            stream,
            "fetch",
            &plan.addr,
            FETCH_READ_BUFFER_BYTES,
            response_max,
        )?;
        Ok(Fetcher {
            conn,
            plan,
            version,
            stats,
            on_batch,
            correlation_id: 0,
            request: None,
            sent_ns: None,
        })
    }

    /// Everything the connection can do now; true once it is done. An error ends it (and is
    /// counted by the caller).
    fn step(&mut self, now_ns: u64, readable: bool) -> Result<bool, String> {
        if readable {
            self.read_response()?;
        }
        if self.sent_ns.is_none() {
            if self.stats.stopped() || !self.plan.cursors.iter().any(PartitionCursor::active) {
                return Ok(true);
            }
            self.start_fetch()?;
        }
        if let Some(request) = &self.request
            && self
                .conn
                .write_pending(request)
                .map_err(|e| format!("fetch to {}: {e}", self.plan.addr))?
        {
            self.request = None;
        }
        self.conn.check_timeouts(now_ns, self.sent_ns.is_some())?;
        Ok(false)
    }

    /// Encodes the next Fetch for the active partitions and queues it.
    fn start_fetch(&mut self) -> Result<(), String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let request = fetch_request(&self.plan);
        let frame = wire::encode_frame(&request, self.version, self.correlation_id)
            .map_err(|e| format!("fetch to {}: {e}", self.plan.addr))?;
        let sent_ns = now_ns();
        self.conn.awaiting_from(sent_ns);
        self.sent_ns = Some(sent_ns);
        self.request = Some(frame);
        Ok(())
    }

    /// Reads until the socket is empty and applies the response once it is complete.
    fn read_response(&mut self) -> Result<(), String> {
        let Fetcher {
            conn,
            plan,
            version,
            stats,
            on_batch,
            correlation_id,
            sent_ns,
            ..
        } = self;
        conn.read_frames(|body, received_ns| {
            let Some(sent) = sent_ns.take() else {
                return Err(WireError::Broker("no request is waiting for it".into()));
            };
            if plan.record_fetch_latency {
                stats.record_latency(plan.worker, received_ns.saturating_sub(sent), 1);
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = wire::decode_reply::<FetchRequest>(body, *version, *correlation_id)?;
            apply_response(plan, &resp, stats, on_batch);
            Ok(())
        })
    }
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

pub fn run(common: &Common, args: &ConsumeArgs) -> wire::Result<Report> {
    let layout = topic_layout(common, args)?;
    let all: Vec<i32> = layout.leaders.keys().copied().collect();
    let starts = cluster::list_offsets(&layout, &all, EARLIEST_TIMESTAMP)?;
    let ends = cluster::list_offsets(&layout, &all, LATEST_TIMESTAMP)?;
    let available: i64 = all.iter().map(|p| ends[p] - starts[p]).sum();
    let conns = connection_plan(&layout, args.connections, false);
    say!(
        "consume: topic {} partitions {} connections {} records available {available}",
        args.topic,
        all.len(),
        conns.len()
    );
    let workers = cores::worker_count(common.cpus.as_deref(), conns.len());
    let stats = Stats::new(workers, common.stop.clone());
    let mut plans = Vec::new();
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
        plans.push(plan);
    }
    let count = |_worker| {
        let stats = stats.clone();
        move |info: &BatchInfo, bytes: &[u8]| stats.add(info.records, bytes.len() as u64)
    };
    // Every connection is up (ApiVersions answered) before the clock and the CPU probe start,
    // as in produce: the run measures fetching, not connecting.
    let planned = plans.len();
    let connecting = Instant::now();
    let fetchers = connect_fetchers(plans, &stats, "consume", count);
    let connect_s = connecting.elapsed().as_secs_f64();
    let cpu = CpuProbe::start(common.broker_pid);
    let progress = stats::spawn_progress(stats.clone(), "consume");
    let started = Instant::now();
    let handles = cores::start_sessions(fetchers, planned, common.cpus.as_deref(), &stats)?;
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
        ("connect_s", json!(connect_s)),
    ];
    report
        .extra
        .extend(settings.map(|(k, v)| (k.to_string(), v)));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    use crate::framed::stand_in;

    /// Fetch version the tests speak (flexible, so the headers have tagged fields).
    const TEST_FETCH_VERSION: i16 = 12;
    const TEST_BATCH_RECORDS: usize = 10;

    /// A stand-in broker answering each Fetch with one batch of TEST_BATCH_RECORDS records
    /// per partition asked for, starting at its fetch offset, under a correlation id off by
    /// `skew` (0: correct).
    fn stand_in_broker(skew: i32) -> (String, thread::JoinHandle<u64>) {
        let template = batch::build(TEST_BATCH_RECORDS, 100, 0);
        let answer = move |req: FetchRequest| {
            let partition = |p: &FetchPartition| {
                let mut records = template.bytes.clone();
                records[..8].copy_from_slice(&p.fetch_offset.to_be_bytes());
                PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_records(Some(Bytes::from(records)))
            };
            let topics = req.topics.iter().map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(t.partitions.iter().map(partition).collect())
            });
            FetchResponse::default().with_responses(topics.collect())
        };
        stand_in::broker(TEST_FETCH_VERSION, skew, answer)
    }

    /// Fetches partitions 0 and 1 from offset 0 to `end` on one worker until done.
    fn run_one(addr: &str, end: i64) -> Arc<Stats> {
        let stats = Stats::new(1, Arc::new(AtomicBool::new(false)));
        let plan = FetchPlan {
            addr: addr.to_string(),
            topic: "t".into(),
            cursors: (0..2)
                .map(|p| PartitionCursor::new(p, 0, Some(end)))
                .collect(),
            max_bytes: 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            min_bytes: 1,
            max_wait_ms: 100,
            worker: 0,
            record_fetch_latency: true,
        };
        let stream = TcpStream::connect(addr).expect("connect");
        let counted = stats.clone();
        let count =
            move |info: &BatchInfo, bytes: &[u8]| counted.add(info.records, bytes.len() as u64);
        let fetcher =
            Fetcher::new(stream, plan, TEST_FETCH_VERSION, stats.clone(), count).expect("fetcher");
        stand_in::run_session(fetcher, &stats);
        stats
    }

    #[test]
    fn fetches_every_partition_to_its_end_offset() {
        let (addr, broker) = stand_in_broker(0);
        let stats = run_one(&addr, 50);
        let counted = (
            stats.records.load(Ordering::Relaxed),
            stats.requests.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed),
        );
        assert_eq!(counted, (100, 5, 0), "{:?}", stats.error_samples());
        assert_eq!(stats.merged_histogram().len(), 5, "one latency per fetch");
        assert_eq!(broker.join().expect("broker thread"), 5);
    }

    #[test]
    fn a_wrong_correlation_id_ends_the_fetcher_with_an_error() {
        let (addr, broker) = stand_in_broker(1);
        let stats = run_one(&addr, 50);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.records.load(Ordering::Relaxed), 0);
        let samples = stats.error_samples();
        assert!(
            samples[0].contains("correlation id 2 where 1"),
            "{samples:?}"
        );
        broker.join().expect("broker thread");
    }
}
