//! sable-bench: a Kafka-protocol load generator with its own lean wire client, so it can drive
//! Sable or any other Kafka broker and the client is not what limits the numbers.
//!
//! Workloads: `produce`, `consume`, `e2e` (latency from scheduled send to consumer), and
//! `limits` (the machine's own ceilings). See bench/README.md.

/// eprintln! that drops a line it cannot write (stderr on a full disk) instead of panicking:
/// a run's result must not be lost to its log.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod batch;
mod cluster;
mod consume;
mod cores;
mod e2e;
mod framed;
mod limits;
mod produce;
mod report;
mod stats;
mod wire;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sable-bench", version, about = "Kafka-protocol load generator")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Args)]
struct CommonArgs {
    /// Broker to bootstrap from (host:port).
    #[arg(
        long,
        global = true,
        env = "SABLE_BENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Print one machine-readable JSON object on stdout (the table goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Broker process id: its CPU time (/proc/PID/stat) is reported as CPU-seconds per GB.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// Run sable-bench on these CPUs only (e.g. "1" or "0,2-3"), one connection worker thread
    /// pinned to each; default: unpinned, one connection worker per available CPU.
    #[arg(long, global = true)]
    cpus: Option<String>,
    /// TCP congestion control of every connection sable-bench makes, and of the `limits`
    /// loopback probes (e.g. cubic); default: the system's. Use the broker's, so that the
    /// loopback probe is the ceiling the broker's connections have.
    #[arg(long, global = true)]
    tcp_congestion_control: Option<String>,
}

/// What every workload gets from the command line and from main.
pub struct Common {
    pub bootstrap: String,
    pub broker_pid: Option<u32>,
    /// --cpus: the connections' worker threads are pinned one to each of these.
    pub cpus: Option<Vec<usize>>,
    /// Set on SIGINT or at the deadline: stop sending, drain, report.
    pub stop: Arc<AtomicBool>,
}

#[derive(Subcommand)]
enum Workload {
    /// Produce as fast as possible or at a fixed rate; latency is scheduled send -> ack.
    Produce(ProduceArgs),
    /// Read a topic from the earliest offset to the high watermark (as of the start).
    Consume(ConsumeArgs),
    /// Fixed-rate produce with a concurrent long-poll consumer; latency is scheduled send ->
    /// the consumer has the record.
    E2e(E2eArgs),
    /// Measure this machine's ceilings: loopback TCP, memcpy, disk write and fdatasync.
    Limits(LimitsArgs),
}

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic; created with --partitions if it does not exist.
    #[arg(long, default_value = "sable-bench")]
    pub topic: String,
    /// Partitions of a topic we create; 0 = one per broker in Metadata (per shard on Sable).
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
    /// Bytes of each record's value (the key is null).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per batch; each Produce request carries one batch for one partition.
    #[arg(long, default_value_t = 100, value_parser = batch_records_in_range)]
    pub batch_records: usize,
    /// With --rate: a batch leaves when full or when its oldest record waited this long (ms).
    #[arg(long, alias = "linger")]
    pub linger_ms: Option<f64>,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Connections per leader broker; the leader's partitions are dealt out among them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 8, value_parser = inflight_in_range)]
    pub inflight: usize,
    /// Target records per second over all connections; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to run (default 10, or unlimited with --count).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long, default_value = "sable-bench")]
    pub topic: String,
    /// Read only partitions 0..N of the topic; 0 = all.
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
    /// Fetch max_bytes (Kafka fetch.max.bytes).
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    /// Fetch partition_max_bytes (Kafka max.partition.fetch.bytes).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub partition_max_bytes: i32,
    /// Fetch max_wait_ms.
    #[arg(long, default_value_t = 500)]
    pub max_wait_ms: i32,
    /// Connections per leader broker; the leader's partitions are dealt out among them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Stop after this many seconds even if the high watermark is not reached.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
}

#[derive(Args)]
pub struct E2eArgs {
    #[arg(long, default_value = "sable-bench-e2e")]
    pub topic: String,
    /// Partitions of a topic we create; 0 = one per broker in Metadata.
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
    /// Bytes of each record's value; the first 8 hold the scheduled send time.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per batch (a batch leaves when its last record is due).
    #[arg(long, default_value_t = 1, value_parser = batch_records_in_range)]
    pub batch_records: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Records per second over all producer connections (required to be > 0).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Producer connections per leader broker.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 8, value_parser = inflight_in_range)]
    pub inflight: usize,
    /// Consumer fetch max_wait_ms (long poll).
    #[arg(long, default_value_t = 500)]
    pub max_wait_ms: i32,
    /// Seconds of producing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

