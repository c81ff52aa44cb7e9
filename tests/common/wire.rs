//! Hand-built Kafka frames over a plain `TcpStream`, for what no well-behaved client sends.
//!
//! Encoding and decoding here are written from the Kafka protocol guide, independently of the
//! codec the broker uses, so a shared misunderstanding cannot make a test pass.

use std::fmt::Debug;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a read may block before the test decides the broker neither answered nor closed.
pub const READ_WAIT_MAX: Duration = Duration::from_secs(10);
/// Largest response frame the tests accept.
const RESPONSE_SIZE_MAX_BYTES: usize = 16 << 20;
/// The client id of every hand-built request.
pub const CLIENT_ID: &str = "sable-tests";

pub const API_KEY_PRODUCE: i16 = 0;
pub const API_KEY_FETCH: i16 = 1;
pub const API_KEY_LIST_OFFSETS: i16 = 2;
pub const API_KEY_METADATA: i16 = 3;
pub const API_KEY_FIND_COORDINATOR: i16 = 10;
pub const API_KEY_API_VERSIONS: i16 = 18;
pub const API_KEY_CREATE_TOPICS: i16 = 19;

pub const ERROR_NONE: i16 = 0;
pub const ERROR_INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const ERROR_UNSUPPORTED_VERSION: i16 = 35;
pub const ERROR_INVALID_PARTITIONS: i16 = 37;
pub const ERROR_INVALID_REPLICATION_FACTOR: i16 = 38;

/// A connection whose reads and writes give up after `READ_WAIT_MAX`.
pub fn connect<A: ToSocketAddrs + Debug>(addr: A) -> TcpStream {
    let stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr:?}: {e}"));
    stream
        .set_read_timeout(Some(READ_WAIT_MAX))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(READ_WAIT_MAX))
        .expect("set write timeout");
    stream.set_nodelay(true).expect("set nodelay");
    stream
}

/// `body` behind its i32 length prefix: a whole frame as it goes on the wire.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(body.len()).expect("frame fits i32");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Writes `body` behind its i32 length prefix.
pub fn send_frame(stream: &mut TcpStream, body: &[u8]) {
    if try_send_frame(stream, body).is_err() {
        panic!("broker closed the connection before the request was written");
    }
}

/// The broker closed the connection (EOF or reset) instead of taking or answering a request.
#[derive(Debug)]
pub struct ConnectionClosed;

/// Writes `body` behind its i32 length prefix; `Err` if the broker had closed the connection,
/// which a client that retries (as an idempotent producer does) takes in stride.
pub fn try_send_frame(stream: &mut TcpStream, body: &[u8]) -> Result<(), ConnectionClosed> {
    match stream.write_all(&frame(body)) {
        Ok(()) => Ok(()),
        Err(e) if is_closed(&e) => Err(ConnectionClosed),
        Err(e) => panic!("write frame: {e}"),
    }
}

/// Errors that mean the peer closed the connection.
fn is_closed(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
}

/// What came back after a request.
#[derive(Debug)]
pub enum Reply {
    /// A whole response frame, without its length prefix.
    Frame(Vec<u8>),
    /// The broker closed the connection (EOF or reset).
    Closed,
}

/// Reads one response frame, or notices the connection was closed. Panics if the broker does
/// neither within `READ_WAIT_MAX`.
pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut len_buf = [0u8; 4];
    if !read_exact_or_closed(stream, &mut len_buf) {
        return Reply::Closed;
    }
    let len = i32::from_be_bytes(len_buf);
    let len = usize::try_from(len).unwrap_or_else(|_| panic!("negative response length {len}"));
    assert!(
        len <= RESPONSE_SIZE_MAX_BYTES,
        "response length {len} is absurd"
    );
    let mut body = vec![0u8; len];
    assert!(
        read_exact_or_closed(stream, &mut body),
        "connection closed inside a {len}-byte response frame"
    );
    Reply::Frame(body)
}

/// Reads one response frame; panics if the connection closed instead.
pub fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    match read_reply(stream) {
        Reply::Frame(body) => body,
        Reply::Closed => panic!("broker closed the connection instead of answering"),
    }
}

/// Fills `buf`; false if the peer closed before the first byte.
fn read_exact_or_closed(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return false,
            Ok(0) => panic!("connection closed after {filled} of {} bytes", buf.len()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) => return false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("broker neither answered nor closed within {READ_WAIT_MAX:?}")
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    true
}

/// Request header v1: api key, version, correlation id, nullable client id.
pub fn header_v1(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&api_key.to_be_bytes());
    b.extend_from_slice(&api_version.to_be_bytes());
    b.extend_from_slice(&correlation_id.to_be_bytes());
    put_string(&mut b, client_id);
    b
}

/// Request header v2 (flexible requests): header v1 plus an empty tagged-field section.
pub fn header_v2(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut b = header_v1(api_key, api_version, correlation_id, client_id);
    b.push(0);
    b
}

/// A whole ApiVersions request of `version`: header v1 and an empty body for v0..v2, header v2
/// and the KIP-511 client software name and version for v3 and later.
pub fn api_versions_request(version: i16, correlation_id: i32) -> Vec<u8> {
    if version < 3 {
        return header_v1(API_KEY_API_VERSIONS, version, correlation_id, CLIENT_ID);
    }
    let mut b = header_v2(API_KEY_API_VERSIONS, version, correlation_id, CLIENT_ID);
    put_compact_string(&mut b, CLIENT_ID);
    put_compact_string(&mut b, "0.1.0");
    b.push(0); // no tagged fields
    b
}

