//! The operations APIs through `dispatch` at every version they advertise: the request decodes,
//! the response encodes, and the answer says what the image holds.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::tests::{context, request, response_body};
use super::{Context, Frame, HandlerError, dispatch};
use crate::metadata::{MetadataImage, MetadataState, PartitionRecord, TopicRecord};
use crate::protocol::frame::header_prefix;

fn ctx_with_topic() -> Rc<Context> {
    let ctx = context();
    let state = MetadataState {
        cluster_id: "cluster".into(),
        version: 2,
        topics: vec![TopicRecord {
            name: "t".into(),
            id: [9; 16],
            partitions: (0..3)
                .map(|i| PartitionRecord {
                    shard: i % 2,
                    leader_epoch: 0,
                })
                .collect(),
            configs: vec![("retention.ms".into(), "5000".into())],
        }],
        next_producer_id: 0,
    };
    *ctx.metadata.borrow_mut() = Arc::new(MetadataImage::new(state, 2));
    ctx
}

fn run<T: Decodable>(ctx: &Rc<Context>, key: ApiKey, version: i16, body: Bytes) -> T {
    let prefix = header_prefix(&body).unwrap();
    let frame: Result<Option<Frame>, HandlerError> =
        futures::executor::block_on(dispatch(ctx, prefix, body, None));
    let mut body = response_body(frame.unwrap().unwrap(), key, version);
    T::decode(&mut body, version).unwrap()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[test]
fn describe_configs_topics_and_brokers_at_every_version() {
    let ctx = ctx_with_topic();
    for version in super::describe_configs::VERSIONS {
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(version >= 3)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configuration_keys(Some(vec![s("retention.ms"), s("cleanup.policy")])),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("8")),
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("missing")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("99")),
            ]);
        let resp: DescribeConfigsResponse = run(
            &ctx,
            ApiKey::DescribeConfigs,
            version,
            request(ApiKey::DescribeConfigs, version, &req),
        );
        let r = &resp.results;
        assert_eq!(r[0].error_code, 0, "v{version}");
        assert_eq!(r[0].configs.len(), 2);
        let retention = r[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("5000"));
        assert_eq!(retention.config_source, 1);
        assert_eq!(retention.synonyms.len(), 2);
        if version >= 3 {
            assert!(retention.documentation.is_some());
            assert_eq!(retention.config_type, 5);
        }
        assert_eq!(r[1].error_code, 0);
        let node = r[1]
            .configs
            .iter()
            .find(|c| c.name.as_str() == "node.id")
            .unwrap();
        assert_eq!(node.value.as_deref(), Some("8"));
        assert!(node.read_only);
        assert_eq!(r[2].error_code, 3, "unknown topic");
        assert_eq!(r[3].error_code, 42, "unknown broker: INVALID_REQUEST");
    }
}

#[test]
fn describe_cluster_at_every_version() {
    let ctx = ctx_with_topic();
    for version in super::describe_cluster::VERSIONS {
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let resp: DescribeClusterResponse = run(
            &ctx,
            ApiKey::DescribeCluster,
            version,
            request(ApiKey::DescribeCluster, version, &req),
        );
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.cluster_id.as_str(), "cluster");
        assert_eq!(resp.controller_id.0, 7);
        let brokers: Vec<(i32, i32)> = resp
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.port))
            .collect();
        assert_eq!(brokers, [(7, 9093), (8, 9094)], "v{version}");
    }
}

#[test]
fn offset_for_leader_epoch_refuses_partitions_of_other_shards() {
    let ctx = ctx_with_topic();
    for version in super::offset_for_leader_epoch::VERSIONS {
        let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![
                    // Partition 1 lives on shard 1; this context is shard 0.
                    OffsetForLeaderPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(-1),
                ]),
        ]);
        let resp: OffsetForLeaderEpochResponse = run(
            &ctx,
            ApiKey::OffsetForLeaderEpoch,
            version,
            request(ApiKey::OffsetForLeaderEpoch, version, &req),
        );
        assert_eq!(
            resp.topics[0].partitions[0].error_code, 6,
            "NOT_LEADER_OR_FOLLOWER"
        );
    }
}

#[test]
fn describe_topic_partitions_paginates() {
    let ctx = ctx_with_topic();
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![TopicRequest::default().with_name(TopicName(s("t")))])
        .with_response_partition_limit(2);
    let resp: DescribeTopicPartitionsResponse = run(
        &ctx,
        ApiKey::DescribeTopicPartitions,
        0,
        request(ApiKey::DescribeTopicPartitions, 0, &req),
    );
    assert_eq!(resp.topics[0].partitions.len(), 2);
    assert_eq!(resp.topics[0].partitions[1].leader_id.0, 8);
    let cursor = resp.next_cursor.expect("more to come");
    assert_eq!(
        (cursor.topic_name.0.as_str(), cursor.partition_index),
        ("t", 2)
    );
    let req = req.with_cursor(Some(
        describe_topic_partitions_request::Cursor::default()
            .with_topic_name(TopicName(s("t")))
            .with_partition_index(2),
    ));
    let resp: DescribeTopicPartitionsResponse = run(
        &ctx,
        ApiKey::DescribeTopicPartitions,
        0,
        request(ApiKey::DescribeTopicPartitions, 0, &req),
    );
    assert_eq!(resp.topics[0].partitions.len(), 1);
    assert_eq!(resp.topics[0].partitions[0].partition_index, 2);
    assert!(resp.next_cursor.is_none());
}

#[test]
fn describe_log_dirs_at_every_version() {
    let ctx = ctx_with_topic();
    for version in super::describe_log_dirs::VERSIONS {
        let resp: DescribeLogDirsResponse = run(
            &ctx,
            ApiKey::DescribeLogDirs,
            version,
            request(
                ApiKey::DescribeLogDirs,
                version,
                &DescribeLogDirsRequest::default(),
            ),
        );
        assert_eq!(resp.results.len(), 1, "v{version}");
        assert_eq!(resp.results[0].error_code, 0);
        // No partition is open in this context.
        assert!(resp.results[0].topics.is_empty());
    }
}

#[test]
fn incremental_alter_configs_refuses_before_asking_the_controller() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let ctx = ctx_with_topic();
    for version in super::incremental_alter_configs::VERSIONS {
        let resource = |t: i8, name: &str, op: i8| {
            AlterConfigsResource::default()
                .with_resource_type(t)
                .with_resource_name(s(name))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(op)
                        .with_value(Some(s("1"))),
                ])
        };
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            resource(4, "7", 0),  // broker: static
            resource(2, "t", 9),  // unknown operation
            resource(16, "x", 0), // client metrics: not supported
            resource(2, "dup", 0),
            resource(2, "dup", 0), // twice in one request
        ]);
        let resp: IncrementalAlterConfigsResponse = run(
            &ctx,
            ApiKey::IncrementalAlterConfigs,
            version,
            request(ApiKey::IncrementalAlterConfigs, version, &req),
        );
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [42, 42, 42, 42, 42], "v{version}");
        assert!(
            resp.responses[0]
                .error_message
                .as_deref()
                .unwrap()
                .contains("static")
        );
    }
}