#[derive(Args)]
pub struct LimitsArgs {
    /// Directory for the disk probes: put it on the broker's data disk.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds per probe.
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    pub test_seconds: f64,
    /// Seconds of the fdatasync-after-append probe, with no cap on its samples (by default it
    /// runs --test-seconds or 5,000 syncs, whichever ends first). To compare with a workload's
    /// p99, give it the workload's duration: a disk whose syncs stall now and then shows it only
    /// over as long a window.
    #[arg(long, value_parser = seconds)]
    pub sync_seconds: Option<f64>,
    /// Only the disk probes (sequential write + fdatasync, fdatasync after a 4 KiB append): to
    /// probe the disk again right before a durable workload, in the state that workload meets.
    #[arg(long)]
    pub disk_only: bool,
}

fn install_sigint(stop: &Arc<AtomicBool>) {
    use signal_hook::consts::SIGINT;
    // A second Ctrl-C exits at once; the first asks the workers to drain and report.
    let _ = signal_hook::flag::register_conditional_shutdown(SIGINT, 130, stop.clone());
    let _ = signal_hook::flag::register(SIGINT, stop.clone());
}

/// A probe's length: positive and at most a day (Duration::from_secs_f64 panics on what is not).
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 86400 seconds"))
    }
}

/// Records per batch: at least one (an empty batch is invalid), at most a million.
const BATCH_RECORDS_MAX: usize = 1_000_000;
/// Requests in flight per connection.
const INFLIGHT_MAX: usize = 1024;

fn count_in_range(s: &str, max: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number in 1..={max}")),
    }
}

fn batch_records_in_range(s: &str) -> Result<usize, String> {
    count_in_range(s, BATCH_RECORDS_MAX)
}

fn inflight_in_range(s: &str) -> Result<usize, String> {
    count_in_range(s, INFLIGHT_MAX)
}

/// Parses "0,2-3" into CPU numbers.
fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus: cannot read {part:?}");
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        Err("--cpus: empty list".into())
    } else {
        Ok(cpus)
    }
}

/// Parses --cpus and pins this thread (and so every thread it starts) to the list; the producer
/// workers then narrow themselves to one CPU of it each.
fn pin_to_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let cpus = parse_cpu_list(list)?;
    cores::pin_to_cpus(&cpus)?;
    Ok(cpus)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cpus = match cli.common.cpus.as_deref().map(pin_to_cpu_list).transpose() {
        Ok(cpus) => cpus,
        Err(e) => {
            say!("sable-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = cli.common.tcp_congestion_control {
        if let Err(e) = sable::net::congestion::check(&name) {
            say!("sable-bench: {e}");
            return ExitCode::from(2);
        }
        wire::use_congestion_control(name);
    }
    let stop = Arc::new(AtomicBool::new(false));
    install_sigint(&stop);
    let common = Common {
        bootstrap: cli.common.bootstrap,
        broker_pid: cli.common.broker_pid,
        cpus,
        stop,
    };
    let result = match &cli.workload {
        Workload::Limits(args) => {
            let (value, errors) = limits::run(args);
            let written = if cli.common.json {
                let _ = limits::print_table(&value, &mut std::io::stderr());
                writeln!(std::io::stdout(), "{value}")
            } else {
                limits::print_table(&value, &mut std::io::stdout())
            };
            if let Err(e) = written {
                say!("sable-bench: cannot write the result: {e}");
                return ExitCode::FAILURE;
            }
            return if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Workload::Produce(args) => produce::run(&common, args),
        Workload::Consume(args) => consume::run(&common, args),
        Workload::E2e(args) => e2e::run(&common, args),
    };
    match result {
        Ok(mut report) => {
            report.extra.insert(
                "tcp_congestion_control".into(),
                wire::congestion_control_in_effect().into(),
            );
            if let Err(e) = report.emit(cli.common.json) {
                say!("sable-bench: cannot write the result: {e}");
                return ExitCode::FAILURE;
            }
            if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            say!("sable-bench: {e}");
            ExitCode::from(2)
        }
    }
}
