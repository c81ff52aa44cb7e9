//! DescribeConfigs for topics (resource type 2) and brokers (4). Topic configs come from
//! `metadata::topic_config`; broker configs are the broker flags, read-only (Sable has no dynamic
//! broker configs). A broker resource is named by its node id; every shard is a broker.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, config_resource_error};
use super::{Context, Frame, HandlerError, Request};
use crate::config::Config;
use crate::log::LogConfig;
use crate::metadata::topic_config::{
    self, BrokerDefaults, ConfigEntry, SOURCE_DEFAULT_CONFIG, SOURCE_STATIC_BROKER_CONFIG,
    TYPE_BOOLEAN, TYPE_INT, TYPE_LIST, TYPE_LONG, TYPE_STRING,
};
use crate::types::{NodeId, ShardId, node_id};

pub const VERSIONS: RangeInclusive<i16> = 1..=4;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Why a whole resource of a config request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("Resource type {0} is not supported; Sable has topic (2) and broker (4) configs.")]
    UnsupportedType(i8),
    #[error(
        "Unexpected broker id, expected one of this broker's node ids or an empty string, but received {0}"
    )]
    UnknownBroker(String),
    #[error("Broker configs are static in Sable: set them by flag or environment and restart.")]
    BrokerReadOnly,
    #[error("Resource '{0}' appears more than once in the request.")]
    Duplicate(String),
}

/// The broker-wide values topic configs fall back to.
pub fn broker_defaults(config: &Config) -> BrokerDefaults {
    BrokerDefaults {
        log: LogConfig {
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            index_interval_bytes: crate::limits::INDEX_INTERVAL_BYTES,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            write_ahead_bytes: config.log_write_ahead_bytes,
        },
        message_max_bytes: config.message_max_bytes,
    }
}

/// The shard a broker resource names: "" (the broker defaults) answers as this shard.
pub fn broker_of(ctx: &Context, name: &str) -> Result<ShardId, ResourceError> {
    if name.is_empty() {
        return Ok(ctx.shard);
    }
    let shards = ctx.image().shard_count as i64;
    match name.parse::<i64>() {
        Ok(id) if (0..shards).contains(&(id - i64::from(ctx.config.node_id_base))) => {
            Ok(ShardId((id - i64::from(ctx.config.node_id_base)) as u16))
        }
        _ => Err(ResourceError::UnknownBroker(name.to_string())),
    }
}

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeConfigsRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let defaults = broker_defaults(&ctx.config);
    let results = req
        .resources
        .iter()
        .map(|res| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let name = res.resource_name.as_str();
            let entries = match res.resource_type {
                RESOURCE_TOPIC => match image.topic(name) {
                    Some(t) => Ok(topic_config::describe_topic(&t.configs, &defaults)),
                    None => {
                        return out
                            .with_error_code(error_code::code(
                                kafka_protocol::ResponseError::UnknownTopicOrPartition,
                            ))
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Topic '{name}' does not exist."
                            ))));
                    }
                },
                RESOURCE_BROKER => broker_of(ctx, name).map(|s| describe_broker(&ctx.config, s)),
                other => Err(ResourceError::UnsupportedType(other)),
            };
            match entries {
                Ok(entries) => out.with_error_code(error_code::NONE).with_configs(
                    entries
                        .into_iter()
                        .filter(|e| {
                            res.configuration_keys.as_ref().is_none_or(|keys| {
                                keys.is_empty() || keys.iter().any(|k| k.as_str() == e.name)
                            })
                        })
                        .map(|e| wire_entry(e, req.include_synonyms, req.include_documentation))
                        .collect(),
                ),
                Err(e) => out
                    .with_error_code(config_resource_error(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    r.respond(&DescribeConfigsResponse::default().with_results(results))
}

fn wire_entry(
    e: ConfigEntry,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name))
        .with_value(e.value.map(StrBytes::from_string))
        .with_read_only(e.read_only)
        .with_config_source(e.source)
        .with_is_sensitive(e.sensitive)
        .with_config_type(e.config_type)
        .with_synonyms(if synonyms {
            e.synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(StrBytes::from_string(name))
                        .with_value(Some(StrBytes::from_string(value)))
                        .with_source(source)
                })
                .collect()
        } else {
            vec![]
        })
        .with_documentation(documentation.then(|| StrBytes::from_static_str(e.doc)))
}

