//! The file layer: the only part of the log that touches glommio.

use std::os::fd::RawFd;

/// One segment file, readable and appendable, with its raw fd for sendfile.
pub struct SegmentFile {
    _todo: (),
}

impl SegmentFile {
    pub fn raw_fd(&self) -> RawFd {
        todo!()
    }

    /// Reads `len` bytes at `position` through io_uring (never blocks the shard).
    pub async fn read_at(&self, _position: u64, _len: usize) -> std::io::Result<Vec<u8>> {
        todo!()
    }

    /// True when every page of the range is in the page cache (cachestat), so sendfile will not block.
    pub fn is_cached(&self, _position: u64, _len: u64) -> bool {
        todo!()
    }
}
