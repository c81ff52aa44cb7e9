//! Appends written into the page cache by the shard itself, while the kernel has no reason to
//! make such a write wait.
//!
//! ext4 takes no buffered write without the right to block (`RWF_NOWAIT` is refused), so io_uring
//! hands every log write to an `iou-wrk` thread on the shard's own core: per write round a park
//! and a wake of the shard and two context switches, which cost more CPU than the copy they
//! wrap (bench/README.md). A buffered append is CPU work, a copy into new page-cache pages,
//! unless the kernel
//! * throttles the writer: dirty pages past halfway from the background threshold to the limit
//!   (globally, or in a memory cgroup with a limit);
//! * waits for the inode's allocation lock while writeback of the same file holds it and waits
//!   for the disk: the kernel's flusher writes back once dirty pages pass the background
//!   threshold, Sable's own syncs whenever they run (the file layer knows those). A write into
//!   blocks allocated ahead (`SegmentFile::preallocate_ahead`) does not take that lock;
//! * reclaims memory for the new pages: free memory under the zones' low watermarks, or a memory
//!   cgroup at its limit;
//! * must wait for space: ext4 falls back from delayed allocation when the disk is nearly full;
//! * reads the partial page the append starts in, or waits for that page's writeback.
//!
//! A sampler thread (not a shard) reads the kernel's numbers every few milliseconds and sets two
//! byte budgets: what the shards together may write in place before the next sample and still
//! stay clear of all of these, and a larger one for writes into preallocated blocks, which only
//! need dirty pages under the point where writers are throttled. The file layer checks the rest
//! per write: a sync of the file in flight, and the page the write starts in. A write the budget
//! does not cover, or that fails those checks, goes through io_uring as before. If the sampler
//! stops, the budget runs out and every write goes through io_uring.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Largest write done in place: a bigger one (a round of many appends) keeps its copy off the
/// shard, so one write cannot hold the other connections back long.
pub const INLINE_WRITE_MAX_BYTES: usize = 256 * 1024;

/// Most bytes one sample lets the shards write in place, whatever room the kernel has: a stale
/// sample (the sampler descheduled) can cost at most this much past it.
const BUDGET_MAX_BYTES: u64 = 64 << 20;

/// Space ext4 is left on the disk, beyond twice what is dirty: it stops delayed allocation
/// (and allocates in the write, reading bitmaps) when free space runs near the dirty amount.
const DISK_RESERVE_BYTES: u64 = 1 << 30;

/// Room kept under a memory cgroup's limit, for what else the cgroup allocates meanwhile.
const CGROUP_RESERVE_BYTES: u64 = 32 << 20;

/// Room kept under the background threshold, for what other processes dirty between two
/// samples.
const DIRTY_RESERVE_BYTES: u64 = 64 << 20;

/// Sampling period while the shards draw on the budget, and while they do not.
const SAMPLE_BUSY: Duration = Duration::from_millis(10);
const SAMPLE_IDLE: Duration = Duration::from_millis(100);

/// The budgets the shards draw on; `enabled` false until the first sample is in.
pub struct Budget {
    enabled: AtomicBool,
    /// For writes that may allocate blocks: dirty pages under the background threshold.
    bytes: AtomicU64,
    /// For writes into preallocated blocks: dirty pages under the free-run ceiling.
    preallocated: AtomicU64,
    drawn: AtomicBool,
}

impl Budget {
    const fn new() -> Budget {
        Budget {
            enabled: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            preallocated: AtomicU64::new(0),
            drawn: AtomicBool::new(false),
        }
    }

    /// Takes `len` bytes of the budget for a write into blocks `preallocated` or not, if all of
    /// them are there. Either kind dirties pages, so both budgets shrink.
    pub fn take(&self, len: usize, preallocated: bool) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let len = len as u64;
        let (first, other) = if preallocated {
            (&self.preallocated, &self.bytes)
        } else {
            (&self.bytes, &self.preallocated)
        };
        let taken = first
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(len))
            .is_ok();
        if taken {
            let _ = other.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(len))
            });
        }
        self.drawn.store(true, Ordering::Relaxed);
        taken
    }

    /// Replaces the budgets with a new sample's; true when they were drawn on since the last one.
    fn set(&self, budgets: Budgets) -> bool {
        self.bytes.store(budgets.allocating, Ordering::Relaxed);
        self.preallocated
            .store(budgets.preallocated, Ordering::Relaxed);
        self.enabled.store(true, Ordering::Relaxed);
        self.drawn.swap(false, Ordering::Relaxed)
    }
}

