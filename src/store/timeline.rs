//! A client's timeline for the console: what happened to it, newest first, from the tables
//! that keep it by client (each read through an index on the client or a primary key), and
//! the events and webhook deliveries of the correlations of its commands (through the
//! correlation indexes of migrations 0027 and 0028).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One thing that happened.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// `command`, `status`, `ekyc`, `email`, `xendit`, `saga`, `event`, `webhook`, `operator`.
    pub kind: String,
    pub what: String,
}

pub async fn of_client(
    pool: &PgPool,
    client_id: i32,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "WITH commands AS (
             SELECT message_id FROM onboarding_sagas WHERE client_id = $1
             UNION SELECT message_id FROM client_status_history WHERE client_id = $1
             UNION SELECT message_id FROM client_ekyc_history WHERE client_id = $1
         ), received AS (
             SELECT i.* FROM inbox i JOIN commands c ON c.message_id = i.message_id
         ), events AS (
             -- A correlation may span clients (an import's batch): only this client's events,
             -- and those naming no client (a command's failure).
             SELECT o.message_id, o.message_type, o.created_at,
                    EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id) AS pending
             FROM outbox o
             WHERE o.kind = 'event'
               AND o.correlation_id IN (SELECT DISTINCT correlation_id FROM received)
               AND coalesce(o.payload #>> '{data,client_id}',
                            o.payload #>> '{data,client,client_id}', $1::text) = $1::text
         )
         SELECT at, kind, what FROM (
             SELECT i.received_at AS at, 'command' AS kind,
                    i.command_type || ' ' || i.message_id || ': ' || i.outcome
                    || coalesce(' ' || i.outcome_code, '') AS what
             FROM received i
           UNION ALL
             SELECT e.created_at, 'event',
                    e.message_type || ' ' || e.message_id
                    || CASE WHEN e.pending THEN ' (not published yet)' ELSE ' published' END
             FROM events e
           UNION ALL
             SELECT coalesce(d.delivered_at, d.created_at), 'webhook',
                    d.event_type || ' to endpoint ' || d.endpoint_id || ': ' || d.status
                    || ' after ' || d.attempts || ' attempt(s)'
             FROM webhook_deliveries d
             WHERE d.correlation_id IN (SELECT DISTINCT correlation_id FROM received)
               AND d.event_id IN (SELECT message_id FROM events)
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
           UNION ALL
             -- Dead letters of its commands replayed or purged, from either door (the audit
             -- of operator moves is small: read whole).
             SELECT d.started_at, 'operator',
                    'dead letter ' || d.action || ' by ' || d.actor
                    || coalesce(' (' || d.note || ')', '')
             FROM dlq_audit d
             WHERE d.done_ids && ARRAY(SELECT message_id FROM received)
         ) t ORDER BY at DESC LIMIT $2",
    )
    .bind(client_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
