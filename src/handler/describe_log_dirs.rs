//! DescribeLogDirs: each shard is a broker with one log dir (the data dir) and reports the
//! partitions it owns, with their size on disk. There are no followers, so offset lag is 0.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{Context, Frame, HandlerError, Request};
use crate::types::TopicPartition;

pub const VERSIONS: RangeInclusive<i16> = 1..=4;

/// total_bytes / usable_bytes before the shard has measured its data dir once.
const BYTES_UNKNOWN: i64 = -1;

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeLogDirsRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(list) => list
            .iter()
            .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition)),
    };
    let partitions = ctx.partitions.borrow();
    let mut topics = Vec::new();
    for t in image.topics() {
        let found: Vec<DescribeLogDirsPartition> = (0..t.partitions.len() as i32)
            .filter(|&p| wanted(&t.name, p))
            .filter_map(|p| {
                let log = partitions.get(&TopicPartition::new(t.name.clone(), p))?;
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(log.size_bytes() as i64)
                        .with_offset_lag(0)
                        .with_is_future_key(false),
                )
            })
            .collect();
        if !found.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_partitions(found),
            );
        }
    }
    let space = ctx.disk_space.get();
    let dir = DescribeLogDirsResult::default()
        .with_error_code(error_code::NONE)
        .with_log_dir(StrBytes::from_string(
            ctx.config.data_dir.display().to_string(),
        ))
        .with_topics(topics)
        .with_total_bytes(space.map_or(BYTES_UNKNOWN, |d| clamp(d.total_bytes)))
        .with_usable_bytes(space.map_or(BYTES_UNKNOWN, |d| clamp(d.usable_bytes)));
    r.respond(
        &DescribeLogDirsResponse::default()
            .with_error_code(error_code::NONE)
            .with_results(vec![dir]),
    )
}
