//! DescribeTopicPartitions (KIP-966): Metadata's topic part, paginated by a partition limit and
//! a cursor. Every partition has one replica, its owning shard, which is also its leader.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error_code::{self, code};
use super::{Context, Frame, HandlerError, Request};
use crate::types::{NodeId, node_id};

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

/// Kafka's max.request.partition.size.limit: partitions one response lists at most.
pub const RESPONSE_PARTITIONS_MAX: i32 = 2000;
/// Bits of the operations a client may run on a topic; there is no ACL yet.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeTopicPartitionsRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let base = NodeId(ctx.config.node_id_base);
    let mut names: Vec<String> = if req.topics.is_empty() {
        image.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let mut budget = match req.response_partition_limit {
        n if n <= 0 => RESPONSE_PARTITIONS_MAX,
        n => n.min(RESPONSE_PARTITIONS_MAX),
    };
    let (cursor_topic, cursor_partition) = req.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index.max(0))
    });
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.iter().filter(|n| **n >= cursor_topic) {
        let out = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            .with_topic_authorized_operations(TOPIC_OPERATIONS_ALL);
        let Some(t) = image.topic(name) else {
            topics.push(out.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default().with_topic_name(TopicName(StrBytes::from_string(name.clone()))),
            );
            break;
        }
        let first = if *name == cursor_topic {
            cursor_partition as usize
        } else {
            0
        };
        let mut partitions = Vec::new();
        for (i, p) in t.partitions.iter().enumerate().skip(first) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_index(i as i32),
                );
                break;
            }
            budget -= 1;
            let leader = BrokerId(node_id(base, image.owner(p)).0);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(error_code::NONE)
                    .with_partition_index(i as i32)
                    .with_leader_id(leader)
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(vec![leader])
                    .with_isr_nodes(vec![leader])
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
        }
        topics.push(
            out.with_error_code(error_code::NONE)
                .with_topic_id(Uuid::from_bytes(t.id))
                .with_is_internal(false)
                .with_partitions(partitions),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    r.respond(
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}
