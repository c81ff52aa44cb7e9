//! The file layer: the only part of the log that touches glommio.
//!
//! Everything here maps `GlommioError` to `std::io::Error`, so the rest of the log is
//! runtime-free. Reads, writes and fdatasync go through io_uring; what io_uring cannot do
//! (listing or creating directories) runs on glommio's blocking pool, never on the shard. The
//! exception is an append the kernel will not make wait (`pagecache`): the shard copies it into
//! the page cache itself, as it sends cached file pages with sendfile itself.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{BufferedFile, Directory, OpenOptions};

use super::pagecache;

/// One segment file, readable and appendable, with its raw fd for sendfile.
pub struct SegmentFile {
    file: BufferedFile,
    path: PathBuf,
    /// A second descriptor opened with O_DSYNC, for `write_durably`; opened at the first durable
    /// write and dropped by `end_durable_writes` when the segment stops being the active one.
    dsync: RefCell<Option<Rc<BufferedFile>>>,
    /// Syncs of this file in flight (fdatasync, O_DSYNC writes). While one writes back, a write
    /// that dirties new blocks can wait on the inode's allocation lock for as long as the
    /// writeback waits on the disk (50-150 ms seen here), so no write is done in place then,
    /// unless its blocks were allocated ahead.
    syncing: Cell<u32>,
    preallocation: Preallocation,
    /// The file was deleted while something besides the log held it (a read, a sync): whoever
    /// drops it last frees it off the shard (`reap`).
    free_on_drop: Cell<bool>,
    /// The file's size as this object's own completed calls left it; `None` while unknown: at
    /// open, from the start of a write or truncate through io_uring (they may overlap), and
    /// after a failed one, or a write through another descriptor (`forget_size`). Every append
    /// asks whether it is at the end of the file; a statx for that, of an inode 10,000
    /// partitions leave cold, cost a few % of the broker's time.
    size: Cell<Option<u64>>,
}

/// Blocks allocated ahead of a file's written end (`fallocate` with `FALLOC_FL_KEEP_SIZE`: the
/// file's size, which recovery trusts, does not move). A write into them finds its blocks in the
/// extent cache and takes no allocation lock, so writeback of the file cannot hold it up.
#[derive(Default)]
struct Preallocation {
    /// End of the blocks allocated ahead; 0 when none (or after a truncate freed them).
    to: Cell<u64>,
    /// End of what this file's writes have written.
    written_to: Cell<u64>,
    /// Bytes allocated past `written_to`, as counted in `SHARD_PREALLOCATED_BYTES`.
    counted: Cell<u64>,
    in_flight: Cell<bool>,
}

/// Bytes one `preallocate_ahead` allocates.
pub const PREALLOCATE_CHUNK_BYTES: u64 = 8 << 20;

/// Most bytes allocated ahead of the written ends of one shard's files (10,000 partitions must
/// not hold 10,000 chunks).
pub const PREALLOCATE_SHARD_MAX_BYTES: u64 = 256 << 20;

thread_local! {
    static SHARD_PREALLOCATED_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Bytes allocated ahead of the written ends of this shard's files.
pub fn shard_preallocated_bytes() -> u64 {
    SHARD_PREALLOCATED_BYTES.with(Cell::get)
}

impl Preallocation {
    /// Counts what lies past `written_to` in the shard's total: the one place it changes.
    fn recount(&self) {
        let bytes = self.to.get().saturating_sub(self.written_to.get());
        let before = self.counted.replace(bytes);
        SHARD_PREALLOCATED_BYTES.with(|total| total.set(total.get() - before + bytes));
    }

    fn written(&self, end: u64) {
        if end > self.written_to.get() {
            self.written_to.set(end);
            self.recount();
        }
    }

    /// After a truncate to `size_bytes`, which frees blocks past the end (ext4 does so even when
    /// the size does not change).
    fn truncated(&self, size_bytes: u64) {
        self.to.set(0);
        self.written_to.set(size_bytes);
        self.recount();
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        self.preallocation.to.set(0);
        self.preallocation.recount();
        if self.free_on_drop.get() {
            // Before glommio closes our descriptor, so that close is not the file's last.
            super::reap::free_after_close(self.raw_fd());
        }
    }
}

/// Counts a sync of a file in flight until dropped (also when its future is cancelled).
struct Syncing<'a>(&'a Cell<u32>);

