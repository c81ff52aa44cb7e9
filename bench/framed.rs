//! The non-blocking side of a Kafka connection, shared by the sessions the client's worker
//! threads drive (bench/cores.rs): the producer and the fetcher.
//!
//! `FramedConn` owns the socket once it is set up and does the byte work: it finishes a request
//! frame across partial writes, accumulates the length-prefixed response frames (each bounded by
//! a maximum size before anything of that size is allocated), hands each complete one over
//! without copying it, and turns a peer that takes or sends nothing for SOCKET_TIMEOUT into an
//! error. What a request and its response mean stays with the session.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::stats::now_ns;
use crate::wire;

/// A socket that accepts or answers nothing for this long is reported as an error.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// One non-blocking connection's framing, buffers and timeouts.
pub struct FramedConn {
    stream: TcpStream,
    /// "produce" or "fetch", for messages.
    what: &'static str,
    addr: String,
    /// Largest response frame accepted (length prefix excluded).
    response_max: usize,
    /// Free room asked for before each receive.
    read_chunk: usize,
    /// Response bytes received but not yet handed over; complete frames are split off its
    /// front, so the session gets them without a copy.
    received: BytesMut,
    /// How much of the request frame being written went out.
    written: usize,
    /// Since when the socket has refused our bytes, if it does.
    write_blocked_since_ns: Option<u64>,
    /// Since when we wait for response bytes: the last read, or the request that was sent
    /// when none was waiting (`awaiting_from`).
    response_wait_since_ns: u64,
}

