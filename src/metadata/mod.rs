//! Cluster metadata: the persisted state the controller (shard 0) owns, the immutable
//! `MetadataImage` every shard reads, and the pure controller decisions (validation, placement).

pub mod controller;
pub mod partitions;
pub mod topic_config;

use std::collections::HashMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{ShardId, TopicId};

/// One partition as persisted: the shard it was placed on and its leader epoch.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    pub shard: u16,
    pub leader_epoch: i32,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionRecord>,
    /// Topic configs set explicitly (Kafka names), in the order given.
    pub configs: Vec<(String, String)>,
}

/// Everything the controller persists; replaced whole on every change.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct MetadataState {
    pub cluster_id: String,
    /// Bumped on every change; shards ignore images older than the one they have.
    pub version: u64,
    pub topics: Vec<TopicRecord>,
    /// First producer id not yet handed to a shard; blocks are reserved here and persisted
    /// before use, so an id is never given out twice, even across restarts.
    pub next_producer_id: i64,
}

impl MetadataState {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("metadata serializes")
            .to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataState, String> {
        // rkyv wants aligned input; a Vec<u8> read from disk may not be, so copy into an AlignedVec.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<MetadataState, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }
}

/// A read-only view of the metadata, shared by every shard (`Arc`) and replaced whole on change.
#[derive(Debug, Default)]
pub struct MetadataImage {
    pub state: MetadataState,
    pub shard_count: usize,
    by_name: HashMap<String, usize>,
    by_id: HashMap<TopicId, usize>,
}

impl MetadataImage {
    pub fn new(state: MetadataState, shard_count: usize) -> MetadataImage {
        assert!(shard_count > 0);
        let by_name = state
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let by_id = state
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (TopicId(t.id), i))
            .collect();
        MetadataImage {
            state,
            shard_count,
            by_name,
            by_id,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.by_name.get(name).map(|&i| &self.state.topics[i])
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicRecord> {
        self.by_id.get(&id).map(|&i| &self.state.topics[i])
    }

    pub fn topics(&self) -> &[TopicRecord] {
        &self.state.topics
    }

    /// The shard that owns a partition. A partition placed on a shard that no longer exists (the
    /// broker restarted with fewer shards) moves to `shard % shard_count`: partition directories
    /// are per partition, so any shard can open them.
    pub fn owner(&self, partition: &PartitionRecord) -> ShardId {
        ShardId((usize::from(partition.shard) % self.shard_count) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_rkyv() {
        let s = MetadataState {
            cluster_id: "c".into(),
            version: 3,
            topics: vec![TopicRecord {
                name: "t".into(),
                id: [1; 16],
                partitions: vec![PartitionRecord {
                    shard: 1,
                    leader_epoch: 0,
                }],
                configs: vec![("retention.ms".into(), "1000".into())],
            }],
            next_producer_id: 2000,
        };
        let bytes = s.encode();
        assert_eq!(MetadataState::decode(&bytes).unwrap(), s);
        assert!(MetadataState::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn owner_wraps_when_shards_shrink() {
        let img = MetadataImage::new(MetadataState::default(), 2);
        assert_eq!(
            img.owner(&PartitionRecord {
                shard: 3,
                leader_epoch: 0
            }),
            ShardId(1)
        );
    }
}
