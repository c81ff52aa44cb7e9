//! CreatePartitions: grow a topic. The controller places the new partitions, persists and
//! broadcasts; the answer comes once they accept writes on their shards.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, topic_error};
use super::{Context, Frame, HandlerError, Request};
use crate::metadata::controller::TopicError;
use crate::metadata::partitions::PartitionGrowth;

pub const VERSIONS: RangeInclusive<i16> = 0..=3;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: CreatePartitionsRequest = r.decode(&mut body)?;
    let mut growths = Vec::new();
    let slots: Vec<Result<usize, TopicError>> = req
        .topics
        .iter()
        .map(|t| {
            growths.push(growth_of(ctx, t)?);
            Ok(growths.len() - 1)
        })
        .collect();
    let answers = ctx
        .peers
        .create_partitions(growths.clone(), req.validate_only)
        .await;
    assert_eq!(
        answers.len(),
        growths.len(),
        "the controller answers every topic"
    );
    let results = req
        .topics
        .iter()
        .zip(slots)
        .map(|(t, slot)| {
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match slot.and_then(|i| answers[i].clone()) {
                Ok(()) => out.with_error_code(error_code::NONE),
                Err(e) => out
                    .with_error_code(topic_error(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    r.respond(&CreatePartitionsResponse::default().with_results(results))
}

fn growth_of(ctx: &Context, t: &CreatePartitionsTopic) -> Result<PartitionGrowth, TopicError> {
    let assignment = match &t.assignments {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|a| {
                    if a.broker_ids.len() != 1 {
                        return Err(TopicError::InvalidReplicationFactor(
                            a.broker_ids.len() as i16
                        ));
                    }
                    let shard = i64::from(a.broker_ids[0].0) - i64::from(ctx.config.node_id_base);
                    u16::try_from(shard).map_err(|_| {
                        TopicError::InvalidReplicaAssignment(format!(
                            "unknown broker {}",
                            a.broker_ids[0].0
                        ))
                    })
                })
                .collect::<Result<Vec<u16>, TopicError>>()?,
        ),
    };
    Ok(PartitionGrowth {
        topic: t.name.0.to_string(),
        count: t.count,
        assignment,
    })
}
