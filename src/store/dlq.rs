//! SQL of the dead-letter tools (`onboard dlq`): the audit trail of replays and purges, and
//! the inbox rows a replay must clear.

use serde_json::Value;
use sqlx::PgPool;

/// What an operator is about to do, recorded before anything moves.
#[derive(Debug, Clone)]
pub struct AuditStart<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub host: Option<&'a str>,
    pub note: Option<&'a str>,
    pub queue: &'a str,
    pub selector: &'a Value,
    pub messages: &'a Value,
    pub selected: i32,
}

/// A row of `dlq_audit`, for operators and tests.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub action: String,
    pub actor: String,
    pub host: Option<String>,
    pub note: Option<String>,
    pub queue: String,
    pub selector: Value,
    pub messages: Value,
    pub selected: i32,
    pub done_ids: Vec<String>,
    pub done: i32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

pub async fn start(pool: &PgPool, a: AuditStart<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO dlq_audit (action, actor, host, note, queue, selector, messages, selected)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id",
    )
    .bind(a.action)
    .bind(a.actor)
    .bind(a.host)
    .bind(a.note)
    .bind(a.queue)
    .bind(a.selector)
    .bind(a.messages)
    .bind(a.selected)
    .fetch_one(pool)
    .await
}

/// Adds the selection of a further pass (a run that needed more than one snapshot).
pub async fn add_messages(pool: &PgPool, id: i64, messages: &Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dlq_audit SET messages = messages || $2::jsonb,
                selected = selected + jsonb_array_length($2::jsonb)
         WHERE id = $1",
    )
    .bind(id)
    .bind(messages)
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds message ids that were moved (replayed or purged) to a run, as they go, so a run that
/// is killed still says how far it got.
pub async fn progress(pool: &PgPool, id: i64, done_ids: &[String]) -> Result<(), sqlx::Error> {
    if done_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE dlq_audit SET done_ids = done_ids || $2::text[], done = done + cardinality($2::text[])
         WHERE id = $1",
    )
    .bind(id)
    .bind(done_ids)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn finish(
    pool: &PgPool,
    id: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dlq_audit SET finished_at = now(), outcome = $2, error = $3 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// The most recent runs first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM dlq_audit ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The inbox outcome of each id that has one (`succeeded`, `refused`, `rejected`).
pub async fn inbox_outcomes(
    pool: &PgPool,
    message_ids: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT message_id, outcome FROM inbox WHERE message_id = ANY($1)")
        .bind(message_ids)
        .fetch_all(pool)
        .await
}

/// Before a replay: forgets that these messages were rejected as malformed, so the replayed
/// copy is checked afresh instead of being taken for a duplicate and dropped. Only `rejected`
/// rows go: they stand for no effect at all (the message never reached a handler). Rows of
/// commands that succeeded or were refused stay, so replaying those is a harmless duplicate.
pub async fn forget_rejected(pool: &PgPool, message_ids: &[String]) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM inbox WHERE message_id = ANY($1) AND outcome = 'rejected'")
            .bind(message_ids)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
