//! What a handler is (the [`Command`], [`DecideOne`], [`DecideMany`] and [`Query`] traits)
//! and what it works with: its context, its decisions, the outcome it reports, and the
//! helpers every handler shares.

use std::any::Any;
use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::configuration::Settings;
pub use crate::fault::HandlerError;
use crate::messages::{CommandMeta, CommandType, OutgoingMessage, Refusal};
use crate::saga::SagaJob;
use crate::store::inbox::InboxOutcome;

/// A query's answer before it becomes a reply.
pub enum Answer {
    Found(Value),
    Refused(Refusal),
}

/// One command of the contract, as the worker runs it. `Self` is its body, read from JSON once
/// its schema passed.
pub trait Command: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The routing key.
    const TYPE: CommandType;
    /// `schemas/<TYPE>.json`, compiled into the binary, so a deployment cannot run with
    /// schemas that differ from its code.
    const SCHEMA: &'static str;
    /// The event its refusals are announced with.
    const REFUSAL_EVENT: &'static str;

    /// The client this command changes, when it names one. The unit of work locks the clients
    /// of a batch in client-id order before any command decides, so two batches never wait
    /// for each other in a circle.
    fn target(&self) -> Target {
        Target::None
    }
}

/// A command decided on its own, in a savepoint of its own.
pub trait DecideOne: Command {
    fn decide(
        cx: &mut Cx<'_>,
        cmd: Cmd<'_, Self>,
    ) -> impl Future<Output = Result<Decision, HandlerError>> + Send;
}

/// A command decided a slice at a time (a handful of multi-row statements for the slice). It
/// decides its refusals before it makes any effect: the slice's savepoint is rolled back only
/// for a command that is to be retried or that failed (the rest run again without it), or for
/// an error (the slice is split in two and each half runs again, until the culprit is alone).
pub trait DecideMany: Command {
    /// One decision per command, in order.
    fn decide(
        cx: &mut Cx<'_>,
        cmds: &[Cmd<'_, Self>],
    ) -> impl Future<Output = Result<Vec<Decision>, HandlerError>> + Send;
}

/// A query: read in a read-only snapshot and answered on `reply_to` only; no inbox, no
/// outbox, no event.
pub trait Query: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    const TYPE: CommandType;
    const SCHEMA: &'static str;

    fn read(
        conn: &mut PgConnection,
        query: &Self,
    ) -> impl Future<Output = Result<Answer, HandlerError>> + Send;
}

/// The client a command changes (see [`Command::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    None,
    /// The client with this id.
    Client(i32),
    /// The client of the user with this id (the actor of an instance command).
    ClientOf(i32),
}

/// A command as a handler sees it: what every command has, and its typed body.
#[derive(Debug)]
pub struct Cmd<'a, T> {
    pub meta: &'a CommandMeta,
    pub body: &'a T,
}

impl<T> Clone for Cmd<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Cmd<'_, T> {}

/// A typed body whose type only the registry knows (it made it, and it alone reads it back).
pub type Body = Box<dyn Any + Send + Sync>;

/// Decides one command of a type in the batch's transaction.
pub type RunOne = for<'a, 'b> fn(
    &'a mut Cx<'b>,
    &'a CommandMeta,
    &'a Body,
) -> BoxFuture<'a, Result<Decision, HandlerError>>;

/// Decides a slice of commands of a type in the batch's transaction; one decision each.
pub type RunMany = for<'a, 'b> fn(
    &'a mut Cx<'b>,
    &'a [(&'a CommandMeta, &'a Body)],
) -> BoxFuture<'a, Result<Vec<Decision>, HandlerError>>;

/// Reads what a query asks for, in a read-only snapshot.
pub type RunQuery =
    for<'a> fn(&'a mut PgConnection, &'a Body) -> BoxFuture<'a, Result<Answer, HandlerError>>;

/// A command on its way through the worker: what every command has, and its body, read.
#[derive(Debug)]
pub struct Received {
    pub meta: CommandMeta,
    pub body: Body,
}

/// What a handler works with: the batch's transaction and the settings.
pub struct Cx<'a> {
    pub conn: &'a mut PgConnection,
    pub settings: &'a Settings,
    /// This worker, which leases the sagas its commands start.
    pub worker_id: Uuid,
    /// The deployment's secret key (`header_key`), for secrets derived per saga.
    pub key: &'a crate::key::DeploymentKey,
    /// Room for saga steps in this worker: a saga is started leased to it only with a slot.
    pub slots: &'a crate::saga::Slots,
}

/// How one command ends.
#[derive(Debug)]
pub enum Decision {
    /// Effects made (or a refusal decided): recorded in the inbox, said, acked after commit.
    Done(Outcome),
    /// Nothing done; try again through the delay queues (e.g. its client does not exist yet).
    RetryLater(String),
    /// Nothing done, and it never will be: dead-lettered with `command.failed`.
    Failed(String),
}

