//! One file per command. Each handler decides, inside the transaction the pipeline opened,
//! what the command changes and what is said about it; [`run`] then records the inbox row and
//! the outbox rows in that same transaction and commits.

pub mod client_create;

use sqlx::{PgConnection, PgPool};

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
        let data = serde_json::json!({
            "code": refusal.code,
            "status": refusal.status,
            "message": refusal.message,
            "command_type": cmd.meta.command_type.as_str(),
        });
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
    /// An outside service (Xendit, SMTP) failed in a way worth trying again later: straight to
    /// the delay queues, no immediate retry (the client already retried in-process).
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

async fn decide(conn: &mut PgConnection, cmd: &Command) -> Result<Outcome, HandlerError> {
    match cmd.meta.command_type {
        CommandType::ClientCreate => client_create::handle(conn, cmd).await,
        // Saga steps talk to the outside world between transactions: see `saga::run`.
        CommandType::OnboardingStep => Err(HandlerError::Other(
            "saga steps are run by saga::run, not in one transaction".into(),
        )),
    }
}

/// Runs a command in one transaction: handler effects, inbox row, outbox rows, commit.
pub async fn run(pool: &PgPool, cmd: &Command) -> Result<Handled, HandlerError> {
    let mut tx = pool.begin().await?;
    let outcome = decide(&mut tx, cmd).await?;
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
