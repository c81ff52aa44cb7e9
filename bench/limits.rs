//! The machine's own ceilings, measured in the same run as a workload so a broker's numbers can
//! be stated as fractions of them: loopback TCP bandwidth and round trip, memcpy bandwidth,
//! page-cache write bandwidth and its CPU cost, sequential write + fdatasync bandwidth, and
//! fdatasync latency after a 4 KiB append.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::LimitsArgs;
use crate::stats::new_histogram;
use crate::wire;

const TCP_CHUNK_BYTES: usize = 1024 * 1024;
/// Larger than the last-level cache of anything we run on, so memcpy measures memory.
const MEMCPY_BUFFER_BYTES: usize = 64 * 1024 * 1024;
const DISK_CHUNK_BYTES: usize = 1024 * 1024;
/// Sequential write stops at this size even if time is left, to spare the disk.
const DISK_WRITE_MAX_BYTES: u64 = 1024 * 1024 * 1024;
const SYNC_APPEND_BYTES: usize = 4096;
const SYNC_SAMPLES_MAX: usize = 5000;

/// What one loopback stream costs: bytes per second, and the CPU-seconds per GB of the sending
/// and the receiving thread (a broker's fetch path pays at least the sending side).
struct LoopbackProbe {
    bytes_per_s: f64,
    send_cpu_s_per_gb: f64,
    recv_cpu_s_per_gb: f64,
}

/// A writer thread pushes 1 MiB writes through a loopback socket to a reader thread.
fn loopback_bandwidth(test: Duration) -> io::Result<LoopbackProbe> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = thread::spawn(move || -> io::Result<(u64, f64)> {
        let (mut s, _) = listener.accept()?;
        wire::apply_congestion_control(&s)?;
        let cpu_before = thread_cpu_s();
        let mut buf = vec![0u8; TCP_CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((total, thread_cpu_s() - cpu_before)),
                n => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    wire::apply_congestion_control(&s)?;
    let chunk = vec![7u8; TCP_CHUNK_BYTES];
    let cpu_before = thread_cpu_s();
    let started = Instant::now();
    while started.elapsed() < test {
        s.write_all(&chunk)?;
    }
    let send_cpu = thread_cpu_s() - cpu_before;
    drop(s);
    let (total, recv_cpu) = reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))??;
    let gb = total as f64 / 1e9;
    Ok(LoopbackProbe {
        bytes_per_s: total as f64 / started.elapsed().as_secs_f64(),
        send_cpu_s_per_gb: send_cpu / gb,
        recv_cpu_s_per_gb: recv_cpu / gb,
    })
}

