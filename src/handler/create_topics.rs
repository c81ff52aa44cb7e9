//! CreateTopics, and auto-creation for Metadata and Produce. The controller (shard 0) decides and
//! persists; the answer comes once the partitions accept writes on their shards.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error_code::{self, code, topic_error};
use super::{Context, Frame, HandlerError, Request};
use crate::metadata::controller::{TopicError, TopicSpec};

pub const VERSIONS: RangeInclusive<i16> = 2..=7;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: CreateTopicsRequest = r.decode(&mut body)?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.as_str()).or_default() += 1;
    }
    // Each topic is either refused here or becomes a spec for the controller.
    let mut specs = Vec::new();
    let slots: Vec<Result<usize, (i16, String)>> = req
        .topics
        .iter()
        .map(|t| {
            if seen[t.name.0.as_str()] > 1 {
                let msg = format!(
                    "Create topics request from client contains duplicate topic '{}'",
                    t.name.0
                );
                return Err((code(ResponseError::InvalidRequest), msg));
            }
            let spec = spec_of(ctx, t).map_err(|e| (topic_error(&e), e.to_string()))?;
            specs.push(spec);
            Ok(specs.len() - 1)
        })
        .collect();
    let answers = ctx
        .peers
        .create_topics(specs.clone(), req.validate_only)
        .await;
    assert_eq!(
        answers.len(),
        specs.len(),
        "the controller answers every spec"
    );
    let topics = req
        .topics
        .iter()
        .zip(slots)
        .map(|(t, slot)| {
            let out = CreatableTopicResult::default().with_name(t.name.clone());
            let answer = slot.and_then(|i| {
                answers[i]
                    .clone()
                    .map(|id| (id, &specs[i]))
                    .map_err(|e| (topic_error(&e), e.to_string()))
            });
            match answer {
                Ok((id, spec)) => out
                    .with_topic_id(Uuid::from_bytes(id))
                    .with_error_code(error_code::NONE)
                    .with_num_partitions(spec.num_partitions)
                    .with_replication_factor(spec.replication_factor)
                    .with_configs(Some(created_configs(ctx, &spec.configs))),
                Err((c, msg)) => out
                    .with_error_code(c)
                    .with_error_message(Some(StrBytes::from_string(msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    r.respond(&CreateTopicsResponse::default().with_topics(topics))
}

/// Resolves defaults (-1) and explicit assignments into a spec the controller checks.
fn spec_of(ctx: &Context, t: &CreatableTopic) -> Result<TopicSpec, TopicError> {
    let replication_factor = if t.replication_factor == -1 {
        1
    } else {
        t.replication_factor
    };
    let configs: Vec<(String, String)> = t
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    crate::metadata::topic_config::validate_all(&configs)?;
    if t.assignments.is_empty() {
        let num_partitions = if t.num_partitions == -1 {
            ctx.config.default_partitions
        } else {
            t.num_partitions
        };
        return Ok(TopicSpec {
            name: t.name.0.to_string(),
            num_partitions,
            replication_factor,
            assignment: None,
            configs,
        });
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err(TopicError::InvalidReplicaAssignment("Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into()));
    }
    let mut assignment = vec![None; t.assignments.len()];
    for a in &t.assignments {
        let slot = usize::try_from(a.partition_index)
            .ok()
            .and_then(|i| assignment.get_mut(i));
        let Some(slot) = slot else {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "partition {} out of range",
                a.partition_index
            )));
        };
        if a.broker_ids.len() != 1 {
            return Err(TopicError::InvalidReplicationFactor(
                a.broker_ids.len() as i16
            ));
        }
        let shard = a.broker_ids[0].0 - ctx.config.node_id_base;
        *slot = Some(u16::try_from(shard).map_err(|_| {
            TopicError::InvalidReplicaAssignment(format!("unknown broker {}", a.broker_ids[0].0))
        })?);
    }
    let assignment: Option<Vec<u16>> = assignment.into_iter().collect();
    let assignment = assignment.ok_or_else(|| {
        TopicError::InvalidReplicaAssignment("partitions must be numbered from 0".into())
    })?;
    Ok(TopicSpec {
        name: t.name.0.to_string(),
        num_partitions: assignment.len() as i32,
        replication_factor: 1,
        assignment: Some(assignment),
        configs,
    })
}

/// Creates missing topics with the broker defaults. Losing a race with another creator is fine.
pub async fn auto_create(ctx: &Rc<Context>, names: Vec<String>) {
    let specs = names
        .into_iter()
        .map(|name| TopicSpec {
            name,
            num_partitions: ctx.config.default_partitions,
            replication_factor: 1,
            assignment: None,
            configs: vec![],
        })
        .collect();
    for result in ctx.peers.create_topics(specs, false).await {
        if let Err(e) = result
            && !matches!(e, TopicError::AlreadyExists(_))
        {
            tracing::warn!(error = %e, "auto-create failed");
        }
    }
}

/// The configs a created topic ended up with (CreateTopics v5+ answers them, KIP-525).
fn created_configs(
    ctx: &Context,
    configs: &[(String, String)],
) -> Vec<kafka_protocol::messages::create_topics_response::CreatableTopicConfigs> {
    let defaults = super::describe_configs::broker_defaults(&ctx.config);
    crate::metadata::topic_config::describe_topic(configs, &defaults)
        .into_iter()
        .map(|e| {
            kafka_protocol::messages::create_topics_response::CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(e.name))
                .with_value(e.value.map(StrBytes::from_string))
                .with_read_only(e.read_only)
                .with_config_source(e.source)
                .with_is_sensitive(e.sensitive)
        })
        .collect()
}
