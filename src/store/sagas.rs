//! Create-client saga rows: where each onboarding stands.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::messages::CommandMeta;

/// The steps after persisting, in order. `Done` is the resting state of a completed saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Xendit,
    WelcomeEmail,
    Complete,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Xendit => "xendit",
            Step::WelcomeEmail => "welcome_email",
            Step::Complete => "complete",
            Step::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "xendit" => Some(Step::Xendit),
            "welcome_email" => Some(Step::WelcomeEmail),
            "complete" => Some(Step::Complete),
            "done" => Some(Step::Done),
            _ => None,
        }
    }
}

/// A saga row as the steps read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Saga {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub admin_user_id: i32,
    pub message_id: String,
    pub correlation_id: String,
    pub reply_to: Option<String>,
    pub step: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub data: Value,
}

/// Starts the saga of a freshly persisted client, waiting at its first step.
pub async fn insert(
    conn: &mut PgConnection,
    saga_id: Uuid,
    client_id: i32,
    admin_user_id: i32,
    meta: &CommandMeta,
    first_step: Step,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO onboarding_sagas
           (saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, step, status, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $8)",
    )
    .bind(saga_id)
    .bind(client_id)
    .bind(admin_user_id)
    .bind(&meta.message_id)
    .bind(&meta.correlation_id)
    .bind(meta.reply_to.as_deref())
    .bind(first_step.as_str())
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks and reads a saga (steps of one saga never run at once).
pub async fn lock(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, step, status,
                attempts, last_error, data
         FROM onboarding_sagas WHERE saga_id = $1 FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_optional(conn)
    .await
}

/// Moves the saga to its next step, merging what the finished step learnt into `data`.
pub async fn advance(
    conn: &mut PgConnection,
    saga_id: Uuid,
    next: Step,
    learnt: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE onboarding_sagas
         SET step = $2, data = data || $3, attempts = 0, last_error = NULL, lease_until = NULL, updated_at = now()
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(next.as_str())
    .bind(learnt)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the saga completed.
pub async fn complete(
    conn: &mut PgConnection,
    saga_id: Uuid,
    learnt: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE onboarding_sagas
         SET step = 'done', status = 'completed', data = data || $2, lease_until = NULL,
             updated_at = now(), completed_at = now()
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(learnt)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a failed attempt of the current step, for operators (`attempts`, `last_error`).
pub async fn record_failure(
    pool: &sqlx::PgPool,
    saga_id: Uuid,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE onboarding_sagas SET attempts = attempts + 1, last_error = $2, updated_at = now()
         WHERE saga_id = $1",
    )
    .bind(saga_id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes the lease on `step` for `seconds`, unless another delivery holds it. `false` also
/// when the saga has moved past `step`.
pub async fn take_lease(
    conn: &mut PgConnection,
    saga_id: Uuid,
    step: Step,
    seconds: f64,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE onboarding_sagas
         SET lease_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE saga_id = $1 AND step = $2 AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(saga_id)
    .bind(step.as_str())
    .bind(seconds)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(taken == 1)
}

/// Gives the lease back early (the step failed and will be retried later).
pub async fn release_lease(pool: &sqlx::PgPool, saga_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE onboarding_sagas SET lease_until = NULL WHERE saga_id = $1")
        .bind(saga_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Reads a saga without locking it.
pub async fn get(pool: &sqlx::PgPool, saga_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, step, status,
                attempts, last_error, data
         FROM onboarding_sagas WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_optional(pool)
    .await
}
