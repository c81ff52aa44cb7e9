//! A lean Kafka wire client: frames, request encoding, version negotiation.
//!
//! Control-plane requests (ApiVersions, Metadata, CreateTopics, ListOffsets) go through
//! `Conn::call`, blocking, one at a time. The hot paths (Produce, Fetch) pre-encode their frames
//! with `encode_frame` and drive their non-blocking sockets through bench/framed.rs, so nothing
//! here sits on the data path except `frame_len` and `decode_reply`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// Largest control-plane response we accept; a larger length prefix is a broken peer.
pub const CONTROL_RESPONSE_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Where the correlation id sits in an encoded frame: after the i32 length, api key and version.
/// Every request header version (0, 1, 2) starts with these three fields.
pub const FRAME_CORRELATION_ID_OFFSET: usize = 8;
/// The i32 length prefix of every frame.
pub const FRAME_LENGTH_BYTES: usize = 4;
const UNSUPPORTED_VERSION: i16 = 35;
/// CreateTopics waits for the partitions to open, so this is generous.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "sable-bench";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("response frame of {size} bytes is outside 0..={max} bytes")]
    FrameSize { size: i64, max: usize },
    #[error("codec: {0}")]
    Codec(String),
    #[error("correlation id {got} where {want} was expected")]
    Correlation { got: i32, want: i32 },
    #[error("{0}")]
    Broker(String),
}

pub type Result<T> = std::result::Result<T, WireError>;

pub fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> WireError {
    let context = context.into();
    move |source| WireError::Io { context, source }
}

fn codec(e: impl std::fmt::Display) -> WireError {
    WireError::Codec(e.to_string())
}

/// Kafka's error name for a code, for messages.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}({code})"),
        None => "NONE(0)".to_string(),
    }
}

/// Encodes `[i32 length][request header][body]` for request `R` at `version`.
pub fn encode_frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Result<Vec<u8>> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(codec)?;
    req.encode(&mut buf, version).map_err(codec)?;
    let body_len = i32::try_from(buf.len() - 4).map_err(codec)?;
    buf[0..4].copy_from_slice(&body_len.to_be_bytes());
    Ok(buf.to_vec())
}

/// Overwrites the correlation id of a frame made by `encode_frame`.
pub fn patch_correlation_id(frame: &mut [u8], correlation_id: i32) {
    let at = FRAME_CORRELATION_ID_OFFSET;
    frame[at..at + 4].copy_from_slice(&correlation_id.to_be_bytes());
}

/// Reads one response frame; the length prefix is checked against `size_max_bytes` before any
/// allocation of that size.
pub fn read_frame(r: &mut impl Read, size_max_bytes: usize) -> Result<Bytes> {
    let mut len = [0u8; FRAME_LENGTH_BYTES];
    r.read_exact(&mut len)
        .map_err(io_err("read frame length"))?;
    let mut body = vec![0u8; frame_size(len, size_max_bytes)?];
    r.read_exact(&mut body).map_err(io_err("read frame body"))?;
    Ok(Bytes::from(body))
}

/// The length of the frame at the start of `buf`, prefix included, once its 4-byte prefix is
/// there (None before); the prefix is checked against `size_max_bytes` like in `read_frame`.
pub fn frame_len(buf: &[u8], size_max_bytes: usize) -> Result<Option<usize>> {
    let Some(prefix) = buf.first_chunk::<FRAME_LENGTH_BYTES>() else {
        return Ok(None);
    };
    Ok(Some(
        FRAME_LENGTH_BYTES + frame_size(*prefix, size_max_bytes)?,
    ))
}

/// The body size a frame's length prefix announces, refused when negative or above
/// `size_max_bytes`: a broken peer must not make us allocate gigabytes.
fn frame_size(len: [u8; FRAME_LENGTH_BYTES], size_max_bytes: usize) -> Result<usize> {
    let size = i32::from_be_bytes(len);
    match usize::try_from(size) {
        Ok(n) if n <= size_max_bytes => Ok(n),
        _ => Err(WireError::FrameSize {
            size: i64::from(size),
            max: size_max_bytes,
        }),
    }
}

/// Decodes the response to the request sent with correlation id `want`; another id is an
/// error (Kafka answers in order on a connection, so it means we lost track).
pub fn decode_reply<R: Request>(frame: Bytes, version: i16, want: i32) -> Result<R::Response> {
    let (got, body) = decode_response::<R>(frame, version)?;
    if got != want {
        return Err(WireError::Correlation { got, want });
    }
    Ok(body)
}

/// Splits a response frame into its correlation id and body, for API `key` at `version`.
pub fn decode_response<R: Request>(frame: Bytes, version: i16) -> Result<(i32, R::Response)> {
    let mut buf = frame;
    let key = ApiKey::try_from(R::KEY).map_err(|_| WireError::Codec("api key".into()))?;
    let header =
        ResponseHeader::decode(&mut buf, key.response_header_version(version)).map_err(codec)?;
    let body = R::Response::decode(&mut buf, version).map_err(codec)?;
    Ok((header.correlation_id, body))
}

/// The version range a broker advertised for each API key it serves.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    ranges: Vec<(i16, i16, i16)>,
}

