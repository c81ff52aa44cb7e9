//! OffsetForLeaderEpoch (KIP-101/320): where a leader epoch ends, so a consumer can detect log
//! truncation. Every batch of a partition log carries the partition's one epoch (a recreated
//! topic gets a new log), so the current epoch ends at the high watermark and any older epoch
//! ends where the log starts.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::error_code::{self, code};
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};

pub const VERSIONS: RangeInclusive<i16> = 2..=4;

const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: OffsetForLeaderEpochRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(UNDEFINED_EPOCH)
                        .with_end_offset(UNDEFINED_EPOCH_OFFSET);
                    let log = match local_partition(
                        ctx,
                        &image,
                        TopicRef::Name(t.topic.0.as_str()),
                        p.partition,
                    ) {
                        Ok((_, log)) => log,
                        Err(c) => return out.with_error_code(c),
                    };
                    let current = log.leader_epoch();
                    if p.current_leader_epoch != -1 && p.current_leader_epoch < current {
                        return out.with_error_code(code(ResponseError::FencedLeaderEpoch));
                    }
                    if p.current_leader_epoch > current {
                        return out.with_error_code(code(ResponseError::UnknownLeaderEpoch));
                    }
                    let (epoch, end) = end_of_epoch(
                        p.leader_epoch,
                        current,
                        log.log_start_offset().value(),
                        log.high_watermark().value(),
                    );
                    out.with_error_code(error_code::NONE)
                        .with_leader_epoch(epoch)
                        .with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    r.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}

/// Kafka's LeaderEpochFileCache.endOffsetFor for a log whose batches all carry `current`.
pub fn end_of_epoch(
    requested: i32,
    current: i32,
    log_start: i64,
    high_watermark: i64,
) -> (i32, i64) {
    if requested == current {
        (current, high_watermark)
    } else if requested < current {
        // The next epoch known after `requested` is `current`, which starts at the log start.
        (requested, log_start)
    } else {
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_end_where_kafka_says() {
        assert_eq!(end_of_epoch(0, 0, 5, 100), (0, 100));
        assert_eq!(end_of_epoch(-3, 0, 5, 100), (-3, 5));
        assert_eq!(end_of_epoch(1, 0, 5, 100), (-1, -1));
    }
}
