//! Freeing deleted segment files that something still held when they were deleted.
//!
//! The last close of an unlinked file frees its cached pages and its blocks in the thread that
//! closes it, and a shard's close is finished in the shard's own context (glommio closes through
//! io_uring): 57 ms for a 256 MiB segment in the page cache. Retention and topic deletion cut a
//! deleted file to nothing on glommio's blocking thread first (`SegmentFile::free_unlinked`), but
//! a read or a sync in flight may still hold the file then, and its holder is the one that
//! closes it later. So that holder's drop hands a duplicate descriptor to this module's thread,
//! which cuts the file to nothing and closes it; the shard's own close is then not the last.
//!
//! The thread is process-wide and started at the first hand-off; its queue is bounded, and a
//! descriptor it has no room for is closed by the caller (the shard frees the file, as before).
//! That is why the common case does not come here: retention and topic deletion await each cut
//! on the shard's blocking thread, which paces them (a topic of thousands of segments would
//! overflow any queue); only the few files a reader holds at that moment are handed over.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::mpsc::{self, SyncSender};

/// Descriptors waiting for the thread. Deletions come a segment at a time, and each waits for
/// one ftruncate: a small queue is plenty.
const QUEUE_MAX: usize = 256;

static QUEUE: OnceLock<Option<SyncSender<OwnedFd>>> = OnceLock::new();

/// Frees the unlinked file behind `fd` off this thread: duplicates the descriptor and queues the
/// duplicate to be cut to nothing and closed. When that cannot be arranged (no descriptor left,
/// no thread, a full queue) the file is freed by its last close, as it would be without this.
pub(super) fn free_after_close(fd: RawFd) {
    // SAFETY: `fd` is open for the duration of the call (the caller owns it); F_DUPFD_CLOEXEC
    // returns a new descriptor that we own from here on.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return;
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    if let Some(queue) = QUEUE.get_or_init(start) {
        // Refused, the duplicate is closed here; the caller still holds `fd`, so that close is
        // not the last one.
        let _ = queue.try_send(dup);
    }
}

fn start() -> Option<SyncSender<OwnedFd>> {
    let (tx, rx) = mpsc::sync_channel::<OwnedFd>(QUEUE_MAX);
    let spawned = std::thread::Builder::new()
        .name("sable-reaper".into())
        .spawn(move || {
            for fd in rx {
                // SAFETY: ftruncate on a descriptor we own; no memory is passed.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), 0) } != 0 {
                    let e = std::io::Error::last_os_error();
                    tracing::warn!(error = %e, "freeing a deleted segment failed; its close frees it");
                }
                drop(fd);
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "no thread to free deleted segments; shards free them");
            None
        }
    }
}
