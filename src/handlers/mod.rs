//! One file per command. A handler decides, inside the transaction of the batch its
//! commands arrived in, what each command changes and what is said about it; the worker's
//! unit of work claimed their inbox rows before and writes the outbox and commits after.
//!
//! A handler either decides a whole slice of commands of its type with a few multi-row
//! statements ([`crate::registry::Run::Batch`], `client.create`), or one command at a time
//! ([`crate::registry::Run::Each`]). Either way it must decide a command's fate before making
//! any effect for it: a command that is to be retried later or that can never succeed
//! ([`Decision::RetryLater`], [`Decision::Failed`]) must leave nothing behind, because the
//! transaction commits the others' effects.

pub mod client_create;
pub mod client_import;
pub mod client_state;
pub mod client_update;
pub mod instances;
pub mod kyc;
pub mod lifecycle;
pub mod partners;
pub mod queries;
pub mod relations;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::configuration::Settings;
pub use crate::fault::HandlerError;
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::saga::SagaJob;
use crate::store::inbox::InboxOutcome;

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
    pub fn refused(cmd: &Command, failed_event: &str, refusal: Refusal) -> Outcome {
        Self::refused_with(cmd, failed_event, refusal, Value::Null)
    }

    /// [`Outcome::refused`], with what subscribers need to act on it (e.g. the client and
    /// its current status) added to the event's data; the reply stays the seed's body.
    pub fn refused_with(
        cmd: &Command,
        failed_event: &str,
        refusal: Refusal,
        context: Value,
    ) -> Outcome {
        Outcome {
            inbox: InboxOutcome::Refused,
            code: Some(refusal.code),
            messages: refusal_messages(cmd, failed_event, &refusal, context, None),
            sagas: Vec::new(),
        }
    }
}

/// `EXTERNAL_ID_IN_USE` of a create or update: the event's `client_id` and `client_code` name
/// the client that has the external id (the contract's rule), beside the facts in `extra`.
pub(crate) fn external_id_in_use(
    cmd: &Command,
    failed_event: &str,
    holder_id: i32,
    holder_code: &str,
    extra: Value,
) -> Outcome {
    let context = serde_json::json!({ "client_id": holder_id, "client_code": holder_code });
    Outcome::refused_with(
        cmd,
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
    cmd: &Command,
    failed_event: &str,
    refusal: &Refusal,
    context: Value,
    variant: Option<&str>,
) -> Vec<OutgoingMessage> {
    let mut data = serde_json::json!({
        "code": refusal.code,
        "status": refusal.status,
        "message": refusal.message,
        "command_type": cmd.meta.command_type.as_str(),
    });
    if let (Value::Object(data), Value::Object(context)) = (&mut data, context) {
        for (k, v) in context {
            data.entry(k).or_insert(v);
        }
    }
    let mut meta = cmd.meta.clone();
    if let Some(variant) = variant {
        // Derived ids hang off the message_id: vary it for ids, keep it for causation.
        meta.message_id = format!("{}\u{1f}{variant}", cmd.meta.message_id);
    }
    let mut event = OutgoingMessage::event(&meta, failed_event, data);
    if variant.is_some() {
        event.payload["causation_id"] = Value::String(cmd.meta.message_id.clone());
    }
    let mut messages = vec![event];
    messages.extend(OutgoingMessage::reply(
        &meta,
        failed_event,
        refusal.status,
        refusal.error_body(),
    ));
    messages
}

/// Decides one command (handlers that have nothing to gain from deciding a slice at once).
pub type DecideOne =
    for<'x, 'y> fn(&'x mut Cx<'y>, &'x Command) -> BoxFuture<'x, Result<Decision, HandlerError>>;

/// Decides a slice of commands of one type; one decision per command, in order.
pub type DecideBatch = for<'x, 'y> fn(
    &'x mut Cx<'y>,
    &'x [&'x Command],
) -> BoxFuture<'x, Result<Vec<Decision>, HandlerError>>;

/// Runs `one` over `cmds`, in order, in the same transaction.
pub async fn each(
    cx: &mut Cx<'_>,
    cmds: &[&Command],
    one: DecideOne,
) -> Result<Vec<Decision>, HandlerError> {
    let mut decisions = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        decisions.push(one(cx, cmd).await?);
    }
    Ok(decisions)
}

/// A positive integer field the command's schema requires (e.g. `client_id`). JSON Schema
/// counts `2.0` as the integer 2, so it passes the schema and is read as 2 here too. Anything
/// else can never be read, so the command fails for good rather than being retried.
fn read_id(cmd: &Command, field: &str) -> Result<i32, String> {
    cmd.body
        .get(field)
        .and_then(|v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= i32::MAX as f64)
                    .map(|f| f as i64)
            })
        })
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "{field} missing although schemas/{}.json requires it",
                cmd.meta.command_type
            )
        })
}

/// Reads a required id, or ends the command as [`Decision::Failed`].
macro_rules! required_id {
    ($cmd:expr, $field:expr) => {
        match $crate::handlers::read_id($cmd, $field) {
            Ok(id) => id,
            Err(reason) => return Ok($crate::handlers::Decision::Failed(reason)),
        }
    };
}
pub(crate) use required_id;

/// A text field of the body, trimmed; missing, null and blank are all `None` (the seed
/// answers each the same way).
fn text_field(body: &Value, field: &str) -> Option<String> {
    crate::domain::profile::trimmed(body.get(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::CommandType;
    use serde_json::json;

    #[test]
    fn text_fields_are_trimmed_and_blank_is_absent() {
        for body in [
            json!({}),
            json!({"instance_name": null}),
            json!({"instance_name": ""}),
            json!({"instance_name": "  "}),
            json!({"instance_name": 3}),
        ] {
            assert_eq!(text_field(&body, "instance_name"), None, "{body}");
        }
        assert_eq!(
            text_field(&json!({"instance_name": " API "}), "instance_name").as_deref(),
            Some("API")
        );
    }

    fn cmd(body: Value) -> Command {
        Command {
            meta: crate::messages::CommandMeta {
                command_type: CommandType::ClientApprove,
                message_id: "m".into(),
                correlation_id: "m".into(),
                reply_to: Some("r".into()),
                traceparent: None,
                attempt: 0,
            },
            body,
        }
    }

    #[test]
    fn ids_the_schema_accepts_as_integers_are_read_as_integers() {
        assert_eq!(read_id(&cmd(json!({"client_id": 2})), "client_id"), Ok(2));
        assert_eq!(read_id(&cmd(json!({"client_id": 2.0})), "client_id"), Ok(2));
        for bad in [
            json!({"client_id": 2.5}),
            json!({"client_id": 1e12}),
            json!({}),
        ] {
            assert!(read_id(&cmd(bad.clone()), "client_id").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refusal_under_a_variant_gets_its_own_ids_and_keeps_its_cause() {
        let c = cmd(json!({"client_id": 1}));
        let plain = refusal_messages(
            &c,
            "client.transition_rejected",
            &Refusal::client_not_found(),
            Value::Null,
            None,
        );
        let varied = refusal_messages(
            &c,
            "client.transition_rejected",
            &Refusal::idempotency_key_reused(),
            Value::Null,
            Some("reused"),
        );
        assert_eq!(plain.len(), 2, "event and reply");
        assert_ne!(plain[0].message_id, varied[0].message_id);
        assert_ne!(plain[1].message_id, varied[1].message_id);
        assert_eq!(varied[0].payload["causation_id"], json!("m"));
        assert_eq!(
            varied[0].payload["data"]["code"],
            json!("IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(varied[1].headers["status"], json!(422));
    }
}
