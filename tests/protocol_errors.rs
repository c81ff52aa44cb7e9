//! Hostile and odd frames on a raw socket: the offending connection is closed (or answered with
//! an error), and the broker and its other connections carry on.

mod common;

use common::Broker;
use common::wire::{self, Reply};

/// ApiVersions v0..=4 as Apache Kafka 4.x serves it; Sable copies that range.
const API_VERSIONS_RANGE: (i16, i16, i16) = (wire::API_KEY_API_VERSIONS, 0, 4);

/// A connection that asked ApiVersions once; it must keep working while others misbehave.
struct Bystander {
    stream: std::net::TcpStream,
    correlation_id: i32,
}

impl Bystander {
    fn open(broker: &Broker) -> Bystander {
        let mut b = Bystander {
            stream: wire::connect(broker.bootstrap()),
            correlation_id: 1000,
        };
        b.assert_served();
        b
    }

    fn assert_served(&mut self) {
        self.correlation_id += 1;
        let req = wire::api_versions_request(0, self.correlation_id);
        wire::send_frame(&mut self.stream, &req);
        let resp = wire::decode_api_versions(&wire::read_frame(&mut self.stream), 0);
        assert_eq!(resp.correlation_id, self.correlation_id);
        assert_eq!(resp.error_code, wire::ERROR_NONE);
    }
}

/// A brand-new connection gets an ApiVersions answer.
fn assert_new_connection_served(broker: &Broker) {
    let mut s = wire::connect(broker.bootstrap());
    wire::send_frame(&mut s, &wire::api_versions_request(3, 7));
    let resp = wire::decode_api_versions(&wire::read_frame(&mut s), 3);
    assert_eq!(resp.correlation_id, 7);
    assert_eq!(resp.error_code, wire::ERROR_NONE);
}

/// Writes raw bytes (no length prefix added) on a fresh connection and expects it closed.
fn assert_raw_bytes_close_connection(broker: &Broker, bytes: &[u8]) {
    let mut bystander = Bystander::open(broker);
    let mut s = wire::connect(broker.bootstrap());
    std::io::Write::write_all(&mut s, bytes).expect("write");
    match wire::read_reply(&mut s) {
        Reply::Closed => {}
        Reply::Frame(f) => panic!(
            "broker answered {} bytes to {:02x?}, want the connection closed",
            f.len(),
            &bytes[..bytes.len().min(16)]
        ),
    }
    bystander.assert_served();
    assert_new_connection_served(broker);
}

/// Sends a well-framed request the broker cannot serve; it may close the connection or answer
/// with an error, but an answer must carry our correlation id.
fn assert_closed_or_answered(broker: &Broker, body: &[u8], correlation_id: i32) {
    let mut bystander = Bystander::open(broker);
    let mut s = wire::connect(broker.bootstrap());
    wire::send_frame(&mut s, body);
    match wire::read_reply(&mut s) {
        Reply::Closed => {}
        Reply::Frame(f) => {
            let got = wire::Reader::new(&f).i32();
            assert_eq!(
                got, correlation_id,
                "answer must carry the request's correlation id"
            );
        }
    }
    bystander.assert_served();
    assert_new_connection_served(broker);
}

