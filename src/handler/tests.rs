//! Handlers driven without a runtime: a fake `Peers`, an empty image, `block_on`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;

use super::*;
use crate::metadata::controller::{TopicError, TopicSpec};
use crate::metadata::{MetadataImage, MetadataState};
use crate::protocol::frame::header_prefix;
use crate::protocol::response::Part;
use crate::types::ShardId;

#[derive(Default)]
struct NoPeers {
    next_producer_id: std::cell::Cell<i64>,
}

impl Peers for NoPeers {
    fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        _: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<[u8; 16], TopicError>>> {
        let n = specs.len();
        async move {
            (0..n)
                .map(|_| {
                    Err(TopicError::InvalidConfig(
                        "no controller in this test".into(),
                    ))
                })
                .collect()
        }
        .boxed_local()
    }
    fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<Result<[u8; 16], TopicError>>> {
        let n = names.len();
        async move {
            (0..n)
                .map(|_| Err(TopicError::Unknown("t".into())))
                .collect()
        }
        .boxed_local()
    }
    fn sleep(&self, _: Duration) -> LocalBoxFuture<'static, ()> {
        async {}.boxed_local()
    }
    fn reserve_producer_ids(&self, count: i64) -> LocalBoxFuture<'static, Result<i64, TopicError>> {
        let start = self.next_producer_id.get();
        self.next_producer_id.set(start + count);
        async move { Ok(start) }.boxed_local()
    }
    fn list_groups(
        &self,
        _: ShardId,
        _: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<crate::group::GroupListing>> {
        async { vec![] }.boxed_local()
    }
    fn describe_groups(
        &self,
        _: ShardId,
        ids: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<crate::group::GroupDescription>> {
        let m = crate::group::GroupManager::new(0);
        async move { ids.iter().map(|id| m.describe(id)).collect() }.boxed_local()
    }
}

pub(super) fn context() -> Rc<Context> {
    let config = crate::config::Config::parse_from(["sable", "--node-id-base", "7"]);
    let state = MetadataState {
        cluster_id: "cluster".into(),
        version: 1,
        topics: vec![],
        next_producer_id: 0,
    };
    Rc::new(Context {
        shard: ShardId(0),
        config: Rc::new(config),
        metadata: RefCell::new(Arc::new(MetadataImage::new(state, 2))),
        partitions: RefCell::new(HashMap::new()),
        peers: Rc::new(NoPeers::default()),
        // No initial delay: a lone join completes at once, so block_on never waits on a timer.
        groups: group_coordinator::GroupCoordinator::new(0),
        producer_ids: RefCell::new(0..0),
        disk_space: Default::default(),
    })
}

pub(super) fn request<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    let mut b = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("test")));
    header
        .encode(&mut b, key.request_header_version(version))
        .unwrap();
    body.encode(&mut b, version).unwrap();
    b.freeze()
}

fn run(body: Bytes) -> Result<Option<Frame>, HandlerError> {
    let ctx = context();
    let prefix = header_prefix(&body).unwrap();
    futures::executor::block_on(dispatch(&ctx, prefix, body, None))
}

/// The response body after the length, correlation id, and (flexible) header tags.
pub(super) fn response_body(frame: Frame, key: ApiKey, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    for p in frame.parts {
        let Part::Mem(b) = p else {
            panic!("memory-only response expected")
        };
        out.put_slice(&b);
    }
    let out = out.freeze();
    assert_eq!(
        i32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
        out.len() - 4
    );
    assert_eq!(i32::from_be_bytes(out[4..8].try_into().unwrap()), 42);
    let skip = if key.response_header_version(version) >= 1 {
        9
    } else {
        8
    };
    out.slice(skip..)
}

