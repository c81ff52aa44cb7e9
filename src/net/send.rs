//! Sending a file region to a socket: sendfile when the pages are cached (zero copy, non-blocking,
//! capped per call), an io_uring read + write otherwise, so a cold range never blocks the shard.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use futures::{AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::limits::SENDFILE_CHUNK_MAX_BYTES;
use crate::log::FileRegion;

/// Largest read of a cold range before it is written out.
const COPY_CHUNK_MAX_BYTES: u64 = 1 << 20;

/// glommio sends with MSG_DONTWAIT; sendfile has no such flag, so the socket itself must be
/// non-blocking or a full socket buffer would block the shard. glommio's own I/O is unaffected.
pub fn set_nonblocking(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    // SAFETY: `fd` is this connection's open socket; F_GETFL/F_SETFL only change its flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Sends a region to the socket `sock`, whose writing half is `stream` (used to wait for room).
pub async fn send_region<W: AsyncWrite + Unpin>(
    stream: &mut W,
    sock: RawFd,
    region: &FileRegion,
    len: u64,
    use_sendfile: bool,
) -> io::Result<()> {
    assert_eq!(len, region.len, "the frame's length matches its region");
    let mut position = region.position;
    let end = region.position + region.len;
    while position < end {
        let chunk = (end - position).min(COPY_CHUNK_MAX_BYTES);
        if use_sendfile && region.file.is_cached(position, chunk) {
            position = sendfile_range(stream, sock, region, position, position + chunk).await?;
        } else {
            let data = region.file.read_at(position, chunk as usize).await?;
            if data.len() as u64 != chunk {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its region",
                ));
            }
            stream.write_all(&data).await?;
            position += chunk;
        }
    }
    Ok(())
}

/// Sends [position, end) with sendfile; returns the new position (== end).
async fn sendfile_range<W: AsyncWrite + Unpin>(
    stream: &mut W,
    sock: RawFd,
    region: &FileRegion,
    mut position: u64,
    end: u64,
) -> io::Result<u64> {
    let file = region.file.raw_fd();
    while position < end {
        let n = (end - position).min(u64::from(SENDFILE_CHUNK_MAX_BYTES)) as usize;
        let mut off = position as libc::off_t;
        // SAFETY: `file` is kept open by `region.file` (an Rc we hold) and `sock` by the connection,
        // both for the duration of the call; `off` is a valid pointer the kernel only updates.
        let sent = unsafe { libc::sendfile(sock, file, &mut off, n) };
        if sent > 0 {
            position += sent as u64;
            glommio::yield_if_needed().await;
            continue;
        }
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than its region",
            ));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
        // The socket is full. glommio 0.9 has no public "await writable", so send the next byte
        // through glommio: it parks this task on POLLOUT and sends when there is room.
        let byte = region.file.read_at(position, 1).await?;
        if byte.len() != 1 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than its region",
            ));
        }
        stream.write_all(&byte).await?;
        position += 1;
    }
    Ok(position)
}
