//! OffsetCommit: checked against the group, written to the coordinator's offsets log and
//! answered only after an fdatasync covers it, then visible to OffsetFetch.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::error_code::{self, code, group_error, offsets_log_error};
use super::group_coordinator::{now_ms, owns};
use super::{Context, Frame, HandlerError, Request};
use crate::group::record::Entry;
use crate::group::{CommittedOffset, GroupError, OFFSET_METADATA_MAX_BYTES};
use crate::types::TopicPartition;

/// v10 names topics by id (KIP-848 era); not served until verified with a client.
pub const VERSIONS: RangeInclusive<i16> = 2..=9;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: OffsetCommitRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let group_check = if owns(ctx, &group_id) {
        ctx.groups.manager.borrow().check_commit(
            &group_id,
            &member_id,
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            req.generation_id_or_member_epoch,
        )
    } else {
        Err(GroupError::NotCoordinator)
    };
    let image = ctx.image();
    let now = now_ms();
    // One code per partition, in request order; accepted ones are written below.
    let mut codes: Vec<i16> = Vec::new();
    let mut accepted: Vec<(usize, TopicPartition, CommittedOffset)> = Vec::new();
    for t in &req.topics {
        let topic = image.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = codes.len();
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let exists = topic.is_some_and(|t| {
                p.partition_index >= 0 && (p.partition_index as usize) < t.partitions.len()
            });
            let c = match &group_check {
                Err(e) => group_error(e),
                Ok(()) if !exists => code(ResponseError::UnknownTopicOrPartition),
                Ok(()) if metadata.len() > OFFSET_METADATA_MAX_BYTES => {
                    group_error(&GroupError::OffsetMetadataTooLarge)
                }
                Ok(()) => {
                    let o = CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    };
                    accepted.push((
                        slot,
                        TopicPartition::new(t.name.0.to_string(), p.partition_index),
                        o,
                    ));
                    error_code::NONE
                }
            };
            codes.push(c);
        }
    }
    if !accepted.is_empty() {
        let entries: Vec<Entry> = accepted
            .iter()
            .map(|(_, tp, o)| Entry::Offset {
                group_id: group_id.clone(),
                tp: tp.clone(),
                offset: Some(o.clone()),
            })
            .collect();
        match ctx.groups.persist(&entries).await {
            Ok(()) => {
                let offsets = accepted.into_iter().map(|(_, tp, o)| (tp, o)).collect();
                ctx.groups
                    .manager
                    .borrow_mut()
                    .commit(&group_id, &member_id, offsets, now_ms());
            }
            Err(e) => {
                tracing::warn!(group = %group_id, error = %e, "offset commit not written");
                for (slot, _, _) in accepted {
                    codes[slot] = offsets_log_error(&e);
                }
            }
        }
    }
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().expect("one code per partition"))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    r.respond(&OffsetCommitResponse::default().with_topics(topics))
}
