//! Hostile input on raw sockets: garbage, lies in length prefixes, slow and pipelined writers,
//! unknown APIs, many connections. After each, the broker must still answer, and its memory must
//! not have grown by what the frames announced.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use common::{Broker, codec, wire};

fn api_versions() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("hostile"))
        .with_client_software_version(StrBytes::from_static_str("1"))
}

/// The broker answers ApiVersions v3 on a fresh connection.
fn assert_alive(broker: &Broker) {
    let mut s = wire::connect(broker.addr());
    let resp: ApiVersionsResponse = codec::call(&mut s, ApiKey::ApiVersions, 3, &api_versions());
    assert_eq!(resp.error_code, 0);
    assert!(!resp.api_keys.is_empty());
}

/// True once the broker has closed `s` (EOF or reset) within a few seconds.
fn closed_by_broker(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error response before the close is fine
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn garbage_lies_and_slow_writers_leave_the_broker_serving() {
    let broker = Broker::start();
    assert_alive(&broker);
    let rss_before = broker.rss_kib();

    // Random bytes.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut s = wire::connect(broker.addr());
    let _ = s.write_all(&noise);
    assert!(
        closed_by_broker(&mut s),
        "random bytes close the connection"
    );
    assert_alive(&broker);

    // A valid Metadata header and the first 3 bytes of its body, then nonsense.
    let header_len = codec::header(ApiKey::Metadata, 12, 1).len();
    let mut body = codec::request(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
    body.truncate(header_len + 3);
    body.extend_from_slice(&[0xff; 40]);
    let mut s = wire::connect(broker.addr());
    s.write_all(&wire::frame(&body)).unwrap();
    assert!(
        closed_by_broker(&mut s),
        "a nonsense body closes the connection"
    );
    assert_alive(&broker);

    // Length prefixes of 2 GiB - 1 and -1: refused before any allocation.
    for prefix in [i32::MAX, -1, i32::MIN] {
        let mut s = wire::connect(broker.addr());
        s.write_all(&prefix.to_be_bytes()).unwrap();
        let _ = s.write_all(&[0u8; 1024]);
        assert!(
            closed_by_broker(&mut s),
            "length {prefix} closes the connection"
        );
    }
    assert_alive(&broker);

    // EOF in the middle of a frame.
    let mut s = wire::connect(broker.addr());
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_by_broker(&mut s));
    assert_alive(&broker);

    // Unknown API key: that connection only.
    let mut frame = codec::frame(ApiKey::ApiVersions, 3, 1, &api_versions());
    frame[4..6].copy_from_slice(&9999i16.to_be_bytes());
    let mut s = wire::connect(broker.addr());
    s.write_all(&frame).unwrap();
    assert!(
        closed_by_broker(&mut s),
        "unknown API key closes the connection"
    );
    assert_alive(&broker);

    let grown_kib = broker.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < 64 * 1024,
        "RSS grew by {grown_kib} KiB after 2 GiB length prefixes"
    );
}

#[test]
fn one_byte_at_a_time_and_pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    let frame = codec::frame(ApiKey::ApiVersions, 3, 77, &api_versions());
    let mut s = wire::connect(broker.addr());
    for b in &frame {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (correlation_id, mut body) = codec::read_response(&mut s, ApiKey::ApiVersions, 3);
    assert_eq!(correlation_id, 77);
    assert_eq!(
        ApiVersionsResponse::decode(&mut body, 3)
            .unwrap()
            .error_code,
        0
    );

    let mut all = Vec::new();
    for id in 0..50 {
        all.extend(codec::frame(ApiKey::ApiVersions, 3, id, &api_versions()));
    }
    s.write_all(&all).unwrap();
    for id in 0..50 {
        let (correlation_id, _) = codec::read_response(&mut s, ApiKey::ApiVersions, 3);
        assert_eq!(correlation_id, id, "answers in request order");
    }
}

#[test]
fn api_versions_of_an_unknown_version_gets_the_kip_511_answer() {
    let broker = Broker::start();
    let mut frame = codec::frame(ApiKey::ApiVersions, 3, 5, &api_versions());
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    let mut s = wire::connect(broker.addr());
    s.write_all(&frame).unwrap();
    // Answered in the v0 layout (response header v0), whatever the version asked.
    let (correlation_id, mut body) = codec::read_response(&mut s, ApiKey::ApiVersions, 0);
    assert_eq!(correlation_id, 5);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    let own = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("the ApiVersions range");
    assert!(own.max_version >= 3);
}

