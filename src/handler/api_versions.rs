//! ApiVersions: derived from the handler table, never written by hand.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::{BufMut, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{Context, Frame, HandlerError, Request, SUPPORTED};
use crate::protocol::response::FrameBuilder;

pub const VERSIONS: RangeInclusive<i16> = 0..=4;

pub fn serve(_ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    // v3+ carries the client's software name and version; a request we cannot parse is still
    // answered (Kafka answers INVALID_REQUEST), so clients learn our versions either way.
    let error_code = match r.decode::<ApiVersionsRequest>(&mut body) {
        Ok(_) => 0,
        Err(_) => ResponseError::InvalidRequest.code(),
    };
    r.respond(&response(error_code))
}

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|(key, v)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*v.start())
                .with_max_version(*v.end())
        })
        .collect();
    // Tagged fields (features) stay at their defaults, which the codec omits: librdkafka 2.0.x
    // mis-parses them.
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// KIP-511: a version we do not know is answered in the v0 layout with UNSUPPORTED_VERSION and
/// the ApiVersions range, so the client can retry with a version we serve.
pub fn unsupported_version(correlation_id: i32) -> Frame {
    let mut f = FrameBuilder::new(correlation_id);
    let b = f.buf();
    b.put_i16(ResponseError::UnsupportedVersion.code());
    b.put_i32(1);
    b.put_i16(ApiKey::ApiVersions as i16);
    b.put_i16(*VERSIONS.start());
    b.put_i16(*VERSIONS.end());
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn advertises_every_table_entry_and_no_tagged_features() {
        for version in VERSIONS {
            let mut buf = bytes::BytesMut::new();
            response(0).encode(&mut buf, version).unwrap();
            let d = ApiVersionsResponse::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(d.api_keys.len(), SUPPORTED.len());
            assert!(d.supported_features.is_empty() && d.finalized_features_epoch == -1);
        }
        let produce = response(0)
            .api_keys
            .into_iter()
            .find(|k| k.api_key == 0)
            .unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 13));
    }

    #[test]
    fn unsupported_version_is_v0_layout() {
        let f = unsupported_version(5);
        let crate::protocol::response::Part::Mem(b) = &f.parts[0] else {
            panic!()
        };
        let mut body = b.slice(8..);
        let d = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(d.error_code, 35);
        assert_eq!(d.api_keys.len(), 1);
        assert_eq!((d.api_keys[0].api_key, d.api_keys[0].max_version), (18, 4));
    }
}
