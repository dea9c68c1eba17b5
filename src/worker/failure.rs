//! Where a delivery goes when it cannot be acked as done: a delay queue (with its attempt
//! counter), or the dead-letter queue (with its reason). The copy is confirmed by the broker
//! before the original is acked, so a crash in between duplicates at worst, never loses.

use crate::broker::Delivery;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use super::context::Context;
use crate::broker::headers::{self, string};
use crate::broker::publisher::Outgoing;
use crate::broker::{Delivered, PublishError, ack, requeue};
use crate::messages::command::truncate;
use serde_json::json;

use crate::messages::{CommandMeta, IncomingMessage, OutgoingMessage, Refusal};
use crate::observe::Disposition;

/// Why a message is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Malformed: not JSON, no message_id, unknown type, schema failure.
    Rejected,
    /// It can never succeed as sent (the database refuses a value, a body a handler cannot
    /// read): dead-lettered at once, announced as `command.failed`.
    Failed,
    /// A technical failure that outlasted every retry.
    RetriesExhausted,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Rejected => "rejected",
            Failure::Failed => "failed",
            Failure::RetriesExhausted => "retries_exhausted",
        }
    }
}

fn with_headers(props: &BasicProperties, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut table: FieldTable = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        table.insert((*k).into(), v.clone());
    }
    headers::durable_copy(props, table)
}

/// When this message first failed: kept from an earlier attempt, else now.
fn first_failed_at(delivery: &Delivery) -> String {
    headers::get_str(
        delivery.properties.headers().as_ref(),
        headers::FIRST_FAILED_AT,
    )
    .unwrap_or_else(now)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Copies the delivery to the dead-letter queue with its reason, confirmed.
pub async fn dead_letter(
    ctx: &Context,
    delivery: &Delivery,
    msg: &IncomingMessage,
    failure: Failure,
    reason: &str,
) -> Result<(), PublishError> {
    let first_failed = first_failed_at(delivery);
    let props = with_headers(
        &delivery.properties,
        &[
            (headers::REASON, string(&truncate(reason, 1000))),
            (headers::FAILURE, string(failure.as_str())),
            (headers::DEAD_LETTERED_AT, string(&now())),
            (headers::FIRST_FAILED_AT, string(&first_failed)),
            (headers::ROUTING_KEY, string(&msg.routing_key)),
            (headers::ATTEMPT, AMQPValue::LongLongInt(msg.attempt as i64)),
        ],
    );
    copy(ctx, &ctx.names.dead_exchange, delivery, msg, props).await
}

/// Publishes a copy of the delivery (a retry or a dead letter) to one of our own exchanges,
/// confirmed. The retry and dead-letter queues are part of our own topology: a copy the broker
/// could not route is an outage, not a success.
async fn copy(
    ctx: &Context,
    exchange: &str,
    delivery: &Delivery,
    msg: &IncomingMessage,
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let delivered = ctx
        .publisher
        .publish(Outgoing {
            exchange,
            routing_key: &msg.routing_key,
            body: &delivery.data,
            properties,
        })
        .await?;
    match delivered {
        Delivered::Routed => Ok(()),
        Delivered::Returned { reply_text } => Err(PublishError::Unroutable(reply_text)),
    }
}

/// Schedules the next delayed retry, or dead-letters (and announces `command.failed`, as far
/// as the database lets it) when the budget is spent. Acks the original only once the copy
/// is confirmed; otherwise hands it back to the broker.
pub async fn retry_later(
    ctx: &Context,
    delivery: &Delivery,
    msg: &IncomingMessage,
    cmd: Option<&CommandMeta>,
    error: &str,
) -> Disposition {
    let retry = &ctx.settings.retry;
    let next = msg.attempt.saturating_add(1);
    let exhausted = next > retry.max_attempts;
    let result = if exhausted {
        tracing::error!(
            attempts = msg.attempt,
            error,
            "retries exhausted; dead-lettering"
        );
        let reason = format!(
            "retries exhausted after {} delayed attempts: {error}",
            msg.attempt
        );
        let dead = dead_letter(ctx, delivery, msg, Failure::RetriesExhausted, &reason).await;
        if dead.is_ok() {
            announce_exhausted(ctx, msg, cmd, &reason).await;
        }
        dead
    } else {
        let delay = retry.delay_for(next);
        let exchange = ctx.names.retry(delay.as_millis() as u64);
        tracing::warn!(
            attempt = next,
            delay_ms = delay.as_millis() as u64,
            error,
            "scheduling a delayed retry"
        );
        let first_failed = first_failed_at(delivery);
        let props = with_headers(
            &delivery.properties,
            &[
                (headers::ATTEMPT, AMQPValue::LongLongInt(next as i64)),
                (
                    headers::ATTEMPT_SIG,
                    string(&headers::sign_attempt(
                        &ctx.key,
                        msg.message_id.as_deref().unwrap_or(""),
                        next,
                    )),
                ),
                (headers::LAST_ERROR, string(&truncate(error, 1000))),
                (headers::FIRST_FAILED_AT, string(&first_failed)),
            ],
        );
        copy(ctx, &exchange, delivery, msg, props).await
    };
    let handed_on = if exhausted {
        Disposition::DeadLettered
    } else {
        Disposition::RetryScheduled
    };
    hand_on(delivery, result, handed_on).await
}

/// Copies the delivery to the dead-letter queue, then acks it; when the copy cannot be made,
/// hands the delivery back to the broker instead. The one way a message leaves for the
/// dead-letter queue.
pub async fn dead_letter_and_ack(
    ctx: &Context,
    delivery: &Delivery,
    msg: &IncomingMessage,
    failure: Failure,
    reason: &str,
) -> Disposition {
    let copied = dead_letter(ctx, delivery, msg, failure, reason).await;
    hand_on(delivery, copied, Disposition::DeadLettered).await
}

/// Acks the delivery once its copy (`copied`: a delayed retry or a dead letter) is confirmed,
/// as `handed_on`; when the copy could not be made, hands the delivery back to the broker.
async fn hand_on(
    delivery: &Delivery,
    copied: Result<(), PublishError>,
    handed_on: Disposition,
) -> Disposition {
    match copied {
        Ok(()) => handed_on.if_acked(ack(delivery).await),
        Err(e) => {
            tracing::error!(error = %e, "could not hand the message on; returning it to the queue");
            requeue(delivery).await;
            Disposition::Requeued
        }
    }
}

pub const FAILED_EVENT: &str = "command.failed";

/// `command.failed` (and the error reply): the command was set aside for an operator. The
/// reason is ours (a SQLSTATE, a field name), never a value of the command.
pub fn failed_messages(ctx: &Context, meta: &CommandMeta, reason: &str) -> Vec<OutgoingMessage> {
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
    OutgoingMessage::event_and_reply(
        meta,
        FAILED_EVENT,
        data,
        refusal.status,
        refusal.error_body(),
    )
}

/// Announces (`command.failed`, and the reply when asked) a command set aside, in a
/// transaction of its own.
pub async fn announce_failed(
    ctx: &Context,
    meta: &CommandMeta,
    reason: &str,
) -> Result<(), sqlx::Error> {
    ctx.outbox
        .announce(failed_messages(ctx, meta, reason))
        .await
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
