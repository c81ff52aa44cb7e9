//! Cluster view: which broker leads which partition, topic creation, offsets.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::wire::{Conn, Result, WireError, error_name};

const TOPIC_ALREADY_EXISTS: i16 = 36;
const CREATE_TOPICS_TIMEOUT_MS: i32 = 30_000;
/// How long we wait for a new topic's partitions to get leaders in Metadata.
const TOPIC_READY_WAIT_MAX: Duration = Duration::from_secs(15);
/// ListOffsets special timestamps.
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Leaders of one topic's partitions and the brokers' addresses.
#[derive(Clone, Debug)]
pub struct TopicLayout {
    pub topic: String,
    /// Partition index -> leader node id.
    pub leaders: BTreeMap<i32, i32>,
    /// Node id -> "host:port".
    pub brokers: BTreeMap<i32, String>,
}

impl TopicLayout {
    /// Partitions grouped by the broker that leads them.
    pub fn by_leader(&self, partitions: &[i32]) -> BTreeMap<i32, Vec<i32>> {
        let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            out.entry(self.leaders[p]).or_default().push(*p);
        }
        out
    }

    pub fn addr(&self, node: i32) -> Result<&str> {
        self.brokers
            .get(&node)
            .map(String::as_str)
            .ok_or_else(|| WireError::Broker(format!("leader {node} is not among the brokers")))
    }
}

/// Metadata for `topic`; `Ok(None)` if the broker says it does not exist.
pub fn describe(conn: &mut Conn, topic: &str) -> Result<(usize, Option<TopicLayout>)> {
    let version = conn.versions.pick(ApiKey::Metadata, 1..=12)?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    let resp = conn.call(&req, version)?;
    let brokers: BTreeMap<i32, String> = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let Some(t) = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
    else {
        return Ok((brokers.len(), None));
    };
    if t.error_code != 0 || t.partitions.is_empty() {
        return Ok((brokers.len(), None));
    }
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        if p.error_code != 0 || p.leader_id.0 < 0 {
            return Ok((brokers.len(), None)); // not ready yet: treated as absent by the caller
        }
        leaders.insert(p.partition_index, p.leader_id.0);
    }
    Ok((
        brokers.len(),
        Some(TopicLayout {
            topic: topic.to_string(),
            leaders,
            brokers,
        }),
    ))
}

/// Looks `topic` up, creating it with `partitions` (0 = one per broker) if it is missing, and
/// waits until every partition has a leader.
pub fn ensure_topic(conn: &mut Conn, topic: &str, partitions: usize) -> Result<TopicLayout> {
    let (broker_count, found) = describe(conn, topic)?;
    if let Some(layout) = found {
        return Ok(layout);
    }
    let wanted = if partitions == 0 {
        broker_count.max(1)
    } else {
        partitions
    };
    create_topic(conn, topic, wanted)?;
    let started = Instant::now();
    loop {
        if let (_, Some(layout)) = describe(conn, topic)? {
            return Ok(layout);
        }
        if started.elapsed() > TOPIC_READY_WAIT_MAX {
            return Err(WireError::Broker(format!(
                "topic {topic} has no leaders after creation"
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(conn: &mut Conn, topic: &str, partitions: usize) -> Result<()> {
    let version = conn.versions.pick(ApiKey::CreateTopics, 2..=7)?;
    // Replication factor -1 (the broker's default) exists from v4; older brokers get 1.
    let replication_factor = if version >= 4 { -1 } else { 1 };
    let creatable = CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions as i32)
        .with_replication_factor(replication_factor);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(CREATE_TOPICS_TIMEOUT_MS);
    let resp = conn.call(&req, version)?;
    for t in &resp.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            let msg = t
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            return Err(WireError::Broker(format!(
                "CreateTopics {topic}: {} {msg}",
                error_name(t.error_code)
            )));
        }
    }
    say!("created topic {topic} with {partitions} partitions");
    Ok(())
}

/// Offset for `timestamp` (EARLIEST_TIMESTAMP / LATEST_TIMESTAMP) of each partition, asking each
/// partition's leader.
pub fn list_offsets(
    layout: &TopicLayout,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (leader, parts) in layout.by_leader(partitions) {
        let mut conn = Conn::connect(layout.addr(leader)?)?;
        let version = conn.versions.pick(ApiKey::ListOffsets, 1..=9)?;
        let topic = ListOffsetsTopic::default()
            .with_name(topic_name(&layout.topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            );
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![topic]);
        let resp = conn.call(&req, version)?;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(WireError::Broker(format!(
                        "ListOffsets {}-{}: {}",
                        layout.topic,
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
                out.insert(p.partition_index, p.offset);
            }
        }
    }
    Ok(out)
}
