//! Metadata: every shard answers from its own image. Each shard is listed as a broker; a
//! partition's leader is the shard that owns it.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::create_topics::auto_create;
use super::error_code::{self, code};
use super::{Context, Frame, HandlerError, Request};
use crate::metadata::controller::validate_topic_name;
use crate::metadata::{MetadataImage, TopicRecord};
use crate::types::{NodeId, ShardId, TopicId, node_id};

pub const VERSIONS: RangeInclusive<i16> = 0..=13;

/// Bits of the operations a client may run on a topic (READ..ALTER_CONFIGS); there is no ACL yet.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: MetadataRequest = r.decode(&mut body)?;
    // v0 has no null topics: an empty list means all topics. Before v4 auto-create is implied.
    let all =
        req.topics.is_none() || (r.version == 0 && req.topics.as_ref().is_some_and(Vec::is_empty));
    let allow_auto_create =
        (r.version < 4 || req.allow_auto_topic_creation) && ctx.config.auto_create_topics;
    let requested = req.topics.unwrap_or_default();

    let mut image = ctx.image();
    if !all && allow_auto_create {
        let missing: Vec<String> = requested
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            auto_create(ctx, missing).await;
            image = ctx.image();
        }
    }

    let ops = if req.include_topic_authorized_operations {
        TOPIC_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let base = NodeId(ctx.config.node_id_base);
    let topics = if all {
        image
            .topics()
            .iter()
            .map(|t| topic_entry(&image, base, t, ops))
            .collect()
    } else {
        requested
            .iter()
            .map(|t| {
                requested_topic(
                    &image,
                    base,
                    t.name.as_ref().map(|n| n.0.as_str()),
                    t.topic_id,
                    ops,
                )
            })
            .collect()
    };
    let brokers = (0..image.shard_count)
        .map(|s| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node_id(base, ShardId(s as u16)).0))
                .with_host(StrBytes::from_string(ctx.config.advertised_host()))
                .with_port(i32::from(ctx.config.shard_port(s)))
        })
        .collect();
    let resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(image.state.cluster_id.clone())))
        .with_controller_id(BrokerId(node_id(base, ShardId::CONTROLLER).0))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    r.respond(&resp)
}

fn requested_topic(
    image: &MetadataImage,
    base: NodeId,
    name: Option<&str>,
    id: Uuid,
    ops: i32,
) -> MetadataResponseTopic {
    let found = match name {
        Some(n) => image.topic(n),
        None => image.topic_by_id(TopicId(*id.as_bytes())),
    };
    match found {
        Some(t) => topic_entry(image, base, t, ops),
        None => {
            let err = match name {
                Some(n) if validate_topic_name(n).is_err() => ResponseError::InvalidTopicException,
                Some(_) => ResponseError::UnknownTopicOrPartition,
                None => ResponseError::UnknownTopicId,
            };
            MetadataResponseTopic::default()
                .with_error_code(code(err))
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
                .with_topic_id(id)
                .with_topic_authorized_operations(ops)
        }
    }
}

fn topic_entry(
    image: &MetadataImage,
    base: NodeId,
    t: &TopicRecord,
    ops: i32,
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let leader = BrokerId(node_id(base, image.owner(p)).0);
            MetadataResponsePartition::default()
                .with_error_code(error_code::NONE)
                .with_partition_index(i as i32)
                .with_leader_id(leader)
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(error_code::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(Uuid::from_bytes(t.id))
        .with_is_internal(false)
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}
