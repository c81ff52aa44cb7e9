//! Shards: one pinned glommio executor per core, each a Kafka broker of its own. This module
//! starts them, joins the cross-shard mesh, opens the partitions each owns, binds the listeners,
//! and shuts down cleanly.

pub mod controller;
pub mod groups;
pub mod keep_awake;
pub mod mesh;
pub mod metrics;
pub mod peers;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::{FutureExt, StreamExt};
use glommio::net::TcpListener;
use glommio::sync::Gate;
use glommio::{LocalExecutorBuilder, Placement, spawn_local};
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::Config;
use crate::handler::Context;
use crate::limits::MESH_CHANNEL_CAPACITY;
use crate::log::{LastStop, LogConfig, PartitionLog};
use crate::metadata::{MetadataImage, MetadataState};
use crate::types::{ShardId, TopicPartition};
use controller::Controller;
use peers::{ShardMsg, ShardPeers};

use crate::net::Stop;

pub struct Shard {
    pub ctx: Rc<Context>,
    pub peers: Rc<ShardPeers>,
    pub controller: Option<Controller>,
    data_dir: PathBuf,
    log_config: LogConfig,
    /// How the broker stopped last time: what every log this shard opens may trust.
    last_stop: LastStop,
    /// A log this shard should hold could not be opened, replayed or closed: its files may not
    /// be whole, so this stop must not count as clean.
    unclean: Cell<bool>,
}

impl Shard {
    /// The controller role; only shard 0 has it, and only it is asked to act as controller.
    pub fn controller(&self) -> &Controller {
        self.controller
            .as_ref()
            .expect("only shard 0 runs controller operations")
    }

    /// Opens the partitions this shard owns in `image` and closes and deletes the ones it owns
    /// no more (deleted topics); then publishes the image to this shard's handlers.
    pub async fn apply_image(&self, image: Arc<MetadataImage>) {
        if image.state.version < self.ctx.image().state.version {
            return;
        }
        let mut wanted = HashMap::new();
        for t in image.topics() {
            for (i, p) in t.partitions.iter().enumerate() {
                if image.owner(p) == self.ctx.shard {
                    wanted.insert(
                        TopicPartition::new(t.name.clone(), i as i32),
                        p.leader_epoch,
                    );
                }
            }
        }
        let gone: Vec<(TopicPartition, Rc<PartitionLog>)> = self
            .ctx
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, _)| !wanted.contains_key(*tp))
            .map(|(tp, l)| (tp.clone(), l.clone()))
            .collect();
        for (tp, log) in gone {
            self.ctx.partitions.borrow_mut().remove(&tp);
            if let Err(e) = log.delete().await {
                error!(partition = %tp, error = %e, "could not delete partition");
            }
        }
        let new: Vec<(TopicPartition, i32)> = wanted
            .into_iter()
            .filter(|(tp, _)| !self.ctx.partitions.borrow().contains_key(tp))
            .collect();
        // Each open waits on a few small reads and the blocking pool; overlapping them took a
        // start with 10,000 partitions from 2.0-2.2 s to 0.8-1.0 s (bench/README).
        futures::stream::iter(new)
            .for_each_concurrent(PARTITION_IO_CONCURRENCY, |(tp, epoch)| async move {
                match PartitionLog::open(
                    self.data_dir.join(tp.dir_name()),
                    self.log_config.clone(),
                    epoch,
                    self.last_stop,
                )
                .await
                {
                    Ok(log) => {
                        self.ctx.partitions.borrow_mut().insert(tp, log);
                    }
                    Err(e) => {
                        error!(partition = %tp, error = %e, "could not open partition");
                        self.unclean.set(true);
                    }
                }
            })
            .await;
        groups::forget_deleted_topics(&self.ctx, &image);
        self.apply_topic_configs(&image);
        *self.ctx.metadata.borrow_mut() = image;
    }
}

/// Starts `shards` executors and blocks until they have all stopped. `stops[i]` stops shard i.
/// Each shard's result says whether it closed every log it held (`LastStop::Clean`).
pub fn start(
    config: Config,
    shards: usize,
    state: MetadataState,
    stops: Vec<oneshot::Receiver<()>>,
    last_stop: LastStop,
) -> Result<Vec<glommio::ExecutorJoinHandle<Result<LastStop, String>>>, String> {
    let ready = mesh::StartBarrier::new(shards);
    let image = Arc::new(MetadataImage::new(state, shards));
    stops
        .into_iter()
        .zip(mesh::build::<ShardMsg>(shards, MESH_CHANNEL_CAPACITY))
        .enumerate()
        .map(|(i, (stop, mesh))| {
            let (config, ready, image) = (config.clone(), ready.clone(), image.clone());
            let mut builder = LocalExecutorBuilder::new(Placement::Fixed(i))
                .name(&format!("shard{i}"))
                .io_memory(1 << 20)
                .preempt_timer(Duration::from_millis(5));
            if config.spin_before_park_us > 0 {
                builder =
                    builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
            }
            builder
                .spawn(move || async move {
                    // First, so that nothing this shard queues can be left asleep.
                    let _awake = keep_awake::keep_awake();
                    let shard = ShardId(i as u16);
                    shard_main(shard, config, mesh, image, ready, stop.shared(), last_stop)
                        .instrument(info_span!("shard", shard = i))
                        .await
                })
                .map_err(|e| format!("cannot start the executor of shard {i}: {e}"))
        })
        .collect()
}

