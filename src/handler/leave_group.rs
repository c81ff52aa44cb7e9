//! LeaveGroup: v0-2 name one member; v3+ a batch (KIP-345), each answered on its own.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::error_code::{self, group_error};
use super::group_coordinator::{now_ms, owns};
use super::{Context, Frame, HandlerError, Request};
use crate::group::GroupError;

pub const VERSIONS: RangeInclusive<i16> = 0..=5;
const BATCHED_MIN_VERSION: i16 = 3;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: LeaveGroupRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.as_str();
    let members: Vec<(String, Option<String>)> = if r.version >= BATCHED_MIN_VERSION {
        req.members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map(|s| s.to_string());
                (m.member_id.to_string(), instance)
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let outcome = if owns(ctx, group_id) {
        ctx.groups
            .manager
            .borrow_mut()
            .leave(group_id, &members, now_ms())
    } else {
        Err(GroupError::NotCoordinator)
    };
    let resp = match outcome {
        Err(e) => LeaveGroupResponse::default().with_error_code(group_error(&e)),
        Ok(results) if r.version < BATCHED_MIN_VERSION => {
            let e = results.into_iter().next().and_then(Result::err);
            LeaveGroupResponse::default()
                .with_error_code(e.as_ref().map_or(error_code::NONE, group_error))
        }
        Ok(results) => {
            let out = req
                .members
                .iter()
                .zip(results)
                .map(|(m, res)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.group_instance_id.clone())
                        .with_error_code(res.err().as_ref().map_or(error_code::NONE, group_error))
                })
                .collect();
            LeaveGroupResponse::default().with_members(out)
        }
    };
    r.respond(&resp)
}
