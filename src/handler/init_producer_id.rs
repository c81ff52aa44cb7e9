//! InitProducerId for idempotent producers (no transactional id): a fresh producer id at epoch 0.
//! Ids come from blocks the controller reserves and persists, so they are unique across shards
//! and restarts.

use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::error_code::{self, code, topic_error};
use super::{Context, Frame, HandlerError, Request};
use crate::limits::PRODUCER_ID_BLOCK_SIZE;

pub const VERSIONS: RangeInclusive<i16> = 0..=6;

pub async fn serve(ctx: &Rc<Context>, r: Request, mut body: Bytes) -> Result<Frame, HandlerError> {
    let req: InitProducerIdRequest = r.decode(&mut body)?;
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        // Transactions are not served yet; refusing beats pretending to be transactional.
        return r.respond(
            &resp.with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed)),
        );
    }
    // A producer that asks to bump its epoch (KIP-360) gets a new id instead: same guarantees,
    // as nothing of the old id is fenced yet.
    let resp = match next_producer_id(ctx).await {
        Ok(id) => resp
            .with_error_code(error_code::NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(c) => resp.with_error_code(c),
    };
    r.respond(&resp)
}

async fn next_producer_id(ctx: &Rc<Context>) -> Result<i64, i16> {
    loop {
        {
            let mut ids = ctx.producer_ids.borrow_mut();
            if let Some(id) = ids.next() {
                return Ok(id);
            }
        }
        let start = ctx
            .peers
            .reserve_producer_ids(PRODUCER_ID_BLOCK_SIZE)
            .await
            .map_err(|e| topic_error(&e))?;
        let mut ids = ctx.producer_ids.borrow_mut();
        // Another task may have refilled meanwhile; the newer block simply replaces an empty one.
        if ids.is_empty() {
            *ids = start..start + PRODUCER_ID_BLOCK_SIZE;
        }
    }
}