#[test]
fn api_versions_v0_to_v4_are_answered_with_the_same_table() {
    let broker = Broker::start();
    let mut s = wire::connect(broker.bootstrap());
    let mut tables = Vec::new();
    for version in 0..=4i16 {
        let correlation_id = 40 + i32::from(version);
        wire::send_frame(&mut s, &wire::api_versions_request(version, correlation_id));
        let resp = wire::decode_api_versions(&wire::read_frame(&mut s), version);
        assert_eq!(resp.correlation_id, correlation_id, "v{version}");
        assert_eq!(resp.error_code, wire::ERROR_NONE, "v{version}");
        assert_eq!(
            resp.throttle_time_ms,
            (version >= 1).then_some(0),
            "v{version}"
        );
        let keys = common::distinct(resp.api_keys.iter().map(|k| k.0));
        assert_eq!(
            keys.len(),
            resp.api_keys.len(),
            "v{version}: duplicate api keys"
        );
        for &(key, min, max) in &resp.api_keys {
            assert!(
                0 <= min && min <= max,
                "v{version}: key {key} has range {min}..={max}"
            );
        }
        assert!(
            resp.api_keys.contains(&API_VERSIONS_RANGE),
            "v{version}: {:?}",
            resp.api_keys
        );
        for key in [
            wire::API_KEY_PRODUCE,
            wire::API_KEY_FETCH,
            wire::API_KEY_LIST_OFFSETS,
            wire::API_KEY_METADATA,
            wire::API_KEY_CREATE_TOPICS,
        ] {
            assert!(keys.contains(&key), "v{version}: api key {key} missing");
        }
        // Kafka 4.x still advertises Produce from v0, and clients rely on it.
        let produce = resp.api_keys.iter().find(|k| k.0 == wire::API_KEY_PRODUCE);
        assert_eq!(
            produce.map(|k| k.1),
            Some(0),
            "v{version}: Produce min version"
        );
        tables.push(resp.api_keys);
    }
    for (version, table) in tables.iter().enumerate() {
        assert_eq!(table, &tables[0], "v{version} lists other versions than v0");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    let mut s = wire::connect(broker.bootstrap());
    let versions = [4i16, 0, 3, 1, 2, 4, 0];
    let mut all = Vec::new();
    for (i, &v) in versions.iter().enumerate() {
        let body = wire::api_versions_request(v, 500 + i32::try_from(i).expect("small"));
        all.extend_from_slice(&(i32::try_from(body.len()).expect("small")).to_be_bytes());
        all.extend_from_slice(&body);
    }
    std::io::Write::write_all(&mut s, &all).expect("write pipelined requests");
    for (i, &v) in versions.iter().enumerate() {
        let resp = wire::decode_api_versions(&wire::read_frame(&mut s), v);
        assert_eq!(resp.correlation_id, 500 + i32::try_from(i).expect("small"));
        assert_eq!(resp.error_code, wire::ERROR_NONE);
    }
}

#[test]
fn api_versions_unknown_version_gets_unsupported_version_in_v0_layout() {
    let broker = Broker::start();
    let mut s = wire::connect(broker.bootstrap());
    // A client newer than the broker sends its newest version in the flexible layout (KIP-511).
    wire::send_frame(&mut s, &wire::api_versions_request(99, 77));
    // The answer uses the v0 layout so any client can read it: decoding as v0 checks that no
    // throttle time or tagged fields follow.
    let resp = wire::decode_api_versions(&wire::read_frame(&mut s), 0);
    assert_eq!(resp.correlation_id, 77);
    assert_eq!(resp.error_code, wire::ERROR_UNSUPPORTED_VERSION);
    assert!(
        resp.api_keys.contains(&API_VERSIONS_RANGE),
        "the error response must still say which ApiVersions versions work: {:?}",
        resp.api_keys
    );
    // The client then retries with a version it now knows is supported, on the same connection.
    wire::send_frame(&mut s, &wire::api_versions_request(4, 78));
    let resp = wire::decode_api_versions(&wire::read_frame(&mut s), 4);
    assert_eq!(resp.correlation_id, 78);
    assert_eq!(resp.error_code, wire::ERROR_NONE);
}

#[test]
fn negative_length_prefix_closes_connection() {
    let broker = Broker::start();
    assert_raw_bytes_close_connection(&broker, &(-1i32).to_be_bytes());
    assert_raw_bytes_close_connection(&broker, &i32::MIN.to_be_bytes());
}

#[test]
fn two_gib_length_prefix_closes_connection() {
    let broker = Broker::start();
    // 2 GiB - 1, the largest length an i32 prefix can state; the broker must not wait for it.
    assert_raw_bytes_close_connection(&broker, &i32::MAX.to_be_bytes());
    // One byte over the default request_size_max_bytes (100 MiB).
    assert_raw_bytes_close_connection(&broker, &(100 * 1024 * 1024 + 1i32).to_be_bytes());
}

#[test]
fn configured_request_size_max_bytes_is_enforced() {
    let broker = Broker::start_with(&["--request-size-max-bytes", "65536"]);
    assert_raw_bytes_close_connection(&broker, &65_537i32.to_be_bytes());
}

#[test]
fn frame_too_short_for_a_request_header_closes_connection() {
    let broker = Broker::start();
    // Two bytes of body: an api key and nothing else.
    let mut bytes = 2i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&wire::API_KEY_API_VERSIONS.to_be_bytes());
    assert_raw_bytes_close_connection(&broker, &bytes);
}

#[test]
fn garbage_body_is_rejected_and_broker_carries_on() {
    let broker = Broker::start();
    // A valid Metadata v12 header followed by bytes that decode as absurd varint lengths.
    let mut body = wire::header_v2(wire::API_KEY_METADATA, 12, 31, "sable-tests");
    body.extend_from_slice(&[0xff; 64]);
    assert_closed_or_answered(&broker, &body, 31);
    // A valid Produce v9 whose topic array claims 2^32 - 2 entries and then ends: the count
    // must not size an allocation.
    let mut body = wire::header_v2(wire::API_KEY_PRODUCE, 9, 32, "sable-tests");
    body.push(0x00); // transactional_id: null
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    body.extend_from_slice(&1000i32.to_be_bytes()); // timeout_ms
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // compact array length uvarint
    assert_closed_or_answered(&broker, &body, 32);
}

#[test]
fn unknown_api_key_is_rejected_and_broker_carries_on() {
    let broker = Broker::start();
    let body = wire::header_v1(9999, 0, 41, "sable-tests");
    assert_closed_or_answered(&broker, &body, 41);
}

#[test]
fn unsupported_version_of_metadata_is_rejected_and_broker_carries_on() {
    let broker = Broker::start();
    let body = wire::header_v2(wire::API_KEY_METADATA, 99, 51, "sable-tests");
    assert_closed_or_answered(&broker, &body, 51);
}
