//! Per-shard metrics (Redpanda's `_probe`): plain `Cell`/`RefCell` counters in a thread-local,
//! so the hot path never touches an atomic or another core's cache line. A shard is one thread,
//! so the thread-local is the shard's own. On a scrape, shard 0 asks every shard for a `Send`
//! snapshot (`ShardMetrics`) over the mesh and renders them all with `render`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

use super::Context;

/// Slowest latency the histograms resolve; slower requests are recorded at this value.
pub const LATENCY_MAX_MICROS: u64 = 60_000_000;
/// Quantiles exported for each API's latency summary.
pub const LATENCY_QUANTILES: &[f64] = &[0.5, 0.9, 0.99, 0.999];

struct Probe {
    /// (api key, api version) -> requests.
    requests: RefCell<BTreeMap<(i16, i16), u64>>,
    /// api key -> latency in microseconds (2 significant digits: 1 % error).
    latency_micros: RefCell<BTreeMap<i16, Histogram<u64>>>,
    latency_sum_micros: RefCell<BTreeMap<i16, u64>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    records_in: Cell<u64>,
    connections_active: Cell<i64>,
    connections_total: Cell<u64>,
    mesh_messages_received: Cell<u64>,
}

thread_local! {
    static PROBE: Probe = const { Probe {
        requests: RefCell::new(BTreeMap::new()),
        latency_micros: RefCell::new(BTreeMap::new()),
        latency_sum_micros: RefCell::new(BTreeMap::new()),
        bytes_in: Cell::new(0),
        bytes_out: Cell::new(0),
        records_in: Cell::new(0),
        connections_active: Cell::new(0),
        connections_total: Cell::new(0),
        mesh_messages_received: Cell::new(0),
    } };
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// Times one request from the moment it is dispatched until dropped.
pub struct RequestTimer {
    key: i16,
    started: Instant,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let micros = (self.started.elapsed().as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        PROBE.with(|p| {
            p.latency_micros
                .borrow_mut()
                .entry(self.key)
                .or_insert_with(|| {
                    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2).expect("valid bounds")
                })
                .saturating_record(micros);
            *p.latency_sum_micros
                .borrow_mut()
                .entry(self.key)
                .or_default() += micros;
        });
    }
}

/// Counts a request (and its frame bytes) and starts its latency timer.
pub fn request_started(key: i16, version: i16, frame_bytes: usize) -> RequestTimer {
    PROBE.with(|p| {
        *p.requests.borrow_mut().entry((key, version)).or_default() += 1;
        bump(&p.bytes_in, frame_bytes as u64 + 4);
    });
    RequestTimer {
        key,
        started: Instant::now(),
    }
}

pub fn bytes_out(n: u64) {
    PROBE.with(|p| bump(&p.bytes_out, n));
}

pub fn records_in(n: u64) {
    PROBE.with(|p| bump(&p.records_in, n));
}

pub fn mesh_message_received() {
    PROBE.with(|p| bump(&p.mesh_messages_received, 1));
}

/// Held by a connection task while it lives.
pub struct ConnectionGuard(());

pub fn connection_opened() -> ConnectionGuard {
    PROBE.with(|p| {
        p.connections_active.set(p.connections_active.get() + 1);
        bump(&p.connections_total, 1);
    });
    ConnectionGuard(())
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        PROBE.with(|p| p.connections_active.set(p.connections_active.get() - 1));
    }
}

/// One API's latency, summarized.
#[derive(Clone, Debug, Default)]
pub struct LatencySummary {
    pub key: i16,
    pub count: u64,
    pub sum_micros: u64,
    /// (quantile, microseconds).
    pub quantiles: Vec<(f64, u64)>,
}

