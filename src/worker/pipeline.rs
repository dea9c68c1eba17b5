//! What happens to one delivery: parse and check it, run its handler in one transaction
//! (retrying transient failures in-process), then ack — or hand it to a delay queue or the
//! dead-letter queue. Nothing is acked before its effects are committed.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::failure::{self, Failure};
use super::{Context, Disposition};
use crate::broker::headers;
use crate::handlers::{self, Handled, HandlerError};
use crate::messages::event::derived_id;
use crate::messages::{CommandType, IncomingMessage, OutgoingMessage, Rejection, parse};
use crate::saga;
use crate::{store, telemetry};

/// Plain data out of an AMQP delivery.
pub fn incoming(delivery: &Delivery) -> IncomingMessage {
    let props = &delivery.properties;
    let table = props.headers().as_ref();
    IncomingMessage {
        routing_key: delivery.routing_key.as_str().to_string(),
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_string()),
        correlation_id: props
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        reply_to: props.reply_to().as_ref().map(|s| s.as_str().to_string()),
        content_type: props
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_string()),
        attempt: headers::get_u32(table, headers::ATTEMPT).unwrap_or(0),
        traceparent: headers::get_str(table, headers::TRACEPARENT),
        body: delivery.data.clone(),
    }
}

pub async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel died after commit: the broker redelivers and the inbox recognises it.
        tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
    }
}

/// Processes one delivery to its end (ack, delayed retry, dead letter or requeue).
pub async fn process(ctx: &Context, delivery: Delivery) {
    let mut msg = incoming(&delivery);
    ctx.metrics.received(&msg.routing_key);
    let _in_flight = ctx.metrics.in_flight();
    // This worker's part of the trace: what the command causes carries a child of its context.
    msg.traceparent = Some(telemetry::child_traceparent(msg.traceparent.as_deref()));
    let span = tracing::info_span!(
        "message",
        message_id = msg.message_id.as_deref().unwrap_or("-"),
        correlation_id = msg.correlation_id.as_deref().or(msg.message_id.as_deref()).unwrap_or("-"),
        r#type = %msg.routing_key,
        attempt = msg.attempt,
        trace_id = telemetry::trace_id(msg.traceparent.as_deref()).unwrap_or("-"),
    );
    async {
        match parse(&msg, &ctx.schemas) {
            Ok(cmd) => run_command(ctx, &delivery, &msg, cmd).await,
            Err(rejection) => reject(ctx, &delivery, &msg, rejection).await,
        }
    }
    .instrument(span)
    .await
}

pub(super) fn immediate_backoff(ctx: &Context) -> ExponentialBuilder {
    let r = &ctx.settings.retry;
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(r.immediate_initial_ms))
        .with_max_delay(Duration::from_millis(r.immediate_max_ms))
        .with_max_times(r.immediate_attempts.saturating_sub(1))
        .with_jitter()
}

async fn run_command(
    ctx: &Context,
    delivery: &Delivery,
    msg: &IncomingMessage,
    cmd: crate::messages::Command,
) {
    if cmd.meta.command_type.is_query() {
        return super::query::answer(ctx, delivery, msg, cmd).await;
    }
    // A redelivery is usually a command whose ack was lost after commit: check cheaply first.
    // (Republished copies are caught by the inbox insert in the handler's transaction.)
    if (delivery.redelivered || msg.attempt > 0)
        && matches!(
            store::inbox::contains(&ctx.pool, &cmd.meta.message_id).await,
            Ok(true)
        )
    {
        tracing::info!("duplicate delivery; already processed");
        ack(delivery).await;
        return ctx.hooks.settled(msg, Disposition::Duplicate);
    }
    let started = std::time::Instant::now();
    let result = (|| async {
        match cmd.meta.command_type {
            CommandType::OnboardingStep => saga::run(&ctx.pool, &ctx.saga, &cmd).await,
            _ => handlers::run(&ctx.pool, &ctx.settings, &cmd).await,
        }
    })
    .retry(immediate_backoff(ctx))
    .when(HandlerError::is_transient)
    .notify(|e, wait| tracing::warn!(error = %e, ?wait, "transient failure; retrying in-process"))
    .await;
    ctx.metrics
        .handler_finished(&msg.routing_key, &result, started.elapsed());
    match result {
        Ok(Handled::Done(outcome)) => {
            ctx.outbox_wake.ring();
            tracing::info!(
                outcome = outcome.inbox.as_str(),
                code = outcome.code,
                "command handled"
            );
            if let Some(hook) = &ctx.hooks.after_commit {
                hook(&cmd.meta).await;
            }
            ack(delivery).await;
            ctx.hooks.settled(msg, Disposition::Handled)
        }
        Ok(Handled::Duplicate) => {
            tracing::info!("duplicate command; already processed");
            ack(delivery).await;
            ctx.hooks.settled(msg, Disposition::Duplicate)
        }
        Err(e) => failure::retry_later(ctx, delivery, msg, &e.to_string()).await,
    }
}

