//! The group state machine driven with a fake clock: every step names its time.

use bytes::Bytes;
use futures::channel::oneshot::Receiver;

use super::record::{Entry, decode_batches, encode_batch, replay};
use super::*;
use crate::types::TopicPartition;

const DELAY_MS: i64 = 3000;

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: n.to_string(),
            metadata: Bytes::from(format!("meta-{n}")),
        })
        .collect()
}

fn params(member_id: &str, names: &[&str]) -> JoinParams {
    JoinParams {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: false,
    }
}

/// The value of an answered receiver; `None` while it is still parked.
#[track_caller]
fn poll<T>(rx: &mut Receiver<T>) -> Option<T> {
    rx.try_recv().expect("sender kept")
}

#[track_caller]
fn sync(
    g: &mut GroupManager,
    member: &str,
    generation: i32,
    assign: &[(&str, &str)],
    now: i64,
) -> Receiver<SyncResult> {
    g.sync(
        "g",
        SyncParams {
            member_id: member.into(),
            group_instance_id: None,
            generation_id: generation,
            protocol_type: None,
            protocol_name: None,
            assignments: assign
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        },
        now,
    )
}

/// One member through MEMBER_ID_REQUIRED, the initial delay, and sync: returns its id.
fn stable_single(g: &mut GroupManager) -> String {
    let mut p = params("", &["range"]);
    p.require_known_member_id = true;
    let first = poll(&mut g.join("g", p.clone(), 0)).unwrap();
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    assert!(first.member_id.starts_with("client-"));
    p.member_id = first.member_id.clone();
    let mut rx = g.join("g", p, 10);
    assert_eq!(poll(&mut rx), None, "parked during the initial delay");
    g.tick(10 + DELAY_MS - 1);
    assert_eq!(poll(&mut rx), None);
    g.tick(10 + DELAY_MS);
    let joined = poll(&mut rx).unwrap();
    assert_eq!(joined.error, None);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, first.member_id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1);
    let id = first.member_id;
    let s = poll(&mut sync(g, &id, 1, &[(&id, "a0")], DELAY_MS + 20)).unwrap();
    assert_eq!(s.error, None);
    assert_eq!(s.assignment, Bytes::from("a0"));
    assert_eq!(g.group("g").unwrap().state(), GroupState::Stable);
    id
}

