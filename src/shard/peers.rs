//! `Peers` over the glommio channel mesh: requests to the controller, image broadcasts, timers.
//! Every channel is bounded; a full peer makes the sender wait, nothing is dropped.

use std::cell::OnceCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, join_all};

use super::Shard;
use crate::group::{GroupDescription, GroupListing};
use crate::handler::Peers;
use crate::handler::probe::{self, ShardMetrics};
use crate::metadata::MetadataImage;
use crate::metadata::controller::{TopicError, TopicSpec};
use crate::metadata::partitions::PartitionGrowth;
use crate::metadata::topic_config::TopicAlteration;
use crate::types::ShardId;

pub type TopicResults = Vec<Result<[u8; 16], TopicError>>;

/// What crosses between shards. Everything here is `Send`; replies come back on oneshots.
pub enum ShardMsg {
    CreateTopics {
        specs: Vec<TopicSpec>,
        validate_only: bool,
        reply: oneshot::Sender<TopicResults>,
    },
    DeleteTopics {
        names: Vec<String>,
        reply: oneshot::Sender<TopicResults>,
    },
    ApplyImage {
        image: Arc<MetadataImage>,
        reply: oneshot::Sender<()>,
    },
    ListGroups {
        states: Vec<String>,
        reply: oneshot::Sender<Vec<GroupListing>>,
    },
    DescribeGroups {
        group_ids: Vec<String>,
        reply: oneshot::Sender<Vec<GroupDescription>>,
    },
    ReserveProducerIds {
        count: i64,
        reply: oneshot::Sender<Result<i64, TopicError>>,
    },
    AlterConfigs {
        alterations: Vec<TopicAlteration>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<Result<(), TopicError>>>,
    },
    CreatePartitions {
        growths: Vec<PartitionGrowth>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<Result<(), TopicError>>>,
    },
    Metrics {
        reply: oneshot::Sender<ShardMetrics>,
    },
}

pub struct ShardPeers {
    pub me: ShardId,
    pub senders: super::mesh::MeshSenders<ShardMsg>,
    /// Set once the shard is built (the shard holds the peers, so this is a weak back-link).
    pub shard: OnceCell<Weak<Shard>>,
}

impl ShardPeers {
    fn shard(&self) -> Rc<Shard> {
        self.shard
            .get()
            .and_then(Weak::upgrade)
            .expect("peers outlive their shard only during shutdown")
    }

    async fn ask<T>(
        &self,
        to: ShardId,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<T> {
        assert_ne!(to, self.me, "local work is a call, not a message");
        let (tx, rx) = oneshot::channel();
        self.senders.send_to(to, make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Makes every shard apply `image`, this one included; returns when all have.
    pub async fn broadcast_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let shard = self.shard();
        let others = (0..self.senders.shard_count())
            .map(|i| ShardId(i as u16))
            .filter(|&s| s != self.me)
            .map(|s| {
                let image = image.clone();
                async move {
                    if self
                        .ask(s, |reply| ShardMsg::ApplyImage { image, reply })
                        .await
                        .is_none()
                    {
                        tracing::error!(shard = %s, "shard did not apply the metadata image");
                    }
                }
            });
        let (_, _) = futures::join!(shard.apply_image(image.clone()), join_all(others));
    }
}

fn gone(n: usize) -> TopicResults {
    (0..n)
        .map(|_| Err(TopicError::ControllerUnavailable))
        .collect()
}

impl Peers for Rc<ShardPeers> {
    fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, TopicResults> {
        let this = self.clone();
        async move {
            let n = specs.len();
            if n == 0 {
                return vec![];
            }
            if this.me == ShardId::CONTROLLER {
                let shard = this.shard();
                let controller = shard
                    .controller
                    .as_ref()
                    .expect("shard 0 is the controller");
                return controller.create_topics(&this, specs, validate_only).await;
            }
            this.ask(ShardId::CONTROLLER, |reply| ShardMsg::CreateTopics {
                specs,
                validate_only,
                reply,
            })
            .await
            .unwrap_or_else(|| gone(n))
        }
        .boxed_local()
    }

    fn delete_topics(&self, names: Vec<String>) -> LocalBoxFuture<'static, TopicResults> {
        let this = self.clone();
        async move {
            let n = names.len();
            if n == 0 {
                return vec![];
            }
            if this.me == ShardId::CONTROLLER {
                let shard = this.shard();
                let controller = shard
                    .controller
                    .as_ref()
                    .expect("shard 0 is the controller");
                return controller.delete_topics(&this, names).await;
            }
            this.ask(ShardId::CONTROLLER, |reply| ShardMsg::DeleteTopics {
                names,
                reply,
            })
            .await
            .unwrap_or_else(|| gone(n))
        }
        .boxed_local()
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        glommio::timer::sleep(duration).boxed_local()
    }

    fn reserve_producer_ids(&self, count: i64) -> LocalBoxFuture<'static, Result<i64, TopicError>> {
        let this = self.clone();
        async move {
            if this.me == ShardId::CONTROLLER {
                let shard = this.shard();
                let controller = shard
                    .controller
                    .as_ref()
                    .expect("shard 0 is the controller");
                return controller.reserve_producer_ids(&this, count).await;
            }
            this.ask(ShardId::CONTROLLER, |reply| ShardMsg::ReserveProducerIds {
                count,
                reply,
            })
            .await
            .unwrap_or(Err(TopicError::ControllerUnavailable))
        }
        .boxed_local()
    }

