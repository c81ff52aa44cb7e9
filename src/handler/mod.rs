//! One file per Kafka API. This file holds the handler table (the single source of truth for
//! ApiVersions), the shard-local `Context` handlers work on, and dispatch.
//!
//! Handlers never name glommio: other shards are reached through `Peers`, which `shard/`
//! implements over the mesh (and tests can fake).

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod error_code;
pub mod fetch;
pub mod find_coordinator;
pub mod group_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod probe;
pub mod produce;
pub mod produce_settings;
pub mod sync_group;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::config::Config;
use crate::group::{GroupDescription, GroupListing};
use crate::log::{FileRegion, PartitionLog};
use crate::metadata::MetadataImage;
use crate::metadata::controller::{TopicError, TopicSpec};
use crate::protocol::frame::HeaderPrefix;
use crate::protocol::response::{FrameBuilder, ResponseFrame};
use crate::types::{ShardId, TopicPartition};

pub type Frame = ResponseFrame<FileRegion>;

/// What a handler can fail with that is not a Kafka error code in a response: the connection is
/// closed (Kafka does the same for requests it cannot parse).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed {0:?} request: {1}")]
    Malformed(ApiKey, String),
    #[error("the {0:?} v{1} response does not encode: {2}")]
    Unencodable(ApiKey, i16, String),
}

