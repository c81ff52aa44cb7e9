//! The group APIs through `dispatch`, on one shard of two, without a runtime: encoded requests
//! in, decoded responses out.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::tests::{context, request, response_body};
use super::{Context, dispatch};
use crate::group::coordinator_shard;
use crate::protocol::frame::header_prefix;

/// The peer every request of these tests comes from.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn call<Req: Encodable, Resp: Decodable>(
    ctx: &Rc<Context>,
    key: ApiKey,
    v: i16,
    req: &Req,
) -> Resp {
    let body = request(key, v, req);
    let prefix = header_prefix(&body).unwrap();
    let frame = futures::executor::block_on(dispatch(ctx, prefix, body, Some(LOOPBACK)))
        .unwrap()
        .unwrap();
    Resp::decode(&mut response_body(frame, key, v), v).unwrap()
}

/// A group id coordinated by shard `shard` of the test context's two.
fn group_on(shard: usize) -> GroupId {
    let id = (0..)
        .map(|i| format!("g{i}"))
        .find(|g| coordinator_shard(g, 2) == shard)
        .unwrap();
    GroupId(StrBytes::from_string(id))
}

fn join(group: &GroupId, member: &StrBytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group.clone())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(member.clone())
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"sub")),
        ])
}

#[test]
fn find_coordinator_names_the_owning_shard() {
    let ctx = context();
    let g = group_on(1);
    let r: FindCoordinatorResponse = call(
        &ctx,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(g.0.clone()),
    );
    assert_eq!(
        (r.error_code, r.node_id.0, r.port),
        (0, 8, 9094),
        "node id base 7 + shard 1"
    );
    let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![group_on(0).0, g.0]);
    let r: FindCoordinatorResponse = call(&ctx, ApiKey::FindCoordinator, 4, &req);
    let nodes: Vec<i32> = r.coordinators.iter().map(|c| c.node_id.0).collect();
    assert_eq!(nodes, vec![7, 8]);
}

#[test]
fn a_consumer_joins_syncs_heartbeats_commits_and_leaves() {
    let ctx = context();
    let g = group_on(0);
    let first: JoinGroupResponse =
        call(&ctx, ApiKey::JoinGroup, 5, &join(&g, &StrBytes::default()));
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(first.member_id.starts_with("test-"), "client id + uuid");
    let me = first.member_id;
    let joined: JoinGroupResponse = call(&ctx, ApiKey::JoinGroup, 5, &join(&g, &me));
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader, me);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    let sync = SyncGroupRequest::default()
        .with_group_id(g.clone())
        .with_generation_id(1)
        .with_member_id(me.clone())
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(me.clone())
                .with_assignment(Bytes::from_static(b"p0")),
        ]);
    let s: SyncGroupResponse = call(&ctx, ApiKey::SyncGroup, 3, &sync);
    assert_eq!((s.error_code, &s.assignment[..]), (0, &b"p0"[..]));
    let hb = HeartbeatRequest::default()
        .with_group_id(g.clone())
        .with_generation_id(1)
        .with_member_id(me.clone());
    let h: HeartbeatResponse = call(&ctx, ApiKey::Heartbeat, 3, &hb);
    assert_eq!(h.error_code, 0);
    let h: HeartbeatResponse = call(
        &ctx,
        ApiKey::Heartbeat,
        3,
        &hb.clone().with_generation_id(7),
    );
    assert_eq!(h.error_code, 22, "ILLEGAL_GENERATION");

    // No topics in the test image: a commit names an unknown partition; a fetch answers -1.
    let commit = OffsetCommitRequest::default()
        .with_group_id(g.clone())
        .with_generation_id_or_member_epoch(1)
        .with_member_id(me.clone())
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(5),
                ]),
        ]);
    let c: OffsetCommitResponse = call(&ctx, ApiKey::OffsetCommit, 7, &commit);
    assert_eq!(
        c.topics[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let fetch = OffsetFetchRequest::default()
        .with_group_id(g.clone())
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let f: OffsetFetchResponse = call(&ctx, ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(
        (f.error_code, f.topics[0].partitions[0].committed_offset),
        (0, -1)
    );

    let listed: ListGroupsResponse =
        call(&ctx, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_state.as_str(), "Stable");
    let d: DescribeGroupsResponse = call(
        &ctx,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![g.clone()]),
    );
    assert_eq!(
        d.groups[0].members[0].member_assignment,
        Bytes::from_static(b"p0")
    );
    assert_eq!(d.groups[0].authorized_operations, i32::MIN);
    assert_eq!(
        d.groups[0].members[0].client_host.as_str(),
        "/127.0.0.1",
        "the joining connection's peer, as Kafka writes it"
    );
    let del: DeleteGroupsResponse = call(
        &ctx,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![g.clone()]),
    );
    assert_eq!(del.results[0].error_code, 68, "NON_EMPTY_GROUP");

    let leave = LeaveGroupRequest::default()
        .with_group_id(g.clone())
        .with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(me.clone()),
        ]);
    let l: LeaveGroupResponse = call(&ctx, ApiKey::LeaveGroup, 4, &leave);
    assert_eq!((l.error_code, l.members[0].error_code), (0, 0));
    let del: DeleteGroupsResponse = call(
        &ctx,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![g]),
    );
    assert_eq!(del.results[0].error_code, 0);
}