static BUDGET: Budget = Budget::new();

/// The disk has room for blocks allocated ahead (set by the sampler).
static PREALLOCATION_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Free disk space under which no blocks are allocated ahead, beyond twice what is dirty.
const PREALLOCATION_DISK_RESERVE_BYTES: u64 = 4 << 30;

/// True when the sampler runs and the last sample found the disk roomy enough for blocks
/// allocated ahead of the log ends.
pub fn preallocation_allowed() -> bool {
    #[cfg(test)]
    if TEST_BUDGET.with(|b| b.enabled.load(Ordering::Relaxed)) {
        return true;
    }
    PREALLOCATION_ALLOWED.load(Ordering::Relaxed)
}

fn preallocation_fits(s: &Sample) -> bool {
    s.disk_available > PREALLOCATION_DISK_RESERVE_BYTES + 2 * s.dirty
}

/// Makes a sample what the shards draw on; `None` (the sampler stopped) leaves them nothing to
/// write in place and no room to allocate ahead. True when the last budgets were drawn on.
fn publish(sample: Option<&Sample>) -> bool {
    PREALLOCATION_ALLOWED.store(sample.is_some_and(preallocation_fits), Ordering::Relaxed);
    BUDGET.set(sample.map_or(
        Budgets {
            allocating: 0,
            preallocated: 0,
        },
        budgets,
    ))
}

/// Takes `len` bytes of the process's in-place write budget, for a write into blocks
/// `preallocated` or not; false when the sampler is not running or the budget does not cover
/// them.
pub fn take(len: usize, preallocated: bool) -> bool {
    #[cfg(test)]
    if let Some(taken) = TEST_BUDGET.with(|b| {
        b.enabled
            .load(Ordering::Relaxed)
            .then(|| b.take(len, preallocated))
    }) {
        return taken;
    }
    BUDGET.take(len, preallocated)
}

thread_local! {
    /// Log writes of this shard: (in place, through io_uring).
    static SHARD_WRITES: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

pub(crate) fn count_write(in_place: bool) {
    SHARD_WRITES.with(|w| {
        let (shard, uring) = w.get();
        w.set(if in_place {
            (shard + 1, uring)
        } else {
            (shard, uring + 1)
        });
    });
}

/// This shard's plain log writes so far: (done in place, handed to io_uring).
pub fn shard_writes() -> (u64, u64) {
    SHARD_WRITES.with(Cell::get)
}

/// What one sample read, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub free: u64,
    /// Sum of the zones' low watermarks: below it kswapd runs, and not far below, allocations
    /// reclaim for themselves.
    pub low_watermarks: u64,
    /// Page-cache pages of files (what the kernel counts as dirtyable besides free memory).
    pub file: u64,
    /// Dirty plus under writeback: what the kernel compares with its thresholds.
    pub dirty: u64,
    /// `nr_dirty_background_threshold`: the flusher starts writing back here.
    pub background_threshold: u64,
    /// `nr_dirty_threshold`: writers are throttled from halfway between the background
    /// threshold and this one (`dirty_freerun_ceiling`), and stopped here.
    pub threshold: u64,
    /// Free space on the data directory's file system.
    pub disk_available: u64,
    /// Memory cgroups with a limit, from the broker's own up to the root.
    pub cgroups: Vec<CgroupSample>,
}

/// One memory cgroup level with a limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    pub limit: u64,
    pub usage: u64,
    /// File pages, and their dirty and writeback part (cgroup v2 only: v1 has no writeback
    /// throttling of its own).
    pub file: u64,
    pub dirty: Option<u64>,
}

/// Bytes that may be written in place before the next sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Into blocks not allocated yet.
    pub allocating: u64,
    /// Into blocks allocated ahead.
    pub preallocated: u64,
}

