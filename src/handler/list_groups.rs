//! ListGroups: the groups this shard coordinates, as a Kafka broker answers with its own.
//! `Peers::list_groups` can gather every shard's, for a caller that wants the whole cluster.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{Context, Frame, HandlerError, Request};

pub const VERSIONS: RangeInclusive<i16> = 0..=5;
/// Classic groups are the only type Sable has (KIP-848 types filter, v5).
const GROUP_TYPE_CLASSIC: &str = "classic";
/// First version carrying the group state (KIP-518).
const STATE_MIN_VERSION: i16 = 4;
/// First version carrying the group type (KIP-848).
const TYPE_MIN_VERSION: i16 = 5;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: ListGroupsRequest = r.decode(&mut body)?;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    let classic_wanted = req.types_filter.is_empty()
        || req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(GROUP_TYPE_CLASSIC));
    // Only this shard's groups: every client that lists groups (kafka-python's and Java's
    // admin, librdkafka's rd_kafka_list_groups) asks every broker in Metadata and concatenates
    // the answers, and every shard is a broker. A fan-out here listed each group once per
    // shard (measured with kafka-python 3.0.12 admin list_groups on --shards 2).
    let listings = if classic_wanted {
        ctx.groups.manager.borrow().list(&states)
    } else {
        vec![]
    };
    let groups = listings
        .into_iter()
        .map(|g| {
            let mut out = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if r.version >= STATE_MIN_VERSION {
                out.group_state = StrBytes::from_static_str(g.state.name());
            }
            if r.version >= TYPE_MIN_VERSION {
                out.group_type = StrBytes::from_static_str(GROUP_TYPE_CLASSIC);
            }
            out
        })
        .collect();
    r.respond(
        &ListGroupsResponse::default()
            .with_error_code(error_code::NONE)
            .with_groups(groups),
    )
}