/// The cross-shard operations a handler may need. Implemented by `shard/` over the mesh.
pub trait Peers {
    /// Asks the controller to create topics; answers once their partitions accept writes.
    fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<[u8; 16], TopicError>>>;
    /// Asks the controller to delete topics; answers once their partitions are gone.
    fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<Result<[u8; 16], TopicError>>>;
    /// A timer on this shard.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()>;
    /// Reserves a block of producer ids from the controller: the first id of the block.
    fn reserve_producer_ids(&self, count: i64) -> LocalBoxFuture<'static, Result<i64, TopicError>>;
    /// The groups another shard coordinates, in the given states (all when empty).
    fn list_groups(
        &self,
        shard: ShardId,
        states: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<GroupListing>>;
    /// Describes groups that another shard coordinates.
    fn describe_groups(
        &self,
        shard: ShardId,
        group_ids: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<GroupDescription>>;
    /// Asks the controller to change topic configs; answers once every shard applied them.
    fn alter_configs(
        &self,
        alterations: Vec<crate::metadata::topic_config::TopicAlteration>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<(), TopicError>>> {
        let _ = validate_only;
        let n = alterations.len();
        Box::pin(async move {
            (0..n)
                .map(|_| Err(TopicError::ControllerUnavailable))
                .collect()
        })
    }
    /// Asks the controller to add partitions; answers once the new ones accept writes.
    fn create_partitions(
        &self,
        growths: Vec<crate::metadata::partitions::PartitionGrowth>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<(), TopicError>>> {
        let _ = validate_only;
        let n = growths.len();
        Box::pin(async move {
            (0..n)
                .map(|_| Err(TopicError::ControllerUnavailable))
                .collect()
        })
    }
}

/// One shard's state as handlers see it. `!Send`: it never leaves its shard.
pub struct Context {
    pub shard: ShardId,
    pub config: Rc<Config>,
    /// Replaced whole when the controller broadcasts a new image.
    pub metadata: RefCell<Arc<MetadataImage>>,
    /// The partitions this shard owns, open.
    pub partitions: RefCell<HashMap<TopicPartition, Rc<PartitionLog>>>,
    pub peers: Rc<dyn Peers>,
    /// The consumer groups this shard coordinates.
    pub groups: group_coordinator::GroupCoordinator,
    /// Producer ids reserved for this shard and not yet handed out.
    pub producer_ids: RefCell<std::ops::Range<i64>>,
    /// The data dir's file system, as last measured (DescribeLogDirs); `None` until then.
    pub disk_space: Cell<Option<crate::log::file::DiskSpace>>,
}

impl Context {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<PartitionLog>> {
        self.partitions.borrow().get(tp).cloned()
    }
}

/// (key, versions advertised in ApiVersions). Advertised may start below what is served where
/// Kafka 4 does the same (Produce from v0, KAFKA-18659: librdkafka refuses brokers without it).
pub const SUPPORTED: &[(ApiKey, RangeInclusive<i16>)] = &[
    (ApiKey::Produce, produce::ADVERTISED),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
    ),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (ApiKey::DescribeLogDirs, describe_log_dirs::VERSIONS),
    (ApiKey::DescribeProducers, describe_producers::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (
        ApiKey::DescribeTopicPartitions,
        describe_topic_partitions::VERSIONS,
    ),
];

/// The versions actually served (decoded and answered) for a key.
fn served(key: ApiKey) -> Option<RangeInclusive<i16>> {
    match key {
        ApiKey::Produce => Some(produce::VERSIONS),
        _ => SUPPORTED
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()),
    }
}

/// Answers one request. `Ok(None)`: no response is owed (Produce with acks=0).
/// `client_ip`: the connection's peer, if known.
pub async fn dispatch(
    ctx: &Rc<Context>,
    prefix: HeaderPrefix,
    mut body: Bytes,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Option<Frame>, HandlerError> {
    let _timer = probe::request_started(prefix.api_key, prefix.api_version, body.len());
    let key = ApiKey::try_from(prefix.api_key)
        .map_err(|_| HandlerError::UnknownApiKey(prefix.api_key))?;
    let version = prefix.api_version;
    if key == ApiKey::ApiVersions && !api_versions::VERSIONS.contains(&version) {
        return Ok(Some(api_versions::unsupported_version(
            prefix.correlation_id,
        )));
    }
    if !served(key).is_some_and(|v| v.contains(&version)) {
        return Err(HandlerError::UnsupportedVersion(key, version));
    }
    let header_version = key.request_header_version(version);
    let header = RequestHeader::decode(&mut body, header_version)
        .map_err(|e| HandlerError::Malformed(key, e.to_string()))?;
    let r = Request {
        correlation_id: prefix.correlation_id,
        version,
        key,
    };
    match key {
        ApiKey::Produce => produce::serve(ctx, r, body).await,
        ApiKey::Fetch => fetch::serve(ctx, r, body).await.map(Some),
        ApiKey::ListOffsets => list_offsets::serve(ctx, r, body).await.map(Some),
        ApiKey::Metadata => metadata::serve(ctx, r, body).await.map(Some),
        ApiKey::ApiVersions => api_versions::serve(ctx, r, body).map(Some),
        ApiKey::CreateTopics => create_topics::serve(ctx, r, body).await.map(Some),
        ApiKey::InitProducerId => init_producer_id::serve(ctx, r, body).await.map(Some),
        ApiKey::DeleteTopics => delete_topics::serve(ctx, r, body).await.map(Some),
        ApiKey::FindCoordinator => find_coordinator::serve(ctx, r, body).await.map(Some),
        ApiKey::JoinGroup => join_group::serve(ctx, r, &header, client_ip, body)
            .await
            .map(Some),
        ApiKey::SyncGroup => sync_group::serve(ctx, r, body).await.map(Some),
        ApiKey::Heartbeat => heartbeat::serve(ctx, r, body).await.map(Some),
        ApiKey::LeaveGroup => leave_group::serve(ctx, r, body).await.map(Some),
        ApiKey::OffsetCommit => offset_commit::serve(ctx, r, body).await.map(Some),
        ApiKey::OffsetFetch => offset_fetch::serve(ctx, r, body).await.map(Some),
        ApiKey::ListGroups => list_groups::serve(ctx, r, body).await.map(Some),
        ApiKey::DescribeGroups => describe_groups::serve(ctx, r, body).await.map(Some),
        ApiKey::DeleteGroups => delete_groups::serve(ctx, r, body).await.map(Some),
        ApiKey::OffsetDelete => offset_delete::serve(ctx, r, body).await.map(Some),
        ApiKey::DescribeConfigs => describe_configs::serve(ctx, r, body).await.map(Some),
        ApiKey::AlterConfigs => alter_configs::serve(ctx, r, body).await.map(Some),
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::serve(ctx, r, body)
            .await
            .map(Some),
        ApiKey::CreatePartitions => create_partitions::serve(ctx, r, body).await.map(Some),
        ApiKey::DescribeCluster => describe_cluster::serve(ctx, r, body).await.map(Some),
        ApiKey::DescribeLogDirs => describe_log_dirs::serve(ctx, r, body).await.map(Some),
        ApiKey::DescribeProducers => describe_producers::serve(ctx, r, body).await.map(Some),
        ApiKey::OffsetForLeaderEpoch => {
            offset_for_leader_epoch::serve(ctx, r, body).await.map(Some)
        }
        ApiKey::DescribeTopicPartitions => describe_topic_partitions::serve(ctx, r, body)
            .await
            .map(Some),
        ApiKey::DeleteRecords => delete_records::serve(ctx, r, body).await.map(Some),
        ApiKey::SaslHandshake
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::WriteTxnMarkers
        | ApiKey::TxnOffsetCommit
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::AlterReplicaLogDirs
        | ApiKey::SaslAuthenticate
        | ApiKey::CreateDelegationToken
        | ApiKey::RenewDelegationToken
        | ApiKey::ExpireDelegationToken
        | ApiKey::DescribeDelegationToken
        | ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments
        | ApiKey::ListPartitionReassignments
        | ApiKey::DescribeClientQuotas
        | ApiKey::AlterClientQuotas
        | ApiKey::DescribeUserScramCredentials
        | ApiKey::AlterUserScramCredentials
        | ApiKey::Vote
        | ApiKey::BeginQuorumEpoch
        | ApiKey::EndQuorumEpoch
        | ApiKey::DescribeQuorum
        | ApiKey::AlterPartition
        | ApiKey::UpdateFeatures
        | ApiKey::Envelope
        | ApiKey::FetchSnapshot
        | ApiKey::BrokerRegistration
        | ApiKey::BrokerHeartbeat
        | ApiKey::UnregisterBroker
        | ApiKey::DescribeTransactions
        | ApiKey::ListTransactions
        | ApiKey::AllocateProducerIds
        | ApiKey::ConsumerGroupHeartbeat
        | ApiKey::ConsumerGroupDescribe
        | ApiKey::ControllerRegistration
        | ApiKey::GetTelemetrySubscriptions
        | ApiKey::PushTelemetry
        | ApiKey::AssignReplicasToDirs
        | ApiKey::ListConfigResources
        | ApiKey::ShareGroupHeartbeat
        | ApiKey::ShareGroupDescribe
        | ApiKey::ShareFetch
        | ApiKey::ShareAcknowledge
        | ApiKey::AddRaftVoter
        | ApiKey::RemoveRaftVoter
        | ApiKey::UpdateRaftVoter
        | ApiKey::InitializeShareGroupState
        | ApiKey::ReadShareGroupState
        | ApiKey::WriteShareGroupState
        | ApiKey::DeleteShareGroupState
        | ApiKey::ReadShareGroupStateSummary
        | ApiKey::DescribeShareGroupOffsets
        | ApiKey::AlterShareGroupOffsets
        | ApiKey::DeleteShareGroupOffsets => unreachable!("served() admits only keys in SUPPORTED"),
    }
}

/// The parts of a request header a handler needs.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub correlation_id: i32,
    pub version: i16,
    pub key: ApiKey,
}

impl Request {
    pub fn decode<T: Decodable>(&self, body: &mut Bytes) -> Result<T, HandlerError> {
        T::decode(body, self.version).map_err(|e| HandlerError::Malformed(self.key, e.to_string()))
    }

    /// Frames a response encoded by the `kafka-protocol` crate. A response that does not encode
    /// at the request's version (a field set that the version lacks) is our bug: it fails this
    /// request and closes its connection, never the broker.
    pub fn respond<T: Encodable>(&self, response: &T) -> Result<Frame, HandlerError> {
        let mut f = FrameBuilder::new(self.correlation_id);
        if self.key.response_header_version(self.version) >= 1 {
            f.buf().put_u8(0); // No tagged fields in the response header.
        }
        if let Err(e) = response.encode(f.buf(), self.version) {
            tracing::error!(api = ?self.key, version = self.version, error = %e, "response does not encode");
            return Err(HandlerError::Unencodable(
                self.key,
                self.version,
                e.to_string(),
            ));
        }
        Ok(f.finish())
    }
}

/// How a request names a topic: by name, or by id from Fetch v13+ / Produce v13+.
#[derive(Clone, Copy)]
pub enum TopicRef<'a> {
    Name(&'a str),
    Id(crate::types::TopicId),
}

/// A partition this shard owns, or the Kafka error code that tells the client where to look.
pub fn local_partition(
    ctx: &Context,
    image: &MetadataImage,
    topic: TopicRef<'_>,
    partition: i32,
) -> Result<(TopicPartition, Rc<PartitionLog>), i16> {
    use kafka_protocol::ResponseError;
    let t = match topic {
        TopicRef::Name(n) => image.topic(n).ok_or_else(|| {
            // Internal and malformed names are refused as Kafka does (Produce to
            // __consumer_offsets: INVALID_TOPIC_EXCEPTION).
            use crate::metadata::controller::{RESERVED_TOPIC_NAMES, validate_topic_name};
            if RESERVED_TOPIC_NAMES.contains(&n) || validate_topic_name(n).is_err() {
                ResponseError::InvalidTopicException.code()
            } else {
                ResponseError::UnknownTopicOrPartition.code()
            }
        })?,
        TopicRef::Id(id) => image
            .topic_by_id(id)
            .ok_or(ResponseError::UnknownTopicId.code())?,
    };
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    if image.owner(p) != ctx.shard {
        return Err(ResponseError::NotLeaderOrFollower.code());
    }
    let tp = TopicPartition::new(t.name.clone(), partition);
    // Owned in the image but not open yet: the broadcast is still being applied on this shard.
    let log = ctx
        .partition(&tp)
        .ok_or(ResponseError::NotLeaderOrFollower.code())?;
    Ok((tp, log))
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod tests;
