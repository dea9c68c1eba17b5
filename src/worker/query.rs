//! Queries (`client.get`, `client.list`, `instance.list`): read, reply to `reply_to`, ack.
//! No inbox, no outbox, no events: a query changes nothing, so there is nothing to make
//! atomic with its answer. A query without `reply_to` never gets here: it is rejected.

use backon::Retryable;
use tracing::Instrument;

use super::batch::Item;
use super::context::Context;
use super::failure::{self, Failure};
use crate::broker::{Delivered, ack};
use crate::fault::{Fault, HandlerError};
use crate::handlers::queries;
use crate::observe::{Disposition, HandlerResult};
use crate::outbox::relay;
use crate::registry::Run;

pub async fn answer(ctx: &Context, item: Item) {
    let Run::Query(read) = item.entry.run else {
        unreachable!("only queries are answered here");
    };
    let started = std::time::Instant::now();
    let policy = ctx.settings.retry.immediate().policy();
    let handle = crate::export_span!(
        "handle",
        otel.name = %format!("handle {}", item.cmd.meta.command_type.as_str())
    );
    let reply = (|| queries::answer(&ctx.query_pool, &item.cmd.meta, &item.cmd.body, read))
        .retry(policy)
        .when(HandlerError::retry_at_once)
        .notify(
            |e, wait| tracing::warn!(error = %e, ?wait, "transient failure; retrying in-process"),
        )
        .instrument(handle)
        .await;
    let disposition = match reply {
        Ok(reply) => {
            ctx.metrics.handled(
                &item.msg.routing_key,
                HandlerResult::Succeeded,
                None,
                started.elapsed(),
            );
            let body = reply.payload.text().into_owned().into_bytes();
            let span = relay::publish_span(&reply);
            let published = ctx
                .publisher
                .publish(relay::outgoing(
                    &reply,
                    &body,
                    chrono::Utc::now(),
                    &ctx.names,
                ))
                .instrument(span)
                .await;
            match published {
                Ok(Delivered::Routed) => {
                    tracing::info!(status = ?reply.headers.get("status"), "query answered");
                    Disposition::Handled.if_acked(ack(&item.delivery).await)
                }
                Ok(Delivered::Returned { reply_text }) => {
                    // The asker is gone; nobody else wants the answer.
                    tracing::warn!(reply_to = %reply.routing_key, %reply_text, "reply queue gone; answer dropped");
                    Disposition::Handled.if_acked(ack(&item.delivery).await)
                }
                Err(e) => {
                    let reason = format!("reply not sent: {e}");
                    failure::retry_later(ctx, &item.delivery, &item.msg, None, &reason).await
                }
            }
        }
        Err(e) if e.fault() == Fault::Permanent => {
            ctx.metrics.handled(
                &item.msg.routing_key,
                HandlerResult::Failed,
                None,
                started.elapsed(),
            );
            tracing::error!(reason = %e.reason(), "query cannot be answered; dead-lettering it");
            failure::dead_letter_and_ack(
                ctx,
                &item.delivery,
                &item.msg,
                Failure::Failed,
                &e.reason(),
            )
            .await
        }
        Err(e) => {
            ctx.metrics.handled(
                &item.msg.routing_key,
                HandlerResult::RetryLater,
                None,
                started.elapsed(),
            );
            failure::retry_later(ctx, &item.delivery, &item.msg, None, &e.reason()).await
        }
    };
    ctx.hooks.settled(
        item.msg.message_id.as_deref(),
        &item.msg.routing_key,
        disposition,
    );
}