pub fn budgets(s: &Sample) -> Budgets {
    let freerun = (s.background_threshold + s.threshold.max(s.background_threshold)) / 2;
    Budgets {
        allocating: budget(s, s.background_threshold),
        preallocated: budget(s, freerun),
    }
}

/// What may be written in place while dirty pages stay under `dirty_ceiling` (less the reserve).
fn budget(s: &Sample, dirty_ceiling: u64) -> u64 {
    let dirty_room = room_under(dirty_ceiling, s.dirty);
    let free_room = s.free.saturating_sub(s.low_watermarks);
    let disk_room = (s.disk_available / 2)
        .saturating_sub(DISK_RESERVE_BYTES)
        .saturating_sub(s.dirty);
    let mut room = dirty_room
        .min(free_room)
        .min(disk_room)
        .min(BUDGET_MAX_BYTES);
    // The kernel scales the thresholds to a cgroup's share of dirtyable memory.
    let dirtyable = s.free + s.file;
    for cg in &s.cgroups {
        let headroom = cg.limit.saturating_sub(cg.usage);
        room = room.min(headroom.saturating_sub(CGROUP_RESERVE_BYTES));
        if let Some(dirty) = cg.dirty
            && dirtyable > 0
        {
            let available = (headroom + cg.file).min(dirtyable);
            let ceiling = (dirty_ceiling as u128 * available as u128 / dirtyable as u128) as u64;
            room = room.min(room_under(ceiling, dirty));
        }
    }
    room
}

/// Bytes that may be dirtied before `dirty` reaches `ceiling` less the reserve.
fn room_under(ceiling: u64, dirty: u64) -> u64 {
    ceiling
        .saturating_sub(DIRTY_RESERVE_BYTES)
        .saturating_sub(dirty)
}

/// The fields of /proc/vmstat a sample needs, in bytes.
fn parse_vmstat(text: &str, page_bytes: u64, s: &mut Sample) -> io::Result<()> {
    let mut found = 0;
    let (mut writeback, mut active_file, mut inactive_file) = (0, 0, 0);
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(pages) = value.parse::<u64>() else {
            continue;
        };
        let bytes = pages.saturating_mul(page_bytes);
        let field = match name {
            "nr_free_pages" => &mut s.free,
            "nr_dirty" => &mut s.dirty,
            "nr_writeback" => &mut writeback,
            "nr_active_file" => &mut active_file,
            "nr_inactive_file" => &mut inactive_file,
            "nr_dirty_background_threshold" => &mut s.background_threshold,
            "nr_dirty_threshold" => &mut s.threshold,
            _ => continue,
        };
        *field = bytes;
        found += 1;
    }
    if found < 7 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/vmstat lacks nr_free_pages, nr_dirty, nr_writeback, nr_active_file, \
             nr_inactive_file, nr_dirty_threshold or nr_dirty_background_threshold",
        ));
    }
    s.dirty += writeback;
    s.file = active_file + inactive_file;
    Ok(())
}

/// Sum of the "low" watermarks of /proc/zoneinfo, in bytes.
fn parse_low_watermarks(text: &str, page_bytes: u64) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            match (words.next(), words.next()) {
                (Some("low"), Some(pages)) => pages.parse::<u64>().ok(),
                _ => None,
            }
        })
        .sum::<u64>()
        .saturating_mul(page_bytes)
}

/// The memory cgroup directories of this process, its own first, then each parent up to the
/// hierarchy's root; `v2` tells which files they hold.
#[derive(Debug, PartialEq, Eq)]
struct CgroupDirs {
    v2: bool,
    dirs: Vec<PathBuf>,
}

