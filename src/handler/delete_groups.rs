//! DeleteGroups: an Empty group goes with its offsets; a tombstone in the offsets log makes it
//! stay gone after a restart.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::error_code::{self, group_error, offsets_log_error};
use super::group_coordinator::owns;
use super::{Context, Frame, HandlerError, Request};
use crate::group::record::Entry;
use crate::group::{GroupError, GroupState};

pub const VERSIONS: RangeInclusive<i16> = 0..=2;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DeleteGroupsRequest = r.decode(&mut body)?;
    let mut results = Vec::new();
    for g in &req.groups_names {
        let code = match delete(ctx, g.0.as_str()).await {
            Ok(()) => error_code::NONE,
            Err(Ok(e)) => group_error(&e),
            Err(Err(e)) => offsets_log_error(&e),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code),
        );
    }
    r.respond(&DeleteGroupsResponse::default().with_results(results))
}

async fn delete(
    ctx: &Context,
    group_id: &str,
) -> Result<(), Result<GroupError, crate::log::LogError>> {
    if !owns(ctx, group_id) {
        return Err(Ok(GroupError::NotCoordinator));
    }
    let state = ctx
        .groups
        .manager
        .borrow()
        .group(group_id)
        .map(|g| g.state());
    match state {
        None | Some(GroupState::Dead) => return Err(Ok(GroupError::GroupIdNotFound)),
        Some(GroupState::Empty) => {}
        Some(_) => return Err(Ok(GroupError::NonEmptyGroup)),
    }
    // Removed from memory before any await, so no member can join between the Empty check and
    // the removal. The answer waits for the durable tombstone: a crash before it leaves the
    // group in the log, which is right, since the delete was never acknowledged.
    ctx.groups
        .manager
        .borrow_mut()
        .delete(group_id)
        .map_err(Ok)?;
    let tombstone = [Entry::GroupDeleted {
        group_id: group_id.to_string(),
    }];
    ctx.groups.persist(&tombstone).await.map_err(Err)
}