impl<'a> Syncing<'a> {
    fn start(count: &'a Cell<u32>) -> Syncing<'a> {
        count.set(count.get() + 1);
        Syncing(count)
    }
}

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl SegmentFile {
    /// `size`: the file's size when the open itself decides it, else None (asked when needed).
    fn new(file: BufferedFile, path: &Path, size: Option<u64>) -> SegmentFile {
        SegmentFile {
            file,
            path: path.to_path_buf(),
            dsync: RefCell::new(None),
            syncing: Cell::new(0),
            preallocation: Preallocation::default(),
            free_on_drop: Cell::new(false),
            size: Cell::new(size),
        }
    }

    /// Opens (creating if missing) a file for reading and writing. `BufferedFile::create` would
    /// open it write-only, and a later read would fail with EBADF.
    pub async fn open(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await?;
        Ok(SegmentFile::new(file, path, None))
    }

    /// Opens `path` for reading and writing, created or emptied (`O_TRUNC` in the open itself,
    /// no truncate through the blocking pool).
    pub async fn create_empty(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(path)
            .await?;
        Ok(SegmentFile::new(file, path, Some(0)))
    }

    /// Opens an existing file for writing only, never creating it: a descriptor of its own
    /// whose fdatasync reports writeback errors to nobody else (`ahead`).
    pub async fn open_existing(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new().write(true).buffered_open(path).await?;
        Ok(SegmentFile::new(file, path, None))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Reads `len` bytes at `position` through io_uring (never blocks the shard).
    /// Returns fewer bytes only at end of file.
    pub async fn read_at(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = position + out.len() as u64;
            let chunk = self.file.read_at(at, len - out.len()).await?;
            if chunk.is_empty() {
                break; // End of file.
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Writes all of `buf` at `position`. The buffer moves into io_uring without a copy, so a
    /// short write (a full disk, in practice) cannot be retried and is an error; the caller has not
    /// advanced its end, so the next write lands on the same position and recovery trims the rest.
    ///
    /// An append at the end of the file is copied into the page cache by the calling shard itself
    /// when `pagecache` says the kernel has no reason to make it wait, no sync of this file is in
    /// flight (unless its blocks were allocated ahead), and the page it starts in is cached and
    /// not under writeback (a write into it would read it from disk, or wait for its I/O on
    /// devices that need stable pages).
    pub async fn write_at(&self, buf: Vec<u8>, position: u64) -> io::Result<()> {
        let len = buf.len();
        if self.may_write_in_place(len, position) {
            let written = write_all_at(self.raw_fd(), &buf, position);
            self.wrote_in_place(position + len as u64, &written);
            written?;
        } else {
            self.uring_write(&self.file, buf, position).await?;
        }
        self.preallocation.written(position + len as u64);
        Ok(())
    }

    /// `write_at` of `parts` one after the other. Written in place they go to the kernel as they
    /// are (`pwritev`): the log's batches straight from the request bodies, without a copy into
    /// one buffer first. Only io_uring's write, which takes one owned buffer, joins them.
    pub async fn write_parts_at(&self, parts: &[Bytes], position: u64) -> io::Result<()> {
        let len = parts.iter().map(Bytes::len).sum();
        if self.may_write_in_place(len, position) {
            let written = writev_all_at(self.raw_fd(), parts, position);
            self.wrote_in_place(position + len as u64, &written);
            written?;
        } else {
            self.uring_write(&self.file, join(parts, len), position)
                .await?;
        }
        self.preallocation.written(position + len as u64);
        Ok(())
    }

    /// Whether a write of `len` bytes at `position` is copied into the page cache by the shard
    /// itself (the conditions `write_at` names); counts the write either way.
    fn may_write_in_place(&self, len: usize, position: u64) -> bool {
        let preallocated = position + len as u64 <= self.preallocation.to.get();
        let in_place = len <= pagecache::INLINE_WRITE_MAX_BYTES
            && (preallocated || self.syncing.get() == 0)
            && self.appends_at(position)
            && self.start_page_ready(position)
            && pagecache::take(len, preallocated);
        pagecache::count_write(in_place);
        in_place
    }

    /// Allocates the next `PREALLOCATE_CHUNK_BYTES` past `end` in the background (glommio's
    /// blocking pool: allocation can read bitmaps from disk), when less than half a chunk is
    /// allocated ahead of it, none is being allocated, the shard's total allows and the sampler
    /// says the disk has room. The log calls it for partitions that grow fast.
    pub fn preallocate_ahead(self: &Rc<Self>, end: u64) {
        let p = &self.preallocation;
        if p.in_flight.get()
            || p.to.get() >= end + PREALLOCATE_CHUNK_BYTES / 2
            || shard_preallocated_bytes() + PREALLOCATE_CHUNK_BYTES > PREALLOCATE_SHARD_MAX_BYTES
            || !pagecache::preallocation_allowed()
        {
            return;
        }
        let from = p.to.get().max(end);
        p.in_flight.set(true);
        let me = Rc::clone(self);
        spawn_detached(async move {
            let result = me.fallocate_keep_size(from, PREALLOCATE_CHUNK_BYTES).await;
            let p = &me.preallocation;
            p.in_flight.set(false);
            match result {
                Ok(()) => {
                    p.to.set(from + PREALLOCATE_CHUNK_BYTES);
                    p.recount();
                }
                // Only the writes' path depends on it.
                Err(e) => {
                    tracing::debug!(path = %me.path.display(), error = %e, "preallocation failed")
                }
            }
        });
    }

    /// True when blocks may be allocated past the end (or are being): a file that takes no more
    /// appends is truncated to its size to free them.
    pub fn has_preallocation(&self) -> bool {
        self.preallocation.to.get() > 0 || self.preallocation.in_flight.get()
    }

    /// Bytes of disk blocks the file holds.
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        Ok(self.statx(libc::STATX_BLOCKS)?.stx_blocks * 512)
    }

    /// statx of the fields in `mask` alone: the inode is in memory, no I/O. Never the times
    /// (fstat asks for all): with multigrain timestamps (ext4 since Linux 6.13) a read of the
    /// ctime makes the next write stamp a fine-grained one, which dirties the inode. When the
    /// append path asked fstat for the size before every write, every write dirtied it (an
    /// inode copied into its journalled buffer each time) where otherwise once per clock tick
    /// per file would.
    fn statx(&self, mask: u32) -> io::Result<libc::statx> {
        // SAFETY: `st` is a plain struct the kernel fills; the path is an empty C string
        // (AT_EMPTY_PATH: the fd itself), and the fd is ours while `self` lives.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::statx(
                self.raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                mask,
                &mut st,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// fallocate(FALLOC_FL_KEEP_SIZE) of [from, from + len) on a duplicate of the descriptor (the
    /// file may be closed before the blocking pool gets to it; a duplicate keeps it open).
    async fn fallocate_keep_size(&self, from: u64, len: u64) -> io::Result<()> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: dup of our own open descriptor; the new one is owned by `fd` below.
        let raw = unsafe { libc::dup(self.raw_fd()) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: `fd` is open for the whole call; no memory is passed.
                let r = unsafe {
                    libc::fallocate(
                        fd.as_raw_fd(),
                        libc::FALLOC_FL_KEEP_SIZE,
                        from as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            })
            .await
    }

    /// True when `position` is the file's end.
    fn appends_at(&self, position: u64) -> bool {
        let size = match self.size.get() {
            Some(size) => size,
            None => match self.statx(libc::STATX_SIZE) {
                Ok(st) => {
                    self.size.set(Some(st.stx_size));
                    st.stx_size
                }
                Err(_) => return false,
            },
        };
        size == position
    }

    /// All of `buf` written at `position` through io_uring by `file` (this file's descriptor or
    /// its O_DSYNC one). The size is unknown from the start (an append may ask meanwhile) and
    /// after.
    async fn uring_write(
        &self,
        file: &BufferedFile,
        buf: Vec<u8>,
        position: u64,
    ) -> io::Result<()> {
        let len = buf.len();
        self.size.set(None);
        let written = file.write_at(buf, position).await;
        self.size.set(None);
        whole_write(written?, len)
    }

    /// Keeps `size` after a write in place ending at `end`: nothing else ran meanwhile.
    fn wrote_in_place(&self, end: u64, written: &io::Result<()>) {
        let size = match written {
            Ok(()) => self.size.get().map(|size| size.max(end)),
            Err(_) => None,
        };
        self.size.set(size);
    }

    /// The file was written through another descriptor: its size is asked for again.
    pub fn forget_size(&self) {
        self.size.set(None);
    }

    /// True when a write at `position` needs nothing from the page it starts in: the position
    /// is at a page boundary, or that page is cached and not under writeback.
    fn start_page_ready(&self, position: u64) -> bool {
        let page_bytes = page_size_bytes();
        let offset = position % page_bytes;
        if offset == 0 {
            return true;
        }
        match cache_stat(self.raw_fd(), position - offset, page_bytes) {
            Ok(stat) => stat.nr_cache == 1 && stat.nr_writeback == 0,
            Err(_) => false,
        }
    }

    /// Writes all of `buf` at `position` and returns once it is on disk: one O_DSYNC write,
    /// which the kernel completes like a write plus an fdatasync of its range, in one io_uring
    /// operation instead of two. Only the range is synced: the caller must know everything
    /// before it is durable already.
    pub async fn write_durably(&self, buf: Vec<u8>, position: u64) -> io::Result<()> {
        let dsync = self.dsync.borrow().clone();
        let dsync = match dsync {
            Some(file) => file,
            None => {
                let file = Rc::new(
                    OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_DSYNC)
                        .buffered_open(&self.path)
                        .await?,
                );
                *self.dsync.borrow_mut() = Some(Rc::clone(&file));
                file
            }
        };
        let len = buf.len();
        let _syncing = Syncing::start(&self.syncing);
        self.uring_write(&dsync, buf, position).await?;
        self.preallocation.written(position + len as u64);
        Ok(())
    }

    /// Closes the O_DSYNC descriptor, if any: a rolled segment takes no more writes, and 10,000
    /// partitions must not hold two descriptors each.
    pub fn end_durable_writes(&self) {
        self.dsync.borrow_mut().take();
    }

    /// fdatasync through io_uring: the shard keeps serving while the disk flushes.
    pub async fn fdatasync(&self) -> io::Result<()> {
        let _syncing = Syncing::start(&self.syncing);
        Ok(self.file.fdatasync().await?)
    }

    /// Cuts the file at `size_bytes`, which also frees blocks allocated past it. An allocation
    /// ahead still in flight is waited for first: finished after the cut, its blocks would stay
    /// past the end of a segment that takes no more appends until retention or a restart.
    pub async fn truncate(&self, size_bytes: u64) -> io::Result<()> {
        while self.preallocation.in_flight.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.size.set(None);
        self.file.truncate(size_bytes).await?;
        self.size.set(Some(size_bytes));
        self.preallocation.truncated(size_bytes);
        Ok(())
    }

    /// For a file already unlinked: cuts it to nothing on the blocking pool if `file` and
    /// `other_holders` are its only references. Its last close would otherwise free its cached
    /// pages and its blocks in the closing thread, the shard (glommio closes through io_uring,
    /// and the kernel finishes a close in the closer's context): 57 ms for a 256 MiB segment in
    /// the page cache, measured. A file a read or a sync still holds keeps its data for them,
    /// and is freed off the shard when the last of them drops it (`reap`); so is one whose cut
    /// failed here (best effort: a failure is logged, and nothing but the freeing waits on it).
    pub async fn free_unlinked(file: &Rc<SegmentFile>, other_holders: usize) {
        file.free_on_drop.set(true);
        if Rc::strong_count(file) > 1 + other_holders {
            return;
        }
        match file.truncate(0).await {
            Ok(()) => file.free_on_drop.set(false),
            Err(e) => {
                tracing::warn!(path = %file.path.display(), error = %e, "freeing a deleted segment failed; its close frees it")
            }
        }
    }

    pub async fn size(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }

    /// True when every page of the range is in the page cache (cachestat), so sendfile will not block.
    pub fn is_cached(&self, position: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let page_bytes = page_size_bytes();
        let first_page = position / page_bytes;
        let last_page = (position + len - 1) / page_bytes;
        match cached_pages(self.raw_fd(), position, len) {
            Ok(cached) => cached > last_page - first_page,
            // ENOSYS before Linux 6.5, or anything else: assume cold and take the io_uring path.
            Err(_) => false,
        }
    }
}

/// Writes all of `buf` at `position`; a write that makes no progress (a full
/// disk) is an error, as a short io_uring write is.
fn write_all_at(fd: RawFd, buf: &[u8], position: u64) -> io::Result<()> {
    // SAFETY: the iovec points into `buf`, borrowed for the whole call.
    unsafe { pwritev_all(fd, &mut [iovec_of(buf)], position) }
}

/// `write_all_at` of `parts` one after the other, in as few pwritev calls as they allow.
fn writev_all_at(fd: RawFd, parts: &[Bytes], position: u64) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = parts.iter().map(|p| iovec_of(p)).collect();
    // SAFETY: every iovec points into a `Bytes` of `parts`, borrowed for the whole call.
    unsafe { pwritev_all(fd, &mut iov, position) }
}

fn iovec_of(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }
}

/// Most buffers one pwritev takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// pwritev of everything `iov` points to at `position`, resumed after a short write (advancing
/// `iov` past what was written); a write that makes no progress is an error.
///
/// # Safety
/// Every iovec must point to memory that stays valid and unchanged for the whole call.
unsafe fn pwritev_all(fd: RawFd, iov: &mut [libc::iovec], mut position: u64) -> io::Result<()> {
    let mut first = 0;
    loop {
        while first < iov.len() && iov[first].iov_len == 0 {
            first += 1;
        }
        if first == iov.len() {
            return Ok(());
        }
        let count = (iov.len() - first).min(IOV_MAX);
        // SAFETY: the caller's contract; the kernel only reads from the buffers.
        let n = unsafe {
            libc::pwritev(
                fd,
                iov[first..].as_ptr(),
                count as libc::c_int,
                position as i64,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            let left: usize = iov[first..].iter().map(|v| v.iov_len).sum();
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {left} bytes left"),
            ));
        }
        position += n as u64;
        let mut written = n as usize;
        while written > 0 {
            let v = &mut iov[first];
            let step = written.min(v.iov_len);
            // SAFETY: stays inside the same buffer: `step` is at most its length.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(step) }.cast();
            v.iov_len -= step;
            written -= step;
            if v.iov_len == 0 {
                first += 1;
            }
        }
    }
}

