//! Request frames off a connection, with as few copies and recv calls as the traffic allows.
//!
//! A large body is read straight into its own buffer, sized to take the next frame's 4-byte
//! length too: pipelined large requests cost one recv each and no copy. Small frames are read
//! with up to `LOOKAHEAD_BYTES` beyond them and handed out as slices of that buffer, so a run of
//! small pipelined requests shares one recv. (glommio's buffered stream read 8 KiB ahead and
//! copied it out again: a 10 KB Produce body was mostly memmoved.)

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt};

use super::recycle;
use crate::protocol::frame::{FrameError, frame_body_len};

/// Most bytes read past the frame being read. Bounds the copy a large frame pays when it
/// follows small ones, and the memory small in-flight bodies keep alive per connection.
pub const LOOKAHEAD_BYTES: usize = 4096;

/// Why no frame came.
#[derive(Debug)]
pub enum FrameReadError {
    /// The peer closed the connection between frames.
    Eof,
    /// The length prefix is negative or over the limit; nothing of the body was allocated.
    Refused(FrameError),
    /// A read failed, or the peer closed the connection inside a frame (`UnexpectedEof`).
    Io(io::Error),
}

impl From<io::Error> for FrameReadError {
    fn from(e: io::Error) -> Self {
        FrameReadError::Io(e)
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed inside a frame",
    )
}