/// Round trips of one byte over loopback with TCP_NODELAY: (p50, p99, max) in microseconds.
fn loopback_round_trip(test: Duration) -> io::Result<(u64, u64, u64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = thread::spawn(move || -> io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        wire::apply_congestion_control(&s)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    wire::apply_congestion_control(&s)?;
    let mut h = new_histogram();
    let started = Instant::now();
    let mut b = [1u8; 1];
    while started.elapsed() < test {
        let t = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        h.saturating_record((t.elapsed().as_nanos() / 1000).max(1) as u64);
    }
    drop(s);
    echo.join()
        .map_err(|_| io::Error::other("echo panicked"))??;
    Ok((h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
}

/// Bytes per second copied between two buffers larger than the caches.
fn memcpy_bandwidth(test: Duration) -> f64 {
    let src = vec![3u8; MEMCPY_BUFFER_BYTES];
    let mut dst = vec![0u8; MEMCPY_BUFFER_BYTES];
    dst.copy_from_slice(&src); // fault the pages in before timing
    let started = Instant::now();
    let mut copies = 0u64;
    while started.elapsed() < test {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies += 1;
    }
    (copies * MEMCPY_BUFFER_BYTES as u64) as f64 / started.elapsed().as_secs_f64()
}

fn scratch_file(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!(".sable-bench-{name}-{}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    Ok((f, path))
}

/// One sequential-write probe: bytes per second, and CPU-seconds per GB of the writing thread.
struct WriteProbe {
    bytes_per_s: f64,
    cpu_s_per_gb: f64,
}

/// 1 MiB sequential writes to a new file, then (with `sync`) one fdatasync, which is timed too.
/// Without `sync` it measures what every page-cache broker pays per byte appended: on a VM whose
/// free memory went back to the host, filling new page-cache pages can be several times slower
/// than recycling reclaimed ones, so `MemFree` is reported beside it.
fn sequential_write(dir: &Path, test: Duration, sync: bool) -> io::Result<WriteProbe> {
    let (mut f, path) = scratch_file(dir, if sync { "seq" } else { "cache" })?;
    let chunk = vec![5u8; DISK_CHUNK_BYTES];
    let cpu_before = thread_cpu_s();
    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < test && written < DISK_WRITE_MAX_BYTES {
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    if sync {
        f.sync_data()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_s() - cpu_before;
    drop(f);
    std::fs::remove_file(path)?;
    Ok(WriteProbe {
        bytes_per_s: written as f64 / elapsed,
        cpu_s_per_gb: cpu / (written as f64 / 1e9),
    })
}

/// CPU time (user + system) of the calling thread, in seconds.
fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage writes one plain struct we own; RUSAGE_THREAD is valid on Linux.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// MemFree from /proc/meminfo in MB, or None where it cannot be read.
fn mem_free_mb() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemFree:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

/// fdatasync latency after each 4 KiB append, for `test` or until `samples_max` syncs:
/// (p50, p99, max) in microseconds, samples.
fn append_sync_latency(
    dir: &Path,
    test: Duration,
    samples_max: usize,
) -> io::Result<(u64, u64, u64, u64)> {
    let (f, path) = scratch_file(dir, "sync")?;
    let block = vec![9u8; SYNC_APPEND_BYTES];
    let mut h = new_histogram();
    let started = Instant::now();
    let mut end = 0u64;
    while started.elapsed() < test && (h.len() as usize) < samples_max {
        f.write_all_at(&block, end)?;
        end += block.len() as u64;
        let t = Instant::now();
        f.sync_data()?;
        h.saturating_record((t.elapsed().as_nanos() / 1000).max(1) as u64);
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok((
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        h.len(),
    ))
}

/// Runs every probe; a probe that fails is reported as an error string, the others still run.
pub fn run(args: &LimitsArgs) -> (Value, u64) {
    let test = Duration::from_secs_f64(args.test_seconds);
    let dir = &args.dir;
    let mut errors = Vec::new();
    let mut note = |what: &str, e: io::Error| errors.push(format!("{what}: {e}"));
    say!(
        "limits: {:.1} s per probe, disk probes in {}",
        args.test_seconds,
        dir.display()
    );
    let everything = !args.disk_only;
    let tcp = everything
        .then(|| loopback_bandwidth(test).map_err(|e| note("loopback bandwidth", e)))
        .and_then(Result::ok);
    let rtt = everything
        .then(|| loopback_round_trip(test).map_err(|e| note("loopback round trip", e)))
        .and_then(Result::ok);
    let memcpy = everything.then(|| memcpy_bandwidth(test));
    let free_before = mem_free_mb();
    let cache = everything
        .then(|| sequential_write(dir, test, false).map_err(|e| note("page-cache write", e)))
        .and_then(Result::ok);
    let seq = sequential_write(dir, test, true)
        .map_err(|e| note("sequential write", e))
        .ok();
    let (sync_test, sync_samples_max) = match args.sync_seconds {
        Some(seconds) => (Duration::from_secs_f64(seconds), usize::MAX),
        None => (test, SYNC_SAMPLES_MAX),
    };
    let sync = append_sync_latency(dir, sync_test, sync_samples_max)
        .map_err(|e| note("fdatasync latency", e))
        .ok();
    let mb = |v: f64| v / 1e6;
    let out = json!({
        "workload": "limits",
        "cpus": thread::available_parallelism().map_or(0, |n| n.get()),
        "tcp_congestion_control": wire::congestion_control_in_effect(),
        "loopback_tcp_mb_per_s": tcp.as_ref().map(|p| mb(p.bytes_per_s)),
        "loopback_tcp_send_cpu_s_per_gb": tcp.as_ref().map(|p| p.send_cpu_s_per_gb),
        "loopback_tcp_recv_cpu_s_per_gb": tcp.as_ref().map(|p| p.recv_cpu_s_per_gb),
        "loopback_rtt_us": rtt.map(|(p50, p99, max)| json!({"p50": p50, "p99": p99, "max": max})),
        "memcpy_mb_per_s": memcpy.map(mb),
        "disk_dir": dir.display().to_string(),
        "mem_free_mb": free_before,
        "page_cache_write_mb_per_s": cache.as_ref().map(|p| mb(p.bytes_per_s)),
        "page_cache_write_cpu_s_per_gb": cache.as_ref().map(|p| p.cpu_s_per_gb),
        "seq_write_fdatasync_mb_per_s": seq.as_ref().map(|p| mb(p.bytes_per_s)),
        "fdatasync_4k_append_us": sync.map(|(p50, p99, max, n)| {
            json!({"p50": p50, "p99": p99, "max": max, "samples": n})
        }),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "errors": errors.len(),
        "error_samples": errors,
    });
    let count = errors.len() as u64;
    (out, count)
}

pub fn print_table(v: &Value, out: &mut dyn Write) -> io::Result<()> {
    let f = |k: &str| {
        v[k].as_f64()
            .map_or("n/a".to_string(), |x| format!("{x:.0}"))
    };
    let q = |k: &str, p: &str| {
        v[k][p]
            .as_u64()
            .map_or("n/a".to_string(), |x| x.to_string())
    };
    writeln!(out, "\n== sable-bench limits ({} CPUs) ==", v["cpus"])?;
    let cpu = |k: &str| {
        v[k].as_f64()
            .map_or("n/a".to_string(), |x| format!("{x:.2}"))
    };
    writeln!(
        out,
        "{:<38} {} MB/s  send {} / receive {} CPU-s/GB  ({})",
        "loopback TCP, 1 stream",
        f("loopback_tcp_mb_per_s"),
        cpu("loopback_tcp_send_cpu_s_per_gb"),
        cpu("loopback_tcp_recv_cpu_s_per_gb"),
        v["tcp_congestion_control"]
            .as_str()
            .unwrap_or("congestion control unknown")
    )?;
    writeln!(
        out,
        "{:<38} p50 {} us  p99 {} us  max {} us",
        "loopback 1-byte round trip",
        q("loopback_rtt_us", "p50"),
        q("loopback_rtt_us", "p99"),
        q("loopback_rtt_us", "max")
    )?;
    writeln!(
        out,
        "{:<38} {} MB/s",
        "memcpy (64 MiB buffers)",
        f("memcpy_mb_per_s")
    )?;
    writeln!(
        out,
        "{:<38} {} MB/s  {} CPU-s/GB  (MemFree {} MB before)",
        "page-cache write, new pages, no sync",
        f("page_cache_write_mb_per_s"),
        cpu("page_cache_write_cpu_s_per_gb"),
        f("mem_free_mb")
    )?;
    writeln!(
        out,
        "{:<38} {} MB/s",
        "sequential write + fdatasync",
        f("seq_write_fdatasync_mb_per_s")
    )?;
    writeln!(
        out,
        "{:<38} p50 {} us  p99 {} us  max {} us",
        "fdatasync after 4 KiB append",
        q("fdatasync_4k_append_us", "p50"),
        q("fdatasync_4k_append_us", "p99"),
        q("fdatasync_4k_append_us", "max")
    )?;
    for e in v["error_samples"].as_array().into_iter().flatten() {
        writeln!(out, "error: {e}")?;
    }
    Ok(())
}
