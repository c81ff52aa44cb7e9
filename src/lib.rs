//! Sable: a Kafka-protocol message broker, thread-per-core on io_uring, shared-nothing.
//! See ARCHITECTURE.md for the map.

pub mod alloc;
pub mod config;
pub mod group;
pub mod handler;
pub mod limits;
pub mod log;
pub mod metadata;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod types;

/// Installed here rather than in `main.rs` so that unit tests run under the same allocator as the
/// broker (see `alloc.rs` for why it matters).
#[global_allocator]
static ALLOC: alloc::LazyLargeAlloc = alloc::LazyLargeAlloc;