/// Raises this process's fd limit to its hard limit (the broker inherits it); returns it.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn a_thousand_connections_then_metadata_still_answers() {
    let fd_limit = raise_fd_limit();
    let connections = 1000.min(fd_limit.saturating_sub(100) as usize / 2);
    let broker = Broker::start();
    let rss_before = broker.rss_kib();
    let mut open = Vec::new();
    for i in 0..connections {
        let mut s = wire::connect(broker.addr());
        // Half of them start a 1 MiB frame and stall: bodies are buffered only as they arrive.
        if i % 2 == 0 {
            s.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
            s.write_all(&[0u8; 100]).unwrap();
        }
        open.push(s);
    }
    let mut s = wire::connect(broker.addr());
    let resp: MetadataResponse =
        codec::call(&mut s, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(resp.brokers.len(), usize::from(broker.shards()));
    let grown_kib = broker.rss_kib().saturating_sub(rss_before);
    eprintln!("{connections} connections: RSS grew by {grown_kib} KiB");
    drop(open);
    assert_alive(&broker);
}

#[test]
fn connections_over_the_per_ip_limit_are_closed_at_accept() {
    let broker = Broker::start_with(&["--max-connections-per-ip", "4"]);
    // Each shard counts its own connections; the shard port reaches exactly one shard.
    let shard_port = broker.shard_addr(0);
    // The harness's readiness probes count until the broker has seen them close.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..4).map(|_| wire::connect(shard_port)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        let r: Result<ApiVersionsResponse, _> =
            codec::try_call(s, ApiKey::ApiVersions, 3, &api_versions());
        r.unwrap_or_else(|e| broker.fail(&format!("connection {i}: {e:?}")));
    }
    let mut extra = wire::connect(shard_port);
    let _ = extra.write_all(&codec::frame(ApiKey::ApiVersions, 3, 1, &api_versions()));
    assert!(
        closed_by_broker(&mut extra),
        "the fifth connection is closed"
    );
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = wire::connect(shard_port);
    let _: ApiVersionsResponse = codec::call(&mut again, ApiKey::ApiVersions, 3, &api_versions());
    assert!(broker.log().contains("over --max-connections-per-ip"));
}

#[test]
fn requests_over_the_queued_bytes_budget_wait_instead_of_growing_memory() {
    let broker = Broker::start_with(&[
        "--request-size-max-bytes",
        "1048576",
        "--queued-max-request-bytes",
        "1048576",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let shard_port = broker.shard_addr(0);
    // A announces a whole-budget frame and stalls inside it.
    let mut a = wire::connect(shard_port);
    a.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
    a.write_all(&[0u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // B's small request on the same shard waits for budget: no answer yet.
    let mut b = wire::connect(shard_port);
    b.write_all(&codec::frame(ApiKey::ApiVersions, 3, 9, &api_versions()))
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = b.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "B was answered while A held the whole budget: {early:?}"
    );
    // A gives up: its bytes return to the budget and B is answered.
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (correlation_id, _) = codec::read_response(&mut b, ApiKey::ApiVersions, 3);
    assert_eq!(correlation_id, 9);
}

#[test]
fn connections_over_max_connections_are_closed_at_accept() {
    let broker = Broker::start_with(&["--max-connections", "3"]);
    let shard_port = broker.shard_addr(1);
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..3).map(|_| wire::connect(shard_port)).collect();
    for s in &mut held {
        let _: ApiVersionsResponse = codec::call(s, ApiKey::ApiVersions, 3, &api_versions());
    }
    let mut extra = wire::connect(shard_port);
    let _ = extra.write_all(&codec::frame(ApiKey::ApiVersions, 3, 1, &api_versions()));
    assert!(
        closed_by_broker(&mut extra),
        "the fourth connection to the shard is closed"
    );
    assert!(broker.log().contains("over --max-connections"));
    // The other shard has its own budget.
    let mut other = wire::connect(broker.shard_addr(0));
    let _: ApiVersionsResponse = codec::call(&mut other, ApiKey::ApiVersions, 3, &api_versions());
}