/// One ApiVersions response, fully decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    /// (api key, min version, max version) in the order the broker sent them.
    pub api_keys: Vec<(i16, i16, i16)>,
    pub throttle_time_ms: Option<i32>,
}

/// Decodes an ApiVersions response of `version` and panics unless every byte is accounted for.
/// The response header is always v0 for ApiVersions (no tagged fields), whatever the version,
/// so that a client can read it before it knows what the broker supports.
pub fn decode_api_versions(frame: &[u8], version: i16) -> ApiVersionsResponse {
    let mut r = Reader::new(frame);
    let correlation_id = r.i32();
    let error_code = r.i16();
    let flexible = version >= 3;
    let count = if flexible {
        r.compact_len()
    } else {
        usize::try_from(r.i32()).expect("api key count >= 0")
    };
    let mut api_keys = Vec::with_capacity(count);
    for _ in 0..count {
        api_keys.push((r.i16(), r.i16(), r.i16()));
        if flexible {
            r.skip_tagged_fields();
        }
    }
    let throttle_time_ms = (version >= 1).then(|| r.i32());
    if flexible {
        r.skip_tagged_fields();
    }
    r.assert_end();
    ApiVersionsResponse {
        correlation_id,
        error_code,
        api_keys,
        throttle_time_ms,
    }
}

/// A CreateTopics v4 request (the newest non-flexible version) for one topic.
pub fn create_topics_v4_request(
    correlation_id: i32,
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> Vec<u8> {
    let mut b = header_v1(API_KEY_CREATE_TOPICS, 4, correlation_id, CLIENT_ID);
    b.extend_from_slice(&1i32.to_be_bytes()); // one topic
    put_string(&mut b, name);
    b.extend_from_slice(&partitions.to_be_bytes());
    b.extend_from_slice(&replication_factor.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // no manual assignment
    b.extend_from_slice(&0i32.to_be_bytes()); // no configs
    b.extend_from_slice(&30_000i32.to_be_bytes()); // timeout_ms
    b.push(0); // validate_only = false
    b
}

/// Decodes a CreateTopics v4 response: (correlation id, [(name, error code)]).
pub fn decode_create_topics_v4(frame: &[u8]) -> (i32, Vec<(String, i16)>) {
    let mut r = Reader::new(frame);
    let correlation_id = r.i32();
    let _throttle_time_ms = r.i32();
    let count = usize::try_from(r.i32()).expect("topic count >= 0");
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.string().expect("topic name is not null");
        let error_code = r.i16();
        let _error_message = r.string();
        topics.push((name, error_code));
    }
    r.assert_end();
    (correlation_id, topics)
}

/// A FindCoordinator v0 request for the coordinator of `group`.
pub fn find_coordinator_v0_request(correlation_id: i32, group: &str) -> Vec<u8> {
    let mut b = header_v1(API_KEY_FIND_COORDINATOR, 0, correlation_id, CLIENT_ID);
    put_string(&mut b, group);
    b
}

/// One FindCoordinator v0 response, fully decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// Decodes a FindCoordinator v0 response and panics unless every byte is accounted for.
pub fn decode_find_coordinator_v0(frame: &[u8]) -> FindCoordinatorResponse {
    let mut r = Reader::new(frame);
    let response = FindCoordinatorResponse {
        correlation_id: r.i32(),
        error_code: r.i16(),
        node_id: r.i32(),
        host: r.string().expect("coordinator host is not null"),
        port: r.i32(),
    };
    r.assert_end();
    response
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).expect("string fits i16");
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_compact_string(b: &mut Vec<u8>, s: &str) {
    put_uvarint(b, u64::try_from(s.len()).expect("len fits u64") + 1);
    b.extend_from_slice(s.as_bytes());
}

fn put_uvarint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// A cursor over a response that panics on any short read: a malformed response is a failure.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.buf.len(),
            "response too short: need {n} bytes at {} of {}",
            self.pos,
            self.buf.len()
        );
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    /// How many bytes were read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }

    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }

    pub fn uvarint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("uvarint longer than 10 bytes");
    }

    /// A compact array length (N + 1 on the wire, 0 = null, which a response must not use here).
    pub fn compact_len(&mut self) -> usize {
        let n = self.uvarint();
        assert!(n > 0, "null compact array");
        usize::try_from(n - 1).expect("length fits usize")
    }

    /// A nullable string with an i16 length.
    pub fn string(&mut self) -> Option<String> {
        let len = self.i16();
        if len < 0 {
            return None;
        }
        let bytes = self.take(usize::try_from(len).expect("len >= 0"));
        Some(String::from_utf8(bytes.to_vec()).expect("utf-8 string"))
    }

    pub fn skip_tagged_fields(&mut self) {
        let count = self.uvarint();
        for _ in 0..count {
            let _tag = self.uvarint();
            let size = usize::try_from(self.uvarint()).expect("size fits usize");
            self.take(size);
        }
    }

    pub fn assert_end(&self) {
        assert_eq!(
            self.pos,
            self.buf.len(),
            "{} unread bytes at the end of the response",
            self.buf.len() - self.pos
        );
    }
}