/// From /proc/self/cgroup: the v1 memory controller's line if there is one, else the unified
/// hierarchy's ("0::/path").
fn cgroup_dirs(proc_self_cgroup: &str, mount: &Path) -> Option<CgroupDirs> {
    let mut unified = None;
    let mut v1 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    let (v2, path, base) = match (v1, unified) {
        (Some(path), _) => (false, path, mount.join("memory")),
        (None, Some(path)) => (true, path, mount.to_path_buf()),
        (None, None) => return None,
    };
    let mut dirs = Vec::new();
    let mut rel = Path::new(path.trim_start_matches('/'));
    loop {
        dirs.push(base.join(rel));
        match rel.parent() {
            Some(parent) => rel = parent,
            None => break,
        }
    }
    Some(CgroupDirs { v2, dirs })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The limited levels among `dirs`. A level without the files (the host's root cgroup, or a
/// hierarchy mounted elsewhere) or without a limit ("max", or v1's huge number) adds nothing.
fn read_cgroups(dirs: &CgroupDirs) -> Vec<CgroupSample> {
    let mut levels = Vec::new();
    for dir in &dirs.dirs {
        let (limit_file, usage_file) = if dirs.v2 {
            ("memory.max", "memory.current")
        } else {
            ("memory.limit_in_bytes", "memory.usage_in_bytes")
        };
        let Some(limit) = read_u64(&dir.join(limit_file)) else {
            continue;
        };
        // v1 writes "no limit" as the largest page-aligned i64.
        if limit >= (i64::MAX as u64) / 2 {
            continue;
        }
        let usage = read_u64(&dir.join(usage_file)).unwrap_or(limit);
        let mut level = CgroupSample {
            limit,
            usage,
            ..CgroupSample::default()
        };
        if dirs.v2 {
            let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let (file, dirty) = parse_memory_stat(&stat);
            level.file = file;
            level.dirty = Some(dirty);
        }
        levels.push(level);
    }
    levels
}

/// (file, file_dirty + file_writeback) of a cgroup v2 memory.stat, in bytes.
fn parse_memory_stat(text: &str) -> (u64, u64) {
    let (mut file, mut dirty) = (0, 0);
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(name), Some(Ok(bytes))) = (words.next(), words.next().map(str::parse::<u64>))
        else {
            continue;
        };
        match name {
            "file" => file = bytes,
            "file_dirty" | "file_writeback" => dirty += bytes,
            _ => {}
        }
    }
    (file, dirty)
}

/// What the sampler reads, where.
struct Sources {
    data_dir: std::ffi::CString,
    cgroups: Option<CgroupDirs>,
    page_bytes: u64,
}

impl Sources {
    fn sample(&self, low_watermarks: u64) -> io::Result<Sample> {
        let mut s = Sample {
            low_watermarks,
            ..Sample::default()
        };
        parse_vmstat(
            &std::fs::read_to_string("/proc/vmstat")?,
            self.page_bytes,
            &mut s,
        )?;
        s.disk_available = super::file::statvfs_space(&self.data_dir)?.usable_bytes;
        if let Some(dirs) = &self.cgroups {
            s.cgroups = read_cgroups(dirs);
        }
        Ok(s)
    }
}

fn low_watermarks(page_bytes: u64) -> io::Result<u64> {
    Ok(parse_low_watermarks(
        &std::fs::read_to_string("/proc/zoneinfo")?,
        page_bytes,
    ))
}