impl Decision {
    /// Whether the command's effects are to be kept: it succeeded. (A refusal's, a retry's
    /// and a failure's are not: there should be none, and its savepoint makes sure.)
    pub fn keeps_effects(&self) -> bool {
        matches!(self, Decision::Done(o) if o.inbox == InboxOutcome::Succeeded)
    }
}

/// What a handler decided for a command it handled.
#[derive(Debug)]
pub struct Outcome {
    pub inbox: InboxOutcome,
    /// The contract code of a refusal.
    pub code: Option<&'static str>,
    /// Events and replies to publish after commit.
    pub messages: Vec<OutgoingMessage>,
    /// Sagas it started, for this worker to carry on once the batch committed.
    pub sagas: Vec<SagaJob>,
}

impl Outcome {
    pub fn succeeded(messages: Vec<OutgoingMessage>) -> Outcome {
        Outcome {
            inbox: InboxOutcome::Succeeded,
            code: None,
            messages,
            sagas: Vec::new(),
        }
    }

    /// A business refusal: the `<failed_event>` event carrying code, status and message, and
    /// the seed's `{"error": ...}` reply when one was asked for.
    pub fn refused(meta: &CommandMeta, failed_event: &str, refusal: Refusal) -> Outcome {
        Self::refused_with(meta, failed_event, refusal, Value::Null)
    }

    /// [`Outcome::refused`], with what subscribers need to act on it (e.g. the client and
    /// its current status) added to the event's data; the reply stays the seed's body.
    pub fn refused_with(
        meta: &CommandMeta,
        failed_event: &str,
        refusal: Refusal,
        context: Value,
    ) -> Outcome {
        Outcome {
            inbox: InboxOutcome::Refused,
            code: Some(refusal.code),
            messages: refusal_messages(meta, failed_event, &refusal, context, None),
            sagas: Vec::new(),
        }
    }
}

/// `EXTERNAL_ID_IN_USE` of a create or update: the event's `client_id` and `client_code` name
/// the client that has the external id (the contract's rule), beside the facts in `extra`.
pub(crate) fn external_id_in_use(
    meta: &CommandMeta,
    failed_event: &str,
    holder_id: i32,
    holder_code: &str,
    extra: Value,
) -> Outcome {
    let context = serde_json::json!({ "client_id": holder_id, "client_code": holder_code });
    Outcome::refused_with(
        meta,
        failed_event,
        Refusal::external_id_in_use(),
        with(context, extra),
    )
}

/// `base` (an object) with the keys of `extra` (an object, or null for none) added.
pub(crate) fn with(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(extra)) = (&mut base, extra) {
        b.extend(extra);
    }
    base
}

/// The event and reply of a refusal. `variant` makes their ids differ from the ones the
/// command's own outcome has (e.g. a reused message_id refused after the first command was
/// answered under it).
pub fn refusal_messages(
    meta: &CommandMeta,
    failed_event: &str,
    refusal: &Refusal,
    context: Value,
    variant: Option<&str>,
) -> Vec<OutgoingMessage> {
    let mut data = serde_json::json!({
        "code": refusal.code,
        "status": refusal.status,
        "message": refusal.message,
        "command_type": meta.command_type.as_str(),
    });
    if let (Value::Object(data), Value::Object(context)) = (&mut data, context) {
        for (k, v) in context {
            data.entry(k).or_insert(v);
        }
    }
    let mut varied = meta.clone();
    if let Some(variant) = variant {
        // Derived ids hang off the message_id: vary it for ids, keep it for causation.
        varied.message_id = format!("{}\u{1f}{variant}", meta.message_id);
    }
    let mut event = OutgoingMessage::event(&varied, failed_event, data);
    if variant.is_some() {
        event.payload.tree_mut()["causation_id"] = Value::String(meta.message_id.clone());
    }
    let mut messages = vec![event];
    messages.extend(OutgoingMessage::reply(
        &varied,
        failed_event,
        refusal.status,
        refusal.error_body(),
    ));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> CommandMeta {
        CommandMeta {
            command_type: CommandType::new("client.approve"),
            message_id: "m".into(),
            correlation_id: "m".into(),
            reply_to: Some("r".into()),
            traceparent: None,
            attempt: 0,
        }
    }

    #[test]
    fn a_refusal_under_a_variant_gets_its_own_ids_and_keeps_its_cause() {
        let m = meta();
        let plain = refusal_messages(
            &m,
            "client.transition_rejected",
            &Refusal::client_not_found(),
            Value::Null,
            None,
        );
        let varied = refusal_messages(
            &m,
            "client.transition_rejected",
            &Refusal::idempotency_key_reused(),
            Value::Null,
            Some("reused"),
        );
        assert_eq!(plain.len(), 2, "event and reply");
        assert_ne!(plain[0].message_id, varied[0].message_id);
        assert_ne!(plain[1].message_id, varied[1].message_id);
        assert_eq!(varied[0].payload.to_tree()["causation_id"], json!("m"));
        assert_eq!(
            varied[0].payload.to_tree()["data"]["code"],
            json!("IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(varied[1].headers["status"], json!(422));
    }
}
