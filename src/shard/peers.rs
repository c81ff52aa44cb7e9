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

    /// Runs a controller operation: directly when this is shard 0, else as a message to it.
    /// `unavailable` answers when the controller cannot be reached (it is stopping).
    fn on_controller<A, T, Fut>(
        self: &Rc<Self>,
        args: A,
        local: impl FnOnce(Rc<Shard>, Rc<ShardPeers>, A) -> Fut + 'static,
        message: impl FnOnce(A, oneshot::Sender<T>) -> ShardMsg + 'static,
        unavailable: impl FnOnce() -> T + 'static,
    ) -> LocalBoxFuture<'static, T>
    where
        A: 'static,
        T: 'static,
        Fut: std::future::Future<Output = T> + 'static,
    {
        let this = self.clone();
        async move {
            if this.me == ShardId::CONTROLLER {
                return local(this.shard(), this.clone(), args).await;
            }
            this.ask(ShardId::CONTROLLER, |reply| message(args, reply))
                .await
                .unwrap_or_else(unavailable)
        }
        .boxed_local()
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

fn gone<T>(n: usize) -> Vec<Result<T, TopicError>> {
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
        let n = specs.len();
        self.on_controller(
            specs,
            move |c, peers, specs| async move {
                c.controller()
                    .create_topics(&peers, specs, validate_only)
                    .await
            },
            move |specs, reply| ShardMsg::CreateTopics {
                specs,
                validate_only,
                reply,
            },
            move || gone(n),
        )
    }

    fn delete_topics(&self, names: Vec<String>) -> LocalBoxFuture<'static, TopicResults> {
        let n = names.len();
        self.on_controller(
            names,
            |c, peers, names| async move { c.controller().delete_topics(&peers, names).await },
            |names, reply| ShardMsg::DeleteTopics { names, reply },
            move || gone(n),
        )
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        glommio::timer::sleep(duration).boxed_local()
    }

    fn reserve_producer_ids(&self, count: i64) -> LocalBoxFuture<'static, Result<i64, TopicError>> {
        self.on_controller(
            count,
            |c, peers, count| async move { c.controller().reserve_producer_ids(&peers, count).await },
            |count, reply| ShardMsg::ReserveProducerIds { count, reply },
            || Err(TopicError::ControllerUnavailable),
        )
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
        let n = alterations.len();
        self.on_controller(
            alterations,
            move |c, peers, alterations| async move {
                c.controller()
                    .alter_configs(&peers, alterations, validate_only)
                    .await
            },
            move |alterations, reply| ShardMsg::AlterConfigs {
                alterations,
                validate_only,
                reply,
            },
            move || gone(n),
        )
    }

    fn create_partitions(
        &self,
        growths: Vec<PartitionGrowth>,
        validate_only: bool,
    ) -> LocalBoxFuture<'static, Vec<Result<(), TopicError>>> {
        let n = growths.len();
        self.on_controller(
            growths,
            move |c, peers, growths| async move {
                c.controller()
                    .create_partitions(&peers, growths, validate_only)
                    .await
            },
            move |growths, reply| ShardMsg::CreatePartitions {
                growths,
                validate_only,
                reply,
            },
            move || gone(n),
        )
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
            let controller = shard.controller();
            let _ = reply.send(
                controller
                    .create_topics(&shard.peers, specs, validate_only)
                    .await,
            );
        }
        ShardMsg::DeleteTopics { names, reply } => {
            let controller = shard.controller();
            let _ = reply.send(controller.delete_topics(&shard.peers, names).await);
        }
        ShardMsg::ApplyImage { image, reply } => {
            shard.apply_image(image).await;
            let _ = reply.send(());
        }
        ShardMsg::ReserveProducerIds { count, reply } => {
            let controller = shard.controller();
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
            let controller = shard.controller();
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
            let controller = shard.controller();
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
