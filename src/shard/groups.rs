//! The group coordinator's runtime side on one shard: open and replay the shard's
//! `__consumer_offsets-<shard>` log, and ONE deadline driver for every group of the shard
//! (sessions, rebalance timeouts, the initial delay), rather than a timer per member.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use glommio::spawn_local;
use tracing::{error, info};

use super::Shard;
use crate::group::record::Entry;
use crate::handler::Context;
use crate::handler::group_coordinator::{OFFSETS_TOPIC, now_ms};
use crate::log::PartitionLog;
use crate::metadata::MetadataImage;

/// How often group deadlines are checked: the precision of session and rebalance timeouts.
const GROUP_TICK_INTERVAL_MS: u64 = 100;
/// Kafka: offsets.retention.check.interval.ms (10 minutes).
const OFFSETS_RETENTION_CHECK_INTERVAL_MS: i64 = 600_000;

const _: () = assert!((GROUP_TICK_INTERVAL_MS as i64) < OFFSETS_RETENTION_CHECK_INTERVAL_MS);

/// Offsets of topics the new image no longer has go with them (DeleteTopics).
pub fn forget_deleted_topics(ctx: &Context, image: &MetadataImage) {
    let old = ctx.image();
    let deleted: HashSet<String> = old
        .topics()
        .iter()
        .filter(|t| image.topic(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    if !deleted.is_empty() {
        ctx.groups.manager.borrow_mut().forget_topics(&deleted);
    }
}

/// Replays this shard's offsets log, drops offsets of topics that no longer exist, and starts
/// the deadline driver.
pub async fn start(shard: &Rc<Shard>) {
    let ctx = &shard.ctx;
    let dir = shard
        .data_dir
        .join(format!("{OFFSETS_TOPIC}-{}", ctx.shard.index()));
    match PartitionLog::open(dir, shard.log_config.clone(), 0, shard.last_stop).await {
        Ok(log) => {
            if let Err(e) = ctx.groups.load(log).await {
                error!(error = %e, "could not replay the offsets log; offsets are in memory only");
                shard.unclean.set(true);
            }
        }
        Err(e) => {
            error!(error = %e, "could not open the offsets log; offsets are in memory only");
            shard.unclean.set(true);
        }
    }
    let image = ctx.image();
    let known: HashSet<&str> = image.topics().iter().map(|t| t.name.as_str()).collect();
    let committed: HashSet<String> = ctx
        .groups
        .manager
        .borrow()
        .committed_topics()
        .into_iter()
        .filter(|t| !known.contains(t.as_str()))
        .collect();
    ctx.groups.manager.borrow_mut().forget_topics(&committed);
    info!("group coordinator ready");

    let ctx = ctx.clone();
    spawn_local(async move {
        let mut next_retention_check_ms = now_ms() + OFFSETS_RETENTION_CHECK_INTERVAL_MS;
        loop {
            glommio::timer::sleep(Duration::from_millis(GROUP_TICK_INTERVAL_MS)).await;
            let now = now_ms();
            ctx.groups.manager.borrow_mut().tick(now);
            if now >= next_retention_check_ms {
                next_retention_check_ms = now + OFFSETS_RETENTION_CHECK_INTERVAL_MS;
                let expired = ctx.groups.manager.borrow_mut().expire_offsets(now);
                let tombstones: Vec<Entry> = expired
                    .into_iter()
                    .map(|(group_id, tp)| Entry::Offset {
                        group_id,
                        tp,
                        offset: None,
                    })
                    .collect();
                if let Err(e) = ctx.groups.persist(&tombstones).await {
                    error!(error = %e, "could not write expired-offset tombstones");
                }
            }
        }
    })
    .detach();
}
