//! The inbox: one row per command `message_id`, written in the same transaction as the
//! command's effects, so "already processed" and "effects committed" are one fact.

use sqlx::{PgPool, Postgres};

use crate::messages::CommandMeta;

/// How a command ended, as the inbox records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOutcome {
    /// Its effects were committed.
    Succeeded,
    /// A business refusal (contract code in `outcome_code`).
    Refused,
    /// Malformed: dead-lettered with a `command.rejected` event.
    Rejected,
}

impl InboxOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxOutcome::Succeeded => "succeeded",
            InboxOutcome::Refused => "refused",
            InboxOutcome::Rejected => "rejected",
        }
    }
}

/// Records the command; `false` when its message_id was already there, i.e. a duplicate.
/// A concurrent duplicate blocks here until the first one's transaction ends, then sees it.
pub async fn record(
    conn: &mut sqlx::PgConnection,
    meta: &CommandMeta,
    outcome: InboxOutcome,
    outcome_code: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (message_id, command_type, correlation_id, outcome, outcome_code)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&meta.message_id)
    .bind(meta.command_type.as_str())
    .bind(&meta.correlation_id)
    .bind(outcome.as_str())
    .bind(outcome_code)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records a message rejected before parsing finished (so no [`CommandMeta`] exists).
pub async fn record_rejected(
    conn: &mut sqlx::PgConnection,
    message_id: &str,
    routing_key: &str,
    correlation_id: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (message_id, command_type, correlation_id, outcome, outcome_code)
         VALUES ($1, $2, $3, 'rejected', 'COMMAND_REJECTED')
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(routing_key)
    .bind(correlation_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn contains<'e, E>(executor: E, message_id: &str) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inbox WHERE message_id = $1)")
        .bind(message_id)
        .fetch_one(executor)
        .await
}

/// The outcome recorded for a message id, if any (operators and tests).
pub async fn outcome(pool: &PgPool, message_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT outcome FROM inbox WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(pool)
        .await
}