/// `parts` one after the other in one buffer of `len` bytes.
pub fn join(parts: &[Bytes], len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len);
    for part in parts {
        buf.extend_from_slice(part);
    }
    buf
}

/// A write that moved its buffer into io_uring cannot be resumed, so a short one is an error.
fn whole_write(written: usize, len: usize) -> io::Result<()> {
    if written == len {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {len} bytes"),
        ))
    }
}

pub(crate) fn page_size_bytes() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; it has no memory preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// The kernel's `struct cachestat` (include/uapi/linux/mman.h).
#[repr(C)]
#[derive(Default)]
struct CacheStat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

const SYS_CACHESTAT: libc::c_long = 451;

/// Pages of [position, position + len) in the page cache (cachestat, Linux >= 6.5).
fn cached_pages(fd: RawFd, position: u64, len: u64) -> io::Result<u64> {
    Ok(cache_stat(fd, position, len)?.nr_cache)
}

/// The page cache's state of [position, position + len) (cachestat, Linux >= 6.5).
fn cache_stat(fd: RawFd, position: u64, len: u64) -> io::Result<CacheStat> {
    let range = [position, len];
    let mut stat = CacheStat::default();
    // SAFETY: `range` and `stat` live on this stack frame for the whole call and have the layout
    // the kernel expects; `fd` is owned by the SegmentFile borrowed by our caller. The kernel
    // keeps neither pointer after it returns.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            range.as_ptr(),
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(stat)
    }
}

