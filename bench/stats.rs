//! Counters and latency histograms shared by the worker threads, the once-a-second progress
//! line, and CPU accounting of the broker and of ourselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs .. 1 h, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Error messages kept verbatim for the report; the rest are only counted.
const ERROR_SAMPLES_MAX: usize = 8;

static CLOCK_START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on a monotonic clock shared by every thread of this process. e2e writes it into
/// records and reads it back on the consumer side.
pub fn now_ns() -> u64 {
    CLOCK_START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Everything the workers count. One histogram per worker thread, each behind its own lock, which
/// is uncontended except for the once-a-second progress read. Sessions pass their own index,
/// taken modulo the number of histograms: the same spread `cores::Workers::add` deals them out
/// by, so a thread's sessions share its histogram. (One histogram per connection made 1,000
/// connections 1,000 histograms of ~190 KB, merged every second and cold in cache.)
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Set by the deadline or SIGINT: workers stop sending new requests.
    pub stop: Arc<AtomicBool>,
    /// Set once every worker has drained: the progress line stops.
    pub finished: AtomicBool,
    histograms: Vec<Mutex<Histogram<u64>>>,
    error_samples: Mutex<Vec<String>>,
}

impl Stats {
    pub fn new(workers: usize, stop: Arc<AtomicBool>) -> Arc<Stats> {
        let workers = workers.max(1);
        Arc::new(Stats {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop,
            finished: AtomicBool::new(false),
            histograms: (0..workers).map(|_| Mutex::new(new_histogram())).collect(),
            error_samples: Mutex::new(Vec::new()),
        })
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `count` samples of `latency_ns` in worker `worker`'s histogram.
    pub fn record_latency(&self, worker: usize, latency_ns: u64, count: u64) {
        let us = (latency_ns / 1000).clamp(1, LATENCY_MAX_US);
        let mut h = self.histogram(worker).lock().expect("histogram lock");
        h.saturating_record_n(us, count);
    }

    pub fn with_histogram<T>(&self, worker: usize, f: impl FnOnce(&mut Histogram<u64>) -> T) -> T {
        f(&mut self.histogram(worker).lock().expect("histogram lock"))
    }

    fn histogram(&self, worker: usize) -> &Mutex<Histogram<u64>> {
        &self.histograms[worker % self.histograms.len()]
    }

    pub fn error(&self, message: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().expect("error lock");
        if samples.len() < ERROR_SAMPLES_MAX {
            let m = message.into();
            say!("error: {m}");
            samples.push(m);
        }
    }

    pub fn error_samples(&self) -> Vec<String> {
        self.error_samples.lock().expect("error lock").clone()
    }

    pub fn merged_histogram(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.histograms {
            all.add(&*h.lock().expect("histogram lock"))
                .expect("same bounds");
        }
        all
    }
}

/// Prints `[  3s] 512345 msg/s  48.9 MB/s  p99 1.234 ms  errors 0` on stderr once a second
/// until `stats.finished` is set.
pub fn spawn_progress(stats: Arc<Stats>, label: &'static str) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let started = Instant::now();
        let (mut last_records, mut last_bytes, mut last) = (0u64, 0u64, Instant::now());
        while !stats.finished.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
            if last.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let records = stats.records.load(Ordering::Relaxed);
            let bytes = stats.bytes.load(Ordering::Relaxed);
            let secs = last.elapsed().as_secs_f64();
            let p99_us = stats.merged_histogram().value_at_quantile(0.99);
            say!(
                "[{:>4.0}s] {label}: {:>10.0} msg/s {:>9.1} MB/s  p99 {:>9.3} ms  errors {}",
                started.elapsed().as_secs_f64(),
                (records - last_records) as f64 / secs,
                (bytes - last_bytes) as f64 / secs / 1e6,
                p99_us as f64 / 1000.0,
                stats.errors.load(Ordering::Relaxed),
            );
            (last_records, last_bytes, last) = (records, bytes, Instant::now());
        }
    })
}

/// utime + stime of a process, in seconds, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?; // field 14 of proc(5)
    let stime: f64 = fields.get(12)?.parse().ok()?; // field 15
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks > 0.0).then(|| (utime + stime) / ticks)
}

/// CPU seconds (user + system) this process used so far, all threads.
pub fn self_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Waits until `duration_s` passed (then sets `stop`) or every handle finished by itself, then
/// joins them all. Returns the elapsed seconds from `started`.
pub fn run_workers(
    stats: &Stats,
    started: Instant,
    duration_s: Option<f64>,
    handles: Vec<thread::JoinHandle<()>>,
) -> f64 {
    let deadline = duration_s.map(|d| started + Duration::from_secs_f64(d));
    while !handles.iter().all(|h| h.is_finished()) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stats.stop.store(true, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(10));
    }
    stats.stop.store(true, Ordering::Relaxed);
    for h in handles {
        if h.join().is_err() {
            stats.error("a worker thread panicked");
        }
    }
    started.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_their_worker_threads_histograms_and_lose_no_sample() {
        let stats = Stats::new(2, Arc::new(AtomicBool::new(false)));
        assert_eq!(stats.histograms.len(), 2);
        // Five sessions dealt out over two workers, as cores::Workers::add deals them.
        for session in 0..5 {
            stats.record_latency(session, 1_000 * (session as u64 + 1), 10);
        }
        let per_worker: Vec<u64> = (0..2)
            .map(|w| stats.with_histogram(w, |h| h.len()))
            .collect();
        assert_eq!(
            per_worker,
            [30, 20],
            "sessions 0, 2, 4 on worker 0; 1, 3 on worker 1"
        );
        let all = stats.merged_histogram();
        assert_eq!(all.len(), 50);
        assert_eq!(all.max(), 5);
    }
}
