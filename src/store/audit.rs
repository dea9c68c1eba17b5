//! The audit of operator actions: `operator_actions` (migration 0026) beside `dlq_audit`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

pub async fn record(
    pool: &PgPool,
    actor: &str,
    source: &str,
    address: Option<&str>,
    action: &str,
    subject: &Value,
    done: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operator_actions (actor, source, address, action, subject, done)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(source)
    .bind(address)
    .bind(action)
    .bind(subject)
    .bind(done)
    .execute(pool)
    .await?;
    Ok(())
}

/// One line of the audit, from either table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub address: Option<String>,
    pub action: String,
    pub subject: Value,
    pub outcome: Option<String>,
}

/// The newest entries of both audits, newest first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, actor, address, action, subject, outcome FROM (
             SELECT at, actor, address, action, subject,
                    CASE WHEN done THEN 'done' ELSE 'not found' END AS outcome
             FROM operator_actions
             UNION ALL
             SELECT started_at, actor, host, 'dlq.' || action,
                    jsonb_strip_nulls(jsonb_build_object(
                        'selector', selector, 'message_ids', done_ids, 'note', note,
                        -- edit-and-retry keeps the body as it was (masked) beside the message
                        'original_bodies',
                        (SELECT jsonb_agg(m -> 'original_body')
                         FROM jsonb_array_elements(messages) m WHERE m ? 'original_body'))),
                    outcome
             FROM dlq_audit
         ) a ORDER BY at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