/// Size and space left of the file system holding a path, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use (Java's `File.getUsableSpace`, as Kafka reports).
    pub usable_bytes: u64,
}

/// statvfs of `path` on glommio's blocking pool (a stat can wait on the disk).
pub async fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    glommio::executor()
        .spawn_blocking(move || statvfs_space(&path))
        .await
}

/// statvfs of `path`, synchronously: only off the shards (glommio's blocking pool, the
/// page-cache sampler).
pub(crate) fn statvfs_space(path: &std::ffi::CStr) -> io::Result<DiskSpace> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `stat` is a plain
    // struct the kernel fills.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fragment = stat.f_frsize;
    Ok(DiskSpace {
        total_bytes: stat.f_blocks.saturating_mul(fragment),
        usable_bytes: stat.f_bavail.saturating_mul(fragment),
    })
}

/// Creates a directory (and its parents) unless it exists, on glommio's blocking pool; true when
/// it created it. Its name is durable only once the caller has synced the parent.
pub async fn make_dir(path: &Path) -> io::Result<bool> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || match std::fs::create_dir(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&path).map(|()| true)
            }
            Err(e) => Err(e),
        })
        .await
}

/// Names of the entries of a directory (files only), read on glommio's blocking pool.
pub async fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            Ok(names)
        })
        .await
}