#[test]
fn metadata_lists_one_broker_per_shard_at_every_version() {
    for version in metadata::VERSIONS {
        let req =
            MetadataRequest::default().with_topics(if version == 0 { Some(vec![]) } else { None });
        let frame = run(request(ApiKey::Metadata, version, &req))
            .unwrap()
            .unwrap();
        let mut body = response_body(frame, ApiKey::Metadata, version);
        let resp = MetadataResponse::decode(&mut body, version).unwrap();
        let brokers: Vec<(i32, i32)> = resp.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
        assert_eq!(brokers, [(7, 9093), (8, 9094)], "v{version}");
        if version >= 1 {
            assert_eq!(resp.controller_id.0, 7);
        }
    }
}

#[test]
fn api_versions_answers_every_version() {
    for version in api_versions::VERSIONS {
        let frame = run(request(
            ApiKey::ApiVersions,
            version,
            &ApiVersionsRequest::default(),
        ))
        .unwrap()
        .unwrap();
        let mut body = response_body(frame, ApiKey::ApiVersions, version);
        let resp =
            kafka_protocol::messages::ApiVersionsResponse::decode(&mut body, version).unwrap();
        assert_eq!(resp.error_code, 0);
        assert!(
            resp.api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::Fetch as i16 && k.max_version == 18)
        );
    }
}

#[test]
fn unknown_key_and_unsupported_versions_close_the_connection() {
    let mut raw = BytesMut::new();
    raw.put_i16(999);
    raw.put_i16(0);
    raw.put_i32(42);
    raw.put_i16(-1);
    assert!(matches!(
        run(raw.freeze()),
        Err(HandlerError::UnknownApiKey(999))
    ));
    let produce_v2 = request(ApiKey::Metadata, 1, &MetadataRequest::default());
    let mut patched = BytesMut::from(&produce_v2[..]);
    patched[0..2].copy_from_slice(&0i16.to_be_bytes()); // Produce
    patched[2..4].copy_from_slice(&2i16.to_be_bytes()); // v2: advertised, not served
    assert!(matches!(
        run(patched.freeze()),
        Err(HandlerError::UnsupportedVersion(ApiKey::Produce, 2))
    ));
}

proptest! {
    /// Whatever follows a valid prefix, dispatch answers or refuses; it never panics.
    #[test]
    fn random_bodies_never_panic(key in prop::sample::select(SUPPORTED.iter().map(|(k, _)| *k).collect::<Vec<_>>()), version in 0i16..20, tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut raw = BytesMut::new();
        raw.put_i16(key as i16);
        raw.put_i16(version);
        raw.put_i32(42);
        raw.put_slice(&tail);
        let _ = run(raw.freeze());
    }

    /// Valid requests cut short at any length are refused, never answered with garbage or a panic.
    #[test]
    fn truncated_metadata_requests_are_refused(version in 0i16..=13, cut in 8usize..64) {
        let full = request(ApiKey::Metadata, version, &MetadataRequest::default().with_topics(Some(vec![])));
        if cut < full.len() {
            prop_assert!(run(full.slice(..cut)).is_err());
        }
    }
}

#[test]
fn hostile_array_count_is_refused_without_aborting() {
    // Metadata v1: header, then topics array count 0x7fffffff and nothing else.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::Metadata as i16);
    raw.put_i16(1);
    raw.put_i32(42);
    raw.put_i16(-1);
    raw.put_i32(i32::MAX);
    assert!(matches!(
        run(raw.freeze()),
        Err(HandlerError::Malformed(ApiKey::Metadata, _))
    ));
}

#[test]
fn init_producer_id_hands_out_distinct_ids_across_blocks() {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let ctx = context();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..(crate::limits::PRODUCER_ID_BLOCK_SIZE + 5) {
        let body = request(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60000),
        );
        let prefix = header_prefix(&body).unwrap();
        let frame = futures::executor::block_on(dispatch(&ctx, prefix, body, None))
            .unwrap()
            .unwrap();
        let mut b = response_body(frame, ApiKey::InitProducerId, 4);
        let resp = InitProducerIdResponse::decode(&mut b, 4).unwrap();
        assert_eq!((resp.error_code, resp.producer_epoch), (0, 0));
        assert!(
            seen.insert(resp.producer_id.0),
            "id {} handed out twice",
            resp.producer_id.0
        );
    }
}