/// A malformed message: dead-lettered with its reason, then announced (`command.rejected`,
/// and the error reply when asked for), then acked.
async fn reject(ctx: &Context, delivery: &Delivery, msg: &IncomingMessage, rejection: Rejection) {
    let message_id = msg
        .message_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(id) = message_id
        && matches!(store::inbox::contains(&ctx.pool, id).await, Ok(true))
    {
        tracing::info!("duplicate of a message already handled");
        ack(delivery).await;
        return ctx.hooks.settled(msg, Disposition::Duplicate);
    }
    tracing::warn!(reason = %rejection, "message rejected; dead-lettering");
    if let Err(e) = failure::dead_letter(
        ctx,
        delivery,
        msg,
        Failure::Rejected,
        &rejection.to_string(),
    )
    .await
    {
        tracing::error!(error = %e, "could not dead-letter; returning it to the queue");
        failure::requeue(delivery).await;
        return ctx.hooks.settled(msg, Disposition::Requeued);
    }
    let recorded = (|| record_rejection(ctx, msg, message_id, &rejection))
        .retry(immediate_backoff(ctx).with_max_times(ctx.settings.retry.immediate_attempts + 3))
        .when(store::is_transient)
        .await;
    match recorded {
        Ok(()) => {
            ctx.outbox_wake.ring();
            ack(delivery).await;
            ctx.hooks.settled(msg, Disposition::DeadLettered)
        }
        Err(e) => {
            // The dead letter exists; the event does not yet. Try again later (a duplicate
            // dead letter is possible, a missing event is not).
            tracing::error!(error = %e, "could not record the rejection; returning it to the queue");
            failure::requeue(delivery).await;
            ctx.hooks.settled(msg, Disposition::Requeued)
        }
    }
}

async fn record_rejection(
    ctx: &Context,
    msg: &IncomingMessage,
    message_id: Option<&str>,
    rejection: &Rejection,
) -> Result<(), sqlx::Error> {
    let event_id = match message_id {
        Some(id) => derived_id(id, "command.rejected"),
        None => Uuid::new_v4(),
    };
    let correlation = msg
        .correlation_id
        .clone()
        .filter(|c| !c.trim().is_empty())
        .or(message_id.map(str::to_string))
        .unwrap_or_else(|| event_id.to_string());
    let data = json!({
        "message_id": message_id,
        "command_type": msg.routing_key,
        "code": "COMMAND_REJECTED",
        "status": 400,
        "reason": rejection.reason,
        "details": rejection.details,
        "dead_letter_queue": ctx.names.dead_queue,
    });
    let mut messages = vec![OutgoingMessage::event_with_id(
        event_id,
        "command.rejected",
        &correlation,
        message_id,
        msg.traceparent.as_deref(),
        data,
    )];
    if let Some(reply_to) = msg.reply_to.as_deref().filter(|r| !r.is_empty()) {
        let mut reply = messages[0].clone();
        reply.message_id = derived_id(&event_id.to_string(), "reply");
        reply.kind = crate::messages::OutgoingKind::Reply;
        reply.routing_key = reply_to.to_string();
        reply.headers.insert("status".into(), json!(400));
        reply.payload = json!({ "error": rejection.to_string() });
        messages.push(reply);
    }
    let mut tx = ctx.pool.begin().await?;
    if let Some(id) = message_id
        && !store::inbox::record_rejected(&mut tx, id, &msg.routing_key, &correlation).await?
    {
        return tx.rollback().await;
    }
    store::outbox::insert(&mut tx, &messages).await?;
    tx.commit().await
}
