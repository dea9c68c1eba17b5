//! What happens to one delivery before it joins a batch: plain data out of AMQP, the checks a
//! reader would make (message_id, known type, JSON, schema), and the way out for a message
//! that fails them: announced (`command.rejected`, and the error reply when asked), then
//! dead-lettered with its reason, then acked.

use crate::broker::Delivery;
use backon::Retryable;
use serde_json::json;
use uuid::Uuid;

use super::batch::{Item, command_hash};
use super::context::Context;
use super::failure::{self, Failure};
use crate::broker::headers;
use crate::handlers::Received;
use crate::handlers::client_import::ClientImport;
use crate::messages::event::derived_id;
use crate::messages::{Checked, IncomingMessage, OutgoingMessage, Rejection, parse};
use crate::registry;
use crate::telemetry;

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
        // Unverified here; `route` keeps it only if the worker signed it.
        attempt: headers::get_u32(table, headers::ATTEMPT).unwrap_or(0),
        traceparent: headers::get_str(table, headers::TRACEPARENT),
        body: delivery.data.clone(),
    }
}

/// Where a checked delivery goes next.
pub enum Route {
    /// A command: joins the next batch.
    Command(Box<Item>),
    /// An import: reads its source record first, then joins a batch.
    Import(Box<Item>),
    /// A query: answered on its own.
    Query(Box<Item>),
    /// Malformed: rejected.
    Reject(Box<Rejected>),
}

/// A delivery that failed its checks.
pub struct Rejected {
    pub delivery: Delivery,
    pub msg: IncomingMessage,
    pub rejection: Rejection,
    pub span: tracing::Span,
}

/// Reads and checks one delivery.
pub fn route(ctx: &Context, delivery: Delivery) -> Route {
    let mut msg = incoming(&delivery);
    // The attempt count is the worker's own: believed only when the worker signed it.
    msg.attempt = headers::signed_attempt(
        &ctx.key,
        msg.message_id.as_deref(),
        delivery.properties.headers().as_ref(),
    );
    ctx.metrics.received(&msg.routing_key);
    let incoming_trace = msg.traceparent.take();
    let span = tracing::info_span!(
        "message",
        message_id = msg.message_id.as_deref().unwrap_or("-"),
        correlation_id = msg.correlation_id.as_deref().or(msg.message_id.as_deref()).unwrap_or("-"),
        r#type = %msg.routing_key,
        attempt = msg.attempt,
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if telemetry::exporting() {
        span.record("otel.name", format!("receive {}", msg.routing_key));
        span.record("otel.kind", "consumer");
        telemetry::set_parent(&span, incoming_trace.as_deref());
    }
    // This worker's part of the trace: what the command causes carries a child of its context
    // (the exported span's own, when spans are exported).
    let traceparent = telemetry::traceparent_of(&span)
        .unwrap_or_else(|| telemetry::child_traceparent(incoming_trace.as_deref()));
    span.record(
        "trace_id",
        telemetry::trace_id(Some(&traceparent)).unwrap_or("-"),
    );
    msg.traceparent = Some(traceparent);
    if let Some(reply_to) = msg.reply_to.as_deref().filter(|r| !r.is_empty())
        && !ctx.settings.broker.answers_on(reply_to)
    {
        // Not answered at all: the queue it names may belong to someone else.
        msg.reply_to = None;
        let rejection = Rejection::new(format!(
            "reply_to names a queue this worker does not answer on (broker.reply_to_patterns: {})",
            ctx.settings.broker.reply_to_patterns.join(", ")
        ));
        return Route::Reject(Box::new(Rejected {
            delivery,
            msg,
            rejection,
            span,
        }));
    }
    let checked = match parse(&msg, &ctx.schemas) {
        Ok(checked) => checked,
        Err(rejection) => {
            return Route::Reject(Box::new(Rejected {
                delivery,
                msg,
                rejection,
                span,
            }));
        }
    };
    let entry = registry::entry(checked.meta.command_type);
    if entry.is_query() && checked.meta.reply_to.is_none() {
        // Its answer is the reply and nothing else: without a queue to answer to, running it
        // would only cost a database read.
        let rejection = Rejection::new(format!(
            "query {} has no reply_to: queries are answered only on reply_to",
            checked.meta.command_type
        ));
        return Route::Reject(Box::new(Rejected {
            delivery,
            msg,
            rejection,
            span,
        }));
    }
    let hash = command_hash(&checked);
    let Checked { meta, body } = checked;
    // The body as its type reads it, once: handlers never see JSON.
    let body = match (entry.read)(body) {
        Ok(body) => body,
        Err(at) => {
            let rejection = Rejection::new(format!(
                "body passes schemas/{}.json but cannot be read at {at} (the schema and the \
                 code disagree: a defect)",
                meta.command_type
            ));
            return Route::Reject(Box::new(Rejected {
                delivery,
                msg,
                rejection,
                span,
            }));
        }
    };
    let item = Box::new(Item {
        hash,
        in_flight: ctx.metrics.in_flight(),
        delivery,
        msg,
        cmd: Received { meta, body },
        entry,
        span,
    });
    if entry.is_query() {
        Route::Query(item)
    } else if item.cmd.meta.command_type == <ClientImport as crate::handlers::Command>::TYPE {
        Route::Import(item)
    } else {
        Route::Command(item)
    }
}

/// A malformed message: its rejection is recorded first (inbox row and `command.rejected`,
/// and the error reply when asked for), then it is dead-lettered with its reason, then acked.
/// While the database is down the rejection cannot be recorded, so the message waits in the
/// delay queues instead of being dead-lettered again and again. A copy of a message whose
/// rejection was recorded is dead-lettered again (the first copy may have died before its
/// dead letter went out); its event is not repeated.
pub async fn reject(ctx: &Context, delivery: Delivery, msg: IncomingMessage, rejection: Rejection) {
    let message_id = msg
        .message_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    tracing::warn!(reason = %rejection, "message rejected");
    let recorded = (|| record_rejection(ctx, &msg, message_id, &rejection))
        .retry(ctx.settings.retry.immediate().policy())
        .when(crate::fault::retry_at_once)
        .await;
    let disposition = match recorded {
        Ok(()) => {
            failure::dead_letter_and_ack(
                ctx,
                &delivery,
                &msg,
                Failure::Rejected,
                &rejection.to_string(),
            )
            .await
        }
        Err(e) => {
            let reason = format!("the rejection could not be recorded: {e}");
            failure::retry_later(ctx, &delivery, &msg, None, &reason).await
        }
    };
    ctx.hooks
        .settled(msg.message_id.as_deref(), &msg.routing_key, disposition);
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
        reply.payload = json!({ "error": rejection.to_string() }).into();
        messages.push(reply);
    }
    let mut uow = ctx.outbox.begin_on(&ctx.query_pool).await?;
    if let Some(id) = message_id {
        let hash = crate::store::inbox::body_hash(&msg.routing_key, &msg.body);
        if !crate::store::inbox::record_rejected(
            uow.conn(),
            id,
            &msg.routing_key,
            &correlation,
            &hash,
        )
        .await?
        {
            // Recorded (and announced) before: only the dead letter is repeated.
            return uow.rollback().await;
        }
    }
    uow.say(messages);
    ctx.outbox.commit(uow).await
}
