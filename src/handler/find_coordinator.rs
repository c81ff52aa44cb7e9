//! FindCoordinator: the coordinator of a group or transactional id is the shard
//! `coordinator_shard(key) % shards`, answered as that shard's broker (node id, host, port).

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code::{self, code};
use super::{Context, Frame, HandlerError, Request};
use crate::group::coordinator_shard;
use crate::types::{NodeId, ShardId, node_id};

pub const VERSIONS: RangeInclusive<i16> = 0..=6;
/// First version carrying `coordinator_keys` (KIP-699).
const BATCHED_MIN_VERSION: i16 = 4;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: FindCoordinatorRequest = r.decode(&mut body)?;
    let resp = if r.version >= BATCHED_MIN_VERSION {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| coordinator(ctx, k, req.key_type))
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let mut c = coordinator(ctx, &req.key, req.key_type);
        if r.version == 0 {
            c.error_message = None; // v0 has no error message
        }
        FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_error_message(c.error_message)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port)
    };
    r.respond(&resp)
}

fn coordinator(ctx: &Context, key: &StrBytes, key_type: i8) -> Coordinator {
    let out = Coordinator::default().with_key(key.clone());
    if key_type != KEY_TYPE_GROUP && key_type != KEY_TYPE_TRANSACTION {
        return out
            .with_error_code(code(ResponseError::InvalidRequest))
            .with_error_message(Some(StrBytes::from_string(format!(
                "unknown coordinator key type {key_type}"
            ))))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    let shard = coordinator_shard(key.as_str(), ctx.image().shard_count);
    let node = node_id(NodeId(ctx.config.node_id_base), ShardId(shard as u16));
    out.with_error_code(error_code::NONE)
        .with_node_id(BrokerId(node.0))
        .with_host(StrBytes::from_string(ctx.config.advertised_host()))
        .with_port(i32::from(ctx.config.shard_port(shard)))
}