/// Starts the sampler thread once its first sample is in; from then on the shards write in place
/// what the budget covers. An error (no /proc) leaves every write to io_uring.
pub fn start(data_dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let page_bytes = super::file::page_size_bytes();
    let sources = Sources {
        data_dir: std::ffi::CString::new(data_dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        cgroups: std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| cgroup_dirs(&text, Path::new("/sys/fs/cgroup"))),
        page_bytes,
    };
    let mut watermarks = low_watermarks(page_bytes)?;
    let first = sources.sample(watermarks)?;
    tracing::debug!(?first, budgets = ?budgets(&first), "page-cache write budget");
    publish(Some(&first));
    std::thread::Builder::new()
        .name("sable-pagecache".into())
        .spawn(move || {
            let mut samples = 0u64;
            let mut busy = true;
            loop {
                std::thread::sleep(if busy { SAMPLE_BUSY } else { SAMPLE_IDLE });
                samples += 1;
                // Watermarks move only with vm.min_free_kbytes and memory hot-plug.
                if samples.is_multiple_of(1000) {
                    watermarks = low_watermarks(page_bytes).unwrap_or(watermarks);
                }
                match sources.sample(watermarks) {
                    Ok(s) => busy = publish(Some(&s)),
                    Err(e) => {
                        tracing::warn!(error = %e, "page-cache sampler stopped; log writes go through io_uring");
                        publish(None);
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// A budget of the calling test's own, so the other tests keep io_uring's path.
    static TEST_BUDGET: Budget = const { Budget::new() };
}

/// Lets the calling thread write `bytes` in place, for tests of the file layer.
#[cfg(test)]
pub(crate) fn set_budget_for_tests(bytes: u64) {
    TEST_BUDGET.with(|b| {
        b.set(Budgets {
            allocating: bytes,
            preallocated: bytes,
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn roomy() -> Sample {
        Sample {
            free: 16 * GIB,
            low_watermarks: 100 * MIB,
            file: 4 * GIB,
            dirty: 10 * MIB,
            background_threshold: 2 * GIB,
            threshold: 4 * GIB,
            disk_available: 50 * GIB,
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn budget_is_capped_when_there_is_room_everywhere() {
        assert_eq!(budgets(&roomy()).allocating, BUDGET_MAX_BYTES);
        assert_eq!(budgets(&roomy()).preallocated, BUDGET_MAX_BYTES);
    }

    #[test]
    fn preallocated_blocks_may_be_written_up_to_the_free_run_ceiling() {
        // Halfway between the 2 GiB background threshold and the 4 GiB limit, less the reserve.
        let s = Sample {
            dirty: 3 * GIB - DIRTY_RESERVE_BYTES - 5 * MIB,
            ..roomy()
        };
        assert_eq!(
            budgets(&s),
            Budgets {
                allocating: 0,
                preallocated: 5 * MIB
            }
        );
    }

    #[test]
    fn budget_keeps_dirty_pages_under_the_background_threshold() {
        // Past it the flusher writes back the log's files too; the reserve is for others.
        let s = Sample {
            dirty: 2 * GIB - DIRTY_RESERVE_BYTES - 5 * MIB,
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 5 * MIB);
        let s = Sample {
            dirty: 2 * GIB,
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 0);
    }

    #[test]
    fn budget_keeps_free_memory_over_the_low_watermarks() {
        let s = Sample {
            free: 100 * MIB + 3 * MIB,
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 3 * MIB);
        let s = Sample {
            free: 90 * MIB,
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 0);
    }

    #[test]
    fn budget_leaves_ext4_room_for_twice_the_dirty_data() {
        let s = Sample {
            disk_available: 2 * (GIB + 10 * MIB + 7 * MIB),
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 7 * MIB);
        let s = Sample {
            disk_available: GIB,
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 0);
    }

    #[test]
    fn budget_stays_under_a_cgroup_limit_and_its_dirty_share() {
        // v1: the headroom under the limit, less the reserve.
        let v1 = CgroupSample {
            limit: GIB,
            usage: GIB - CGROUP_RESERVE_BYTES - 2 * MIB,
            file: 0,
            dirty: None,
        };
        let s = Sample {
            cgroups: vec![v1],
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 2 * MIB);
        // v2: 1 GiB of headroom + 1 GiB of file pages is a tenth of the 20 GiB dirtyable, so its
        // background threshold is a tenth of 2 GiB, of which 100 MiB are dirty already.
        let v2 = CgroupSample {
            limit: 8 * GIB,
            usage: 7 * GIB,
            file: GIB,
            dirty: Some(100 * MIB),
        };
        let s = Sample {
            cgroups: vec![v2.clone()],
            ..roomy()
        };
        assert_eq!(
            budgets(&s).allocating,
            2 * GIB / 10 - DIRTY_RESERVE_BYTES - 100 * MIB
        );
        // The tightest level wins, wherever it is on the path to the root.
        let full = CgroupSample {
            limit: 4 * GIB,
            usage: 4 * GIB,
            ..CgroupSample::default()
        };
        let s = Sample {
            cgroups: vec![v2, full],
            ..roomy()
        };
        assert_eq!(budgets(&s).allocating, 0);
    }

    #[test]
    fn vmstat_fields_become_bytes() {
        let text = "nr_free_pages 1000\nnr_inactive_file 30\nnr_active_file 70\nnr_dirty 5\n\
                    nr_writeback 2\nnr_foo 9\nnr_dirty_threshold 600\n\
                    nr_dirty_background_threshold 300\n";
        let mut s = Sample::default();
        parse_vmstat(text, 4096, &mut s).unwrap();
        assert_eq!(s.free, 1000 * 4096);
        assert_eq!(s.file, 100 * 4096);
        assert_eq!(s.dirty, 7 * 4096);
        assert_eq!(s.background_threshold, 300 * 4096);
        assert_eq!(s.threshold, 600 * 4096);
        let e = parse_vmstat("nr_free_pages 1\n", 4096, &mut Sample::default()).unwrap_err();
        assert!(
            e.to_string().contains("nr_dirty_background_threshold"),
            "{e}"
        );
    }

    #[test]
    fn low_watermarks_of_every_zone_add_up() {
        let text = "Node 0, zone      DMA\n  pages free     3840\n        min      10\n        \
                    low      13\n        high     16\nNode 0, zone   Normal\n        min      \
                    14769\n        low      20163\n        high     25557\n";
        assert_eq!(parse_low_watermarks(text, 4096), (13 + 20163) * 4096);
    }

    #[test]
    fn cgroup_paths_walk_up_to_the_root_of_their_hierarchy() {
        let mount = Path::new("/sys/fs/cgroup");
        let v1 = "4:memory:/process_api/abc\n0::/\n1:cpu:/\n";
        assert_eq!(
            cgroup_dirs(v1, mount),
            Some(CgroupDirs {
                v2: false,
                dirs: vec![
                    mount.join("memory/process_api/abc"),
                    mount.join("memory/process_api"),
                    mount.join("memory"),
                ],
            })
        );
        assert_eq!(
            cgroup_dirs("0::/system.slice/sable.service\n", mount),
            Some(CgroupDirs {
                v2: true,
                dirs: vec![
                    mount.join("system.slice/sable.service"),
                    mount.join("system.slice"),
                    mount.to_path_buf(),
                ],
            })
        );
        assert_eq!(cgroup_dirs("", mount), None);
    }

    #[test]
    fn cgroup_levels_without_a_limit_add_nothing() {
        let root = std::env::temp_dir().join(format!("sable-cg-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "1073741824\n").unwrap();
        std::fs::write(root.join("a/memory.current"), "104857600\n").unwrap();
        std::fs::write(
            root.join("a/memory.stat"),
            "anon 1\nfile 52428800\nfile_dirty 4096\nfile_writeback 8192\n",
        )
        .unwrap();
        let dirs = CgroupDirs {
            v2: true,
            dirs: vec![leaf.clone(), root.join("a"), root.clone()],
        };
        assert_eq!(
            read_cgroups(&dirs),
            vec![CgroupSample {
                limit: GIB,
                usage: 100 * MIB,
                file: 50 * MIB,
                dirty: Some(12288),
            }]
        );
        // v1's "unlimited" is a huge number, not a limit.
        std::fs::write(leaf.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let v1 = CgroupDirs {
            v2: false,
            dirs: vec![leaf],
        };
        assert!(read_cgroups(&v1).is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn take_draws_whole_writes_only_and_only_once_enabled() {
        let b = Budget::new();
        let both = |allocating, preallocated| Budgets {
            allocating,
            preallocated,
        };
        assert!(!b.take(1, false), "no sample yet");
        assert!(!b.set(both(10, 20)));
        assert!(b.take(6, false));
        assert!(!b.take(6, false), "4 bytes left");
        assert!(b.take(4, false));
        assert!(!b.take(1, false));
        // The other budget shrank by the same 10 bytes.
        assert!(!b.take(11, true));
        assert!(b.take(10, true));
        assert!(b.set(both(100, 100)), "drawn on since the last sample");
        assert!(!b.set(both(100, 100)));
        // A preallocated write shrinks the other budget too, never below zero.
        b.set(both(5, 100));
        assert!(b.take(50, true));
        assert!(!b.take(1, false));
    }

    #[test]
    fn this_machine_gives_a_sample() {
        let page_bytes = crate::log::file::page_size_bytes();
        let sources = Sources {
            data_dir: std::ffi::CString::new(".").unwrap(),
            cgroups: None,
            page_bytes,
        };
        let s = sources.sample(low_watermarks(page_bytes).unwrap()).unwrap();
        assert!(
            s.free > 0 && s.low_watermarks > 0 && s.background_threshold > 0,
            "{s:?}"
        );
        assert!(s.disk_available > 0, "{s:?}");
    }
}