pub struct FrameReader<R> {
    rd: R,
    /// Bytes received and not yet handed out: the start of the next frame(s).
    ahead: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            ahead: BytesMut::new(),
        }
    }

    /// Reads once, up to `want` bytes, onto the end of `ahead`. Returns the count; 0 is EOF.
    /// If the read is cancelled, `ahead` keeps zeros at its end: drop the reader then.
    async fn fill(&mut self, want: usize) -> io::Result<usize> {
        let filled = self.ahead.len();
        self.ahead.resize(filled + want, 0);
        let read = self.rd.read(&mut self.ahead[filled..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.ahead.truncate(filled + n);
        read
    }

    /// The body length of the next frame, checked against `size_max_bytes` before anything is
    /// allocated for it. The frame stays unread until `body`.
    pub async fn next_len(&mut self, size_max_bytes: u32) -> Result<usize, FrameReadError> {
        while self.ahead.len() < 4 {
            if self.fill(LOOKAHEAD_BYTES).await? == 0 {
                return Err(if self.ahead.is_empty() {
                    FrameReadError::Eof
                } else {
                    FrameReadError::Io(cut_short())
                });
            }
        }
        let prefix = [self.ahead[0], self.ahead[1], self.ahead[2], self.ahead[3]];
        frame_body_len(prefix, size_max_bytes).map_err(FrameReadError::Refused)
    }

    /// The body of the frame whose length `next_len` returned (and the caller accepted).
    pub async fn body(&mut self, len: usize) -> io::Result<Bytes> {
        debug_assert!(self.ahead.len() >= 4, "next_len read the prefix");
        if self.ahead.len() - 4 < len && len <= LOOKAHEAD_BYTES {
            // Small: the rest of it, and whatever follows, into `ahead`.
            while self.ahead.len() < 4 + len {
                let missing = 4 + len - self.ahead.len();
                if self.fill(missing + LOOKAHEAD_BYTES).await? == 0 {
                    return Err(cut_short());
                }
            }
        }
        if self.ahead.len() - 4 >= len {
            self.ahead.advance(4);
            return Ok(self.ahead.split_to(len).freeze());
        }
        // Large: a buffer of its own, with room for the next frame's length prefix; recycled,
        // so it is not zeroed for every body.
        let mut body = recycle::take(len + 4);
        let mut got = self.ahead.len() - 4;
        body[..got].copy_from_slice(&self.ahead[4..]);
        self.ahead.clear();
        while got < len {
            let n = self.rd.read(&mut body[got..len + 4]).await?;
            if n == 0 {
                return Err(cut_short());
            }
            got += n;
        }
        self.ahead.extend_from_slice(&body[len..got]);
        Ok(recycle::freeze(body, len))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::executor::block_on;

    use super::*;

    /// Serves `data` in reads of at most `chunk` bytes (and at most what the caller asks for),
    /// counting the reads; all of it is available at once, like a socket with a deep queue.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        reads: usize,
    }

    impl Chunked {
        fn new(data: Vec<u8>, chunk: usize) -> Self {
            Chunked {
                data,
                at: 0,
                chunk,
                reads: 0,
            }
        }
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            self.reads += 1;
            Poll::Ready(Ok(n))
        }
    }

    fn frames(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for b in bodies {
            wire.extend_from_slice(&(b.len() as i32).to_be_bytes());
            wire.extend_from_slice(b);
        }
        wire
    }

    /// Bodies of every size class, each filled with its own index so a mix-up shows.
    fn bodies() -> Vec<Vec<u8>> {
        [
            0, 1, 7, 100, 4092, 4096, 4097, 10_000, 3, 65_536, 5, 5, 70_000, 0, 12,
        ]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
        .collect()
    }

    fn read_all(r: &mut FrameReader<Chunked>) -> (Vec<Vec<u8>>, FrameReadError) {
        block_on(async {
            let mut got = Vec::new();
            loop {
                match r.next_len(1 << 20).await {
                    Ok(len) => got.push(r.body(len).await.map_err(FrameReadError::Io)?.to_vec()),
                    Err(e) => return Ok::<_, FrameReadError>((got, e)),
                }
            }
        })
        .unwrap_or_else(|e| panic!("body read failed: {e:?}"))
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let bodies = bodies();
        for chunk in [1, 3, 4, 5, 100, 4095, 4100, 9000, 1 << 20] {
            let rd = Chunked::new(frames(&bodies), chunk);
            let (got, end) = read_all(&mut FrameReader::new(rd));
            assert!(matches!(end, FrameReadError::Eof), "chunk {chunk}: {end:?}");
            assert_eq!(got, bodies, "chunk {chunk}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_frames_in_any_chunking_come_out_whole(
            sizes in proptest::collection::vec(0usize..20_000, 0..40),
            chunk in 1usize..12_000,
        ) {
            let bodies: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j * 13) as u8).collect())
                .collect();
            let mut r = FrameReader::new(Chunked::new(frames(&bodies), chunk));
            let (got, end) = read_all(&mut r);
            proptest::prop_assert!(matches!(end, FrameReadError::Eof), "{:?}", end);
            proptest::prop_assert_eq!(got, bodies);
        }
    }

    #[test]
    fn pipelined_large_frames_cost_one_read_each_and_small_ones_share_reads() {
        let large: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 10_000]).collect();
        let mut r = FrameReader::new(Chunked::new(frames(&large), usize::MAX));
        let (got, _) = read_all(&mut r);
        assert_eq!(got, large);
        // One to start (the lookahead), one per body (which also takes the next prefix), one EOF.
        assert!(r.rd.reads <= 50 + 2, "{} reads", r.rd.reads);

        let small: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 60]).collect();
        let mut r = FrameReader::new(Chunked::new(frames(&small), usize::MAX));
        let (got, _) = read_all(&mut r);
        assert_eq!(got, small);
        assert!(
            r.rd.reads <= 64 * 1000 / LOOKAHEAD_BYTES + 2,
            "{} reads",
            r.rd.reads
        );
    }

    #[test]
    fn a_connection_closed_inside_a_frame_is_an_error_not_a_clean_end() {
        let bodies = bodies();
        let wire = frames(&bodies);
        let start = |k: usize| bodies[..k].iter().map(|b| 4 + b.len()).sum::<usize>();
        // Cut inside a length prefix, inside a small body (7 bytes), inside a large one (10,000).
        for cut in [start(2) + 2, start(2) + 4 + 3, start(7) + 4 + 5000] {
            let mut r = FrameReader::new(Chunked::new(wire[..cut].to_vec(), 1000));
            let end = block_on(async {
                loop {
                    let len = match r.next_len(1 << 20).await {
                        Ok(len) => len,
                        Err(e) => return e,
                    };
                    if let Err(e) = r.body(len).await {
                        return FrameReadError::Io(e);
                    }
                }
            });
            match end {
                FrameReadError::Io(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_oversize_length_is_refused_before_its_body_is_read() {
        let mut wire = 100_000_i32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 64]);
        let mut r = FrameReader::new(Chunked::new(wire, usize::MAX));
        let refused = block_on(r.next_len(65_536));
        assert!(
            matches!(refused, Err(FrameReadError::Refused(_))),
            "{refused:?}"
        );
        let mut negative =
            FrameReader::new(Chunked::new((-1_i32).to_be_bytes().to_vec(), usize::MAX));
        assert!(matches!(
            block_on(negative.next_len(65_536)),
            Err(FrameReadError::Refused(_))
        ));
    }
}