#[test]
fn another_shards_group_gets_not_coordinator() {
    let ctx = context();
    let g = group_on(1);
    let j: JoinGroupResponse = call(&ctx, ApiKey::JoinGroup, 7, &join(&g, &StrBytes::default()));
    assert_eq!(j.error_code, 16);
    let hb = HeartbeatRequest::default()
        .with_group_id(g.clone())
        .with_member_id(StrBytes::from_static_str("m"));
    let h: HeartbeatResponse = call(&ctx, ApiKey::Heartbeat, 4, &hb);
    assert_eq!(h.error_code, 16);
    let f: OffsetFetchResponse = call(
        &ctx,
        ApiKey::OffsetFetch,
        5,
        &OffsetFetchRequest::default().with_group_id(g),
    );
    assert_eq!(f.error_code, 16);
}

/// Every served version of every group API, with the optional fields filled (static member,
/// errors with messages), so a response field a version lacks cannot slip through: the codec
/// refuses to encode it, and that refusal aborts the broker.
#[test]
fn every_version_of_every_group_api_encodes() {
    for jv in super::join_group::VERSIONS {
        let ctx = context();
        let g = group_on(0);
        let mut req = join(&g, &StrBytes::default());
        if jv >= 5 {
            req.group_instance_id = Some(StrBytes::from_static_str("instance"));
        }
        let mut j: JoinGroupResponse = call(&ctx, ApiKey::JoinGroup, jv, &req);
        if j.error_code == 79 {
            j = call(&ctx, ApiKey::JoinGroup, jv, &join(&g, &j.member_id));
        }
        assert_eq!(j.error_code, 0, "JoinGroup v{jv}");
        let me = j.member_id.clone();
        let sv = jv.min(*super::sync_group::VERSIONS.end());
        let mut sync = SyncGroupRequest::default()
            .with_group_id(g.clone())
            .with_generation_id(j.generation_id)
            .with_member_id(me.clone());
        if sv >= 5 {
            sync.protocol_type = Some(StrBytes::from_static_str("consumer"));
            sync.protocol_name = Some(StrBytes::from_static_str("range"));
        }
        let s: SyncGroupResponse = call(&ctx, ApiKey::SyncGroup, sv, &sync);
        assert_eq!(s.error_code, 0, "SyncGroup v{sv}");
        if jv >= 5 {
            // The static member restarts: no rebalance; at v9 the leader skips assignment.
            let again: JoinGroupResponse = call(&ctx, ApiKey::JoinGroup, jv, &req);
            assert_eq!(
                (again.error_code, again.generation_id),
                (0, j.generation_id)
            );
            assert_eq!(again.skip_assignment, jv >= 9);
        }
        for v in super::heartbeat::VERSIONS {
            let _: HeartbeatResponse = call(
                &ctx,
                ApiKey::Heartbeat,
                v,
                &HeartbeatRequest::default().with_group_id(g.clone()),
            );
        }
        for v in super::list_groups::VERSIONS {
            let l: ListGroupsResponse =
                call(&ctx, ApiKey::ListGroups, v, &ListGroupsRequest::default());
            assert_eq!(l.groups.len(), 1);
        }
        for v in super::describe_groups::VERSIONS {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![g.clone(), group_on(1)])
                .with_include_authorized_operations(v >= 3);
            let d: DescribeGroupsResponse = call(&ctx, ApiKey::DescribeGroups, v, &req);
            assert_eq!(d.groups[0].members.len(), 1);
        }
        for v in super::offset_fetch::VERSIONS.filter(|&v| v < 8) {
            for group in [g.clone(), group_on(1)] {
                let req = OffsetFetchRequest::default()
                    .with_group_id(group)
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partition_indexes(vec![0]),
                    ]));
                let _: OffsetFetchResponse = call(&ctx, ApiKey::OffsetFetch, v, &req);
            }
        }
        for v in super::find_coordinator::VERSIONS.filter(|&v| v < 4) {
            let req = FindCoordinatorRequest::default()
                .with_key(g.0.clone())
                .with_key_type(if v >= 1 { 5 } else { 0 });
            let _: FindCoordinatorResponse = call(&ctx, ApiKey::FindCoordinator, v, &req);
        }
        for v in super::leave_group::VERSIONS {
            let req = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(g.clone())
                    .with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(StrBytes::from_static_str("ghost")),
                    ])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(g.clone())
                    .with_member_id(StrBytes::from_static_str("ghost"))
            };
            let _: LeaveGroupResponse = call(&ctx, ApiKey::LeaveGroup, v, &req);
        }
        for v in super::offset_commit::VERSIONS {
            let commit = OffsetCommitRequest::default()
                .with_group_id(g.clone())
                .with_generation_id_or_member_epoch(-1);
            let _: OffsetCommitResponse = call(&ctx, ApiKey::OffsetCommit, v, &commit);
        }
    }
}
