//! DeleteRecords: moves each partition's log start offset (persisted) and deletes the segments
//! entirely below it. Sent by admin clients to each partition's leader, i.e. its owning shard.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::error_code::{self, log_error};
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};
use crate::types::Offset;

pub const VERSIONS: RangeInclusive<i16> = 0..=2;
/// An offset of -1 means "up to the high watermark" (Kafka's DeleteRecordsRequest.HIGH_WATERMARK).
const HIGH_WATERMARK: i64 = -1;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DeleteRecordsRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let out = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let topic = TopicRef::Name(t.name.0.as_str());
            let out = match local_partition(ctx, &image, topic, p.partition_index) {
                Err(c) => out.with_error_code(c),
                Ok((_, log)) => {
                    let target = if p.offset == HIGH_WATERMARK {
                        log.high_watermark()
                    } else {
                        Offset(p.offset)
                    };
                    match log.delete_records_before(target).await {
                        Ok(start) => out
                            .with_error_code(error_code::NONE)
                            .with_low_watermark(start.value()),
                        Err(e) => out.with_error_code(log_error(&e)),
                    }
                }
            };
            partitions.push(out);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    r.respond(&DeleteRecordsResponse::default().with_topics(topics))
}
