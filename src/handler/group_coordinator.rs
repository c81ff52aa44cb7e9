//! The group coordinator of one shard as handlers see it: the shard's `GroupManager` and its
//! `__consumer_offsets-<shard>` log. Handlers borrow the manager only between awaits.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::group::record::{self, Entry, encode_batch};
use crate::group::{GroupManager, coordinator_shard};
use crate::log::{LogError, PartitionLog};
use crate::types::{Acks, Offset};

use super::Context;

/// Bytes read from the offsets log per step while replaying it.
const REPLAY_READ_MAX_BYTES: u64 = 1 << 20;
/// Name of the per-shard internal log directory: `<data_dir>/__consumer_offsets-<shard>`.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub struct GroupCoordinator {
    pub manager: RefCell<GroupManager>,
    /// Open once the shard has replayed it; without it commits stay in memory only.
    log: RefCell<Option<Rc<PartitionLog>>>,
}

/// Wall-clock milliseconds: commit timestamps are wall time, as Kafka's.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl GroupCoordinator {
    pub fn new(initial_rebalance_delay_ms: u64) -> GroupCoordinator {
        GroupCoordinator {
            manager: RefCell::new(GroupManager::new(
                i64::try_from(initial_rebalance_delay_ms).unwrap_or(i64::MAX),
            )),
            log: RefCell::new(None),
        }
    }

    /// Writes entries and returns once an fdatasync covers them. Without a log (not opened,
    /// e.g. in tests) there is nothing to wait for.
    pub async fn persist(&self, entries: &[Entry]) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let log = self.log.borrow().clone();
        let Some(log) = log else {
            return Ok(());
        };
        log.append(encode_batch(entries, now_ms()), Acks::All)
            .await
            .map(|_| ())
    }

    /// Replays the shard's offsets log into the manager, then keeps it for appends.
    pub async fn load(&self, log: Rc<PartitionLog>) -> Result<(), LogError> {
        let mut from = log.log_start_offset();
        let end = log.high_watermark();
        let mut count = 0usize;
        while from < end {
            let slice = log.read(from, REPLAY_READ_MAX_BYTES).await?;
            let mut buf = Vec::with_capacity(slice.len_bytes as usize);
            for r in &slice.regions {
                buf.extend_from_slice(&r.file.read_at(r.position, r.len as usize).await?);
            }
            let (entries, next, _) = record::decode_batches(&buf).map_err(|e| {
                tracing::error!(error = %e, offset = from.value(), "corrupt offsets log");
                LogError::Corrupt {
                    path: OFFSETS_TOPIC.into(),
                    position_bytes: 0,
                }
            })?;
            let Some(next) = next else { break };
            assert!(next > from.value(), "replay moves forward");
            count += entries.len();
            record::replay(&mut self.manager.borrow_mut(), entries);
            from = Offset(next);
        }
        tracing::info!(records = count, "group offsets replayed");
        *self.log.borrow_mut() = Some(log);
        Ok(())
    }

    /// Closes the offsets log, if one is open.
    pub async fn close(&self) -> Result<(), LogError> {
        let log = self.log.borrow_mut().take();
        if let Some(log) = log
            && let Err(e) = log.close().await
        {
            tracing::error!(error = %e, "closing the offsets log");
            return Err(e);
        }
        Ok(())
    }
}

/// Whether this shard coordinates `group_id`.
pub fn owns(ctx: &Context, group_id: &str) -> bool {
    coordinator_shard(group_id, ctx.image().shard_count) == ctx.shard.index()
}
