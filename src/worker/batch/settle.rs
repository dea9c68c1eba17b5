//! How each command of a batch ends once its transaction did: acked, or dead-lettered with
//! `command.failed` announced (`failure`), and what observers are told.

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::item::{End, Item};
use crate::broker::{Delivery, ack};
use crate::observe::{self, Disposition, HandlerResult};
use crate::worker::context::Context;
use crate::worker::failure::{self, Failure};

/// Carries the sagas on, then acks what is done and hands on what is not. The sagas go
/// first: they need only the commit, and an ack can wait on a channel the broker session is
/// losing. What must wait or failed is handed on first, each on its own; then what is done is
/// acked together ([`ack::ack_all`]: one `multiple` ack for the batch's run of tags). After
/// one ack fails, the batch's other deliveries are not acked: the broker redelivers them and
/// the inbox recognises them.
pub(super) async fn settle(ctx: &Context, mut ended: Vec<(Item, End)>, started: Instant) {
    let took = started.elapsed();
    let mut sagas = Vec::new();
    for (_, end) in ended.iter_mut() {
        if let End::Done { sagas: s, .. } = end {
            sagas.append(s);
        }
    }
    ctx.runner.start(sagas);
    let mut done = Vec::with_capacity(ended.len());
    for (item, end) in ended {
        let span = item.span.clone();
        if let Some(d) = settle_one(ctx, &item, end, took).instrument(span).await {
            done.push((item, d));
        }
    }
    let deliveries: Vec<&Delivery> = done.iter().map(|(item, _)| &item.delivery).collect();
    let acked = ack::ack_all(&deliveries).await;
    for ((item, disposition), acked) in done.iter().zip(acked) {
        ctx.hooks.settled(
            item.msg.message_id.as_deref(),
            &item.msg.routing_key,
            disposition.if_acked(acked),
        );
    }
}

/// Counts and logs how a command ended. One that must wait or failed is handed on here (its
/// copy to a delay or the dead-letter queue, then its ack); for one that is done, returns what
/// it is once acked.
pub(super) async fn settle_one(
    ctx: &Context,
    item: &Item,
    end: End,
    took: Duration,
) -> Option<Disposition> {
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
    let handed_on = match end {
        End::Done { .. } => {
            tracing::info!(outcome = result.as_str(), code, "command handled");
            observe::at(&ctx.hooks.after_commit, meta.clone()).await;
            return Some(Disposition::Handled);
        }
        End::KeyReused => {
            tracing::warn!("message_id reused for a different command; refused");
            observe::at(&ctx.hooks.after_commit, meta.clone()).await;
            return Some(Disposition::Handled);
        }
        End::Duplicate => {
            tracing::info!("duplicate command; already processed");
            return Some(Disposition::Duplicate);
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
        handed_on,
    );
    None
}
