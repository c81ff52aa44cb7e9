//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+). A partition with no
//! commit answers offset -1, no error. `require_stable` is ignored: there are no pending
//! transactional commits.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, group_error};
use super::group_coordinator::owns;
use super::{Context, Frame, HandlerError, Request};
use crate::group::{CommittedOffset, GroupError};
use crate::types::TopicPartition;

pub const VERSIONS: RangeInclusive<i16> = 1..=9;
/// First version carrying several groups (KIP-709).
const MULTI_GROUP_MIN_VERSION: i16 = 8;
/// First version with a top-level error code.
const TOP_LEVEL_ERROR_MIN_VERSION: i16 = 2;
/// First version carrying the committed leader epoch.
const LEADER_EPOCH_MIN_VERSION: i16 = 5;

/// One partition's answer: (topic, partition, committed offset or none, error code).
type Answer = (String, i32, Option<CommittedOffset>, i16);

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: OffsetFetchRequest = r.decode(&mut body)?;
    let resp = if r.version >= MULTI_GROUP_MIN_VERSION {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .flat_map(|t| {
                            t.partition_indexes
                                .iter()
                                .map(|&p| TopicPartition::new(t.name.0.to_string(), p))
                        })
                        .collect::<Vec<_>>()
                });
                let (error, answers) = fetch(ctx, g.group_id.0.as_str(), wanted);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(error)
                    .with_topics(grouped(answers, |name, parts| {
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, o, c)| {
                                        let (offset, epoch, meta) = fields(o);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(meta))
                                            .with_error_code(c)
                                    })
                                    .collect(),
                            )
                    }))
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .map(|&p| TopicPartition::new(t.name.0.to_string(), p))
                })
                .collect::<Vec<_>>()
        });
        let (error, mut answers) = fetch(ctx, req.group_id.0.as_str(), wanted);
        if r.version < TOP_LEVEL_ERROR_MIN_VERSION {
            // v1 has only partition errors.
            for a in &mut answers {
                if a.3 == error_code::NONE {
                    a.3 = error;
                }
            }
        }
        let topics = grouped(answers, |name, parts| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, o, c)| {
                            let (offset, mut epoch, meta) = fields(o);
                            if r.version < LEADER_EPOCH_MIN_VERSION {
                                epoch = -1;
                            }
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(meta))
                                .with_error_code(c)
                        })
                        .collect(),
                )
        });
        let top_level = if r.version >= TOP_LEVEL_ERROR_MIN_VERSION {
            error
        } else {
            error_code::NONE
        };
        OffsetFetchResponse::default()
            .with_error_code(top_level)
            .with_topics(topics)
    };
    r.respond(&resp)
}

/// The group-level error and the partitions' answers, in request order (all commits when
/// `wanted` is `None`).
fn fetch(ctx: &Context, group_id: &str, wanted: Option<Vec<TopicPartition>>) -> (i16, Vec<Answer>) {
    if !owns(ctx, group_id) {
        let code = group_error(&GroupError::NotCoordinator);
        let answers = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|tp| (tp.topic, tp.partition.0, None, code))
            .collect();
        return (code, answers);
    }
    let manager = ctx.groups.manager.borrow();
    let answers = match wanted {
        None => manager
            .committed(group_id, None)
            .into_iter()
            .map(|(tp, o)| (tp.topic, tp.partition.0, Some(o), error_code::NONE))
            .collect(),
        Some(tps) => {
            let found: std::collections::HashMap<TopicPartition, CommittedOffset> = manager
                .committed(group_id, Some(&tps))
                .into_iter()
                .collect();
            tps.into_iter()
                .map(|tp| {
                    let o = found.get(&tp).cloned();
                    (tp.topic, tp.partition.0, o, error_code::NONE)
                })
                .collect()
        }
    };
    (error_code::NONE, answers)
}

fn fields(o: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, StrBytes::from_string(o.metadata)),
        None => (-1, -1, StrBytes::default()),
    }
}

/// Groups answers by topic, keeping the order topics first appear in.
fn grouped<T>(
    answers: Vec<Answer>,
    topic: impl Fn(TopicName, Vec<(i32, Option<CommittedOffset>, i16)>) -> T,
) -> Vec<T> {
    let mut by_topic: indexmap::IndexMap<String, Vec<(i32, Option<CommittedOffset>, i16)>> =
        indexmap::IndexMap::new();
    for (t, p, o, c) in answers {
        by_topic.entry(t).or_default().push((p, o, c));
    }
    by_topic
        .into_iter()
        .map(|(name, parts)| topic(TopicName(StrBytes::from_string(name)), parts))
        .collect()
}
