//! DescribeCluster: the cluster id (persisted in the metadata, so stable across restarts), the
//! controller (shard 0) and every shard as a broker.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{Context, Frame, HandlerError, Request};
use crate::types::{NodeId, ShardId, node_id};

pub const VERSIONS: RangeInclusive<i16> = 0..=2;

/// Sent when the client did not ask for authorized operations (Kafka's -2^31).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// Endpoint type 1: brokers (KIP-919); Sable has no separate controller endpoints.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: DescribeClusterRequest = r.decode(&mut body)?;
    let image = ctx.image();
    let base = NodeId(ctx.config.node_id_base);
    let host = StrBytes::from_string(ctx.config.advertised_host());
    if r.version >= 1 && req.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return r.respond(
            &DescribeClusterResponse::default()
                .with_error_code(error_code::code(
                    kafka_protocol::ResponseError::UnsupportedEndpointType,
                ))
                .with_error_message(Some(StrBytes::from_static_str(
                    "Sable serves only broker endpoints",
                )))
                .with_endpoint_type(req.endpoint_type)
                .with_cluster_id(StrBytes::from_string(image.state.cluster_id.clone())),
        );
    }
    let brokers = (0..image.shard_count)
        .map(|s| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(node_id(base, ShardId(s as u16)).0))
                .with_host(host.clone())
                .with_port(i32::from(ctx.config.shard_port(s)))
        })
        .collect();
    r.respond(
        &DescribeClusterResponse::default()
            .with_error_code(error_code::NONE)
            .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
            .with_cluster_id(StrBytes::from_string(image.state.cluster_id.clone()))
            .with_controller_id(BrokerId(node_id(base, ShardId::CONTROLLER).0))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
                0
            } else {
                AUTHORIZED_OPERATIONS_OMITTED
            }),
    )
}
