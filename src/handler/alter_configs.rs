//! AlterConfigs (replace a topic's configs) and, through `alter`, IncrementalAlterConfigs. Topic
//! changes go to the controller, which validates, persists and broadcasts them; the answer comes
//! once every shard applied the new settings to its partitions. Broker configs are static.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC, ResourceError, broker_of};
use super::error_code::{self, config_resource_error, topic_error};
use super::{Context, Frame, HandlerError, Request};
use crate::metadata::topic_config::{Alteration, TopicAlteration};

pub const VERSIONS: RangeInclusive<i16> = 0..=2;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: AlterConfigsRequest = r.decode(&mut body)?;
    let resources = req
        .resources
        .iter()
        .map(|res| {
            let configs = res
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            (
                res.resource_type,
                res.resource_name.to_string(),
                Ok(Alteration::Replace(configs)),
            )
        })
        .collect();
    let outcomes = alter(ctx, resources, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(outcomes)
        .map(|(res, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    r.respond(&AlterConfigsResponse::default().with_responses(responses))
}

/// One resource of a request: (resource type, name, the change or the (code, message) it was
/// refused with while decoding).
pub type ResourceChange = (i8, String, Result<Alteration, (i16, String)>);

/// Applies each resource's change; (code, message) per resource, in order.
pub async fn alter(
    ctx: &Rc<Context>,
    resources: Vec<ResourceChange>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let mut outcomes: Vec<Option<(i16, Option<String>)>> = Vec::with_capacity(resources.len());
    let mut alterations = Vec::new();
    let mut slots = Vec::new();
    let keys: Vec<(i8, String)> = resources.iter().map(|(t, n, _)| (*t, n.clone())).collect();
    for (i, (resource_type, name, alteration)) in resources.into_iter().enumerate() {
        let refused = |e: ResourceError| Some((config_resource_error(&e), Some(e.to_string())));
        let duplicate = keys
            .iter()
            .filter(|k| k.0 == resource_type && k.1 == name)
            .count()
            > 1;
        outcomes.push(match (resource_type, alteration) {
            _ if duplicate => refused(ResourceError::Duplicate(name)),
            (_, Err((code, message))) => Some((code, Some(message))),
            (RESOURCE_TOPIC, Ok(alteration)) => {
                slots.push(i);
                alterations.push(TopicAlteration {
                    topic: name,
                    alteration,
                });
                None
            }
            (RESOURCE_BROKER, Ok(_)) => match broker_of(ctx, &name) {
                Ok(_) => refused(ResourceError::BrokerReadOnly),
                Err(e) => refused(e),
            },
            (other, Ok(_)) => refused(ResourceError::UnsupportedType(other)),
        });
    }
    let answers = ctx.peers.alter_configs(alterations, validate_only).await;
    assert_eq!(
        answers.len(),
        slots.len(),
        "the controller answers every topic"
    );
    for (slot, answer) in slots.into_iter().zip(answers) {
        outcomes[slot] = Some(match answer {
            Ok(()) => (error_code::NONE, None),
            Err(e) => (topic_error(&e), Some(e.to_string())),
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every resource answered"))
        .collect()
}