/// The broker configs a shard reports: its flags, read-only.
pub fn describe_broker(config: &Config, shard: ShardId) -> Vec<ConfigEntry> {
    let id = node_id(NodeId(config.node_id_base), shard).0.to_string();
    let host = config.advertised_host();
    let port = config.shard_port(shard.index());
    // (name, value, Kafka's default or None when it has none, type, doc)
    let rows: Vec<(&str, String, Option<&str>, i8, &'static str)> = vec![
        (
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{port}"),
            None,
            TYPE_LIST,
            "This shard's address (--advertise, --listen port + 1 + shard).",
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            Some("true"),
            TYPE_BOOLEAN,
            "--auto-create-topics.",
        ),
        (
            "broker.id",
            id.clone(),
            None,
            TYPE_INT,
            "--node-id-base + shard.",
        ),
        (
            "compression.type",
            "producer".into(),
            Some("producer"),
            TYPE_STRING,
            "Batches are stored as produced.",
        ),
        (
            "default.replication.factor",
            "1".into(),
            Some("1"),
            TYPE_INT,
            "One replica per partition.",
        ),
        (
            "group.initial.rebalance.delay.ms",
            config.group_initial_rebalance_delay_ms.to_string(),
            Some("3000"),
            TYPE_INT,
            "--group-initial-rebalance-delay-ms.",
        ),
        (
            "listeners",
            format!("PLAINTEXT://{}", config.listen),
            None,
            TYPE_LIST,
            "--listen: the bootstrap address every shard binds.",
        ),
        (
            "log.cleanup.policy",
            "delete".into(),
            Some("delete"),
            TYPE_LIST,
            "Only delete; no compaction.",
        ),
        (
            "log.dirs",
            config.data_dir.display().to_string(),
            None,
            TYPE_STRING,
            "--data-dir.",
        ),
        (
            "log.flush.interval.ms",
            config.flush_interval_ms.to_string(),
            None,
            TYPE_LONG,
            "--flush-interval-ms: background flush of acks=0/1 data.",
        ),
        (
            "log.index.interval.bytes",
            crate::limits::INDEX_INTERVAL_BYTES.to_string(),
            Some("4096"),
            TYPE_INT,
            "Bytes between sparse index entries.",
        ),
        (
            "log.message.timestamp.type",
            "CreateTime".into(),
            Some("CreateTime"),
            TYPE_STRING,
            "Default message.timestamp.type.",
        ),
        (
            "log.retention.bytes",
            config.retention_bytes.to_string(),
            Some("-1"),
            TYPE_LONG,
            "--retention-bytes.",
        ),
        (
            "log.retention.ms",
            config.retention_ms.to_string(),
            Some("604800000"),
            TYPE_LONG,
            "--retention-ms.",
        ),
        (
            "log.roll.ms",
            config.segment_ms.to_string(),
            Some("604800000"),
            TYPE_LONG,
            "--segment-ms.",
        ),
        (
            "log.segment.bytes",
            config.segment_bytes.to_string(),
            Some("1073741824"),
            TYPE_INT,
            "--segment-bytes.",
        ),
        (
            "message.max.bytes",
            config.message_max_bytes.to_string(),
            Some("1048588"),
            TYPE_INT,
            "--message-max-bytes.",
        ),
        (
            "min.insync.replicas",
            "1".into(),
            Some("1"),
            TYPE_INT,
            "One replica per partition.",
        ),
        ("node.id", id, None, TYPE_INT, "--node-id-base + shard."),
        (
            "num.partitions",
            config.default_partitions.to_string(),
            Some("1"),
            TYPE_INT,
            "--default-partitions.",
        ),
        (
            "socket.request.max.bytes",
            config.request_size_max_bytes.to_string(),
            Some("104857600"),
            TYPE_INT,
            "--request-size-max-bytes.",
        ),
        (
            "unclean.leader.election.enable",
            "false".into(),
            Some("false"),
            TYPE_BOOLEAN,
            "One replica: no election.",
        ),
    ];
    rows.into_iter()
        .map(|(name, value, default, config_type, doc)| {
            let source = if default == Some(value.as_str()) {
                SOURCE_DEFAULT_CONFIG
            } else {
                SOURCE_STATIC_BROKER_CONFIG
            };
            ConfigEntry {
                name: name.to_string(),
                synonyms: vec![(name.to_string(), value.clone(), source)],
                value: Some(value),
                source,
                read_only: true,
                sensitive: false,
                config_type,
                doc,
            }
        })
        .collect()
}