impl Versions {
    /// Highest version both sides speak, within `ours`.
    pub fn pick(&self, key: ApiKey, ours: std::ops::RangeInclusive<i16>) -> Result<i16> {
        let found = self.ranges.iter().find(|(k, _, _)| *k == key as i16);
        let Some(&(_, min, max)) = found else {
            return Err(WireError::Broker(format!("broker does not serve {key:?}")));
        };
        let high = max.min(*ours.end());
        if high < min.max(*ours.start()) {
            return Err(WireError::Broker(format!(
                "{key:?}: broker speaks {min}..={max}, sable-bench {ours:?}"
            )));
        }
        Ok(high)
    }
}

/// `--tcp-congestion-control`: set once in main, before any connection is made.
static CONGESTION_CONTROL: OnceLock<String> = OnceLock::new();

/// Every later connection (and the `limits` loopback probes) uses `name`.
pub fn use_congestion_control(name: String) {
    CONGESTION_CONTROL
        .set(name)
        .expect("the congestion control is set once, in main");
}

/// The algorithm asked for, if any.
pub fn congestion_control() -> Option<&'static str> {
    CONGESTION_CONTROL.get().map(String::as_str)
}

/// The algorithm our connections use: the one asked for, else the system's default.
pub fn congestion_control_in_effect() -> Option<String> {
    congestion_control()
        .map(str::to_string)
        .or_else(sable::net::congestion::system_default)
}

/// Sets the algorithm asked for (if any) on a socket of ours.
pub fn apply_congestion_control(socket: &impl std::os::fd::AsFd) -> io::Result<()> {
    match congestion_control() {
        Some(name) => sable::net::congestion::set(socket, name),
        None => Ok(()),
    }
}

/// A blocking connection to one broker, used for control-plane calls and as the seed of the
/// split sockets of the workloads.
pub struct Conn {
    pub stream: TcpStream,
    pub addr: String,
    pub versions: Versions,
    correlation_id: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(io_err(format!("resolve {addr}")))?
            .next()
            .ok_or_else(|| WireError::Broker(format!("{addr} resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&resolved, Duration::from_secs(10))
            .map_err(io_err(format!("connect {addr}")))?;
        stream.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
        apply_congestion_control(&stream).map_err(io_err("TCP_CONGESTION"))?;
        // Control calls fail instead of hanging on a broker that stopped answering; the
        // workloads set their own timeouts on the sockets they take over.
        stream
            .set_read_timeout(Some(CONTROL_TIMEOUT))
            .map_err(io_err("read timeout"))?;
        stream
            .set_write_timeout(Some(CONTROL_TIMEOUT))
            .map_err(io_err("write timeout"))?;
        let mut conn = Conn {
            stream,
            addr: addr.to_string(),
            versions: Versions::default(),
            correlation_id: 0,
        };
        conn.versions = conn.api_versions()?;
        Ok(conn)
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.correlation_id
    }

    /// One request, one response, in order.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let want = self.next_correlation_id();
        let frame = encode_frame(req, version, want)?;
        self.stream
            .write_all(&frame)
            .map_err(io_err(format!("write to {}", self.addr)))?;
        let reply = read_frame(&mut self.stream, CONTROL_RESPONSE_SIZE_MAX_BYTES)?;
        decode_reply::<R>(reply, version, want)
    }

    /// ApiVersions v3, then v0 if the broker does not know v3. KIP-511 says the refusal comes in
    /// the v0 layout, but not every broker follows it (librdkafka's mock answers a malformed
    /// flexible body), so like Kafka's own clients we read only the error code, which leads
    /// every layout, and ask again at v0.
    fn api_versions(&mut self) -> Result<Versions> {
        let mut resp = None;
        for version in [3, 0] {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let want = self.next_correlation_id();
            let frame = encode_frame(&req, version, want)?;
            self.stream
                .write_all(&frame)
                .map_err(io_err(format!("write to {}", self.addr)))?;
            let reply = read_frame(&mut self.stream, CONTROL_RESPONSE_SIZE_MAX_BYTES)?;
            // The ApiVersions response header is always v0: the correlation id alone.
            if reply.len() < 6 {
                return Err(WireError::Codec("ApiVersions response too short".into()));
            }
            let got = i32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
            if got != want {
                return Err(WireError::Correlation { got, want });
            }
            if i16::from_be_bytes([reply[4], reply[5]]) == UNSUPPORTED_VERSION {
                continue;
            }
            resp =
                Some(ApiVersionsResponse::decode(&mut reply.slice(4..), version).map_err(codec)?);
            break;
        }
        let resp = resp.ok_or_else(|| WireError::Broker("ApiVersions v3 and v0 refused".into()))?;
        if resp.error_code != 0 {
            return Err(WireError::Broker(format!(
                "ApiVersions: {}",
                error_name(resp.error_code)
            )));
        }
        let ranges = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version));
        Ok(Versions {
            ranges: ranges.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_waits_for_the_prefix_and_bounds_it() {
        let max = 100;
        assert!(matches!(frame_len(&[0, 0, 0], max), Ok(None)));
        assert!(matches!(frame_len(&[0, 0, 0, 5, 1], max), Ok(Some(9))));
        assert!(matches!(
            frame_len(&(max as i32 + 1).to_be_bytes(), max),
            Err(WireError::FrameSize { .. })
        ));
        assert!(matches!(
            frame_len(&(-1i32).to_be_bytes(), max),
            Err(WireError::FrameSize { size: -1, .. })
        ));
    }
}
