//! DescribeGroups: each group is described by the shard that coordinates it, reached over the
//! mesh when that is not this one. A group nobody knows is `Dead` with no members, as Kafka.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{Context, Frame, HandlerError, Request};
use crate::group::{GroupDescription, coordinator_shard};
use crate::types::ShardId;

/// v6 answers GROUP_ID_NOT_FOUND for unknown groups; not served until verified with a client.
pub const VERSIONS: RangeInclusive<i16> = 0..=5;
/// READ, DELETE and DESCRIBE, the operations on a group; there are no ACLs yet.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// First version carrying members' group.instance.id.
const INSTANCE_ID_MIN_VERSION: i16 = 4;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeGroupsRequest = r.decode(&mut body)?;
    let shards = ctx.image().shard_count;
    let mut by_shard: HashMap<usize, Vec<String>> = HashMap::new();
    for g in &req.groups {
        by_shard
            .entry(coordinator_shard(g.0.as_str(), shards))
            .or_default()
            .push(g.0.to_string());
    }
    let asks = by_shard.into_iter().map(|(shard, ids)| {
        let ctx = ctx.clone();
        async move {
            if shard == ctx.shard.index() {
                let m = ctx.groups.manager.borrow();
                ids.iter().map(|id| m.describe(id)).collect::<Vec<_>>()
            } else {
                ctx.peers.describe_groups(ShardId(shard as u16), ids).await
            }
        }
    });
    let found: HashMap<String, GroupDescription> = join_all(asks)
        .await
        .into_iter()
        .flatten()
        .map(|d| (d.group_id.clone(), d))
        .collect();
    let ops = if req.include_authorized_operations {
        GROUP_OPERATIONS_ALL
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    let groups = req
        .groups
        .iter()
        .map(|g| {
            let d = found.get(g.0.as_str()).cloned();
            described(g, d, ops, r.version)
        })
        .collect();
    r.respond(&DescribeGroupsResponse::default().with_groups(groups))
}

fn described(id: &GroupId, d: Option<GroupDescription>, ops: i32, version: i16) -> DescribedGroup {
    let s = StrBytes::from_string;
    let out = DescribedGroup::default()
        .with_group_id(id.clone())
        .with_error_code(error_code::NONE)
        .with_authorized_operations(ops);
    let Some(d) = d else {
        // The coordinating shard did not answer (stopping): report what a missing group gets.
        return out.with_group_state(StrBytes::from_static_str("Dead"));
    };
    let members = d
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(
                    m.group_instance_id
                        .filter(|_| version >= INSTANCE_ID_MIN_VERSION)
                        .map(s),
                )
                .with_client_id(s(m.client_id))
                .with_client_host(s(m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    out.with_group_state(StrBytes::from_static_str(d.state.name()))
        .with_protocol_type(s(d.protocol_type))
        .with_protocol_data(s(d.protocol_name))
        .with_members(members)
}
