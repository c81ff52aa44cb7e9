//! The controller's pure decisions: validating topic requests and placing partitions on shards.
//! Persistence and broadcast live in `shard/`.

use super::{MetadataState, PartitionRecord, TopicRecord};
use crate::limits::{TOPIC_NAME_LENGTH_MAX, TOPIC_PARTITIONS_MAX};

/// Names the broker keeps for itself (their directories would collide with internal logs).
pub const RESERVED_TOPIC_NAMES: &[&str] = &["__consumer_offsets", "__transaction_state"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    #[error("Topic '{0}' does not exist.")]
    Unknown(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("Number of partitions must be in 1..={max}, was {0}.", max = TOPIC_PARTITIONS_MAX)]
    InvalidPartitions(i32),
    #[error(
        "Replication factor must be 1 (or -1 for the default): Sable has one replica per partition and shards of one machine are not failure domains. Was {0}."
    )]
    InvalidReplicationFactor(i16),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    Storage(String),
    #[error("the controller is not reachable")]
    ControllerUnavailable,
    #[error(
        "Topic currently has {current} partitions, which is not fewer than the requested {requested}."
    )]
    PartitionsNotIncreased { current: i32, requested: i32 },
}

/// What CreateTopics (or auto-create) asks for, after defaults are resolved.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Explicit placement: partition index -> shard, when the client gave replica assignments.
    pub assignment: Option<Vec<u16>>,
    pub configs: Vec<(String, String)>,
}

/// Kafka's topic name rule: 1..=249 chars of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let invalid = |why: &str| {
        Err(TopicError::InvalidName(format!(
            "Topic name \"{name}\" is illegal, {why}"
        )))
    };
    if name.is_empty() {
        return invalid("it can't be empty");
    }
    if name == "." || name == ".." {
        return invalid("it cannot be \".\" or \"..\"");
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return invalid(&format!(
            "it can't be longer than {TOPIC_NAME_LENGTH_MAX} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("it contains a character other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// Checks a spec against the current state; on success returns the topic to add.
pub fn plan_create(
    state: &MetadataState,
    spec: &TopicSpec,
    shard_count: usize,
    id: [u8; 16],
) -> Result<TopicRecord, TopicError> {
    assert!(shard_count > 0);
    validate_topic_name(&spec.name)?;
    if RESERVED_TOPIC_NAMES.contains(&spec.name.as_str())
        || state.topics.iter().any(|t| t.name == spec.name)
    {
        return Err(TopicError::AlreadyExists(spec.name.clone()));
    }
    if spec.replication_factor != 1 {
        return Err(TopicError::InvalidReplicationFactor(
            spec.replication_factor,
        ));
    }
    if spec.num_partitions < 1 || spec.num_partitions > TOPIC_PARTITIONS_MAX {
        return Err(TopicError::InvalidPartitions(spec.num_partitions));
    }
    let shards: Vec<u16> = match &spec.assignment {
        Some(a) => {
            if a.len() != spec.num_partitions as usize {
                return Err(TopicError::InvalidReplicaAssignment(
                    "assignment must name every partition".into(),
                ));
            }
            if let Some(bad) = a.iter().find(|&&s| usize::from(s) >= shard_count) {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "no broker for shard {bad}"
                )));
            }
            a.clone()
        }
        None => place(state, spec.num_partitions, shard_count),
    };
    Ok(TopicRecord {
        name: spec.name.clone(),
        id,
        partitions: shards
            .into_iter()
            .map(|shard| PartitionRecord {
                shard,
                leader_epoch: 0,
            })
            .collect(),
        configs: spec.configs.clone(),
    })
}

/// Round-robin placement continuing where the existing partitions left off, so that many small
/// topics still spread evenly over shards.
fn place(state: &MetadataState, num_partitions: i32, shard_count: usize) -> Vec<u16> {
    let existing: usize = state.topics.iter().map(|t| t.partitions.len()).sum();
    (0..num_partitions as usize)
        .map(|p| ((existing + p) % shard_count) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, n: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            num_partitions: n,
            replication_factor: 1,
            assignment: None,
            configs: vec![],
        }
    }

    #[test]
    fn topic_names_follow_kafka() {
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(TopicError::InvalidName(_))),
                "{bad:?}"
            );
        }
        for good in ["a", "a.b_c-D9", "...", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn placement_spreads_evenly_and_continues() {
        let mut state = MetadataState::default();
        let t = plan_create(&state, &spec("a", 3), 2, [0; 16]).unwrap();
        assert_eq!(
            t.partitions.iter().map(|p| p.shard).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        state.topics.push(t);
        let t = plan_create(&state, &spec("b", 3), 2, [1; 16]).unwrap();
        assert_eq!(
            t.partitions.iter().map(|p| p.shard).collect::<Vec<_>>(),
            [1, 0, 1]
        );
    }

    #[test]
    fn create_errors() {
        let mut state = MetadataState::default();
        state
            .topics
            .push(plan_create(&state, &spec("a", 1), 2, [0; 16]).unwrap());
        assert_eq!(
            plan_create(&state, &spec("a", 1), 2, [0; 16]),
            Err(TopicError::AlreadyExists("a".into()))
        );
        assert_eq!(
            plan_create(&state, &spec("b", 0), 2, [0; 16]),
            Err(TopicError::InvalidPartitions(0))
        );
        let mut s = spec("c", 1);
        s.replication_factor = 3;
        assert_eq!(
            plan_create(&state, &s, 2, [0; 16]),
            Err(TopicError::InvalidReplicationFactor(3))
        );
        assert!(matches!(
            plan_create(&state, &spec("__consumer_offsets", 1), 2, [0; 16]),
            Err(TopicError::AlreadyExists(_))
        ));
    }
}
