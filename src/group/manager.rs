//! Every group one shard coordinates. Groups are created by their first JoinGroup or
//! OffsetCommit and forgotten when deleted.

use std::collections::{HashMap, HashSet};

use futures::channel::oneshot;

use super::offsets::CommittedOffset;
use super::state::{Group, GroupState, JoinParams, JoinResult, SyncParams, SyncResult};
use super::{GroupDescription, GroupError, GroupListing, MemberDescription, OFFSETS_RETENTION_MS};
use crate::types::TopicPartition;

pub struct GroupManager {
    groups: HashMap<String, Group>,
    /// Kafka: group.initial.rebalance.delay.ms.
    initial_rebalance_delay_ms: i64,
}

fn ready<T>(value: T) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(value);
    rx
}

impl GroupManager {
    pub fn new(initial_rebalance_delay_ms: i64) -> GroupManager {
        assert!(initial_rebalance_delay_ms >= 0);
        GroupManager {
            groups: HashMap::new(),
            initial_rebalance_delay_ms,
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn join(
        &mut self,
        group_id: &str,
        p: JoinParams,
        now_ms: i64,
    ) -> oneshot::Receiver<JoinResult> {
        if group_id.is_empty() {
            return ready(JoinResult::error(GroupError::InvalidGroupId, &p.member_id));
        }
        if !self.groups.contains_key(group_id) {
            if !p.member_id.is_empty() {
                return ready(JoinResult::error(GroupError::UnknownMemberId, &p.member_id));
            }
            self.groups
                .insert(group_id.to_string(), Group::new(group_id.to_string()));
        }
        // Kafka's member id: the client id, a dash and a random UUID.
        let new_member_id = format!("{}-{}", p.client_id, uuid::Uuid::new_v4());
        let delay = self.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("inserted above");
        group.join(p, new_member_id, delay, now_ms)
    }

    pub fn sync(
        &mut self,
        group_id: &str,
        p: SyncParams,
        now_ms: i64,
    ) -> oneshot::Receiver<SyncResult> {
        match self.groups.get_mut(group_id) {
            Some(g) => g.sync(p, now_ms),
            None => ready(SyncResult::error(GroupError::UnknownMemberId)),
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        match self.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup for each (member id, group.instance.id); a missing group answers every
    /// member UNKNOWN_MEMBER_ID, as Kafka.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now_ms: i64,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Ok(members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect());
        };
        if g.state() == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Ok(members
            .iter()
            .map(|(id, instance)| g.leave(id, instance.as_deref(), now_ms))
            .collect())
    }

    /// May this member commit offsets for the group now?
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        match self.groups.get(group_id) {
            Some(g) => g.check_commit(member_id, instance_id, generation),
            // The group only stores offsets (a simple consumer): it is created on commit.
            None if generation < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration),
        }
    }

    /// Stores offsets that `check_commit` admitted and the log made durable.
    pub fn commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        now_ms: i64,
    ) {
        let g = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string()));
        g.commit_seen(member_id, now_ms);
        g.offsets.extend(offsets);
    }

    /// Committed offsets of `tps`, or of every partition when `tps` is `None`. Partitions
    /// without a commit are left out; the handler answers them with offset -1.
    pub fn committed(
        &self,
        group_id: &str,
        tps: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, CommittedOffset)> {
        let Some(g) = self.groups.get(group_id) else {
            return vec![];
        };
        match tps {
            None => g
                .offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), o.clone()))
                .collect(),
            Some(tps) => tps
                .iter()
                .filter_map(|tp| g.offsets.get(tp).map(|o| (tp.clone(), o.clone())))
                .collect(),
        }
    }

    /// Groups in one of `states` (all when empty), matched case-insensitively as Kafka.
    pub fn list(&self, states: &[String]) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .groups
            .values()
            .filter(|g| g.state() != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state().name()))
            })
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// Kafka's group summary: members' metadata and assignments only once Stable.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: vec![],
            };
        };
        let stable = g.state() == GroupState::Stable;
        let protocol = if stable {
            g.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for_protocol(&protocol)
                } else {
                    Default::default()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Default::default()
                },
            })
            .collect();
        GroupDescription {
            group_id: group_id.to_string(),
            state: g.state(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            members,
        }
    }

    /// DeleteGroups: only an Empty group goes, with its offsets.
    pub fn delete(&mut self, group_id: &str) -> Result<(), GroupError> {
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        g.delete()?;
        self.groups.remove(group_id);
        Ok(())
    }

    /// OffsetDelete: refused per partition while members are subscribed to its topic.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        tps: &[TopicPartition],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if g.state() == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        let subscribed: HashSet<String> = g
            .subscribed_topics()
            .ok_or(GroupError::NonEmptyGroup)?
            .into_iter()
            .collect();
        Ok(tps
            .iter()
            .map(|tp| {
                if subscribed.contains(&tp.topic) {
                    return Err(GroupError::GroupSubscribedToTopic);
                }
                g.offsets.remove(tp);
                Ok(())
            })
            .collect())
    }

    /// Every topic some group has an offset for.
    pub fn committed_topics(&self) -> HashSet<String> {
        self.groups
            .values()
            .flat_map(|g| g.offsets.keys().map(|tp| tp.topic.clone()))
            .collect()
    }

    /// Drops offsets of topics that no longer exist.
    pub fn forget_topics(&mut self, deleted: &HashSet<String>) {
        for g in self.groups.values_mut() {
            g.offsets.retain(|tp, _| !deleted.contains(&tp.topic));
        }
    }

    /// Runs every group's timers that are due.
    pub fn tick(&mut self, now_ms: i64) {
        for g in self.groups.values_mut() {
            if g.next_deadline_ms().is_some_and(|d| d <= now_ms) {
                g.tick(now_ms);
            }
        }
    }

    /// offsets.retention.minutes: an Empty group's offsets older than the retention go; a
    /// group left with neither members nor offsets is forgotten. Returns what was removed.
    pub fn expire_offsets(&mut self, now_ms: i64) -> Vec<(String, TopicPartition)> {
        let mut removed = Vec::new();
        for g in self.groups.values_mut() {
            if g.state() != GroupState::Empty {
                continue;
            }
            let old: Vec<TopicPartition> = g
                .offsets
                .iter()
                .filter(|(_, o)| o.commit_timestamp_ms + OFFSETS_RETENTION_MS <= now_ms)
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in old {
                g.offsets.remove(&tp);
                removed.push((g.id.clone(), tp));
            }
        }
        self.groups
            .retain(|_, g| g.state() != GroupState::Empty || !g.offsets.is_empty());
        removed
    }

    /// The earliest deadline among all groups, for the shard's single timer.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.groups
            .values()
            .filter_map(Group::next_deadline_ms)
            .min()
    }

    /// Replay: an offset record from the log.
    pub fn restore_offset(
        &mut self,
        group_id: &str,
        tp: TopicPartition,
        o: Option<CommittedOffset>,
    ) {
        match o {
            Some(o) => {
                self.groups
                    .entry(group_id.to_string())
                    .or_insert_with(|| Group::new(group_id.to_string()))
                    .offsets
                    .insert(tp, o);
            }
            None => {
                if let Some(g) = self.groups.get_mut(group_id) {
                    g.offsets.remove(&tp);
                }
            }
        }
    }

    /// Replay: a group tombstone (the group was deleted).
    pub fn restore_deleted(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }
}