async fn shard_main(
    me: ShardId,
    config: Config,
    mesh: (
        mesh::MeshSenders<ShardMsg>,
        Vec<(ShardId, futures::channel::mpsc::Receiver<ShardMsg>)>,
    ),
    image: Arc<MetadataImage>,
    ready: Arc<mesh::StartBarrier>,
    stop: Stop,
    last_stop: LastStop,
) -> Result<LastStop, String> {
    let shard_count = image.shard_count;
    let (senders, receivers) = mesh;
    assert_eq!(senders.me(), me, "each shard gets its own ends of the mesh");
    let config = Rc::new(config);
    let peers = Rc::new(ShardPeers {
        me,
        senders,
        shard: OnceCell::new(),
    });
    let ctx = Rc::new(Context {
        shard: me,
        config: config.clone(),
        metadata: RefCell::new(Arc::new(MetadataImage::new(
            MetadataState::default(),
            shard_count,
        ))),
        partitions: RefCell::new(HashMap::new()),
        peers: Rc::new(peers.clone()),
        groups: crate::handler::group_coordinator::GroupCoordinator::new(
            config.group_initial_rebalance_delay_ms,
        ),
        producer_ids: RefCell::new(0..0),
        disk_space: Default::default(),
    });
    let meta_dir = config.data_dir.join("meta");
    let controller = (me == ShardId::CONTROLLER)
        .then(|| Controller::new(image.state.clone(), meta_dir, shard_count));
    let log_config = LogConfig {
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        index_interval_bytes: crate::limits::INDEX_INTERVAL_BYTES,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        write_ahead_bytes: config.log_write_ahead_bytes,
    };
    let shard = Rc::new(Shard {
        ctx: ctx.clone(),
        peers: peers.clone(),
        controller,
        data_dir: config.data_dir.clone(),
        log_config,
        last_stop,
        unclean: Cell::new(false),
    });
    assert!(
        peers.shard.set(Rc::downgrade(&shard)).is_ok(),
        "the back-link is set once"
    );

    for (_from, mut stream) in receivers {
        let shard = shard.clone();
        spawn_local(async move {
            while let Some(msg) = mesh::next(&mut stream).await {
                spawn_local(peers::handle(shard.clone(), msg)).detach();
            }
        })
        .detach();
    }

    shard.apply_image(image).await;
    info!(
        partitions = ctx.partitions.borrow().len(),
        "partitions open"
    );
    groups::start(&shard).await;
    // Serve only once every shard has its partitions open, so Metadata never points a client at
    // a shard that would refuse it.
    ready.arrive_and_wait().await;

    let bootstrap = config.listen;
    let own = SocketAddr::new(bootstrap.ip(), config.shard_port(me.index()));
    let gate = Rc::new(Gate::new());
    let limits = crate::net::ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.queued_max_request_bytes,
    );
    spawn_log_tasks(&ctx, stop.clone());
    // Measured once before serving, so DescribeLogDirs never answers "unknown" to a client.
    measure_disk_space(&ctx).await;
    spawn_disk_space_task(&ctx, stop.clone());
    let mut accepts = Vec::new();
    for addr in [bootstrap, own] {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        accepts.push(accept_loop(
            listener,
            ctx.clone(),
            gate.clone(),
            stop.clone(),
            limits.clone(),
        ));
    }
    info!(bootstrap = %bootstrap, port = own.port(), "serving");
    if me == ShardId::CONTROLLER
        && let Some(addr) = config.metrics_listen
    {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
        info!(metrics = %addr, "serving metrics");
        match gate.spawn(metrics::serve(listener, peers.clone(), stop.clone())) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => warn!(error = %e, "could not spawn the metrics task"),
        }
    }
    futures::future::join_all(accepts).await;

    // Stop: listeners are dropped; let connections finish their request in flight.
    if let Err(e) = gate.close().await {
        warn!(error = %e, "closing connections");
    }
    if ctx.groups.close().await.is_err() {
        shard.unclean.set(true);
    }
    let logs: Vec<_> = ctx.partitions.borrow().values().cloned().collect();
    // Each close waits on the disk for a few fdatasyncs; the disk takes several at once.
    futures::stream::iter(logs)
        .for_each_concurrent(PARTITION_IO_CONCURRENCY, |log| {
            let shard = &shard;
            async move {
                if let Err(e) = log.close().await {
                    error!(error = %e, "closing partition");
                    shard.unclean.set(true);
                }
            }
        })
        .await;
    info!("stopped");
    Ok(match shard.unclean.get() {
        true => LastStop::Unclean,
        false => LastStop::Clean,
    })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Rc<Context>,
    gate: Rc<Gate>,
    stop: Stop,
    limits: Rc<crate::net::ConnectionLimits>,
) {
    let mut conn_id = 0u64;
    loop {
        match select(listener.accept().boxed_local(), stop.clone()).await {
            Either::Left((Ok(stream), _)) => {
                conn_id += 1;
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let ip = stream
                    .peer_addr()
                    .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                let slot = match limits.admit(ip) {
                    Ok(slot) => slot,
                    Err(why) => {
                        warn!(peer = %peer, why, open = limits.open(), "connection refused");
                        drop(stream);
                        continue;
                    }
                };
                let span = info_span!("conn", id = conn_id, peer = %peer);
                let conn =
                    crate::net::serve_limited_connection(stream, ctx.clone(), stop.clone(), slot)
                        .instrument(span);
                // Detached: the gate tracks the task until it finishes.
                match gate.spawn(conn) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(e) => warn!(error = %e, "could not spawn connection task"),
                }
            }
            Either::Left((Err(e), _)) => warn!(error = %e, "accept"),
            Either::Right(_) => break,
        }
    }
}

