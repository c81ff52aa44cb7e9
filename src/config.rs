//! Every broker option: doc line, the Kafka name it mirrors, default, unit. Parsed and validated
//! once in `main`, then passed down by value (it is `Send` and `Clone`); there are no globals.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::limits;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "sable",
    version,
    about = "Sable: a Kafka-protocol broker, thread-per-core on io_uring"
)]
pub struct Config {
    /// Bootstrap address every shard listens on (SO_REUSEPORT). Shard i also listens on
    /// port + 1 + i, and that is the address Metadata advertises for it.
    #[arg(long, env = "SABLE_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// Host name clients should connect to (Kafka: advertised.listeners). Default: the listen host.
    #[arg(long, env = "SABLE_ADVERTISE")]
    pub advertise: Option<String>,

    /// Directory holding the partition logs and metadata (Kafka: log.dirs).
    #[arg(long, env = "SABLE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Number of shards (one pinned executor per core). Default: every available core.
    #[arg(long, env = "SABLE_SHARDS")]
    pub shards: Option<usize>,

    /// Broker id of shard 0; shard i is advertised as node id base + i (Kafka: node.id).
    #[arg(long, env = "SABLE_NODE_ID_BASE", default_value_t = 0)]
    pub node_id_base: i32,

    /// Partitions of an auto-created topic (Kafka: num.partitions).
    #[arg(long, env = "SABLE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,

    /// Create a topic when a client asks for or produces to one that does not exist
    /// (Kafka: auto.create.topics.enable).
    #[arg(long, env = "SABLE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Largest request frame in bytes; a larger one closes the connection
    /// (Kafka: socket.request.max.bytes).
    #[arg(long, env = "SABLE_REQUEST_SIZE_MAX_BYTES", default_value_t = limits::REQUEST_SIZE_MAX_BYTES)]
    pub request_size_max_bytes: u32,

    /// Largest record batch in bytes (Kafka: message.max.bytes / max.message.bytes).
    #[arg(long, env = "SABLE_MESSAGE_MAX_BYTES", default_value_t = limits::MESSAGE_SIZE_MAX_BYTES_DEFAULT)]
    pub message_max_bytes: u32,

    /// Segment size in bytes at which a new segment is rolled (Kafka: log.segment.bytes).
    #[arg(long, env = "SABLE_SEGMENT_BYTES", default_value_t = limits::SEGMENT_SIZE_DEFAULT_BYTES)]
    pub segment_bytes: u64,

    /// Age in ms after which the active segment is rolled (Kafka: log.roll.ms). Default 7 days.
    #[arg(long, env = "SABLE_SEGMENT_MS", default_value_t = 604_800_000)]
    pub segment_ms: i64,

