//! Consumer groups, classic protocol: one state machine per group (`state.rs`), committed offsets
//! (`offsets.rs`), the records that make both durable (`record.rs`), and the `GroupManager` that
//! owns every group of one shard.
//!
//! Runtime-free: time is an argument (`now_ms`), never a call, so tests drive the clock.
//! Join and sync answers that must wait for other members are parked as `oneshot::Sender`s in
//! the group and completed by a later request or by `tick`; handlers await the receivers.

pub mod manager;
pub mod offsets;
pub mod record;
pub mod state;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use manager::GroupManager;
pub use offsets::CommittedOffset;
pub use state::{GroupState, JoinParams, JoinResult, JoinedMember, SyncParams, SyncResult};

/// Kafka: group.min.session.timeout.ms.
pub const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
/// Kafka: group.max.session.timeout.ms.
pub const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Kafka: offset.metadata.max.bytes.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Kafka: offsets.retention.minutes (7 days), in ms.
pub const OFFSETS_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Members one group may hold (Kafka: group.max.size is unbounded by default; we name a bound).
pub const GROUP_MEMBERS_MAX: usize = 10_000;

const _: () = assert!(SESSION_TIMEOUT_MIN_MS < SESSION_TIMEOUT_MAX_MS);

/// What a group operation can fail with; `handler::error_code` picks the Kafka code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("not the coordinator of this group")]
    NotCoordinator,
    #[error("session timeout outside group.min/max.session.timeout.ms")]
    InvalidSessionTimeout,
    #[error("member id required")]
    MemberIdRequired,
    #[error("static member fenced by a newer member with the same group.instance.id")]
    FencedInstanceId,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("group is full")]
    GroupMaxSizeReached,
}

/// One protocol a member supports (e.g. "range", "roundrobin"), with its opaque metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// The shard coordinating `key` (a group id or a transactional id). FNV-1a over the bytes: it
/// must be stable across restarts and processes, which std's randomized hasher is not.
pub fn coordinator_shard(key: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    let mut hash: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % shard_count
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it; a missing group is `Dead` with no members, as Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// The topics a "consumer" protocol subscription names (ConsumerProtocolSubscription: version
/// i16, then an array of strings). `None` when the bytes are not such a subscription.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut b = metadata;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head.to_vec())
    };
    take(&mut b, 2)?;
    let count = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(b.len() / 2));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let name = take(&mut b, usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name).ok()?);
    }
    Some(topics)
}
