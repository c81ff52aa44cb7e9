//! DescribeProducers (KIP-664): the idempotent producers a partition knows, with their epoch,
//! last sequence and last timestamp. There are no transactions yet, so no producer has an open
//! transaction (coordinator epoch and transaction start offset are -1).

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::error_code;
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};

pub const VERSIONS: RangeInclusive<i16> = 0..=0;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeProducersRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let out = PartitionResponse::default().with_partition_index(p);
                    match local_partition(ctx, &image, TopicRef::Name(t.name.0.as_str()), p) {
                        Err(c) => out.with_error_code(c),
                        Ok((_, log)) => {
                            out.with_error_code(error_code::NONE).with_active_producers(
                                log.active_producers()
                                    .into_iter()
                                    .map(|a| {
                                        ProducerState::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_producer_epoch(i32::from(a.epoch))
                                            .with_last_sequence(a.last_sequence)
                                            .with_last_timestamp(a.last_timestamp_ms)
                                            .with_coordinator_epoch(-1)
                                            .with_current_txn_start_offset(-1)
                                    })
                                    .collect(),
                            )
                        }
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    r.respond(&DescribeProducersResponse::default().with_topics(topics))
}
