//! A response on its way to the socket: bytes from memory, and for Fetch, file regions that the
//! network layer sends with sendfile (or an io_uring read) without copying them through here.

use bytes::{BufMut, Bytes, BytesMut};

/// One piece of a response frame.
pub enum Part<R> {
    Mem(Bytes),
    /// `len` bytes of a file region, sent as they are.
    Region(R, u64),
}

/// A whole response frame (length prefix included), in order.
pub struct ResponseFrame<R> {
    pub parts: Vec<Part<R>>,
}

impl<R> ResponseFrame<R> {
    pub fn from_bytes(frame: Bytes) -> Self {
        ResponseFrame {
            parts: vec![Part::Mem(frame)],
        }
    }

    pub fn len_bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Mem(b) => b.len() as u64,
                Part::Region(_, len) => *len,
            })
            .sum()
    }
}

/// Builds a frame from memory writes interleaved with file regions, then patches the length prefix.
pub struct FrameBuilder<R> {
    done: Vec<Part<R>>,
    current: BytesMut,
    first: Option<BytesMut>,
    total_bytes: u64,
}

impl<R> FrameBuilder<R> {
    /// Starts a frame whose first bytes are the length placeholder and the correlation id.
    pub fn new(correlation_id: i32) -> Self {
        let mut current = BytesMut::with_capacity(1024);
        current.put_i32(0);
        current.put_i32(correlation_id);
        FrameBuilder {
            done: Vec::new(),
            current,
            first: None,
            total_bytes: 0,
        }
    }

    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.current
    }

    pub fn region(&mut self, region: R, len: u64) {
        let chunk = std::mem::take(&mut self.current);
        self.total_bytes += chunk.len() as u64;
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.done.push(Part::Mem(chunk.freeze()));
        }
        self.done.push(Part::Region(region, len));
        self.total_bytes += len;
    }

    pub fn finish(mut self) -> ResponseFrame<R> {
        let last = std::mem::take(&mut self.current);
        self.total_bytes += last.len() as u64;
        let size = i32::try_from(self.total_bytes - 4).expect("response frame fits in i32");
        let mut parts = Vec::with_capacity(self.done.len() + 2);
        match self.first.take() {
            Some(mut first) => {
                first[..4].copy_from_slice(&size.to_be_bytes());
                parts.push(Part::Mem(first.freeze()));
                parts.append(&mut self.done);
                if !last.is_empty() {
                    parts.push(Part::Mem(last.freeze()));
                }
            }
            None => {
                let mut last = last;
                last[..4].copy_from_slice(&size.to_be_bytes());
                parts.push(Part::Mem(last.freeze()));
            }
        }
        ResponseFrame { parts }
    }
}

/// Unsigned varint as Kafka's flexible versions use it.
pub fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

impl<R> Part<R> {
    /// Bytes this part puts on the wire.
    pub fn len_bytes(&self) -> u64 {
        match self {
            Part::Mem(b) => b.len() as u64,
            Part::Region(_, len) => *len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flatten(f: ResponseFrame<&'static [u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in f.parts {
            match p {
                Part::Mem(b) => out.extend_from_slice(&b),
                Part::Region(r, len) => {
                    assert_eq!(r.len() as u64, len);
                    out.extend_from_slice(r)
                }
            }
        }
        out
    }

    #[test]
    fn length_prefix_covers_regions() {
        let mut b = FrameBuilder::new(7);
        b.buf().put_u8(1);
        b.region(&b"abc"[..], 3);
        b.buf().put_u8(2);
        b.region(&b"de"[..], 2);
        let f = b.finish();
        assert_eq!(f.len_bytes(), 4 + 4 + 1 + 3 + 1 + 2);
        assert_eq!(
            flatten(f),
            [0, 0, 0, 11, 0, 0, 0, 7, 1, b'a', b'b', b'c', 2, b'd', b'e']
        );
    }

    #[test]
    fn memory_only_frame() {
        let mut b = FrameBuilder::<&'static [u8]>::new(1);
        b.buf().put_u16(9);
        assert_eq!(flatten(b.finish()), [0, 0, 0, 6, 0, 0, 0, 1, 0, 9]);
    }

    #[test]
    fn uvarint_encoding() {
        let mut b = BytesMut::new();
        put_uvarint(&mut b, 0);
        put_uvarint(&mut b, 127);
        put_uvarint(&mut b, 128);
        put_uvarint(&mut b, 300);
        assert_eq!(&b[..], [0, 127, 0x80, 1, 0xac, 2]);
    }
}
