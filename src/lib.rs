//! Sable: a Kafka-protocol message broker, thread-per-core on io_uring, shared-nothing.
//! See ARCHITECTURE.md for the map.

pub mod alloc;
pub mod config;
pub mod handler;
pub mod limits;
pub mod log;
pub mod metadata;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod types;
