//! IncrementalAlterConfigs: SET / DELETE / APPEND / SUBTRACT on a topic's configs, applied by the
//! controller to the current set (see `alter_configs::alter`).

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::alter;
use super::error_code::code;
use super::{Context, Frame, HandlerError, Request};
use crate::metadata::topic_config::{AlterOp, Alteration};

pub const VERSIONS: RangeInclusive<i16> = 0..=1;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: IncrementalAlterConfigsRequest = r.decode(&mut body)?;
    let resources = req
        .resources
        .iter()
        .map(|res| {
            let ops: Result<Vec<AlterOp>, (i16, String)> = res
                .configs
                .iter()
                .map(|c| {
                    AlterOp::from_wire(
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                    .ok_or_else(|| {
                        (
                            code(ResponseError::InvalidRequest),
                            format!("Unknown config operation {}", c.config_operation),
                        )
                    })
                })
                .collect();
            let names: Vec<&str> = res.configs.iter().map(|c| c.name.as_str()).collect();
            let ops = ops.and_then(|ops| {
                match names
                    .iter()
                    .enumerate()
                    .find(|(i, n)| names[..*i].contains(n))
                {
                    Some((_, n)) => Err((
                        code(ResponseError::InvalidRequest),
                        format!("Config {n} appears more than once in the resource."),
                    )),
                    None => Ok(ops),
                }
            });
            (
                res.resource_type,
                res.resource_name.to_string(),
                ops.map(Alteration::Incremental),
            )
        })
        .collect();
    let outcomes = alter(ctx, resources, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(outcomes)
        .map(|(res, (code, message))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    r.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}