/// Removes a directory and everything in it, on glommio's blocking pool.
pub async fn remove_dir_all(path: &Path) -> io::Result<()> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || std::fs::remove_dir_all(path))
        .await
}

/// Removes one file; a missing file is not an error.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    match glommio::io::remove(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// fsyncs a directory, so a file created or removed in it survives a crash.
pub async fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = Directory::open(path).await?;
    dir.sync().await?;
    dir.close().await?;
    Ok(())
}

/// Reads a whole small file (an index), refusing one larger than `size_max_bytes`.
/// `Ok(None)` when it does not exist.
pub async fn read_small_file(path: &Path, size_max_bytes: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new().read(true).buffered_open(path).await {
        Ok(file) => file,
        Err(e) => {
            let e = io::Error::from(e);
            return if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            };
        }
    };
    let size = file.file_size().await?;
    if size > size_max_bytes {
        file.close().await?;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {size} bytes, over {size_max_bytes}", path.display()),
        ));
    }
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let chunk = file
            .read_at(out.len() as u64, (size - out.len() as u64) as usize)
            .await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    file.close().await?;
    Ok(Some(out))
}

/// Replaces a small file atomically: write a temporary, fdatasync it, rename over the target.
/// The caller syncs the directory when the rename itself must be durable.
pub async fn replace_small_file(path: &Path, contents: Vec<u8>) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = SegmentFile::create_empty(&tmp).await?;
    file.write_at(contents, 0).await?;
    file.fdatasync().await?;
    drop(file);
    glommio::io::rename(&tmp, path).await?;
    Ok(())
}

