//! A client's timeline for the console: what happened to it, newest first, from the tables
//! that keep it by client (each read through an index on the client or a primary key).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One thing that happened.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// `command`, `status`, `ekyc`, `email`, `xendit`, `saga`, `operator`.
    pub kind: String,
    pub what: String,
}

pub async fn of_client(
    pool: &PgPool,
    client_id: i32,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, kind, what FROM (
             SELECT i.received_at AS at, 'command' AS kind,
                    i.command_type || ' ' || s.message_id || ': ' || i.outcome
                    || coalesce(' ' || i.outcome_code, '') AS what
             FROM onboarding_sagas s JOIN inbox i ON i.message_id = s.message_id
             WHERE s.client_id = $1
           UNION ALL
             SELECT h.occurred_at, 'status',
                    h.from_status || ' -> ' || h.to_status || ' by ' || h.action || ' '
                    || h.message_id || coalesce(' (' || h.reason || ')', '')
             FROM client_status_history h WHERE h.client_id = $1
           UNION ALL
             SELECT h.occurred_at, 'ekyc',
                    'eKYC ' || h.from_status || ' -> ' || h.to_status || ' by ' || h.message_id
             FROM client_ekyc_history h WHERE h.client_id = $1
           UNION ALL
             SELECT e.created_at, 'email',
                    'welcome email ' || e.status || ', attempt ' || e.attempt
                    || coalesce(': ' || e.error, '')
             FROM client_email_logs e WHERE e.client_id = $1
           UNION ALL
             SELECT x.created_at, 'xendit',
                    'Xendit ' || x.customer_type || ' customer ' || x.xendit_customer_id
             FROM xendit_customers x
             WHERE x.client_id = $1
                OR x.user_id IN (SELECT user_id FROM users WHERE client_id = $1)
           UNION ALL
             SELECT s.updated_at, 'saga',
                    'saga ' || s.status || ' at step ' || s.step || ', ' || s.attempts
                    || ' attempts' || coalesce(', last error: ' || s.last_error, '')
             FROM onboarding_sagas s WHERE s.client_id = $1
           UNION ALL
             SELECT a.at, 'operator',
                    a.action || ' by ' || a.actor || ' (' || a.source || ')'
                    || CASE WHEN a.done THEN '' ELSE ', found nothing' END
             FROM operator_actions a WHERE a.subject ->> 'client_id' = $1::text
         ) t ORDER BY at DESC LIMIT $2",
    )
    .bind(client_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
