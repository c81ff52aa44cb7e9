//! The controller role of shard 0: it owns the persisted metadata, applies topic changes one at a
//! time, persists them, and broadcasts the new image to every shard before answering.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use super::peers::ShardPeers;
use crate::metadata::controller::{TopicError, TopicSpec, plan_create};
use crate::metadata::{MetadataImage, MetadataState};

pub const METADATA_FILE: &str = "metadata.rkyv";

pub struct Controller {
    state: RefCell<MetadataState>,
    meta_dir: PathBuf,
    shard_count: usize,
    /// One change at a time: plan, persist, broadcast.
    changing: Semaphore,
}

impl Controller {
    pub fn new(state: MetadataState, meta_dir: PathBuf, shard_count: usize) -> Controller {
        Controller {
            state: RefCell::new(state),
            meta_dir,
            shard_count,
            changing: Semaphore::new(1),
        }
    }

    pub async fn create_topics(
        &self,
        peers: &Rc<ShardPeers>,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> Vec<Result<[u8; 16], TopicError>> {
        let _turn = self
            .changing
            .acquire_permit(1)
            .await
            .expect("semaphore never closes");
        let mut next = self.state.borrow().clone();
        let mut results = Vec::with_capacity(specs.len());
        for spec in &specs {
            let id = *uuid::Uuid::new_v4().as_bytes();
            match plan_create(&next, spec, self.shard_count, id) {
                Ok(topic) => {
                    if !validate_only {
                        next.topics.push(topic);
                    }
                    results.push(Ok(id));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !validate_only
            && results.iter().any(Result::is_ok)
            && let Err(e) = self.commit(peers, next).await
        {
            return results
                .into_iter()
                .map(|_| Err(TopicError::Storage(format!("metadata not persisted: {e}"))))
                .collect();
        }
        results
    }

    pub async fn delete_topics(
        &self,
        peers: &Rc<ShardPeers>,
        names: Vec<String>,
    ) -> Vec<Result<[u8; 16], TopicError>> {
        let _turn = self
            .changing
            .acquire_permit(1)
            .await
            .expect("semaphore never closes");
        let mut next = self.state.borrow().clone();
        let mut results = Vec::with_capacity(names.len());
        for name in &names {
            match next.topics.iter().position(|t| &t.name == name) {
                Some(i) => results.push(Ok(next.topics.remove(i).id)),
                None => results.push(Err(TopicError::Unknown(name.clone()))),
            }
        }
        if results.iter().any(Result::is_ok)
            && let Err(e) = self.commit(peers, next).await
        {
            return results
                .into_iter()
                .map(|_| Err(TopicError::Storage(format!("metadata not persisted: {e}"))))
                .collect();
        }
        results
    }

    /// Reserves `count` producer ids; persisted before any of them is used.
    pub async fn reserve_producer_ids(
        &self,
        peers: &Rc<ShardPeers>,
        count: i64,
    ) -> Result<i64, TopicError> {
        assert!(count > 0);
        let _turn = self
            .changing
            .acquire_permit(1)
            .await
            .expect("semaphore never closes");
        let mut next = self.state.borrow().clone();
        let start = next.next_producer_id;
        next.next_producer_id = start
            .checked_add(count)
            .ok_or_else(|| TopicError::Storage("producer ids exhausted".into()))?;
        self.commit(peers, next)
            .await
            .map_err(|e| TopicError::Storage(format!("metadata not persisted: {e}")))?;
        Ok(start)
    }

    /// Persists the new state, then makes every shard apply it (open or delete partitions).
    async fn commit(&self, peers: &Rc<ShardPeers>, mut next: MetadataState) -> std::io::Result<()> {
        next.version += 1;
        persist(self.meta_dir.clone(), next.encode()).await?;
        *self.state.borrow_mut() = next.clone();
        let image = Arc::new(MetadataImage::new(next, self.shard_count));
        peers.broadcast_image(image).await;
        Ok(())
    }
}

/// Writes the metadata atomically: temp file, fsync, rename, fsync of the directory. Rare and
/// small, so it runs on glommio's blocking pool rather than the shard.
pub async fn persist(meta_dir: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Write;
            std::fs::create_dir_all(&meta_dir)?;
            let tmp = meta_dir.join(format!("{METADATA_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, meta_dir.join(METADATA_FILE))?;
            std::fs::File::open(&meta_dir)?.sync_all()
        })
        .await
}
