//! Fetch: whole batches from the owning partitions, sent as file regions (sendfile) behind a
//! hand-framed response. A fetch that has less than `min_bytes` waits for an append on any of its
//! partitions, up to `max_wait_ms`: woken by the append itself, never by a polling timer.

use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{Either, select, select_all};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::FetchRequest;

use super::error_code::{self, log_error};
use super::{Context, Frame, HandlerError, Request, TopicRef, local_partition};
use crate::limits::FETCH_WAIT_MAX_MS;
use crate::log::{FileRegion, LogError, PartitionLog};
use crate::metadata::MetadataImage;
use crate::protocol::fetch::{self as wire, FETCH_TOPIC_ID_MIN_VERSION, PartitionData, TopicData};
use crate::types::{Offset, TopicId};

pub const VERSIONS: RangeInclusive<i16> = 4..=18;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: FetchRequest = r.decode(&mut body)?;
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MAX_MS) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as u64;
    loop {
        let image = ctx.image();
        // Subscribe before reading, so an append between the read and the wait is not missed.
        let logs = owned_logs(ctx, &image, &req, r.version);
        let wakeups: Vec<_> = logs.iter().map(|l| l.appended().boxed_local()).collect();
        let (topics, total_bytes, failed) = read_all(ctx, &image, &req, r.version).await;
        let now = Instant::now();
        if total_bytes >= min_bytes || failed || now >= deadline || wakeups.is_empty() {
            let resp = wire::FetchResponse {
                throttle_time_ms: 0,
                error_code: error_code::NONE,
                session_id: 0,
                topics,
            };
            return Ok(wire::encode(r.correlation_id, r.version, resp));
        }
        drop(topics);
        let timer = ctx.peers.sleep(deadline - now);
        if let Either::Right(_) = select(select_all(wakeups), timer).await {
            // Timed out: one last read answers with whatever arrived.
            let (topics, _, _) = read_all(ctx, &image, &req, r.version).await;
            let resp = wire::FetchResponse {
                throttle_time_ms: 0,
                error_code: error_code::NONE,
                session_id: 0,
                topics,
            };
            return Ok(wire::encode(r.correlation_id, r.version, resp));
        }
    }
}

fn topic_ref(version: i16, name: &str, id: uuid::Uuid) -> TopicRef<'_> {
    if version >= FETCH_TOPIC_ID_MIN_VERSION {
        TopicRef::Id(TopicId(*id.as_bytes()))
    } else {
        TopicRef::Name(name)
    }
}

fn owned_logs(
    ctx: &Context,
    image: &MetadataImage,
    req: &FetchRequest,
    version: i16,
) -> Vec<Rc<PartitionLog>> {
    req.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .filter_map(|(t, p)| {
            local_partition(
                ctx,
                image,
                topic_ref(version, t.topic.0.as_str(), t.topic_id),
                p.partition,
            )
            .ok()
        })
        .map(|(_, log)| log)
        .collect()
}

/// Reads every requested partition once. Returns the topics, the record bytes, and whether any
/// partition failed (an error is answered at once, as Kafka does).
async fn read_all(
    ctx: &Context,
    image: &MetadataImage,
    req: &FetchRequest,
    version: i16,
) -> (Vec<TopicData<FileRegion>>, u64, bool) {
    // The broker's fetch.max.bytes caps what a client may ask for (KIP-74).
    let max_bytes = if req.max_bytes > 0 {
        (req.max_bytes as u64).min(u64::from(ctx.config.fetch_max_bytes))
    } else {
        u64::from(ctx.config.fetch_max_bytes)
    };
    let mut total_bytes = 0u64;
    let mut failed = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut out = PartitionData {
                partition_index: p.partition,
                error_code: error_code::NONE,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: vec![],
            };
            match local_partition(
                ctx,
                image,
                topic_ref(version, t.topic.0.as_str(), t.topic_id),
                p.partition,
            ) {
                Err(c) => {
                    out.error_code = c;
                    failed = true;
                }
                Ok((_, log)) => {
                    out.high_watermark = log.high_watermark().value();
                    out.last_stable_offset = out.high_watermark;
                    out.log_start_offset = log.log_start_offset().value();
                    let limit = (p.partition_max_bytes.max(0) as u64)
                        .min(max_bytes.saturating_sub(total_bytes));
                    match read_partition(
                        &log,
                        p.current_leader_epoch,
                        Offset(p.fetch_offset),
                        limit,
                        total_bytes == 0,
                    )
                    .await
                    {
                        Ok(regions) => {
                            total_bytes += regions.iter().map(|(_, len)| *len).sum::<u64>();
                            out.records = regions;
                        }
                        Err(c) => {
                            out.error_code = c;
                            failed = true;
                        }
                    }
                }
            }
            partitions.push(out);
        }
        topics.push(TopicData {
            name: t.topic.0.to_string(),
            topic_id: TopicId(*t.topic_id.as_bytes()),
            partitions,
        });
    }
    (topics, total_bytes, failed)
}

/// Only the first partition with data may exceed its limit (KIP-74), so that a batch larger than
/// the limits can still make progress.
async fn read_partition(
    log: &PartitionLog,
    current_leader_epoch: i32,
    from: Offset,
    limit: u64,
    first: bool,
) -> Result<Vec<(FileRegion, u64)>, i16> {
    if current_leader_epoch >= 0 && current_leader_epoch != log.leader_epoch() {
        let e = if current_leader_epoch > log.leader_epoch() {
            ResponseError::UnknownLeaderEpoch
        } else {
            ResponseError::FencedLeaderEpoch
        };
        return Err(e.code());
    }
    if limit == 0 && !first {
        return Ok(vec![]);
    }
    let slice = log
        .read(from, limit)
        .await
        .map_err(|e: LogError| log_error(&e))?;
    if slice.len_bytes > limit && !first {
        return Ok(vec![]);
    }
    Ok(slice
        .regions
        .into_iter()
        .map(|r| {
            let len = r.len;
            (r, len)
        })
        .collect())
}
