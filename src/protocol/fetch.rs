//! The Fetch response, framed by hand so that record data can follow as file regions
//! (sendfile) instead of being copied into the response buffer. Versions 4..=18.

use bytes::BufMut;

use super::response::{FrameBuilder, ResponseFrame, put_uvarint};
use crate::types::TopicId;

/// First Fetch version with flexible (compact) encoding and a v1 response header.
pub const FETCH_FLEXIBLE_MIN_VERSION: i16 = 12;
/// First Fetch version naming topics by id (KIP-516).
pub const FETCH_TOPIC_ID_MIN_VERSION: i16 = 13;

pub struct PartitionData<R> {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Record regions in order, each with its length in bytes.
    pub records: Vec<(R, u64)>,
}

pub struct TopicData<R> {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: Vec<PartitionData<R>>,
}

pub struct FetchResponse<R> {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicData<R>>,
}

pub fn encode<R>(
    correlation_id: i32,
    version: i16,
    response: FetchResponse<R>,
) -> ResponseFrame<R> {
    assert!(
        (4..=18).contains(&version),
        "Fetch v{version} is not served"
    );
    let flexible = version >= FETCH_FLEXIBLE_MIN_VERSION;
    let mut f = FrameBuilder::new(correlation_id);
    if flexible {
        f.buf().put_u8(0); // Response header v1: no tagged fields.
    }
    f.buf().put_i32(response.throttle_time_ms);
    if version >= 7 {
        f.buf().put_i16(response.error_code);
        f.buf().put_i32(response.session_id);
    }
    put_array_len(&mut f, flexible, response.topics.len());
    for topic in response.topics {
        if version >= FETCH_TOPIC_ID_MIN_VERSION {
            f.buf().put_slice(&topic.topic_id.0);
        } else {
            put_string(&mut f, flexible, &topic.name);
        }
        put_array_len(&mut f, flexible, topic.partitions.len());
        for p in topic.partitions {
            put_partition(&mut f, version, flexible, p);
        }
        if flexible {
            f.buf().put_u8(0);
        }
    }
    if flexible {
        f.buf().put_u8(0); // No top-level tagged fields (node_endpoints only on leader change).
    }
    f.finish()
}

fn put_partition<R>(f: &mut FrameBuilder<R>, version: i16, flexible: bool, p: PartitionData<R>) {
    let b = f.buf();
    b.put_i32(p.partition_index);
    b.put_i16(p.error_code);
    b.put_i64(p.high_watermark);
    b.put_i64(p.last_stable_offset);
    if version >= 5 {
        b.put_i64(p.log_start_offset);
    }
    // aborted_transactions: null, as Kafka sends for read_uncommitted.
    if flexible {
        put_uvarint(b, 0);
    } else {
        b.put_i32(-1);
    }
    if version >= 11 {
        b.put_i32(-1); // preferred_read_replica
    }
    let records_len: u64 = p.records.iter().map(|(_, len)| *len).sum();
    if flexible {
        put_uvarint(f.buf(), records_len + 1);
    } else {
        f.buf()
            .put_i32(i32::try_from(records_len).expect("fetch response bounded by max_bytes"));
    }
    for (region, len) in p.records {
        f.region(region, len);
    }
    if flexible {
        f.buf().put_u8(0);
    }
}

fn put_array_len<R>(f: &mut FrameBuilder<R>, flexible: bool, n: usize) {
    if flexible {
        put_uvarint(f.buf(), n as u64 + 1);
    } else {
        f.buf().put_i32(n as i32);
    }
}

fn put_string<R>(f: &mut FrameBuilder<R>, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(f.buf(), s.len() as u64 + 1);
    } else {
        f.buf().put_i16(s.len() as i16);
    }
    f.buf().put_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::response::Part;
    use bytes::Bytes;
    use kafka_protocol::messages::FetchResponse as Decoded;
    use kafka_protocol::protocol::Decodable;

    fn flatten(f: ResponseFrame<Bytes>) -> Bytes {
        let mut out = Vec::new();
        for p in f.parts {
            match p {
                Part::Mem(b) | Part::Region(b, _) => out.extend_from_slice(&b),
            }
        }
        Bytes::from(out)
    }

    /// Our framing must decode with the reference codec at every version we serve.
    #[test]
    fn decodes_with_reference_codec_at_every_version() {
        for version in 4..=18i16 {
            let batch = Bytes::from_static(b"0123456789");
            let resp = FetchResponse {
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                topics: vec![TopicData {
                    name: "t".into(),
                    topic_id: TopicId([7; 16]),
                    partitions: vec![
                        PartitionData {
                            partition_index: 3,
                            error_code: 0,
                            high_watermark: 42,
                            last_stable_offset: 42,
                            log_start_offset: 1,
                            records: vec![(batch.slice(0..4), 4), (batch.slice(4..), 6)],
                        },
                        PartitionData {
                            partition_index: 4,
                            error_code: 1,
                            high_watermark: -1,
                            last_stable_offset: -1,
                            log_start_offset: -1,
                            records: vec![],
                        },
                    ],
                }],
            };
            let mut frame = flatten(encode(9, version, resp));
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(size as usize, frame.len() - 4, "v{version}");
            let mut body = frame.split_off(8);
            if version >= FETCH_FLEXIBLE_MIN_VERSION {
                assert_eq!(body[0], 0);
                body = body.split_off(1);
            }
            let d = Decoded::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: {} trailing bytes", body.len());
            let t = &d.responses[0];
            if version >= FETCH_TOPIC_ID_MIN_VERSION {
                assert_eq!(t.topic_id.as_bytes(), &[7; 16]);
            } else {
                assert_eq!(t.topic.0.as_str(), "t");
            }
            assert_eq!(t.partitions[0].partition_index, 3);
            assert_eq!(t.partitions[0].high_watermark, 42);
            assert_eq!(t.partitions[0].records.as_deref(), Some(&b"0123456789"[..]));
            assert_eq!(t.partitions[1].error_code, 1);
            assert_eq!(t.partitions[1].records.as_deref().map(<[u8]>::len), Some(0));
        }
    }
}
