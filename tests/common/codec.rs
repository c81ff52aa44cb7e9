//! Typed Kafka requests and responses over a raw socket, encoded with the kafka-protocol crate
//! (the broker's own codec). For tests about what the broker does with a request that no client
//! library sends for certain (a retried batch, DeleteRecords on one shard, a byte-at-a-time
//! writer); tests about the encoding itself use `wire`, which is written independently.
//!
//! Framing, timeouts and "the broker closed the connection" are `wire`'s.

use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::wire::{self, ConnectionClosed, Reply};

/// The correlation id of `call` and `try_call`, which send one request at a time.
const CORRELATION_ID: i32 = 7;

/// The request header of `key` at `version`, in the header version that goes with it.
pub fn header(key: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(wire::CLIENT_ID)))
        .encode(&mut b, key.request_header_version(version))
        .expect("encode request header");
    b.to_vec()
}

/// Header and body of one request, without the length prefix.
pub fn request<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let mut b = BytesMut::from(header(key, version, correlation_id).as_slice());
    body.encode(&mut b, version).expect("encode request body");
    b.to_vec()
}

/// A whole frame, length prefix included, as it goes on the wire: tests that lie in it patch
/// its bytes (the api key at 4..6, the version at 6..8).
pub fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    wire::frame(&request(key, version, correlation_id, body))
}

/// Reads one response frame of `key` at `version`: (correlation id, body after the header).
/// `Err` if the broker closed the connection instead.
pub fn try_read_response(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
) -> Result<(i32, Bytes), ConnectionClosed> {
    let Reply::Frame(frame) = wire::read_reply(stream) else {
        return Err(ConnectionClosed);
    };
    let mut r = wire::Reader::new(&frame);
    let correlation_id = r.i32();
    if key.response_header_version(version) >= 1 {
        r.skip_tagged_fields();
    }
    let header_len = r.position();
    Ok((correlation_id, Bytes::from(frame).slice(header_len..)))
}

/// As `try_read_response`, but a closed connection fails the test.
pub fn read_response(stream: &mut TcpStream, key: ApiKey, version: i16) -> (i32, Bytes) {
    try_read_response(stream, key, version)
        .expect("broker closed the connection instead of answering")
}

/// Sends `req` and decodes the answer; `Err` if the broker closed the connection, which a client
/// that retries takes in stride.
pub fn try_call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, ConnectionClosed> {
    wire::try_send_frame(stream, &request(key, version, CORRELATION_ID, req))?;
    let (correlation_id, mut body) = try_read_response(stream, key, version)?;
    assert_eq!(
        correlation_id, CORRELATION_ID,
        "correlation id of the answer"
    );
    Ok(Resp::decode(&mut body, version).expect("decode response"))
}

/// Sends `req` and decodes the answer; a closed connection fails the test.
pub fn call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    try_call(stream, key, version, req).expect("broker closed the connection instead of answering")
}

/// CreateTime of every record `record_batch` builds (2023-11-14T22:13:20Z).
pub const RECORD_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// One uncompressed v2 record batch holding `values`, from producer `producer_id` at `epoch`
/// with first sequence `first_sequence`; a plain producer is (-1, -1, -1).
pub fn record_batch(producer_id: i64, epoch: i16, first_sequence: i32, values: &[Bytes]) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..)
        .zip(values)
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            // The encoder starts a new batch when offset - sequence changes: keep it constant.
            sequence: first_sequence + i,
            timestamp: RECORD_TIMESTAMP_MS,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode a record batch");
    buf.freeze()
}