/// Lets other tasks of the shard run if this one has had the core long enough.
/// Long loops (recovery scans, index rebuilds) call it between bounded steps.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Runs `future` as its own task on the current shard, to completion, nobody awaiting it.
pub(crate) fn spawn_detached<F>(future: F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(future).detach();
}

/// Runs a future on a fresh single-threaded executor, kept awake as a shard's is: how the log's
/// tests reach glommio without naming it outside this file (tests only; the log never reaches
/// `shard` otherwise).
#[cfg(test)]
pub(crate) fn run_local<F, T>(future: F) -> T
where
    F: std::future::Future<Output = T>,
{
    crate::shard::keep_awake::run_local(future)
}

/// Sleeps without blocking the shard; the log's tests wait for background work with it.
#[cfg(test)]
pub(crate) async fn sleep_ms(ms: u64) {
    glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
}

/// Spawns a task on the current shard; the log's tests use it to race appends.
#[cfg(test)]
pub(crate) fn spawn_local<F, T>(future: F) -> impl std::future::Future<Output = T>
where
    F: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    glommio::spawn_local(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_allocated_ahead_take_appends_in_place_during_a_sync_and_a_truncate_frees_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        pagecache::set_budget_for_tests(1 << 30);
        run_local(async {
            let file = Rc::new(SegmentFile::open(&dir.path().join("p")).await.unwrap());
            let before = shard_preallocated_bytes();
            file.write_at(vec![1; 10_000], 0).await.unwrap();
            file.preallocate_ahead(10_000);
            assert!(file.has_preallocation(), "allocating");
            while file.preallocation.in_flight.get() {
                sleep_ms(1).await;
            }
            assert!(file.allocated_bytes().unwrap() >= 10_000 + PREALLOCATE_CHUNK_BYTES);
            assert_eq!(file.size().await.unwrap(), 10_000, "the size does not move");
            assert_eq!(shard_preallocated_bytes() - before, PREALLOCATE_CHUNK_BYTES);
            // Half a chunk is still ahead after this write: nothing more is allocated.
            file.write_at(vec![2; 5_000], 10_000).await.unwrap();
            file.preallocate_ahead(15_000);
            assert!(!file.preallocation.in_flight.get());
            assert_eq!(
                shard_preallocated_bytes() - before,
                PREALLOCATE_CHUNK_BYTES - 5_000,
                "what is written leaves the count"
            );
            // A sync in flight keeps appends out of the shard, except into allocated blocks.
            let ways = pagecache::shard_writes();
            let mut sync = Box::pin(file.fdatasync());
            assert!(futures_lite::future::poll_once(&mut sync).await.is_none());
            file.write_at(vec![3; 3_000], 15_000).await.unwrap();
            assert_eq!(pagecache::shard_writes().0 - ways.0, 1);
            sync.await.unwrap();
            let data = file.read_at(0, 20_000).await.unwrap();
            assert_eq!(data.len(), 18_000);
            assert!(data[15_000..].iter().all(|&b| b == 3));
            // Cut at its end, the file gives the blocks back.
            file.truncate(18_000).await.unwrap();
            assert!(!file.has_preallocation());
            assert!(
                file.allocated_bytes().unwrap() < 1 << 20,
                "{}",
                file.allocated_bytes().unwrap()
            );
            assert_eq!(shard_preallocated_bytes(), before);
        });
    }

    #[test]
    fn appends_at_the_end_are_copied_in_place_when_nothing_can_make_them_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        // This thread (alone) may write in place from here on.
        pagecache::set_budget_for_tests(1 << 30);
        run_local(async {
            let file = SegmentFile::open(&dir.path().join("f")).await.unwrap();
            let ways = || pagecache::shard_writes();
            let before = ways();
            // At the end of the file, page-aligned, then inside a cached page: in place.
            file.write_at(vec![1; 5000], 0).await.unwrap();
            file.write_at(vec![2; 3000], 5000).await.unwrap();
            assert_eq!(ways().0 - before.0, 2);
            // Not at the end: io_uring (it could need pages read from disk).
            file.write_at(vec![3; 10], 100).await.unwrap();
            // Too large for the shard to copy at once: io_uring.
            let big = pagecache::INLINE_WRITE_MAX_BYTES + 1;
            file.write_at(vec![4; big], 8000).await.unwrap();
            assert_eq!(ways().0 - before.0, 2);
            assert_eq!(ways().1 - before.1, 2);
            // The page the next append starts in leaves the cache: io_uring.
            file.fdatasync().await.unwrap();
            let end = 8000 + big as u64;
            // SAFETY: advice on a range of our own open file; no memory is passed.
            let r = unsafe { libc::posix_fadvise(file.raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(r, 0);
            assert!(!file.is_cached(end - 1, 1), "the tail page was dropped");
            file.write_at(vec![5; 7], end).await.unwrap();
            assert_eq!(ways().1 - before.1, 3);
            // It is cached again now: the next append is copied in place.
            file.write_at(vec![6; 9], end + 7).await.unwrap();
            assert_eq!(ways().0 - before.0, 3);
            // Not while a sync of the file is in flight (it may hold the inode's allocation
            // lock while it waits for the disk).
            let mut sync = Box::pin(file.fdatasync());
            assert!(futures_lite::future::poll_once(&mut sync).await.is_none());
            file.write_at(vec![7; 5], end + 16).await.unwrap();
            assert_eq!(ways().1 - before.1, 4);
            sync.await.unwrap();
            file.write_at(vec![8; 3], end + 21).await.unwrap();
            assert_eq!(ways().0 - before.0, 4);

            let data = file.read_at(0, end as usize + 24).await.unwrap();
            let mut want = vec![1u8; 5000];
            want.extend([2; 3000]);
            want[100..110].fill(3);
            want.extend(vec![4; big]);
            want.extend([5; 7]);
            want.extend([6; 9]);
            want.extend([7; 5]);
            want.extend([8; 3]);
            assert_eq!(data.len(), want.len());
            assert!(data == want, "bytes differ from what was written");
        });
    }

    #[test]
    fn the_file_size_is_known_from_its_own_writes_and_asked_again_after_any_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        pagecache::set_budget_for_tests(1 << 30);
        run_local(async {
            let path = dir.path().join("s");
            let file = SegmentFile::open(&path).await.unwrap();
            let ways = || pagecache::shard_writes();
            let before = ways();
            assert_eq!(file.size.get(), None, "unknown at open");
            file.write_at(vec![1; 5000], 0).await.unwrap();
            file.write_parts_at(&[Bytes::from(vec![2; 1000])], 5000)
                .await
                .unwrap();
            assert_eq!(ways().0 - before.0, 2, "both in place");
            assert_eq!(file.size.get(), Some(6000), "kept from the writes");
            // Zeros written past the end through another descriptor, as `ahead` does: once told,
            // the file asks the kernel, and a write over them is not an append.
            let other = SegmentFile::open_existing(&path).await.unwrap();
            other.write_at(vec![0; 4096], 6000).await.unwrap();
            assert_eq!(ways().0 - before.0, 3, "an append for that descriptor");
            file.forget_size();
            assert!(!file.appends_at(6000));
            assert_eq!(file.size.get(), Some(10_096));
            file.write_at(vec![3; 10], 6000).await.unwrap();
            assert_eq!(ways().1 - before.1, 1, "through io_uring");
            assert_eq!(file.size.get(), None, "a write through io_uring forgets it");
            assert!(file.appends_at(10_096));
            // A truncate sets it.
            file.truncate(6010).await.unwrap();
            assert_eq!(file.size.get(), Some(6010));
            file.write_at(vec![4; 20], 6010).await.unwrap();
            assert_eq!(ways().0 - before.0, 4, "in place again");
            assert_eq!(file.size.get(), Some(6030));
            assert_eq!(file.size().await.unwrap(), 6030, "as the kernel says");
            let data = file.read_at(0, 7000).await.unwrap();
            let mut want = vec![1u8; 5000];
            want.extend([2; 1000]);
            want.extend([3; 10]);
            want.extend([4; 20]);
            assert!(data == want, "bytes differ from what was written");
        });
    }

    #[test]
    fn a_truncate_frees_the_blocks_of_an_allocation_still_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        pagecache::set_budget_for_tests(1 << 30);
        run_local(async {
            let before = shard_preallocated_bytes();
            for round in 0..5 {
                let file = Rc::new(
                    SegmentFile::open(&dir.path().join(format!("r{round}")))
                        .await
                        .unwrap(),
                );
                file.write_at(vec![1; 10_000], 0).await.unwrap();
                file.preallocate_ahead(10_000);
                assert!(file.preallocation.in_flight.get(), "allocating");
                // A roll cuts the segment at its end while the allocation runs.
                file.truncate(10_000).await.unwrap();
                while file.preallocation.in_flight.get() {
                    sleep_ms(1).await;
                }
                assert!(!file.has_preallocation());
                let allocated = file.allocated_bytes().unwrap();
                assert!(
                    allocated < 1 << 20,
                    "round {round}: {allocated} bytes allocated"
                );
                assert_eq!(shard_preallocated_bytes(), before);
            }
        });
    }

    #[test]
    fn parts_go_to_pwritev_as_they_are_in_place_and_joined_through_io_uring() {
        let dir = tempfile::tempdir().expect("tempdir");
        pagecache::set_budget_for_tests(1 << 30);
        run_local(async {
            let file = SegmentFile::open(&dir.path().join("v")).await.unwrap();
            // More parts than one pwritev takes, empty ones among them.
            let parts: Vec<Bytes> = (0..IOV_MAX * 2 + 7)
                .map(|i| Bytes::from(vec![(i % 251) as u8; i % 5]))
                .collect();
            let len: usize = parts.iter().map(Bytes::len).sum();
            let before = pagecache::shard_writes();
            file.write_parts_at(&parts, 0).await.unwrap();
            assert_eq!(pagecache::shard_writes().0 - before.0, 1, "in place");
            // Inside the file: io_uring, with the parts joined.
            file.write_parts_at(&parts[..3], 1).await.unwrap();
            assert_eq!(
                pagecache::shard_writes().1 - before.1,
                1,
                "through io_uring"
            );
            let mut want = join(&parts, len);
            want[1..1 + 3].copy_from_slice(&join(&parts[..3], 3));
            let data = file.read_at(0, len + 10).await.unwrap();
            assert!(data == want, "bytes differ from the parts written");
        });
    }

    #[test]
    fn write_read_sync_truncate() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_local(async {
            let path = dir.path().join("a.log");
            let file = SegmentFile::open(&path).await.expect("open");
            file.write_at(b"hello world".to_vec(), 0)
                .await
                .expect("write");
            file.fdatasync().await.expect("sync");
            assert_eq!(file.size().await.expect("size"), 11);
            assert_eq!(file.read_at(6, 5).await.expect("read"), b"world");
            assert_eq!(file.read_at(6, 50).await.expect("read"), b"world");
            match cached_pages(file.raw_fd(), 0, 11) {
                Ok(_) => assert!(file.is_cached(0, 11), "just-written pages are cached"),
                // Kernels before 6.5 have no cachestat; is_cached then says cold.
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSYS));
                    assert!(!file.is_cached(0, 11));
                }
            }
            assert!(file.is_cached(5, 0), "an empty range is trivially cached");
            file.truncate(5).await.expect("truncate");
            assert_eq!(file.read_at(0, 50).await.expect("read"), b"hello");
        });
    }

    #[test]
    fn small_files_and_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        run_local(async {
            let sub = dir.path().join("x/y");
            assert!(make_dir(&sub).await.expect("mkdir"), "made, parents too");
            assert!(!make_dir(&sub).await.expect("mkdir"), "there already");
            let path = sub.join("f.index");
            assert_eq!(read_small_file(&path, 100).await.expect("read"), None);
            replace_small_file(&path, vec![1, 2, 3])
                .await
                .expect("write");
            sync_dir(&sub).await.expect("sync dir");
            assert_eq!(
                read_small_file(&path, 100).await.expect("read"),
                Some(vec![1, 2, 3])
            );
            assert!(read_small_file(&path, 2).await.is_err());
            assert_eq!(
                list_dir(&sub).await.expect("list"),
                vec!["f.index".to_string()]
            );
            assert!(path.exists());
            remove_file(&path).await.expect("remove");
            remove_file(&path).await.expect("missing is fine");
            remove_dir_all(&dir.path().join("x")).await.expect("rmdir");
            assert!(!sub.exists());
        });
    }
}
