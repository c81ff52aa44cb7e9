//! JoinGroup: parked in the group until the join phase ends, then answered with the generation.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, group_error};
use super::group_coordinator::{now_ms, owns};
use super::{Context, Frame, HandlerError, Request};
use crate::group::{GroupError, JoinParams, JoinResult, Protocol};

pub const VERSIONS: RangeInclusive<i16> = 0..=9;
/// From v4 an unknown member first gets MEMBER_ID_REQUIRED (KIP-394).
const MEMBER_ID_REQUIRED_MIN_VERSION: i16 = 4;
/// Before v7 the protocol name is a non-nullable string.
const NULLABLE_PROTOCOL_MIN_VERSION: i16 = 7;
/// First version carrying the protocol type in the response.
const PROTOCOL_TYPE_MIN_VERSION: i16 = 7;
/// First version carrying members' group.instance.id.
const INSTANCE_ID_MIN_VERSION: i16 = 5;
/// First version with skip_assignment (KIP-814). Older static leaders get the members and
/// reassign; the Stable group keeps the assignments it has, as before KIP-814.
const SKIP_ASSIGNMENT_MIN_VERSION: i16 = 9;

/// `client_ip`: the connection's peer, recorded as the member's client host ("/ip", as Kafka).
pub async fn serve(
    ctx: &Rc<Context>,
    r: Request,
    header: &RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    mut body: Bytes,
) -> Result<Frame, HandlerError> {
    let req: JoinGroupRequest = r.decode(&mut body)?;
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let result = if !owns(ctx, &group_id) {
        JoinResult::error(GroupError::NotCoordinator, &member_id)
    } else {
        let params = JoinParams {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            client_host: client_ip.map(|ip| format!("/{ip}")).unwrap_or_default(),
            session_timeout_ms: req.session_timeout_ms,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if r.version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| Protocol {
                    name: p.name.to_string(),
                    metadata: p.metadata.clone(),
                })
                .collect(),
            require_known_member_id: r.version >= MEMBER_ID_REQUIRED_MIN_VERSION
                && req.group_instance_id.is_none(),
        };
        let rx = ctx
            .groups
            .manager
            .borrow_mut()
            .join(&group_id, params, now_ms());
        rx.await
            .unwrap_or_else(|_| JoinResult::error(GroupError::CoordinatorNotAvailable, &member_id))
    };
    r.respond(&response(r.version, result))
}

fn response(version: i16, j: JoinResult) -> JoinGroupResponse {
    let s = |v: String| StrBytes::from_string(v);
    let protocol_name = match j.protocol_name {
        None if version < NULLABLE_PROTOCOL_MIN_VERSION => Some(StrBytes::default()),
        other => other.map(s),
    };
    let members = j
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(m.member_id))
                .with_group_instance_id(
                    m.group_instance_id
                        .filter(|_| version >= INSTANCE_ID_MIN_VERSION)
                        .map(s),
                )
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(j.error.as_ref().map_or(error_code::NONE, group_error))
        .with_generation_id(j.generation_id)
        .with_protocol_type(
            j.protocol_type
                .filter(|_| version >= PROTOCOL_TYPE_MIN_VERSION)
                .map(s),
        )
        .with_protocol_name(protocol_name)
        .with_leader(s(j.leader))
        .with_skip_assignment(j.skip_assignment && version >= SKIP_ASSIGNMENT_MIN_VERSION)
        .with_member_id(s(j.member_id))
        .with_members(members)
}
