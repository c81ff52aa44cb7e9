//! DeleteTopics: the controller removes the topic from metadata, then every owning shard closes
//! and deletes its partition directories before the answer.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error_code::{self, code, topic_error};
use super::{Context, Frame, HandlerError, Request};
use crate::types::TopicId;

pub const VERSIONS: RangeInclusive<i16> = 1..=6;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DeleteTopicsRequest = r.decode(&mut body)?;
    // v6 names topics by name or id; earlier versions by name only.
    let image = ctx.image();
    let wanted: Vec<(Option<String>, Uuid)> = if r.version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let resolved: Vec<Option<String>> = wanted
        .iter()
        .map(|(name, id)| match name {
            Some(n) => Some(n.clone()),
            None => image
                .topic_by_id(TopicId(*id.as_bytes()))
                .map(|t| t.name.clone()),
        })
        .collect();
    let names: Vec<String> = resolved.iter().flatten().cloned().collect();
    let mut answers = ctx.peers.delete_topics(names).await.into_iter();
    let responses = wanted
        .into_iter()
        .zip(resolved)
        .map(|((_, id), name)| {
            let out = DeletableTopicResult::default().with_topic_id(id);
            let Some(name) = name else {
                return out.with_error_code(code(ResponseError::UnknownTopicId));
            };
            let out = out.with_name(Some(TopicName(StrBytes::from_string(name))));
            match answers.next().expect("the controller answers every name") {
                Ok(topic_id) => out
                    .with_topic_id(Uuid::from_bytes(topic_id))
                    .with_error_code(error_code::NONE),
                Err(e) => out
                    .with_error_code(topic_error(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    r.respond(&DeleteTopicsResponse::default().with_responses(responses))
}
