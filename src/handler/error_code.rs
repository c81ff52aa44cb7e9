//! The only place that turns internal errors into Kafka error codes. A client's next move
//! (retry, refresh metadata, give up) depends on the code, so every choice is made here, with no
//! catch-all arms.

use kafka_protocol::ResponseError;

use crate::group::GroupError;
use crate::log::LogError;
use crate::metadata::controller::TopicError;
use crate::protocol::batch::BatchError;

pub const NONE: i16 = 0;

pub fn code(e: ResponseError) -> i16 {
    e.code()
}

pub fn log_error(e: &LogError) -> i16 {
    code(match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Corrupt { .. } => ResponseError::KafkaStorageError,
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::SyncFailed | LogError::Io(_) => ResponseError::KafkaStorageError,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::DuplicateSequence { .. } => ResponseError::DuplicateSequenceNumber,
    })
}

pub fn topic_error(e: &TopicError) -> i16 {
    code(match e {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Storage(_) => ResponseError::KafkaStorageError,
        TopicError::ControllerUnavailable => ResponseError::NotController,
        TopicError::PartitionsNotIncreased { .. } => ResponseError::InvalidPartitions,
    })
}

pub fn batch_error(e: &BatchError) -> i16 {
    code(match e {
        BatchError::Corrupt { .. } => ResponseError::CorruptMessage,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
    })
}

pub fn group_error(e: &GroupError) -> i16 {
    code(match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
    })
}

/// A failed write to the offsets log, as Kafka answers an OffsetCommit whose append failed:
/// the client retries against a coordinator that may have recovered.
pub fn offsets_log_error(e: &LogError) -> i16 {
    code(match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::UnknownServerError,
        LogError::Corrupt { .. } => ResponseError::CoordinatorNotAvailable,
        LogError::Closed => ResponseError::NotCoordinator,
        LogError::SyncFailed | LogError::Io(_) => ResponseError::CoordinatorNotAvailable,
        // The offsets log is written without producer ids; these cannot happen there.
        LogError::OutOfOrderSequence { .. }
        | LogError::InvalidProducerEpoch { .. }
        | LogError::DuplicateSequence { .. } => ResponseError::UnknownServerError,
    })
}

/// A config resource refused as a whole (DescribeConfigs, AlterConfigs).
pub fn config_resource_error(e: &super::describe_configs::ResourceError) -> i16 {
    use super::describe_configs::ResourceError;
    code(match e {
        ResourceError::UnsupportedType(_) => ResponseError::InvalidRequest,
        ResourceError::UnknownBroker(_) => ResponseError::InvalidRequest,
        ResourceError::BrokerReadOnly => ResponseError::InvalidRequest,
        ResourceError::Duplicate(_) => ResponseError::InvalidRequest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(topic_error(&TopicError::AlreadyExists("t".into())), 36);
        assert_eq!(topic_error(&TopicError::InvalidName("x".into())), 17);
        assert_eq!(topic_error(&TopicError::InvalidPartitions(0)), 37);
        assert_eq!(topic_error(&TopicError::InvalidReplicationFactor(3)), 38);
        assert_eq!(topic_error(&TopicError::Unknown("t".into())), 3);
        assert_eq!(
            batch_error(&BatchError::Corrupt {
                position_bytes: 0,
                reason: "crc"
            }),
            2
        );
        assert_eq!(batch_error(&BatchError::Invalid("x")), 87);
        assert_eq!(
            batch_error(&BatchError::TooLarge {
                size_bytes: 2,
                max_bytes: 1
            }),
            10
        );
        assert_eq!(code(ResponseError::UnsupportedVersion), 35);
        assert_eq!(code(ResponseError::NotLeaderOrFollower), 6);
        assert_eq!(group_error(&GroupError::NotCoordinator), 16);
        assert_eq!(group_error(&GroupError::RebalanceInProgress), 27);
        assert_eq!(group_error(&GroupError::MemberIdRequired), 79);
        assert_eq!(group_error(&GroupError::FencedInstanceId), 82);
        let seq = LogError::OutOfOrderSequence {
            producer_id: 1,
            expected: 1,
            got: 2,
        };
        assert_eq!(log_error(&seq), 45);
        let epoch = LogError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1,
        };
        assert_eq!(log_error(&epoch), 47);
        assert_eq!(
            log_error(&LogError::DuplicateSequence { producer_id: 1 }),
            46
        );
    }
}
