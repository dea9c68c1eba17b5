//! How each command of a batch ends once its transaction did: acked, or dead-lettered with
//! `command.failed` announced (`failure`), and what observers are told.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use tracing::Instrument;

use super::item::{End, Item};
use crate::broker::ack;
use crate::observe::{self, Disposition, HandlerResult};
use crate::worker::context::Context;
use crate::worker::failure::{self, Failure};

/// Carries the sagas on, then acks what is done and hands on what is not. The sagas go
/// first: they need only the commit, and an ack can wait on a channel the broker session is
/// losing. After one ack fails, the batch's other deliveries (same channel) are not acked:
/// the broker redelivers them and the inbox recognises them.
pub(super) async fn settle(ctx: &Context, mut ended: Vec<(Item, End)>, started: Instant) {
    let took = started.elapsed();
    let mut sagas = Vec::new();
    for (_, end) in ended.iter_mut() {
        if let End::Done { sagas: s, .. } = end {
            sagas.append(s);
        }
    }
    ctx.runner.start(sagas);
    let mut acks = true;
    for (item, end) in ended {
        let span = item.span.clone();
        settle_one(ctx, item, end, took, &mut acks)
            .instrument(span)
            .await;
    }
}

/// Acks a delivery unless an earlier ack of the batch failed; whether it is acked.
pub(super) async fn ack_if(acks: &mut bool, delivery: &Delivery) -> bool {
    if *acks {
        *acks = ack(delivery).await;
    }
    *acks
}

pub(super) async fn settle_one(
    ctx: &Context,
    item: Item,
    end: End,
    took: Duration,
    acks: &mut bool,
) {
    let meta = &item.cmd.meta;
    let (result, code) = match &end {
        End::Done { result, code, .. } => (*result, *code),
        End::Duplicate => (HandlerResult::Duplicate, None),
        End::KeyReused => (HandlerResult::Refused, Some("IDEMPOTENCY_KEY_REUSED")),
        End::RetryLater(_) => (HandlerResult::RetryLater, None),
        End::Failed(_) => (HandlerResult::Failed, None),
    };
    ctx.metrics
        .handled(&item.msg.routing_key, result, code, took);
    let disposition = match end {
        End::Done { .. } => {
            tracing::info!(outcome = result.as_str(), code, "command handled");
            observe::at(&ctx.hooks.after_commit, meta.clone()).await;
            Disposition::Handled.if_acked(ack_if(acks, &item.delivery).await)
        }
        End::KeyReused => {
            tracing::warn!("message_id reused for a different command; refused");
            observe::at(&ctx.hooks.after_commit, meta.clone()).await;
            Disposition::Handled.if_acked(ack_if(acks, &item.delivery).await)
        }
        End::Duplicate => {
            tracing::info!("duplicate command; already processed");
            Disposition::Duplicate.if_acked(ack_if(acks, &item.delivery).await)
        }
        End::RetryLater(reason) => {
            failure::retry_later(
                ctx,
                &item.delivery,
                &item.msg,
                Some(&item.cmd.meta),
                &reason,
            )
            .await
        }
        End::Failed(reason) => {
            failure::dead_letter_and_ack(ctx, &item.delivery, &item.msg, Failure::Failed, &reason)
                .await
        }
    };
    ctx.hooks.settled(
        item.msg.message_id.as_deref(),
        &item.msg.routing_key,
        disposition,
    );
}
