//! The controller role of shard 0: it owns the persisted metadata, applies topic changes one at a
//! time, persists them, and broadcasts the new image to every shard before answering.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use super::peers::ShardPeers;
use crate::metadata::controller::{TopicError, TopicSpec, plan_create};
use crate::metadata::partitions::{PartitionGrowth, plan_growth};
use crate::metadata::topic_config::{self, TopicAlteration};
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
        let (_turn, mut next) = self.begin_change().await;
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
        self.commit_all(peers, next, results, validate_only).await
    }

    pub async fn delete_topics(
        &self,
        peers: &Rc<ShardPeers>,
        names: Vec<String>,
    ) -> Vec<Result<[u8; 16], TopicError>> {
        let (_turn, mut next) = self.begin_change().await;
        let mut results = Vec::with_capacity(names.len());
        for name in &names {
            match next.topics.iter().position(|t| &t.name == name) {
                Some(i) => results.push(Ok(next.topics.remove(i).id)),
                None => results.push(Err(TopicError::Unknown(name.clone()))),
            }
        }
        self.commit_all(peers, next, results, false).await
    }

    /// Reserves `count` producer ids; persisted before any of them is used.
    pub async fn reserve_producer_ids(
        &self,
        peers: &Rc<ShardPeers>,
        count: i64,
    ) -> Result<i64, TopicError> {
        assert!(count > 0);
        let (_turn, mut next) = self.begin_change().await;
        let start = next.next_producer_id;
        next.next_producer_id = start
            .checked_add(count)
            .ok_or_else(|| TopicError::Storage("producer ids exhausted".into()))?;
        self.commit(peers, next)
            .await
            .map_err(|e| TopicError::Storage(format!("metadata not persisted: {e}")))?;
        Ok(start)
    }

    /// Waits for this controller's turn (one change at a time) and returns it with a copy of the
    /// current state to change.
    async fn begin_change(&self) -> (glommio::sync::Permit<'_>, MetadataState) {
        let turn = self
            .changing
            .acquire_permit(1)
            .await
            .expect("semaphore never closes");
        (turn, self.state.borrow().clone())
    }

    /// Commits `next` when any part of the request succeeded, unless `skip` (a dry run). If the
    /// commit fails nothing was applied, so every answer becomes the storage error.
    async fn commit_all<T>(
        &self,
        peers: &Rc<ShardPeers>,
        next: MetadataState,
        results: Vec<Result<T, TopicError>>,
        skip: bool,
    ) -> Vec<Result<T, TopicError>> {
        if skip || !results.iter().any(Result::is_ok) {
            return results;
        }
        match self.commit(peers, next).await {
            Ok(()) => results,
            Err(e) => results
                .into_iter()
                .map(|_| Err(TopicError::Storage(format!("metadata not persisted: {e}"))))
                .collect(),
        }
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

impl Controller {
    /// Changes topic configs (AlterConfigs / IncrementalAlterConfigs): each alteration is applied
    /// to the current configs and validated; the valid ones are persisted together and broadcast,
    /// and every shard then applies the new effective `LogConfig` to its open partitions.
    pub async fn alter_configs(
        &self,
        peers: &Rc<ShardPeers>,
        alterations: Vec<TopicAlteration>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let (_turn, mut next) = self.begin_change().await;
        let mut results = Vec::with_capacity(alterations.len());
        let mut changed = false;
        for a in &alterations {
            let Some(topic) = next.topics.iter_mut().find(|t| t.name == a.topic) else {
                results.push(Err(TopicError::Unknown(a.topic.clone())));
                continue;
            };
            match topic_config::apply(&topic.configs, &a.alteration) {
                Ok(configs) => {
                    if !validate_only && configs != topic.configs {
                        topic.configs = configs;
                        changed = true;
                    }
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e.into())),
            }
        }
        // Alterations that change nothing (or a dry run) leave nothing to commit.
        self.commit_all(peers, next, results, !changed).await
    }

    /// Grows topics (CreatePartitions); answers once the new partitions accept writes.
    pub async fn create_partitions(
        &self,
        peers: &Rc<ShardPeers>,
        growths: Vec<PartitionGrowth>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let (_turn, mut next) = self.begin_change().await;
        let mut results = Vec::with_capacity(growths.len());
        for g in &growths {
            if growths.iter().filter(|o| o.topic == g.topic).count() > 1 {
                results.push(Err(TopicError::InvalidReplicaAssignment(format!(
                    "Topic '{}' appears more than once in the request.",
                    g.topic
                ))));
                continue;
            }
            match plan_growth(&next, g, self.shard_count) {
                Ok(added) => {
                    if !validate_only {
                        let t = next
                            .topics
                            .iter_mut()
                            .find(|t| t.name == g.topic)
                            .expect("plan_growth found it");
                        t.partitions.extend(added);
                    }
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        self.commit_all(peers, next, results, validate_only).await
    }
}
