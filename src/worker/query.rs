//! Queries (`client.get`, `client.list`, `instance.list`): read, reply to `reply_to`, ack.
//! No inbox, no outbox, no events — a query changes nothing, so there is nothing to make
//! atomic with its answer. A query without `reply_to` never gets here: parsing refuses it to
//! the dead-letter queue.

use backon::Retryable;
use lapin::message::Delivery;

use super::failure;
use super::pipeline::{ack, immediate_backoff};
use super::{Context, Disposition};
use crate::broker::Delivered;
use crate::handlers::{HandlerError, queries};
use crate::messages::{Command, IncomingMessage};
use crate::outbox::relay;

pub async fn answer(ctx: &Context, delivery: &Delivery, msg: &IncomingMessage, cmd: Command) {
    let reply = (|| queries::answer(&ctx.pool, &cmd))
        .retry(immediate_backoff(ctx))
        .when(HandlerError::is_transient)
        .notify(
            |e, wait| tracing::warn!(error = %e, ?wait, "transient failure; retrying in-process"),
        )
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return failure::retry_later(ctx, delivery, msg, &e.to_string()).await,
    };
    let body = serde_json::to_vec(&reply.payload).expect("JSON values serialise");
    let published = ctx
        .publisher
        .publish(relay::outgoing(
            &reply,
            &body,
            chrono::Utc::now(),
            &ctx.names,
        ))
        .await;
    match published {
        Ok(Delivered::Routed) => {
            tracing::info!(status = ?reply.headers.get("status"), "query answered");
        }
        Ok(Delivered::Returned { reply_text }) => {
            // The asker is gone; nobody else wants the answer.
            tracing::warn!(reply_to = %reply.routing_key, %reply_text, "reply queue gone; answer dropped");
        }
        Err(e) => {
            return failure::retry_later(ctx, delivery, msg, &format!("reply not sent: {e}")).await;
        }
    }
    ack(delivery).await;
    ctx.hooks.settled(msg, Disposition::Handled)
}
