//! Produce: record sets stay `Bytes` slices of the request buffer; each is validated by its batch
//! headers and CRC (never decoded record by record) and appended to the owning partition.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::auto_create;
use super::error_code::{self, batch_error, code, log_error};
use super::produce_settings::ProduceSettings;
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};
use crate::metadata::controller::validate_topic_name;
use crate::protocol::batch::validate_record_set;
use crate::types::{Acks, TopicId};

/// Advertised from v0 like Kafka 4 (librdkafka checks for it), served from v3: v0-2 carry
/// message formats 0 and 1, which Sable does not store.
pub const ADVERTISED: RangeInclusive<i16> = 0..=13;
pub const VERSIONS: RangeInclusive<i16> = 3..=13;
/// First version naming topics by id.
const TOPIC_ID_MIN_VERSION: i16 = 13;

pub async fn serve(
    ctx: &Rc<Context>,
    r: Request,
    mut body: Bytes,
) -> Result<Option<Frame>, HandlerError> {
    let req: ProduceRequest = r.decode(&mut body)?;
    let acks = Acks::from_wire(req.acks);
    if r.version < TOPIC_ID_MIN_VERSION && ctx.config.auto_create_topics {
        create_missing(ctx, &req).await;
    }
    let image = ctx.image();
    let mut appends = Vec::new();
    let mut shape = Vec::new(); // (topic index, partition index, result slot)
    let mut results: Vec<PartitionProduceResponse> = Vec::new();
    for (ti, t) in req.topic_data.iter().enumerate() {
        let topic = if r.version >= TOPIC_ID_MIN_VERSION {
            TopicRef::Id(TopicId(*t.topic_id.as_bytes()))
        } else {
            TopicRef::Name(t.name.0.as_str())
        };
        for p in &t.partition_data {
            let slot = results.len();
            results.push(
                PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1),
            );
            shape.push(ti);
            let Some(acks) = acks else {
                results[slot].error_code = code(ResponseError::InvalidRequiredAcks);
                continue;
            };
            let log = match local_partition(ctx, &image, topic, p.index) {
                Ok((_, log)) => log,
                Err(c) => {
                    results[slot].error_code = c;
                    continue;
                }
            };
            let records = p.records.clone().unwrap_or_default();
            let settings = ProduceSettings::of(&image, topic, ctx.config.message_max_bytes);
            match validate_record_set(&records, settings.max_message_bytes) {
                Ok(info) => super::probe::records_in(info.record_count),
                Err(e) => {
                    results[slot].error_code = batch_error(&e);
                    results[slot].error_message = Some(StrBytes::from_string(e.to_string()));
                    continue;
                }
            }
            let (records, log_append_time_ms) = settings.prepare(records);
            if let Some(t) = log_append_time_ms {
                results[slot].log_append_time_ms = t;
            }
            appends.push(async move { (slot, log.append(records, acks).await) });
        }
    }
    // All partitions of one request append concurrently, so they share one fdatasync round.
    for (slot, outcome) in join_all(appends).await {
        match outcome {
            Ok(info) => {
                results[slot].error_code = error_code::NONE;
                results[slot].base_offset = info.base_offset.value();
                results[slot].log_start_offset = info.log_start_offset.value();
            }
            Err(e) => {
                tracing::warn!(error = %e, "append failed");
                results[slot].error_code = log_error(&e);
                results[slot].error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
    }
    if acks == Some(Acks::None) {
        return Ok(None);
    }
    let mut responses: Vec<TopicProduceResponse> = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
        })
        .collect();
    for (ti, result) in shape.into_iter().zip(results) {
        responses[ti].partition_responses.push(result);
    }
    r.respond(&ProduceResponse::default().with_responses(responses))
        .map(Some)
}

/// Produce to a topic that does not exist creates it when auto-create is on (the request flag
/// exists only on Metadata, so the broker setting decides).
async fn create_missing(ctx: &Rc<Context>, req: &ProduceRequest) {
    let image = ctx.image();
    // Names are copied only for topics that are missing: not on every request.
    let missing: HashSet<String> = req
        .topic_data
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
        .map(str::to_string)
        .collect();
    if !missing.is_empty() {
        auto_create(ctx, missing.into_iter().collect()).await;
    }
}
