//! CreatePartitions: the controller's pure decision on growing a topic. Partitions only grow
//! (Kafka cannot shrink a topic either); new ones go to the shards holding the fewest partitions
//! of that topic, so a topic's load stays spread.

use super::controller::TopicError;
use super::{MetadataState, PartitionRecord};
use crate::limits::TOPIC_PARTITIONS_MAX;

/// What CreatePartitions asks for one topic.
#[derive(Clone, Debug)]
pub struct PartitionGrowth {
    pub topic: String,
    /// The total partition count wanted.
    pub count: i32,
    /// Shards for the new partitions only, in order, when the client gave assignments.
    pub assignment: Option<Vec<u16>>,
}

/// The partitions to append to the topic.
pub fn plan_growth(
    state: &MetadataState,
    growth: &PartitionGrowth,
    shard_count: usize,
) -> Result<Vec<PartitionRecord>, TopicError> {
    assert!(shard_count > 0);
    let topic = state
        .topics
        .iter()
        .find(|t| t.name == growth.topic)
        .ok_or_else(|| TopicError::Unknown(growth.topic.clone()))?;
    let current = topic.partitions.len() as i32;
    if growth.count <= current {
        return Err(TopicError::PartitionsNotIncreased {
            current,
            requested: growth.count,
        });
    }
    if growth.count > TOPIC_PARTITIONS_MAX {
        return Err(TopicError::InvalidPartitions(growth.count));
    }
    let added = (growth.count - current) as usize;
    let shards: Vec<u16> = match &growth.assignment {
        Some(a) => {
            if a.len() != added {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    a.len()
                )));
            }
            if let Some(bad) = a.iter().find(|&&s| usize::from(s) >= shard_count) {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "no broker for shard {bad}"
                )));
            }
            a.clone()
        }
        None => {
            let mut load = vec![0usize; shard_count];
            for p in &topic.partitions {
                load[usize::from(p.shard) % shard_count] += 1;
            }
            (0..added)
                .map(|_| {
                    let (shard, _) = load
                        .iter()
                        .enumerate()
                        .min_by_key(|&(i, n)| (*n, i))
                        .expect("at least one shard");
                    load[shard] += 1;
                    shard as u16
                })
                .collect()
        }
    };
    Ok(shards
        .into_iter()
        .map(|shard| PartitionRecord {
            shard,
            leader_epoch: 0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicRecord;

    fn state(shards: &[u16]) -> MetadataState {
        MetadataState {
            topics: vec![TopicRecord {
                name: "t".into(),
                id: [1; 16],
                partitions: shards
                    .iter()
                    .map(|&shard| PartitionRecord {
                        shard,
                        leader_epoch: 0,
                    })
                    .collect(),
                configs: vec![],
            }],
            ..MetadataState::default()
        }
    }

    fn grow(count: i32) -> PartitionGrowth {
        PartitionGrowth {
            topic: "t".into(),
            count,
            assignment: None,
        }
    }

    #[test]
    fn new_partitions_fill_the_least_loaded_shards() {
        let got = plan_growth(&state(&[0, 0]), &grow(5), 2).unwrap();
        assert_eq!(got.iter().map(|p| p.shard).collect::<Vec<_>>(), [1, 1, 0]);
    }

    #[test]
    fn partitions_only_grow() {
        assert_eq!(
            plan_growth(&state(&[0, 1]), &grow(2), 2),
            Err(TopicError::PartitionsNotIncreased {
                current: 2,
                requested: 2
            })
        );
        assert!(matches!(
            plan_growth(&state(&[0]), &grow(TOPIC_PARTITIONS_MAX + 1), 2),
            Err(TopicError::InvalidPartitions(_))
        ));
        let mut g = grow(3);
        g.topic = "nope".into();
        assert_eq!(
            plan_growth(&state(&[0]), &g, 2),
            Err(TopicError::Unknown("nope".into()))
        );
        g = grow(3);
        g.assignment = Some(vec![1]);
        assert!(matches!(
            plan_growth(&state(&[0]), &g, 2),
            Err(TopicError::InvalidReplicaAssignment(_))
        ));
        g.assignment = Some(vec![1, 1]);
        assert_eq!(plan_growth(&state(&[0]), &g, 2).unwrap().len(), 2);
    }
}
