//! The per-topic settings Produce applies: max.message.bytes instead of only the broker's
//! message.max.bytes, and message.timestamp.type=LogAppendTime stamping.

use bytes::Bytes;

use super::TopicRef;
use crate::metadata::MetadataImage;
use crate::metadata::topic_config;
use crate::protocol::batch::set_log_append_time;
use crate::types::TopicId;

/// What one topic asks of Produce.
pub struct ProduceSettings {
    pub max_message_bytes: u32,
    pub log_append_time: bool,
}

impl ProduceSettings {
    /// The topic's settings; the broker's when the topic is unknown (the append fails anyway).
    pub fn of(image: &MetadataImage, topic: TopicRef<'_>, broker_max_message_bytes: u32) -> Self {
        let t = match topic {
            TopicRef::Name(n) => image.topic(n),
            TopicRef::Id(id) => image.topic_by_id(TopicId(id.0)),
        };
        let configs = t.map_or(&[][..], |t| &t.configs[..]);
        ProduceSettings {
            max_message_bytes: topic_config::max_message_bytes(configs, broker_max_message_bytes),
            log_append_time: topic_config::log_append_time(configs),
        }
    }

    /// The record set as it is to be stored, and the LogAppendTime given to it (if any). A
    /// LogAppendTime topic gets a stamped copy: the request's `Bytes` are shared and immutable.
    pub fn prepare(&self, records: Bytes) -> (Bytes, Option<i64>) {
        if !self.log_append_time {
            return (records, None);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut stamped = records.to_vec();
        set_log_append_time(&mut stamped, now_ms);
        (Bytes::from(stamped), Some(now_ms))
    }
}
