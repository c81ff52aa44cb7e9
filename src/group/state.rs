//! One classic consumer group: Empty → PreparingRebalance → CompletingRebalance → Stable (and
//! Dead), as Kafka's GroupCoordinator. Members are kept in join order, so the first member is
//! the leader unless a leader is kept from an earlier generation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;
use futures::channel::oneshot;
use indexmap::IndexMap;

use super::offsets::CommittedOffset;
use super::{GROUP_MEMBERS_MAX, GroupError, Protocol, SESSION_TIMEOUT_MAX_MS};
use super::{SESSION_TIMEOUT_MIN_MS, subscribed_topics};
use crate::types::TopicPartition;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinParams {
    /// Empty on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED with its new id.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<JoinedMember>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(e: GroupError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(e),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: vec![],
            skip_assignment: false,
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Clone, Debug)]
pub struct SyncParams {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment per member; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(e: GroupError) -> SyncResult {
        SyncResult {
            error: Some(e),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    pub(crate) assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    session_deadline_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    pub(crate) fn metadata_for_protocol(&self, protocol: &str) -> Bytes {
        self.metadata_for(protocol)
    }

    /// While parked in a join or sync, a member is kept alive: its client is waiting on us.
    fn expired(&self, now_ms: i64) -> bool {
        self.join_waiter.is_none()
            && self.sync_waiter.is_none()
            && now_ms >= self.session_deadline_ms
    }
}

/// The first rebalance of an Empty group waits `group.initial.rebalance.delay.ms`, extended by
/// new joins up to the rebalance timeout (Kafka's InitialDelayedJoin).
#[derive(Clone, Copy, Debug)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
}

pub struct Group {
    pub(crate) id: String,
    pub(crate) state: GroupState,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) members: IndexMap<String, Member>,
    /// group.instance.id → the member id currently holding it.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to rejoin by.
    pending_members: HashMap<String, i64>,
    /// When the join phase ends at the latest (PreparingRebalance only).
    join_deadline_ms: Option<i64>,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    pub(crate) offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline_ms: None,
            initial_delay: None,
            new_member_added: false,
            offsets: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The earliest moment `tick` has work to do for this group.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let members = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
            .map(|m| m.session_deadline_ms);
        let pending = self.pending_members.values().copied();
        members.chain(pending).chain(self.join_deadline_ms).min()
    }

    fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|holder| holder != member_id)
    }

    /// Protocols every member supports, so a group can only choose among them.
    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|p| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        })
    }

    /// Kafka's selectProtocol: among protocols all members support, each member votes for the
    /// one it ranks highest; most votes wins (ties go to the first voted for, deterministically).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == *n))
            })
            .collect();
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for m in self.members.values() {
            if let Some(v) = m
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name.as_str()))
            {
                *votes.entry(v.name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(name, _)| name.to_string())
    }

    // ---- JoinGroup -------------------------------------------------------------------------

    pub fn join(
        &mut self,
        p: JoinParams,
        new_member_id: String,
        initial_delay_ms: i64,
        now_ms: i64,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.check_join(&p) {
            let _ = tx.send(JoinResult::error(e, &p.member_id));
            return rx;
        }
        if p.member_id.is_empty() {
            self.join_unknown(p, new_member_id, tx, initial_delay_ms, now_ms);
        } else {
            self.join_known(p, tx, initial_delay_ms, now_ms);
        }
        rx
    }

    fn check_join(&self, p: &JoinParams) -> Result<(), GroupError> {
        if !(SESSION_TIMEOUT_MIN_MS..=SESSION_TIMEOUT_MAX_MS).contains(&p.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !self.supports(&p.protocol_type, &p.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    fn join_unknown(
        &mut self,
        p: JoinParams,
        new_id: String,
        tx: oneshot::Sender<JoinResult>,
        initial_delay_ms: i64,
        now_ms: i64,
    ) {
        if let Some(instance) = p.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(p, old_id, new_id, tx, now_ms);
            } else {
                self.add_member_and_rebalance(p, new_id, tx, initial_delay_ms, now_ms);
            }
        } else if p.require_known_member_id {
            // KIP-394: the id is handed out first, so a client that times out and retries does
            // not leave a ghost member behind.
            let deadline = now_ms + i64::from(p.session_timeout_ms);
            self.pending_members.insert(new_id.clone(), deadline);
            let _ = tx.send(JoinResult::error(GroupError::MemberIdRequired, &new_id));
        } else if self.members.len() >= GROUP_MEMBERS_MAX {
            let _ = tx.send(JoinResult::error(GroupError::GroupMaxSizeReached, &new_id));
        } else {
            self.add_member_and_rebalance(p, new_id, tx, initial_delay_ms, now_ms);
        }
    }

    fn join_known(
        &mut self,
        p: JoinParams,
        tx: oneshot::Sender<JoinResult>,
        initial_delay_ms: i64,
        now_ms: i64,
    ) {
        let id = p.member_id.clone();
        if self.pending_members.remove(&id).is_some() {
            self.add_member_and_rebalance(p, id, tx, initial_delay_ms, now_ms);
            return;
        }
        if self.is_fenced(p.group_instance_id.as_deref(), &id) {
            let _ = tx.send(JoinResult::error(GroupError::FencedInstanceId, &id));
            return;
        }
        if !self.members.contains_key(&id) {
            let _ = tx.send(JoinResult::error(GroupError::UnknownMemberId, &id));
            return;
        }
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(p, tx, now_ms),
            GroupState::CompletingRebalance | GroupState::Stable => {
                let m = &self.members[&id];
                let unchanged = m.protocols == p.protocols;
                let follower = self.leader.as_deref() != Some(id.as_str());
                if unchanged && (self.state == GroupState::CompletingRebalance || follower) {
                    // A duplicate join (the response was lost): answer the current generation.
                    let result = self.join_result_for(&id, !follower, false);
                    let _ = tx.send(result);
                } else {
                    self.update_member_and_rebalance(p, tx, now_ms);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(JoinResult::error(GroupError::UnknownMemberId, &id));
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        p: JoinParams,
        id: String,
        tx: oneshot::Sender<JoinResult>,
        initial_delay_ms: i64,
        now_ms: i64,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if let Some(instance) = &p.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        let member = Member {
            id: id.clone(),
            instance_id: p.group_instance_id,
            client_id: p.client_id,
            client_host: p.client_host,
            session_timeout_ms: p.session_timeout_ms,
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            protocols: p.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            session_deadline_ms: now_ms + i64::from(p.session_timeout_ms),
        };
        self.members.insert(id, member);
        self.new_member_added = true;
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms);
        } else {
            self.prepare_rebalance(initial_delay_ms, now_ms);
        }
    }

    fn update_member_and_rebalance(
        &mut self,
        p: JoinParams,
        tx: oneshot::Sender<JoinResult>,
        now_ms: i64,
    ) {
        let m = self.members.get_mut(&p.member_id).expect("caller checked");
        m.protocols = p.protocols;
        m.session_timeout_ms = p.session_timeout_ms;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(GroupError::UnknownMemberId, &p.member_id));
        }
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms);
        } else {
            // Not Empty here: the member exists. The initial delay applies to Empty groups only.
            self.prepare_rebalance(0, now_ms);
        }
    }

    /// KIP-345: a static member rejoining with an unknown member id takes over its instance's
    /// place under a new member id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        p: JoinParams,
        old_id: String,
        new_id: String,
        tx: oneshot::Sender<JoinResult>,
        now_ms: i64,
    ) {
        let mut m = self
            .members
            .shift_remove(&old_id)
            .expect("static map points at a member");
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(GroupError::FencedInstanceId, &old_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(GroupError::FencedInstanceId));
        }
        let protocols_changed = m.protocols != p.protocols;
        m.id = new_id.clone();
        m.protocols = p.protocols;
        m.session_timeout_ms = p.session_timeout_ms;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        m.session_deadline_ms = now_ms + i64::from(p.session_timeout_ms);
        self.members.insert(new_id.clone(), m);
        let instance = p.group_instance_id.expect("static join");
        self.static_members.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if !protocols_changed => {
                // No rebalance: the member keeps its assignment. A leader gets the members'
                // metadata but is told not to reassign (KIP-814).
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                let _ = tx.send(self.join_result_for(&new_id, is_leader, is_leader));
            }
            GroupState::PreparingRebalance => {
                self.members[&new_id].join_waiter = Some(tx);
                self.try_complete_join(now_ms);
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.members[&new_id].join_waiter = Some(tx);
                self.prepare_rebalance(0, now_ms);
            }
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with a static member is neither Empty nor Dead")
            }
        }
    }

    fn join_result_for(&self, member_id: &str, with_members: bool, skip: bool) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            vec![]
        };
        JoinResult {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: skip,
        }
    }

    fn prepare_rebalance(&mut self, initial_delay_ms: i64, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(GroupError::RebalanceInProgress));
                }
            }
        }
        let rebalance_timeout_ms = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        if was_empty && initial_delay_ms > 0 {
            self.new_member_added = false;
            self.initial_delay = Some(InitialDelay {
                delay_ms: initial_delay_ms,
                remaining_ms: (rebalance_timeout_ms - initial_delay_ms).max(0),
            });
            self.join_deadline_ms = Some(now_ms + initial_delay_ms);
        } else {
            self.initial_delay = None;
            self.join_deadline_ms = Some(now_ms + rebalance_timeout_ms);
            self.try_complete_join(now_ms);
        }
    }

    /// Ends the join phase early once every member has rejoined (never during the initial delay).
    fn try_complete_join(&mut self, now_ms: i64) {
        assert_eq!(self.state, GroupState::PreparingRebalance);
        if self.initial_delay.is_some() {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if all_joined && self.pending_members.is_empty() {
            self.complete_join(now_ms);
        }
    }

    /// Members that did not rejoin are removed; the rest get the new generation.
    fn complete_join(&mut self, now_ms: i64) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.forget_member(&id);
        }
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.state = GroupState::Empty;
            return;
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.protocol_name = self.select_protocol();
        assert!(self.protocol_name.is_some(), "members share a protocol");
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().expect("elected above");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id, id == leader, false);
            let m = &mut self.members[&id];
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(result);
            }
        }
    }

    /// Removes a member's bookkeeping; waiters get UNKNOWN_MEMBER_ID.
    fn forget_member(&mut self, id: &str) {
        let Some(mut m) = self.members.shift_remove(id) else {
            return;
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(GroupError::UnknownMemberId, id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(GroupError::UnknownMemberId));
        }
        if let Some(instance) = &m.instance_id
            && self.static_members.get(instance).is_some_and(|h| h == id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// A member left or expired: the rest rebalance.
    fn remove_member_and_update(&mut self, id: &str, now_ms: i64) {
        self.forget_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(0, now_ms)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup --------------------------------------------------

    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_fenced(instance_id, member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(&mut self, p: SyncParams, now_ms: i64) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.check_sync(&p) {
            let _ = tx.send(SyncResult::error(e));
            return rx;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(SyncResult::error(GroupError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(SyncResult::error(GroupError::RebalanceInProgress));
            }
            GroupState::CompletingRebalance => {
                let m = &mut self.members[&p.member_id];
                m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                if let Some(old) = m.sync_waiter.replace(tx) {
                    let _ = old.send(SyncResult::error(GroupError::UnknownMemberId));
                }
                if self.leader.as_deref() == Some(p.member_id.as_str()) {
                    self.complete_sync(p.assignments, now_ms);
                }
            }
            GroupState::Stable => {
                let m = &mut self.members[&p.member_id];
                m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                let _ = tx.send(SyncResult {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
        rx
    }

    fn check_sync(&self, p: &SyncParams) -> Result<(), GroupError> {
        self.validate_member(
            &p.member_id,
            p.group_instance_id.as_deref(),
            p.generation_id,
        )?;
        let type_differs = p
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t));
        let name_differs = p
            .protocol_name
            .as_ref()
            .is_some_and(|n| self.protocol_name.as_ref() != Some(n));
        if type_differs || name_differs {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// The leader's assignments arrive: every member (parked or later) gets its own.
    fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>, now_ms: i64) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in self.members.values_mut() {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        for m in self.members.values_mut() {
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        self.validate_member(member_id, instance_id, generation)?;
        let m = &mut self.members[member_id];
        m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// One member of a (v3+ batched) LeaveGroup.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => self
                .static_members
                .get(instance)
                .cloned()
                .ok_or(GroupError::UnknownMemberId)?,
            _ if self.is_fenced(instance_id, member_id) => {
                return Err(GroupError::FencedInstanceId);
            }
            _ => member_id.to_string(),
        };
        if self.pending_members.remove(&id).is_some() {
            if self.state == GroupState::PreparingRebalance {
                self.try_complete_join(now_ms);
            }
            return Ok(());
        }
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member_and_update(&id, now_ms);
        Ok(())
    }

    // ---- Timers ------------------------------------------------------------------------------

    /// Expires sessions, pending member ids and the join phase, as of `now_ms`.
    pub fn tick(&mut self, now_ms: i64) {
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired_pending {
            self.pending_members.remove(id);
        }
        if !expired_pending.is_empty() && self.state == GroupState::PreparingRebalance {
            self.try_complete_join(now_ms);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expired(now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session expired");
            self.remove_member_and_update(&id, now_ms);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            self.join_deadline_passed(now_ms);
        }
    }

    fn join_deadline_passed(&mut self, now_ms: i64) {
        match self.initial_delay {
            Some(d) if self.new_member_added && d.remaining_ms > 0 => {
                self.new_member_added = false;
                let delay_ms = d.delay_ms.min(d.remaining_ms);
                self.initial_delay = Some(InitialDelay {
                    delay_ms: d.delay_ms,
                    remaining_ms: (d.remaining_ms - delay_ms).max(0),
                });
                self.join_deadline_ms = Some(now_ms + delay_ms);
            }
            _ => self.complete_join(now_ms),
        }
    }

    // ---- Admin -------------------------------------------------------------------------------

    /// Marks an Empty group Dead (DeleteGroups); members block it.
    pub fn delete(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {
                self.state = GroupState::Dead;
                self.offsets.clear();
                Ok(())
            }
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// Topics the members are subscribed to, when the group uses the "consumer" protocol.
    /// `None`: the group has members but their subscriptions cannot be read.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.members.is_empty() {
            return Some(vec![]);
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut all = Vec::new();
        for m in self.members.values() {
            all.extend(subscribed_topics(&m.metadata_for(&protocol))?);
        }
        Some(all)
    }

    pub(crate) fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.static_members.get(instance_id).map(String::as_str)
    }

    pub(crate) fn touch_member(&mut self, member_id: &str, now_ms: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
        }
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }
}
