//! ListGroups: every shard coordinates its own groups, so the answer gathers all of them over
//! the mesh.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{Context, Frame, HandlerError, Request};
use crate::types::ShardId;

pub const VERSIONS: RangeInclusive<i16> = 0..=5;
/// Classic groups are the only type Sable has (KIP-848 types filter, v5).
const GROUP_TYPE_CLASSIC: &str = "classic";

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: ListGroupsRequest = r.decode(&mut body)?;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    let classic_wanted = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(GROUP_TYPE_CLASSIC));
    let mut listings = Vec::new();
    if classic_wanted {
        listings = ctx.groups.manager.borrow().list(&states);
        let others = (0..ctx.image().shard_count)
            .map(|s| ShardId(s as u16))
            .filter(|&s| s != ctx.shard)
            .map(|s| ctx.peers.list_groups(s, states.clone()));
        for remote in join_all(others).await {
            listings.extend(remote);
        }
    }
    let groups = listings
        .into_iter()
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(StrBytes::from_static_str(g.state.name()))
                .with_group_type(StrBytes::from_static_str(GROUP_TYPE_CLASSIC))
        })
        .collect();
    Ok(r.respond(
        &ListGroupsResponse::default()
            .with_error_code(error_code::NONE)
            .with_groups(groups),
    ))
}
