//! How each command of a batch ends once its transaction did: acked, or dead-lettered with
//! `command.failed` announced, and what observers are told.

use super::*;

pub const FAILED_EVENT: &str = "command.failed";

/// `command.failed` (and the error reply): the command was set aside for an operator. The
/// reason is ours (a SQLSTATE, a field name), never a value of the command.
pub(super) fn failed_messages(
    ctx: &Context,
    meta: &CommandMeta,
    reason: &str,
) -> Vec<OutgoingMessage> {
    let refusal = Refusal::internal_error();
    let data = json!({
        "message_id": meta.message_id,
        "command_type": meta.command_type.as_str(),
        "code": refusal.code,
        "status": refusal.status,
        "message": refusal.message,
        "reason": reason,
        "dead_letter_queue": ctx.names.dead_queue,
    });
    let mut messages = vec![OutgoingMessage::event(meta, FAILED_EVENT, data)];
    messages.extend(OutgoingMessage::reply(
        meta,
        FAILED_EVENT,
        refusal.status,
        refusal.error_body(),
    ));
    messages
}

/// Announces (`command.failed`, and the reply when asked) a command set aside, in a
/// transaction of its own.
pub(super) async fn announce_failed(
    ctx: &Context,
    meta: &CommandMeta,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let mut uow = ctx.outbox.begin().await?;
    uow.say(failed_messages(ctx, meta, reason));
    let said = uow.commit().await?;
    ctx.outbox.dispatch(said).await;
    Ok(())
}

/// Best effort: announces that a command's retries ran out (the database may be what is
/// down, so this may not get through; the dead letter is there either way).
pub async fn announce_exhausted(
    ctx: &Context,
    msg: &IncomingMessage,
    meta: Option<&CommandMeta>,
    reason: &str,
) {
    let Some(meta) = meta else { return };
    if let Err(e) = announce_failed(ctx, meta, reason).await {
        tracing::warn!(error = %e, routing_key = %msg.routing_key, "could not announce command.failed for an exhausted command");
    }
}

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
