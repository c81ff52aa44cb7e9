//! OffsetDelete: removes a group's offsets for partitions of topics no member subscribes to.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::error_code::{self, group_error};
use super::group_coordinator::owns;
use super::{Context, Frame, HandlerError, Request};
use crate::group::GroupError;
use crate::group::record::Entry;
use crate::types::TopicPartition;

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: OffsetDeleteRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.as_str();
    let tps: Vec<TopicPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let outcome = if owns(ctx, group_id) {
        ctx.groups
            .manager
            .borrow_mut()
            .delete_offsets(group_id, &tps)
    } else {
        Err(GroupError::NotCoordinator)
    };
    let results = match outcome {
        Err(e) => {
            return r.respond(&OffsetDeleteResponse::default().with_error_code(group_error(&e)));
        }
        Ok(results) => results,
    };
    let tombstones: Vec<Entry> = tps
        .iter()
        .zip(&results)
        .filter(|(_, res)| res.is_ok())
        .map(|(tp, _)| Entry::Offset {
            group_id: group_id.to_string(),
            tp: tp.clone(),
            offset: None,
        })
        .collect();
    if let Err(e) = ctx.groups.persist(&tombstones).await {
        // Removed from memory already; a restart before the next write may bring them back.
        tracing::warn!(group = %group_id, error = %e, "offset tombstones not written");
    }
    let mut codes = results
        .into_iter()
        .map(|res| res.err().as_ref().map_or(error_code::NONE, group_error));
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().expect("one result per partition"))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    r.respond(
        &OffsetDeleteResponse::default()
            .with_error_code(error_code::NONE)
            .with_topics(topics),
    )
}
