//! SyncGroup: followers wait for the leader's assignments; everyone gets their own.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, group_error};
use super::group_coordinator::{now_ms, owns};
use super::{Context, Frame, HandlerError, Request};
use crate::group::{GroupError, SyncParams, SyncResult};

pub const VERSIONS: RangeInclusive<i16> = 0..=5;
/// First version carrying the protocol type and name (KIP-559).
const PROTOCOL_MIN_VERSION: i16 = 5;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: SyncGroupRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.to_string();
    let result = if !owns(ctx, &group_id) {
        SyncResult::error(GroupError::NotCoordinator)
    } else {
        let params = SyncParams {
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            generation_id: req.generation_id,
            protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
            protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
            assignments: req
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        };
        let rx = ctx
            .groups
            .manager
            .borrow_mut()
            .sync(&group_id, params, now_ms());
        rx.await
            .unwrap_or_else(|_| SyncResult::error(GroupError::CoordinatorNotAvailable))
    };
    let (protocol_type, protocol_name) = if r.version >= PROTOCOL_MIN_VERSION {
        (result.protocol_type, result.protocol_name)
    } else {
        (None, None)
    };
    let resp = SyncGroupResponse::default()
        .with_error_code(result.error.as_ref().map_or(error_code::NONE, group_error))
        .with_protocol_type(protocol_type.map(StrBytes::from_string))
        .with_protocol_name(protocol_name.map(StrBytes::from_string))
        .with_assignment(result.assignment);
    r.respond(&resp)
}
