//! Compile-time limits and the relations between them. Imports nothing.
//! Names: noun, qualifier, unit last.

pub const KIB: u32 = 1024;
pub const MIB: u32 = 1024 * KIB;

/// Largest request frame; a larger one closes the connection before allocation.
/// Kafka: socket.request.max.bytes.
pub const REQUEST_SIZE_MAX_BYTES: u32 = 100 * MIB;
/// Requests one connection may have read but not yet answered.
pub const CONNECTION_INFLIGHT_MAX: usize = 5;
/// Largest record batch accepted by default. Kafka: max.message.bytes.
pub const MESSAGE_SIZE_MAX_BYTES_DEFAULT: u32 = 1_048_588;
/// Kafka: segment.bytes.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 1 << 30;
/// Kafka: log.index.interval.bytes.
pub const INDEX_INTERVAL_BYTES: u32 = 4 * KIB;
/// One sendfile call must not hold the core for long.
pub const SENDFILE_CHUNK_MAX_BYTES: u32 = 256 * KIB;
/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
/// Partitions one topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;
/// Slots per (from, to) pair in the cross-shard mesh.
pub const MESH_CHANNEL_CAPACITY: usize = 64;
/// Longest a fetch may wait for min_bytes, whatever the client asks.
pub const FETCH_WAIT_MAX_MS: i32 = 30_000;
/// Largest Fetch response a client may ask for. Kafka: fetch.max.bytes (55 MiB).
pub const FETCH_RESPONSE_MAX_BYTES_DEFAULT: u32 = 55 * MIB;
/// Producer ids a shard reserves from the controller at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Allocations at least this large are served by a lazily-committed mapping (see `alloc`).
pub const ALLOC_LAZY_MIN_BYTES: usize = 64 << 20;
/// An idempotent producer whose newest batch is this old is forgotten by a partition.
/// Kafka: producer.id.expiration.ms (1 day).
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// Client connections one shard serves at once by default. Kafka: max.connections.
pub const CONNECTIONS_PER_SHARD_MAX_DEFAULT: u32 = 10_000;
/// Request body bytes one shard holds by default. Kafka: queued.max.request.bytes.
pub const QUEUED_REQUEST_BYTES_MAX_DEFAULT: u64 = 512 << 20;

const _: () = assert!(SENDFILE_CHUNK_MAX_BYTES <= REQUEST_SIZE_MAX_BYTES);
const _: () = assert!((INDEX_INTERVAL_BYTES as u64) < SEGMENT_SIZE_DEFAULT_BYTES);
const _: () = assert!(MESSAGE_SIZE_MAX_BYTES_DEFAULT < REQUEST_SIZE_MAX_BYTES);
const _: () = assert!(QUEUED_REQUEST_BYTES_MAX_DEFAULT >= REQUEST_SIZE_MAX_BYTES as u64);
