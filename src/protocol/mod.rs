//! Sans-io Kafka codec pieces: frames, record batch headers, records, the hand-written Fetch
//! response framing. No async runtime, no std::net, no clock.

pub mod batch;
pub mod fetch;
pub mod frame;
pub mod records;
pub mod response;
