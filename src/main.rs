//! `sable`: parse the config, lock the data directory, load metadata, start one shard per core,
//! wait for SIGINT/SIGTERM. No broker logic lives here.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use futures::channel::oneshot;
use sable::config::Config;
use sable::log::{CLEAN_SHUTDOWN_FILE, LastStop};
use sable::metadata::MetadataState;
use sable::shard;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// glommio refuses to start an executor below this soft RLIMIT_MEMLOCK (notes/glommio.md §1).
const MEMLOCK_MIN_BYTES: u64 = 512 << 10;
/// sysexits EX_CONFIG: the host or the flags are wrong, not the broker.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is lost; by
        // default tracing-subscriber reports that with eprintln!, which panics, and the broker
        // would abort exactly when its data disk fills up.
        .log_internal_errors(false)
        .init();
    match run(config) {
        Ok(code) => code,
        Err(msg) => {
            say(&format!("sable: {msg}"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// One line on stderr; unlike eprintln!, a failed write is ignored rather than a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(config: Config) -> Result<ExitCode, String> {
    let shards = config
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    config.validate(shards)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if shards > cpus {
        return Err(format!(
            "--shards {shards} exceeds the {cpus} available cores (one pinned executor per core)"
        ));
    }
    ensure_memlock(MEMLOCK_MIN_BYTES)?;
    if let Some(name) = &config.tcp_congestion_control {
        sable::net::congestion::check(name)?;
    }
    raise_open_files_limit();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    // glommio opens files and directories with io_uring openat relative to no directory, so a
    // relative path (the default ./data) fails with EBADF: resolve it once, here.
    let mut config = config;
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve data dir {}: {e}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    if config.log_inline_writes
        && let Err(e) = sable::log::pagecache::start(&config.data_dir)
    {
        tracing::warn!(error = %e, "cannot sample the page cache's state; every log write goes through io_uring");
    }
    let state = load_metadata(&config.data_dir)?;
    let last_stop = take_clean_shutdown_marker(&config.data_dir)?;
    tracing::info!(
        shards,
        bootstrap = %config.listen,
        shard_ports = %format!("{}..={}", config.shard_port(0), config.shard_port(shards - 1)),
        data_dir = %config.data_dir.display(),
        topics = state.topics.len(),
        last_stop = ?last_stop,
        "starting sable"
    );

    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (stop_txs, stop_rxs): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| oneshot::channel::<()>()).unzip();
    let data_dir = config.data_dir.clone();
    let handles = shard::start(config, shards, state, stop_rxs, last_stop)?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "shutting down");
        }
        for s in stop_txs {
            let _ = s.send(());
        }
    });
    let mut failed = false;
    let mut clean = true;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(stop)) => clean &= stop == LastStop::Clean,
            Ok(Err(msg)) => {
                // A shard that cannot serve makes the whole broker unusable: stop at once.
                say(&format!("sable: shard {i}: {msg}"));
                std::process::exit(1);
            }
            Err(e) => {
                say(&format!("sable: shard {i} failed: {e}"));
                failed = true;
            }
        }
    }
    if clean && !failed {
        match write_clean_shutdown_marker(&data_dir) {
            Ok(()) => tracing::info!("stopped cleanly"),
            Err(e) => {
                tracing::error!(error = %e, "could not write the clean-shutdown marker; the next start checks every tail")
            }
        }
    } else {
        tracing::warn!("a log was not closed cleanly; the next start checks every tail");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Raises a soft resource limit to at least `want` (never above the hard limit, which needs no
/// privilege) and returns the soft limit now in force.
fn raise_soft_limit(resource: libc::__rlimit_resource_t, want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for the kernel to fill.
    unsafe { libc::getrlimit(resource, &mut r) };
    if r.rlim_cur < want && r.rlim_max > r.rlim_cur {
        r.rlim_cur = want.min(r.rlim_max);
        // SAFETY: raising the soft limit up to the hard limit needs no privilege; `r` is valid.
        unsafe {
            libc::setrlimit(resource, &r);
            libc::getrlimit(resource, &mut r);
        }
    }
    r.rlim_cur
}

/// Every partition holds its active segment open (two descriptors while it takes acks=all
/// writes) and every connection one socket, so the 1024 descriptors many hosts give by default
/// run out at about a thousand partitions: take whatever the hard limit allows, as Kafka's
/// operators are told to.
fn raise_open_files_limit() {
    let open_files = raise_soft_limit(libc::RLIMIT_NOFILE, u64::MAX);
    tracing::debug!(open_files, "RLIMIT_NOFILE");
}

/// Raises the soft locked-memory limit to the hard one if needed; says what to change otherwise.
fn ensure_memlock(min_bytes: u64) -> Result<(), String> {
    let locked = raise_soft_limit(libc::RLIMIT_MEMLOCK, min_bytes);
    if locked >= min_bytes {
        return Ok(());
    }
    Err(format!(
        "RLIMIT_MEMLOCK is {} KiB; io_uring (glommio) needs at least {} KiB of locked memory. \
         Fix: `ulimit -l unlimited` in the shell, LimitMEMLOCK=infinity in the systemd unit, \
         or `--ulimit memlock=-1` for docker.",
        locked >> 10,
        min_bytes >> 10
    ))
}

/// glommio always sets SO_REUSEPORT, so a second broker on the same port would start silently
/// and take half the connections; an exclusive lock on the data directory prevents it.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(".lock");
    let f = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: `f` is an open file; flock only takes an advisory lock on it.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "data dir {} is in use by another sable process",
            dir.display()
        ));
    }
    Ok(f)
}

/// How the broker last stopped: clean if it left its marker. The marker is removed, durably,
/// before any shard starts, so a crash from here on is seen as one at the next start.
fn take_clean_shutdown_marker(dir: &Path) -> Result<LastStop, String> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LastStop::Unclean),
        Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
    }
    sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok(LastStop::Clean)
}

/// Once every shard closed every log: the marker, made durable with its name.
fn write_clean_shutdown_marker(dir: &Path) -> std::io::Result<()> {
    File::create(dir.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the controller's metadata before any shard starts (plain std::fs: no reactor yet).
fn load_metadata(dir: &Path) -> Result<MetadataState, String> {
    let path = dir.join("meta").join(shard::controller::METADATA_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => MetadataState::decode(&bytes)
            .map_err(|e| format!("corrupt metadata {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataState {
            cluster_id: new_cluster_id(),
            version: 0,
            topics: vec![],
            next_producer_id: 0,
        }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Kafka cluster ids are 22 characters of URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = uuid::Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((v >> (i * 6)) & 63) as usize] as char)
        .collect()
}