impl Shard {
    /// Gives every open partition the effective settings of its topic (topic configs over the
    /// broker defaults), so an AlterConfigs takes effect without a restart. Cheap: a few string
    /// parses per topic on each metadata change.
    fn apply_topic_configs(&self, image: &MetadataImage) {
        let mut effective: HashMap<&str, LogConfig> = HashMap::new();
        for (tp, log) in self.ctx.partitions.borrow().iter() {
            let Some(topic) = image.topic(&tp.topic) else {
                continue;
            };
            let config = effective.entry(topic.name.as_str()).or_insert_with(|| {
                crate::metadata::topic_config::effective_log_config(
                    &topic.configs,
                    &self.log_config,
                )
            });
            log.set_config(config.clone());
        }
    }
}
/// The shard's periodic log work: background flush of acks=0/1 data every
/// `--flush-interval-ms` (0: never) and retention every `--log-retention-check-interval-ms`.
/// Both end when the shard stops; a partition closed meanwhile just does nothing.
fn spawn_log_tasks(ctx: &Rc<Context>, stop: Stop) {
    let flush_ms = ctx.config.flush_interval_ms;
    if flush_ms > 0 {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        spawn_local(async move {
            while sleep_or_stop(Duration::from_millis(flush_ms), &stop).await {
                let logs: Vec<_> = ctx.partitions.borrow().values().cloned().collect();
                for log in logs {
                    if let Err(e) = log.flush().await {
                        warn!(error = %e, "background flush failed");
                    }
                }
            }
        })
        .detach();
    }
    let retention_ms = ctx.config.log_retention_check_interval_ms;
    let ctx = ctx.clone();
    spawn_local(async move {
        while sleep_or_stop(Duration::from_millis(retention_ms), &stop).await {
            let logs: Vec<_> = ctx
                .partitions
                .borrow()
                .iter()
                .map(|(tp, log)| (tp.clone(), log.clone()))
                .collect();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for (tp, log) in logs {
                if let Err(e) = log.enforce_retention(now_ms).await {
                    warn!(partition = %tp, error = %e, "retention failed");
                }
                glommio::yield_if_needed().await;
            }
        }
    })
    .detach();
}

/// Measures the data dir's file system into `Context::disk_space` (a statvfs on the blocking
/// pool; the DescribeLogDirs handler only reads the cell).
async fn measure_disk_space(ctx: &Context) {
    match crate::log::file::disk_space(&ctx.config.data_dir).await {
        Ok(space) => ctx.disk_space.set(Some(space)),
        Err(e) => warn!(error = %e, "cannot measure the data dir's disk space"),
    }
}

/// Keeps `Context::disk_space` fresh: measured again every `DISK_SPACE_REFRESH_INTERVAL`.
fn spawn_disk_space_task(ctx: &Rc<Context>, stop: Stop) {
    let ctx = ctx.clone();
    spawn_local(async move {
        while sleep_or_stop(DISK_SPACE_REFRESH_INTERVAL, &stop).await {
            measure_disk_space(&ctx).await;
        }
    })
    .detach();
}

/// How often DescribeLogDirs' total and usable bytes are measured again.
const DISK_SPACE_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Partitions a shard opens (at start, on a new topic) or closes (at stop) at once.
const PARTITION_IO_CONCURRENCY: usize = 32;

/// Sleeps for `period`; false if the shard is stopping instead.
async fn sleep_or_stop(period: Duration, stop: &Stop) -> bool {
    let sleep = glommio::timer::sleep(period).boxed_local();
    matches!(select(sleep, stop.clone()).await, Either::Left(_))
}