    /// Default for topics without retention.ms: segments older than this are deleted; -1 keeps
    /// everything (Kafka: log.retention.ms). Default 7 days.
    #[arg(
        long,
        env = "SABLE_RETENTION_MS",
        default_value_t = 604_800_000,
        allow_negative_numbers = true
    )]
    pub retention_ms: i64,

    /// Default for topics without retention.bytes: a partition larger than this loses its oldest
    /// segments; -1 means no limit (Kafka: log.retention.bytes).
    #[arg(long, env = "SABLE_RETENTION_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub retention_bytes: i64,

    /// Bytes of zeros kept written past the end of a partition that takes lone acks=all
    /// appends, so each one's O_DSYNC write lands on blocks that exist and syncs the data alone;
    /// 0 turns it off (Sable's own setting; at most 4 MiB).
    #[arg(
        long,
        env = "SABLE_LOG_WRITE_AHEAD_BYTES",
        default_value_t = crate::log::WRITE_AHEAD_DEFAULT_BYTES,
        value_parser = clap::value_parser!(u64).range(0..=crate::log::WRITE_AHEAD_MAX_BYTES)
    )]
    pub log_write_ahead_bytes: u64,

    /// Background flush interval in ms for acks=0/1 data. acks=all is always fsynced before the
    /// answer; 0 disables the background flush (Kafka: log.flush.interval.ms).
    #[arg(long, env = "SABLE_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,

    /// Largest Fetch response in bytes, whatever the client asks; the first batch is always
    /// sent whole so a larger batch still makes progress (Kafka: fetch.max.bytes).
    #[arg(long, env = "SABLE_FETCH_MAX_BYTES", default_value_t = limits::FETCH_RESPONSE_MAX_BYTES_DEFAULT)]
    pub fetch_max_bytes: u32,

    /// Copy acks=0/1 appends into the page cache on the shard itself while the kernel has no
    /// reason to make the write wait (dirty pages under the background threshold, free memory
    /// over the low watermarks, room under a memory cgroup's limit and on the disk, sampled every
    /// 10 ms), and allocate blocks ahead of partitions growing faster than 10 MB/s; false hands
    /// every write to io_uring's worker thread, which costs a context switch each way on ext4
    /// (Sable's own setting).
    #[arg(long, env = "SABLE_LOG_INLINE_WRITES", default_value_t = true, action = clap::ArgAction::Set)]
    pub log_inline_writes: bool,

    /// Send fetched record data with sendfile (zero copy) rather than an io_uring read + write.
    #[arg(long, env = "SABLE_FETCH_SENDFILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub fetch_sendfile: bool,

    /// Microseconds a shard with nothing to do keeps polling before it sleeps: a request or an
    /// I/O completion arriving meanwhile skips a wake-up, for more CPU while idle; 0 sleeps at once.
    #[arg(long, env = "SABLE_SPIN_BEFORE_PARK_US", default_value_t = 0)]
    pub spin_before_park_us: u64,

    /// Consumer group initial rebalance delay in ms (Kafka: group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "SABLE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// How often each shard deletes segments past retention.ms / retention.bytes, in ms
    /// (Kafka: log.retention.check.interval.ms).
    #[arg(
        long,
        env = "SABLE_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub log_retention_check_interval_ms: u64,

    /// Most client connections one shard serves at once; each shard is a broker of its own, so
    /// the process takes up to shards x this. Connections over it are closed right after accept
    /// (Kafka: max.connections, per broker).
    #[arg(long, env = "SABLE_MAX_CONNECTIONS", default_value_t = limits::CONNECTIONS_PER_SHARD_MAX_DEFAULT)]
    pub max_connections: u32,

    /// Most connections one shard serves from one client IP address; more are closed right
    /// after accept (Kafka: max.connections.per.ip, default unlimited = 2147483647).
    #[arg(long, env = "SABLE_MAX_CONNECTIONS_PER_IP", default_value_t = i32::MAX as u32)]
    pub max_connections_per_ip: u32,

    /// Bytes of request bodies one shard holds in memory (read and not yet answered). A request
    /// that would go over waits for others to finish: backpressure, not memory growth
    /// (Kafka: queued.max.request.bytes). At least --request-size-max-bytes.
    #[arg(long, env = "SABLE_QUEUED_MAX_REQUEST_BYTES", default_value_t = limits::QUEUED_REQUEST_BYTES_MAX_DEFAULT)]
    pub queued_max_request_bytes: u64,
    /// TCP congestion control of client connections (e.g. cubic); default: the system's
    /// (net.ipv4.tcp_congestion_control). BBR without the fq qdisc paces each burst with a
    /// kernel timer, which can halve loopback and LAN Fetch bandwidth: see tuning/README.md.
    #[arg(long, env = "SABLE_TCP_CONGESTION_CONTROL")]
    pub tcp_congestion_control: Option<String>,

    /// Serve Prometheus metrics (GET /metrics, text format) on this address, from shard 0.
    /// Off by default.
    #[arg(long, env = "SABLE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// The host advertised in Metadata.
    pub fn advertised_host(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string())
    }

    /// The port shard `i` listens on and is advertised with.
    pub fn shard_port(&self, shard: usize) -> u16 {
        self.listen.port() + 1 + shard as u16
    }

    /// Checks what clap cannot; returns a message for the operator.
    pub fn validate(&self, shards: usize) -> Result<(), String> {
        if shards == 0 {
            return Err("--shards must be at least 1".into());
        }
        if usize::from(self.listen.port()) + 1 + shards > usize::from(u16::MAX) {
            return Err(format!(
                "--listen port {} leaves no room for {shards} shard ports",
                self.listen.port()
            ));
        }
        if self.default_partitions < 1 || self.default_partitions > limits::TOPIC_PARTITIONS_MAX {
            return Err(format!(
                "--default-partitions must be in 1..={}",
                limits::TOPIC_PARTITIONS_MAX
            ));
        }
        if self.request_size_max_bytes < 1024 {
            return Err("--request-size-max-bytes must be at least 1024".into());
        }
        if self.segment_bytes < 1024 {
            return Err("--segment-bytes must be at least 1024".into());
        }
        if self.queued_max_request_bytes < u64::from(self.request_size_max_bytes) {
            return Err(
                "--queued-max-request-bytes must be at least --request-size-max-bytes".into(),
            );
        }
        if self.log_retention_check_interval_ms == 0 {
            return Err("--log-retention-check-interval-ms must be at least 1".into());
        }
        Ok(())
    }
}
