//! Heartbeat: keeps a member's session; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::error_code::{self, group_error};
use super::group_coordinator::{now_ms, owns};
use super::{Context, Frame, HandlerError, Request};
use crate::group::GroupError;

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: HeartbeatRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.as_str();
    let result = if owns(ctx, group_id) {
        ctx.groups.manager.borrow_mut().heartbeat(
            group_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            req.generation_id,
            now_ms(),
        )
    } else {
        Err(GroupError::NotCoordinator)
    };
    let code = result.err().as_ref().map_or(error_code::NONE, group_error);
    r.respond(&HeartbeatResponse::default().with_error_code(code))
}