#[test]
fn single_member_reaches_stable_after_initial_delay() {
    let mut g = GroupManager::new(DELAY_MS);
    let id = stable_single(&mut g);
    assert_eq!(g.heartbeat("g", &id, None, 1, 4000), Ok(()));
    assert_eq!(
        g.heartbeat("g", &id, None, 0, 4000),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("g", "nobody", None, 1, 4000),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        g.heartbeat("h", &id, None, 1, 4000),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn new_joins_extend_the_initial_delay_up_to_the_rebalance_timeout() {
    let mut g = GroupManager::new(DELAY_MS);
    let mut a = g.join("g", params("", &["range"]), 0);
    g.tick(2000);
    let mut b = g.join("g", params("", &["range"]), 2000);
    g.tick(DELAY_MS);
    assert_eq!(poll(&mut a), None, "a join during the delay extends it");
    g.tick(2 * DELAY_MS);
    let (ra, rb) = (poll(&mut a).unwrap(), poll(&mut b).unwrap());
    assert_eq!(ra.generation_id, 1);
    assert_eq!(ra.leader, ra.member_id, "first to join leads");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "followers get no member list");
    // The follower's sync waits for the leader's.
    let mut fs = sync(&mut g, &rb.member_id, 1, &[], 6100);
    assert_eq!(poll(&mut fs), None);
    assert_eq!(g.heartbeat("g", &rb.member_id, None, 1, 6100), Ok(()));
    let ls = poll(&mut sync(
        &mut g,
        &ra.member_id,
        1,
        &[(&ra.member_id, "x"), (&rb.member_id, "y")],
        6200,
    ));
    assert_eq!(ls.unwrap().assignment, Bytes::from("x"));
    assert_eq!(poll(&mut fs).unwrap().assignment, Bytes::from("y"));
}

#[test]
fn a_new_member_rebalances_a_stable_group_and_stragglers_are_removed() {
    let mut g = GroupManager::new(0);
    let mut long_session = params("", &["range"]);
    long_session.session_timeout_ms = 60_000; // so only the rebalance timeout can remove A
    let mut a = g.join("g", long_session, 0);
    let ra = poll(&mut a).unwrap();
    assert_eq!(ra.generation_id, 1, "no delay: completes at once");
    poll(&mut sync(&mut g, &ra.member_id, 1, &[], 1)).unwrap();
    let mut b = g.join("g", params("", &["range"]), 100);
    assert_eq!(
        g.group("g").unwrap().state(),
        GroupState::PreparingRebalance
    );
    assert_eq!(
        g.heartbeat("g", &ra.member_id, None, 1, 200),
        Err(GroupError::RebalanceInProgress)
    );
    // A never rejoins: at the rebalance timeout it is dropped and B leads generation 2.
    g.tick(100 + 30_000 - 1);
    assert_eq!(poll(&mut b), None);
    g.tick(100 + 30_000);
    let rb = poll(&mut b).unwrap();
    assert_eq!(rb.generation_id, 2);
    assert_eq!(rb.leader, rb.member_id);
    assert_eq!(
        g.group("g").unwrap().member_ids(),
        vec![rb.member_id.clone()]
    );
}

#[test]
fn all_members_rejoining_completes_the_rebalance_early() {
    let mut g = GroupManager::new(0);
    let ra = poll(&mut g.join("g", params("", &["range"]), 0)).unwrap();
    poll(&mut sync(&mut g, &ra.member_id, 1, &[], 1)).unwrap();
    let mut b = g.join("g", params("", &["range"]), 10);
    let mut a2 = g.join("g", params(&ra.member_id, &["range"]), 20);
    let (ra2, rb) = (poll(&mut a2).unwrap(), poll(&mut b).unwrap());
    assert_eq!((ra2.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra2.leader, ra.member_id, "the leader is kept");
    assert_eq!(ra2.members.len(), 2);
}

#[test]
fn session_expiry_removes_a_member_and_rebalances() {
    let mut g = GroupManager::new(0);
    let ra = poll(&mut g.join("g", params("", &["range"]), 0)).unwrap();
    let mut b = g.join("g", params("", &["range"]), 0);
    let mut a2 = g.join("g", params(&ra.member_id, &["range"]), 0);
    let rb = poll(&mut b).unwrap();
    poll(&mut a2).unwrap();
    poll(&mut sync(&mut g, &ra.member_id, 2, &[], 5)).unwrap();
    poll(&mut sync(&mut g, &rb.member_id, 2, &[], 5)).unwrap();
    assert_eq!(g.next_deadline_ms(), Some(10_005));
    assert_eq!(g.heartbeat("g", &ra.member_id, None, 2, 9_000), Ok(()));
    g.tick(10_005); // B's session ends; A heartbeated.
    let grp = g.group("g").unwrap();
    assert_eq!(grp.state(), GroupState::PreparingRebalance);
    assert_eq!(grp.member_ids(), vec![ra.member_id.clone()]);
}

#[test]
fn protocol_chosen_by_most_members_among_common_ones() {
    let mut g = GroupManager::new(DELAY_MS);
    let mut a = g.join("g", params("", &["roundrobin", "range", "sticky"]), 0);
    let mut b = g.join("g", params("", &["range", "roundrobin"]), 0);
    let mut c = g.join("g", params("", &["range", "sticky", "roundrobin"]), 0);
    let bad = poll(&mut g.join("g", params("", &["cooperative"]), 0)).unwrap();
    assert_eq!(bad.error, Some(GroupError::InconsistentGroupProtocol));
    let mut other_type = params("", &["range"]);
    other_type.protocol_type = "connect".into();
    let bad = poll(&mut g.join("g", other_type, 0)).unwrap();
    assert_eq!(bad.error, Some(GroupError::InconsistentGroupProtocol));
    g.tick(DELAY_MS); // b and c joined during the delay: it is extended once
    g.tick(2 * DELAY_MS);
    for rx in [&mut a, &mut b, &mut c] {
        assert_eq!(poll(rx).unwrap().protocol_name.as_deref(), Some("range"));
    }
    let leader = poll(&mut g.join("g", params("", &["x"]), 0)).unwrap();
    assert_eq!(leader.error, Some(GroupError::InconsistentGroupProtocol));
}

#[test]
fn session_timeout_bounds_and_group_id_are_checked() {
    let mut g = GroupManager::new(0);
    for ms in [SESSION_TIMEOUT_MIN_MS - 1, SESSION_TIMEOUT_MAX_MS + 1] {
        let mut p = params("", &["range"]);
        p.session_timeout_ms = ms;
        let r = poll(&mut g.join("g", p, 0)).unwrap();
        assert_eq!(r.error, Some(GroupError::InvalidSessionTimeout));
    }
    let r = poll(&mut g.join("", params("", &["range"]), 0)).unwrap();
    assert_eq!(r.error, Some(GroupError::InvalidGroupId));
    let r = poll(&mut g.join("other", params("someone", &["range"]), 0)).unwrap();
    assert_eq!(r.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn static_member_rejoining_keeps_its_assignment_and_fences_the_old_id() {
    let mut g = GroupManager::new(0);
    let mut p = params("", &["range"]);
    p.group_instance_id = Some("i1".into());
    let r1 = poll(&mut g.join("g", p.clone(), 0)).unwrap();
    poll(&mut sync(
        &mut g,
        &r1.member_id,
        1,
        &[(&r1.member_id, "mine")],
        1,
    ))
    .unwrap();
    // Restarted: same instance id, no member id, same protocols: no rebalance.
    let r2 = poll(&mut g.join("g", p.clone(), 100)).unwrap();
    assert_eq!(r2.error, None);
    assert_ne!(r2.member_id, r1.member_id);
    assert_eq!(r2.generation_id, 1);
    assert!(
        r2.skip_assignment,
        "the static leader is told not to reassign"
    );
    assert_eq!(g.group("g").unwrap().state(), GroupState::Stable);
    let s = poll(&mut sync(&mut g, &r2.member_id, 1, &[], 101)).unwrap();
    assert_eq!(s.assignment, Bytes::from("mine"));
    assert_eq!(
        g.heartbeat("g", &r1.member_id, Some("i1"), 1, 102),
        Err(GroupError::FencedInstanceId)
    );
    let mut stale = p.clone();
    stale.member_id = r1.member_id.clone();
    let r = poll(&mut g.join("g", stale, 103)).unwrap();
    assert_eq!(r.error, Some(GroupError::FencedInstanceId));
    // Changed protocols do rebalance.
    p.protocols = protocols(&["range", "sticky"]);
    let mut rx = g.join("g", p, 200);
    let r3 = poll(&mut rx).unwrap();
    assert_eq!(r3.generation_id, 2);
}

#[test]
fn leaving_empties_the_group_then_it_can_be_deleted() {
    let mut g = GroupManager::new(0);
    let ra = poll(&mut g.join("g", params("", &["range"]), 0)).unwrap();
    assert_eq!(g.delete("g"), Err(GroupError::NonEmptyGroup));
    let out = g
        .leave(
            "g",
            &[(ra.member_id.clone(), None), ("ghost".into(), None)],
            10,
        )
        .unwrap();
    assert_eq!(out, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
    let grp = g.group("g").unwrap();
    assert_eq!(grp.state(), GroupState::Empty);
    assert_eq!(grp.generation(), 2);
    assert_eq!(g.list(&[]).len(), 1);
    assert_eq!(g.list(&["stable".into()]).len(), 0);
    assert_eq!(g.list(&["EMPTY".into()]).len(), 1);
    assert_eq!(g.delete("g"), Ok(()));
    assert_eq!(g.delete("g"), Err(GroupError::GroupIdNotFound));
    assert_eq!(g.describe("g").state, GroupState::Dead);
}

#[test]
fn a_leaving_member_fails_parked_syncs_with_rebalance_in_progress() {
    let mut g = GroupManager::new(0);
    let ra = poll(&mut g.join("g", params("", &["range"]), 0)).unwrap();
    let mut b = g.join("g", params("", &["range"]), 0);
    let mut a2 = g.join("g", params(&ra.member_id, &["range"]), 0);
    let rb = poll(&mut b).unwrap();
    poll(&mut a2).unwrap();
    let mut bs = sync(&mut g, &rb.member_id, 2, &[], 1);
    assert_eq!(poll(&mut bs), None);
    g.leave("g", &[(ra.member_id.clone(), None)], 2).unwrap();
    assert_eq!(
        poll(&mut bs).unwrap().error,
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(g.group("g").unwrap().leader(), Some(rb.member_id.as_str()));
}

#[test]
fn commits_follow_kafka_rules() {
    let mut g = GroupManager::new(0);
    let tp = TopicPartition::new("t", 0);
    let off = |o| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 5,
    };
    // A simple consumer: no group, generation -1.
    assert_eq!(g.check_commit("simple", "", None, -1), Ok(()));
    assert_eq!(
        g.check_commit("simple", "m", None, 3),
        Err(GroupError::IllegalGeneration)
    );
    g.commit("simple", "", vec![(tp.clone(), off(7))], 5);
    assert_eq!(g.committed("simple", None), vec![(tp.clone(), off(7))]);
    assert_eq!(
        g.committed("simple", Some(&[TopicPartition::new("t", 1)])),
        vec![]
    );

    let ra = poll(&mut g.join("g", params("", &["range"]), 0)).unwrap();
    assert_eq!(
        g.check_commit("g", &ra.member_id, None, 1),
        Err(GroupError::RebalanceInProgress)
    );
    poll(&mut sync(&mut g, &ra.member_id, 1, &[], 1)).unwrap();
    assert_eq!(g.check_commit("g", &ra.member_id, None, 1), Ok(()));
    assert_eq!(
        g.check_commit("g", &ra.member_id, None, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit("g", "x", None, 1),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        g.check_commit("g", "", None, -1),
        Err(GroupError::UnknownMemberId)
    );
    // OffsetDelete: refused while subscribed (the metadata here is no subscription at all).
    assert_eq!(
        g.delete_offsets("g", std::slice::from_ref(&tp)),
        Err(GroupError::NonEmptyGroup)
    );
    assert_eq!(
        g.delete_offsets("simple", std::slice::from_ref(&tp)),
        Ok(vec![Ok(())])
    );
    assert_eq!(g.committed("simple", None), vec![]);
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut g = GroupManager::new(0);
    // ConsumerProtocolSubscription v0 naming topic "t".
    let meta = Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
    let mut p = params("", &["range"]);
    p.protocols[0].metadata = meta;
    let r = poll(&mut g.join("g", p, 0)).unwrap();
    poll(&mut sync(&mut g, &r.member_id, 1, &[], 1)).unwrap();
    let out = g
        .delete_offsets(
            "g",
            &[TopicPartition::new("t", 0), TopicPartition::new("u", 0)],
        )
        .unwrap();
    assert_eq!(out, vec![Err(GroupError::GroupSubscribedToTopic), Ok(())]);
}

#[test]
fn pending_member_ids_expire_after_the_session_timeout() {
    let mut g = GroupManager::new(0);
    let mut p = params("", &["range"]);
    p.require_known_member_id = true;
    let r = poll(&mut g.join("g", p.clone(), 0)).unwrap();
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    g.tick(10_000);
    p.member_id = r.member_id;
    let late = poll(&mut g.join("g", p, 10_001)).unwrap();
    assert_eq!(late.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn records_round_trip_through_crc_checked_batches() {
    let off = CommittedOffset {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp_ms: 1_700_000_000_000,
    };
    let entries = vec![
        Entry::Offset {
            group_id: "g".into(),
            tp: TopicPartition::new("t", 1),
            offset: Some(off.clone()),
        },
        Entry::Offset {
            group_id: "g".into(),
            tp: TopicPartition::new("t", 2),
            offset: Some(off.clone()),
        },
    ];
    let tombstones = vec![
        Entry::Offset {
            group_id: "g".into(),
            tp: TopicPartition::new("t", 2),
            offset: None,
        },
        Entry::GroupDeleted {
            group_id: "gone".into(),
        },
    ];
    let mut log = encode_batch(&entries, 1).to_vec();
    let second = encode_batch(&tombstones, 2);
    // The log patches base offsets: the second batch starts at offset 2.
    let start = log.len();
    log.extend_from_slice(&second);
    log[start..start + 8].copy_from_slice(&2i64.to_be_bytes());
    let (decoded, next, used) = decode_batches(&log).unwrap();
    assert_eq!(decoded, [entries.clone(), tombstones].concat());
    assert_eq!((next, used), (Some(4), log.len()));
    // A torn tail is left for the next read; a flipped bit is caught by the CRC.
    let (partial, _, used) = decode_batches(&log[..log.len() - 1]).unwrap();
    assert_eq!((partial, used), (entries, start));
    let mut bad = log.clone();
    bad[70] ^= 1;
    assert!(decode_batches(&bad).is_err());

    let mut g = GroupManager::new(0);
    g.commit(
        "gone",
        "",
        vec![(TopicPartition::new("t", 0), off.clone())],
        0,
    );
    replay(&mut g, decode_batches(&log).unwrap().0);
    assert_eq!(
        g.committed("g", None),
        vec![(TopicPartition::new("t", 1), off)]
    );
    assert!(g.group("gone").is_none());
}

#[test]
fn coordinator_hash_is_stable() {
    // FNV-1a 32: fixed values, so a restart or another process picks the same shard.
    assert_eq!(coordinator_shard("", 7), 0x811c_9dc5 % 7);
    assert_eq!(coordinator_shard("a", 1 << 31), 0xe40c_292c % (1 << 31));
    assert_eq!(coordinator_shard("order_group", 1), 0);
}
