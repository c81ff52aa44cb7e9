//! Committed offsets of a group, and who may commit them.

use super::GroupError;
use super::state::{Group, GroupState};

/// One committed position, as OffsetCommit stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

impl Group {
    /// Kafka's doCommitOffsets checks: a simple commit (generation < 0) needs an Empty group;
    /// a member's commit needs its member id and the current generation. Commits during
    /// PreparingRebalance are accepted, so members can commit before they rejoin.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
            GroupState::Empty if generation < 0 => return Ok(()),
            _ => {}
        }
        if instance_id.is_some_and(|i| {
            self.static_member(i)
                .is_some_and(|holder| holder != member_id)
        }) {
            return Err(GroupError::FencedInstanceId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// A member committing shows it is alive, as a heartbeat would.
    pub fn commit_seen(&mut self, member_id: &str, now_ms: i64) {
        self.touch_member(member_id, now_ms);
    }
}