/// Everything one shard reports; `Send`, so it can cross the mesh.
#[derive(Clone, Debug, Default)]
pub struct ShardMetrics {
    pub shard: u16,
    /// (api key, api version, requests).
    pub requests: Vec<(i16, i16, u64)>,
    pub latency: Vec<LatencySummary>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_in: u64,
    pub connections_active: i64,
    pub connections_total: u64,
    pub mesh_messages_received: u64,
    pub fsyncs: u64,
    pub partitions: u64,
    pub segments: u64,
    pub log_bytes: u64,
    /// Zeros written past the log ends of the shard's partitions (`log::ahead`).
    pub write_ahead_bytes: u64,
    /// Disk blocks allocated ahead of the log ends of fast partitions (`SegmentFile`).
    pub preallocated_bytes: u64,
    /// Plain log writes: copied into the page cache by the shard, handed to io_uring.
    pub log_writes_in_place: u64,
    pub log_writes_io_uring: u64,
    /// (group state, groups).
    pub groups: Vec<(&'static str, u64)>,
}

/// This shard's numbers now.
pub fn snapshot(ctx: &Context) -> ShardMetrics {
    let mut m = PROBE.with(|p| ShardMetrics {
        shard: ctx.shard.0,
        requests: p
            .requests
            .borrow()
            .iter()
            .map(|(&(k, v), &n)| (k, v, n))
            .collect(),
        latency: p
            .latency_micros
            .borrow()
            .iter()
            .map(|(&key, h)| LatencySummary {
                key,
                count: h.len(),
                sum_micros: p
                    .latency_sum_micros
                    .borrow()
                    .get(&key)
                    .copied()
                    .unwrap_or(0),
                quantiles: LATENCY_QUANTILES
                    .iter()
                    .map(|&q| (q, h.value_at_quantile(q)))
                    .collect(),
            })
            .collect(),
        bytes_in: p.bytes_in.get(),
        bytes_out: p.bytes_out.get(),
        records_in: p.records_in.get(),
        connections_active: p.connections_active.get(),
        connections_total: p.connections_total.get(),
        mesh_messages_received: p.mesh_messages_received.get(),
        ..ShardMetrics::default()
    });
    for log in ctx.partitions.borrow().values() {
        m.partitions += 1;
        m.fsyncs += log.sync_count() + log.write_through_count();
        m.segments += log.segment_count() as u64;
        m.log_bytes += log.size_bytes();
    }
    m.write_ahead_bytes = crate::log::shard_write_ahead_bytes();
    (m.log_writes_in_place, m.log_writes_io_uring) = crate::log::pagecache::shard_writes();
    m.preallocated_bytes = crate::log::file::shard_preallocated_bytes();
    let mut groups: BTreeMap<&'static str, u64> = BTreeMap::new();
    for g in ctx.groups.manager.borrow().list(&[]) {
        *groups.entry(g.state.name()).or_default() += 1;
    }
    m.groups = groups.into_iter().collect();
    m
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every shard's snapshot in the Prometheus text format (0.0.4), one `shard` label each.
pub fn render(shards: &[ShardMetrics]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "sable_requests_total",
        "counter",
        "Requests dispatched, by API and version.",
    );
    for s in shards {
        for &(k, v, n) in &s.requests {
            let _ = writeln!(
                out,
                "sable_requests_total{{shard=\"{}\",api=\"{}\",version=\"{v}\"}} {n}",
                s.shard,
                api_name(k)
            );
        }
    }
    family(
        &mut out,
        "sable_request_latency_seconds",
        "summary",
        "Request latency from dispatch to response, by API.",
    );
    for s in shards {
        for l in &s.latency {
            let api = api_name(l.key);
            for &(q, micros) in &l.quantiles {
                let _ = writeln!(
                    out,
                    "sable_request_latency_seconds{{shard=\"{}\",api=\"{api}\",quantile=\"{q}\"}} {}",
                    s.shard,
                    micros as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "sable_request_latency_seconds_sum{{shard=\"{}\",api=\"{api}\"}} {}",
                s.shard,
                l.sum_micros as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "sable_request_latency_seconds_count{{shard=\"{}\",api=\"{api}\"}} {}",
                s.shard, l.count
            );
        }
    }
    type Scalar = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ShardMetrics) -> String,
    );
    let scalars: &[Scalar] = &[
        (
            "sable_received_bytes_total",
            "counter",
            "Request bytes read from clients.",
            |s| s.bytes_in.to_string(),
        ),
        (
            "sable_sent_bytes_total",
            "counter",
            "Response bytes written to clients.",
            |s| s.bytes_out.to_string(),
        ),
        (
            "sable_records_in_total",
            "counter",
            "Records appended by Produce.",
            |s| s.records_in.to_string(),
        ),
        (
            "sable_connections_active",
            "gauge",
            "Client connections open.",
            |s| s.connections_active.to_string(),
        ),
        (
            "sable_connections_total",
            "counter",
            "Client connections accepted.",
            |s| s.connections_total.to_string(),
        ),
        (
            "sable_mesh_messages_received_total",
            "counter",
            "Cross-shard messages handled.",
            |s| s.mesh_messages_received.to_string(),
        ),
        (
            "sable_fsyncs_total",
            "counter",
            "Syncs to disk on the partitions open now: fdatasync calls and O_DSYNC writes.",
            |s| s.fsyncs.to_string(),
        ),
        (
            "sable_partitions",
            "gauge",
            "Partitions this shard owns and has open.",
            |s| s.partitions.to_string(),
        ),
        (
            "sable_log_segments",
            "gauge",
            "Segments of the open partitions.",
            |s| s.segments.to_string(),
        ),
        (
            "sable_log_size_bytes",
            "gauge",
            "Bytes of record data in the open partitions.",
            |s| s.log_bytes.to_string(),
        ),
        (
            "sable_log_write_ahead_bytes",
            "gauge",
            "Zeros written past the log ends of partitions taking lone acks=all appends.",
            |s| s.write_ahead_bytes.to_string(),
        ),
        (
            "sable_log_preallocated_bytes",
            "gauge",
            "Disk blocks allocated ahead of the log ends of fast partitions (freed at roll and close).",
            |s| s.preallocated_bytes.to_string(),
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
        }
    }
    family(
        &mut out,
        "sable_log_writes_total",
        "counter",
        "Plain (not O_DSYNC) log writes, by who did the copy into the page cache: the shard \
         (path=\"shard\") or io_uring's worker (path=\"io_uring\").",
    );
    for s in shards {
        for (path, n) in [
            ("shard", s.log_writes_in_place),
            ("io_uring", s.log_writes_io_uring),
        ] {
            let _ = writeln!(
                out,
                "sable_log_writes_total{{shard=\"{}\",path=\"{path}\"}} {n}",
                s.shard
            );
        }
    }
    family(
        &mut out,
        "sable_consumer_groups",
        "gauge",
        "Consumer groups this shard coordinates, by state.",
    );
    for s in shards {
        for (state, n) in &s.groups {
            let _ = writeln!(
                out,
                "sable_consumer_groups{{shard=\"{}\",state=\"{state}\"}} {n}",
                s.shard
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        {
            let _c = connection_opened();
            let _t = request_started(ApiKey::Produce as i16, 9, 100);
            records_in(3);
            bytes_out(10);
        }
        let ctx = super::super::tests::context();
        let m = snapshot(&ctx);
        assert_eq!(m.requests, vec![(0, 9, 1)]);
        assert_eq!((m.bytes_in, m.bytes_out, m.records_in), (104, 10, 3));
        assert_eq!((m.connections_active, m.connections_total), (0, 1));
        assert_eq!(m.latency.len(), 1);
        assert_eq!(m.latency[0].count, 1);
        let text = render(&[m]);
        assert!(
            text.contains("sable_requests_total{shard=\"0\",api=\"Produce\",version=\"9\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sable_records_in_total{shard=\"0\"} 3\n"));
        assert!(
            text.contains("sable_request_latency_seconds_count{shard=\"0\",api=\"Produce\"} 1\n")
        );
        assert!(text.contains("# TYPE sable_connections_active gauge\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
