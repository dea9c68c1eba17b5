//! One file per command. Each handler decides, inside the transaction the pipeline opened,
//! what the command changes and what is said about it; [`run`] then records the inbox row and
//! the outbox rows in that same transaction and commits.

pub mod client_create;
pub mod instances;
pub mod kyc;
pub mod lifecycle;
pub mod queries;

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::configuration::Settings;
use crate::domain::LifecycleAction;
use crate::messages::{Command, CommandType, OutgoingMessage, Refusal};
use crate::store::{self, inbox::InboxOutcome};

/// What a handler decided.
#[derive(Debug)]
pub struct Outcome {
    pub inbox: InboxOutcome,
    /// The contract code of a refusal.
    pub code: Option<&'static str>,
    /// Events, replies and saga steps to publish after commit.
    pub messages: Vec<OutgoingMessage>,
}

impl Outcome {
    pub fn succeeded(messages: Vec<OutgoingMessage>) -> Outcome {
        Outcome {
            inbox: InboxOutcome::Succeeded,
            code: None,
            messages,
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
        let mut messages = vec![OutgoingMessage::event(&cmd.meta, failed_event, data)];
        messages.extend(OutgoingMessage::reply(
            &cmd.meta,
            failed_event,
            refusal.status,
            refusal.error_body(),
        ));
        Outcome {
            inbox: InboxOutcome::Refused,
            code: Some(refusal.code),
            messages,
        }
    }
}

/// How a command ended, for the pipeline (ack) and for tests.
#[derive(Debug)]
pub enum Handled {
    Done(Outcome),
    /// Its message_id was already in the inbox: nothing changed, nothing was said.
    Duplicate,
}

/// Why a handler could not decide. Every variant is retried (immediately when
/// [`HandlerError::is_transient`], then through the delay queues) and finally dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Worth trying again later, not now: straight to the delay queues. An outside service
    /// (Xendit, SMTP) failed after its client's own retries, or what the command is about
    /// does not exist yet and may be about to (a lifecycle command racing its
    /// `client.create`; the handler turns that into a refusal once its budget is spent).
    #[error("{0}")]
    RetryLater(String),
    #[error("{0}")]
    Other(String),
}

impl HandlerError {
    /// Worth an immediate, in-process retry.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Database(e) => store::is_transient(e),
            HandlerError::RetryLater(_) | HandlerError::Other(_) => false,
        }
    }
}

async fn decide(
    conn: &mut PgConnection,
    settings: &Settings,
    cmd: &Command,
) -> Result<Outcome, HandlerError> {
    match cmd.meta.command_type {
        CommandType::ClientCreate => client_create::handle(conn, cmd).await,
        // Saga steps talk to the outside world between transactions: see `saga::run`.
        CommandType::OnboardingStep => Err(HandlerError::Other(
            "saga steps are run by saga::run, not in one transaction".into(),
        )),
        CommandType::InstanceCreate => instances::create(conn, cmd).await,
        CommandType::InstanceUpdateAlias => instances::update_alias(conn, cmd).await,
        CommandType::InstanceDelete => instances::delete(conn, cmd).await,
        CommandType::ClientApprove
        | CommandType::ClientReject
        | CommandType::ClientBlacklist
        | CommandType::ClientUnblacklist
        | CommandType::ClientExit
        | CommandType::ClientRecordFirstTransaction => {
            let action = LifecycleAction::from_command_type(cmd.meta.command_type.as_str())
                .ok_or_else(|| HandlerError::Other("not a lifecycle command".into()))?;
            lifecycle::handle(conn, settings, cmd, action).await
        }
        CommandType::ClientKycUpdate => kyc::handle(conn, settings, cmd).await,
        // Queries never reach a transaction: the pipeline answers them (queries::answer).
        CommandType::ClientList | CommandType::ClientGet | CommandType::InstanceList => {
            Err(HandlerError::Other(format!(
                "{} is a query, not a command",
                cmd.meta.command_type
            )))
        }
    }
}

/// Runs a command in one transaction: handler effects, inbox row, outbox rows, commit.
pub async fn run(
    pool: &PgPool,
    settings: &Settings,
    cmd: &Command,
) -> Result<Handled, HandlerError> {
    let mut tx = pool.begin().await?;
    let outcome = decide(&mut tx, settings, cmd).await?;
    finish(tx, cmd, outcome).await
}

/// Ends a command's transaction: the inbox row, the outbox rows, commit. When the inbox
/// already had the message_id, everything the transaction did is rolled back instead.
pub async fn finish(
    mut tx: store::Tx,
    cmd: &Command,
    outcome: Outcome,
) -> Result<Handled, HandlerError> {
    if !store::inbox::record(&mut tx, &cmd.meta, outcome.inbox, outcome.code).await? {
        // A copy of this command committed first (concurrently or earlier): undo ours.
        tx.rollback().await?;
        return Ok(Handled::Duplicate);
    }
    store::outbox::insert(&mut tx, &outcome.messages).await?;
    tx.commit().await?;
    Ok(Handled::Done(outcome))
}

/// A positive integer field the command's schema requires (e.g. `client_id`). JSON Schema
/// counts `2.0` as the integer 2, so it passes the schema and is read as 2 here too (read as
/// "missing", it went round every delayed retry and was dead-lettered without an answer).
fn required_id(cmd: &Command, field: &str) -> Result<i32, HandlerError> {
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
            HandlerError::Other(format!(
                "{field} missing although schemas/{}.json requires it",
                cmd.meta.command_type
            ))
        })
}

/// A text field of the body, trimmed; missing, null and blank are all `None` (the seed
/// answers each the same way).
fn text_field(body: &Value, field: &str) -> Option<String> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn ids_the_schema_accepts_as_integers_are_read_as_integers() {
        let cmd = |body: Value| Command {
            meta: crate::messages::CommandMeta {
                command_type: CommandType::ClientApprove,
                message_id: "m".into(),
                correlation_id: "m".into(),
                reply_to: None,
                traceparent: None,
                attempt: 0,
            },
            body,
        };
        assert_eq!(
            required_id(&cmd(json!({"client_id": 2})), "client_id").unwrap(),
            2
        );
        assert_eq!(
            required_id(&cmd(json!({"client_id": 2.0})), "client_id").unwrap(),
            2
        );
        for bad in [
            json!({"client_id": 2.5}),
            json!({"client_id": 1e12}),
            json!({}),
        ] {
            assert!(
                required_id(&cmd(bad.clone()), "client_id").is_err(),
                "{bad}"
            );
        }
    }
}