impl FramedConn {
    /// Takes over a connected `stream` (set up with blocking calls) and makes it non-blocking:
    /// from here on a worker's event loop drives it. `read_chunk` is the free room of the read
    /// buffer per receive (grown for a bigger frame); response frames above `response_max`
    /// bytes are an error.
    pub fn new(
        stream: TcpStream,
        what: &'static str,
        addr: &str,
        read_chunk: usize,
        response_max: usize,
    ) -> wire::Result<FramedConn> {
        stream
            .set_nonblocking(true)
            .map_err(wire::io_err("non-blocking socket"))?;
        Ok(FramedConn {
            stream,
            what,
            addr: addr.to_string(),
            response_max,
            read_chunk,
            received: BytesMut::with_capacity(read_chunk),
            written: 0,
            write_blocked_since_ns: None,
            response_wait_since_ns: 0,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Writes what is left of the request frame `bytes` (the same frame on every call until
    /// it is out); true once it is all out, false if the socket is full (EPOLLOUT calls the
    /// session back).
    pub fn write_pending(&mut self, bytes: &[u8]) -> io::Result<bool> {
        while self.written < bytes.len() {
            match (&self.stream).write(&bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.write_blocked_since_ns = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked_since_ns.get_or_insert_with(now_ns);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.written = 0;
        Ok(true)
    }

    /// Gives up the frame in progress after a write error.
    pub fn abandon_write(&mut self) {
        self.written = 0;
        self.write_blocked_since_ns = None;
    }

    /// A request was sent while no response was awaited: the response timeout runs from now.
    pub fn awaiting_from(&mut self, now_ns: u64) {
        self.response_wait_since_ns = now_ns;
    }

    /// Reads until the socket is empty; after each receive, hands every complete response
    /// frame (its body, without the length prefix) to `handle` in order, with the time it was
    /// received. An error (the peer's or `handle`'s) ends the connection.
    pub fn read_frames(
        &mut self,
        mut handle: impl FnMut(Bytes, u64) -> wire::Result<()>,
    ) -> Result<(), String> {
        loop {
            let room = self.make_room().map_err(|e| self.response_error(e))?;
            match self.receive() {
                Ok(0) => return Err(self.response_error("connection closed by the broker")),
                Ok(n) => {
                    let received_ns = now_ns();
                    self.response_wait_since_ns = received_ns;
                    while let Some(len) =
                        self.complete_frame().map_err(|e| self.response_error(e))?
                    {
                        let mut frame = self.received.split_to(len).freeze();
                        frame.advance(wire::FRAME_LENGTH_BYTES);
                        handle(frame, received_ns).map_err(|e| self.response_error(e))?;
                    }
                    if n < room {
                        return Ok(()); // a short read emptied the socket
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.response_error(e)),
            }
        }
    }

    /// Makes room for the frame at the front of the read buffer (its length was bounded by
    /// `response_max` before), and at least `read_chunk`. Returns the free room.
    fn make_room(&mut self) -> wire::Result<usize> {
        let missing = wire::frame_len(&self.received, self.response_max)?
            .map_or(0, |len| len.saturating_sub(self.received.len()));
        self.received.reserve(missing.max(self.read_chunk));
        Ok(self.received.capacity() - self.received.len())
    }

    /// One receive into the free room of the read buffer.
    fn receive(&mut self) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        let room = self.received.spare_capacity_mut();
        // SAFETY: `room` is writable memory of the length we pass; read(2) only writes into it
        // and returns how many bytes it wrote, which are then initialised.
        let n = unsafe { libc::read(fd, room.as_mut_ptr().cast(), room.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the first `n` bytes of the spare capacity were just written by read(2).
        unsafe { self.received.set_len(self.received.len() + n) };
        Ok(n)
    }

    /// The length of the frame at the front of the read buffer, if all of it is there.
    fn complete_frame(&self) -> wire::Result<Option<usize>> {
        let len = wire::frame_len(&self.received, self.response_max)?;
        Ok(len.filter(|len| *len <= self.received.len()))
    }

    fn response_error(&self, e: impl std::fmt::Display) -> String {
        format!("{} response from {}: {e}", self.what, self.addr)
    }

    /// A peer that takes none of our bytes, or sends none of the responses we wait for
    /// (`awaiting`), for SOCKET_TIMEOUT is an error rather than a hang.
    pub fn check_timeouts(&self, now_ns: u64, awaiting: bool) -> Result<(), String> {
        let timeout_ns = SOCKET_TIMEOUT.as_nanos() as u64;
        if let Some(since) = self.write_blocked_since_ns
            && now_ns.saturating_sub(since) > timeout_ns
        {
            let (what, addr) = (self.what, &self.addr);
            return Err(format!(
                "{what} write to {addr}: no progress for {SOCKET_TIMEOUT:?}"
            ));
        }
        if awaiting && now_ns.saturating_sub(self.response_wait_since_ns) > timeout_ns {
            return Err(self.response_error(format_args!("none for {SOCKET_TIMEOUT:?}")));
        }
        Ok(())
    }
}

/// A stand-in broker for the sessions' unit tests.
#[cfg(test)]
pub mod stand_in {
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;

    use bytes::BytesMut;
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};

    use crate::cores::{Session, Workers};
    use crate::stats::Stats;
    use crate::wire;

    /// Requests the stand-in broker accepts; the tests' are far smaller.
    const REQUEST_MAX_BYTES: usize = 1024 * 1024;

    /// A broker on loopback for one connection: decodes each request as `R` at `version` and
    /// sends `answer`'s response under the request's correlation id plus `skew` (0: correct).
    /// Returns its address, and a thread that returns how many requests it answered once the
    /// client closed the connection.
    pub fn broker<R: Request>(
        version: i16,
        skew: i32,
        mut answer: impl FnMut(R) -> R::Response + Send + 'static,
    ) -> (String, thread::JoinHandle<u64>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address").to_string();
        let serve = move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut requests = socket.try_clone().expect("clone socket");
            let mut answered = 0;
            while let Ok(mut frame) = wire::read_frame(&mut requests, REQUEST_MAX_BYTES) {
                let header = RequestHeader::decode(&mut frame, R::header_version(version))
                    .expect("request header decodes");
                let request = R::decode(&mut frame, version).expect("request decodes");
                let mut body = BytesMut::new();
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id + skew)
                    .encode(&mut body, R::Response::header_version(version))
                    .expect("header encodes");
                answer(request)
                    .encode(&mut body, version)
                    .expect("response encodes");
                let len = (body.len() as i32).to_be_bytes();
                if socket
                    .write_all(&len)
                    .and_then(|()| socket.write_all(&body))
                    .is_err()
                {
                    break;
                }
                answered += 1;
            }
            answered
        };
        (addr, thread::spawn(serve))
    }

    /// Drives one session on one worker until it is done.
    pub fn run_session<S: Session + Send + 'static>(session: S, stats: &Arc<Stats>) {
        let mut workers = Workers::start(None, 1, stats).expect("worker");
        workers.add(session);
        for worker in workers.finish() {
            worker.join().expect("worker thread");
        }
    }
}