    fn list_groups(
        &self,
        shard: ShardId,
        states: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<GroupListing>> {
        let this = self.clone();
        async move {
            let answer = this
                .ask(shard, |reply| ShardMsg::ListGroups { states, reply })
                .await;
            // A shard that is stopping lists nothing rather than failing the whole answer.
            answer.unwrap_or_default()
        }
        .boxed_local()
    }

    fn describe_groups(
        &self,
        shard: ShardId,
        group_ids: Vec<String>,
    ) -> LocalBoxFuture<'static, Vec<GroupDescription>> {
        let this = self.clone();
        async move {
            this.ask(shard, |reply| ShardMsg::DescribeGroups { group_ids, reply })
                .await
                .unwrap_or_default()
        }
        .boxed_local()
    }

    fn alter_configs(
        &self,
        alterations: Vec<TopicAlteration>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<(), TopicError>>> {
        let this = self.clone();
        async move {
            let n = alterations.len();
            if n == 0 {
                return vec![];
            }
            if this.me == ShardId::CONTROLLER {
                let shard = this.shard();
                let controller = shard
                    .controller
                    .as_ref()
                    .expect("shard 0 is the controller");
                return controller
                    .alter_configs(&this, alterations, validate_only)
                    .await;
            }
            this.ask(ShardId::CONTROLLER, |reply| ShardMsg::AlterConfigs {
                alterations,
                validate_only,
                reply,
            })
            .await
            .unwrap_or_else(|| {
                (0..n)
                    .map(|_| Err(TopicError::ControllerUnavailable))
                    .collect()
            })
        }
        .boxed_local()
    }

    fn create_partitions(
        &self,
        growths: Vec<PartitionGrowth>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<(), TopicError>>> {
        let this = self.clone();
        async move {
            let n = growths.len();
            if n == 0 {
                return vec![];
            }
            if this.me == ShardId::CONTROLLER {
                let shard = this.shard();
                let controller = shard
                    .controller
                    .as_ref()
                    .expect("shard 0 is the controller");
                return controller
                    .create_partitions(&this, growths, validate_only)
                    .await;
            }
            this.ask(ShardId::CONTROLLER, |reply| ShardMsg::CreatePartitions {
                growths,
                validate_only,
                reply,
            })
            .await
            .unwrap_or_else(|| {
                (0..n)
                    .map(|_| Err(TopicError::ControllerUnavailable))
                    .collect()
            })
        }
        .boxed_local()
    }
}

/// Handles one message from another shard.
pub async fn handle(shard: Rc<Shard>, msg: ShardMsg) {
    probe::mesh_message_received();
    match msg {
        ShardMsg::CreateTopics {
            specs,
            validate_only,
            reply,
        } => {
            let controller = shard
                .controller
                .as_ref()
                .expect("only the controller receives CreateTopics");
            let _ = reply.send(
                controller
                    .create_topics(&shard.peers, specs, validate_only)
                    .await,
            );
        }
        ShardMsg::DeleteTopics { names, reply } => {
            let controller = shard
                .controller
                .as_ref()
                .expect("only the controller receives DeleteTopics");
            let _ = reply.send(controller.delete_topics(&shard.peers, names).await);
        }
        ShardMsg::ApplyImage { image, reply } => {
            shard.apply_image(image).await;
            let _ = reply.send(());
        }
        ShardMsg::ReserveProducerIds { count, reply } => {
            let controller = shard
                .controller
                .as_ref()
                .expect("only the controller reserves producer ids");
            let _ = reply.send(controller.reserve_producer_ids(&shard.peers, count).await);
        }
        ShardMsg::ListGroups { states, reply } => {
            let _ = reply.send(shard.ctx.groups.manager.borrow().list(&states));
        }
        ShardMsg::DescribeGroups { group_ids, reply } => {
            let m = shard.ctx.groups.manager.borrow();
            let _ = reply.send(group_ids.iter().map(|id| m.describe(id)).collect());
        }
        ShardMsg::AlterConfigs {
            alterations,
            validate_only,
            reply,
        } => {
            let controller = shard
                .controller
                .as_ref()
                .expect("only the controller receives AlterConfigs");
            let _ = reply.send(
                controller
                    .alter_configs(&shard.peers, alterations, validate_only)
                    .await,
            );
        }
        ShardMsg::CreatePartitions {
            growths,
            validate_only,
            reply,
        } => {
            let controller = shard
                .controller
                .as_ref()
                .expect("only the controller receives CreatePartitions");
            let _ = reply.send(
                controller
                    .create_partitions(&shard.peers, growths, validate_only)
                    .await,
            );
        }
        ShardMsg::Metrics { reply } => {
            let _ = reply.send(probe::snapshot(&shard.ctx));
        }
    }
}

impl ShardPeers {
    /// Every shard's metrics, this one's included, in shard order. A shard that does not answer
    /// (stopping) is left out.
    pub async fn collect_metrics(self: &Rc<Self>) -> Vec<ShardMetrics> {
        let shard = self.shard();
        let mut all = Vec::new();
        for i in 0..self.senders.shard_count() {
            let s = ShardId(i as u16);
            if s == self.me {
                all.push(probe::snapshot(&shard.ctx));
            } else if let Some(m) = self.ask(s, |reply| ShardMsg::Metrics { reply }).await {
                all.push(m);
            }
        }
        all
    }
}
