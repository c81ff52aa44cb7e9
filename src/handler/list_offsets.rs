//! ListOffsets: earliest, latest, max timestamp, and the first record at or after a timestamp.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::error_code::{self, log_error};
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};
use crate::log::{LogError, PartitionLog};
use crate::types::Offset;

pub const VERSIONS: RangeInclusive<i16> = 1..=10;

/// Special timestamps (Kafka's ListOffsetsRequest constants).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3; // KIP-734
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4; // KIP-405; no tiered storage, so = earliest
const LATEST_TIERED_TIMESTAMP: i64 = -5; // KIP-1005; nothing tiered: the log start offset - 1
const EARLIEST_PENDING_UPLOAD_TIMESTAMP: i64 = -6; // KIP-1023; nothing pending: -1

/// ListOffsets answers carry the leader epoch from v4 (KIP-320); earlier versions lack the field.
fn leader_epoch_in(version: i16, epoch: i32) -> i32 {
    if version >= LEADER_EPOCH_MIN_VERSION {
        epoch
    } else {
        -1
    }
}

const LEADER_EPOCH_MIN_VERSION: i16 = 4;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: ListOffsetsRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let out = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            let out = match local_partition(
                ctx,
                &image,
                TopicRef::Name(t.name.0.as_str()),
                p.partition_index,
            ) {
                Err(c) => out.with_error_code(c),
                Ok((_, log)) => match lookup(&log, p.timestamp).await {
                    Ok((offset, timestamp)) => out
                        .with_error_code(error_code::NONE)
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        .with_leader_epoch(leader_epoch_in(r.version, log.leader_epoch())),
                    Err(e) => out.with_error_code(log_error(&e)),
                },
            };
            partitions.push(out);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    r.respond(&ListOffsetsResponse::default().with_topics(topics))
}

/// (offset, timestamp) for one query; (-1, -1) when no record matches, as Kafka answers.
async fn lookup(log: &PartitionLog, timestamp: i64) -> Result<(i64, i64), LogError> {
    let found = |o: Option<(Offset, i64)>| o.map_or((-1, -1), |(offset, ts)| (offset.value(), ts));
    Ok(match timestamp {
        LATEST_TIMESTAMP => (log.high_watermark().value(), -1),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => (log.log_start_offset().value(), -1),
        LATEST_TIERED_TIMESTAMP => (log.log_start_offset().value() - 1, -1),
        EARLIEST_PENDING_UPLOAD_TIMESTAMP => (-1, -1),
        MAX_TIMESTAMP => found(log.max_timestamp().await?),
        ts => found(log.offset_for_timestamp(ts).await?),
    })
}
