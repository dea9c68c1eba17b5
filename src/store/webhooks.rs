//! Webhook endpoints, their deliveries and every attempt (`webhook_*` tables).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An endpoint as operators see it: everything but its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub endpoint_id: i64,
    pub url: String,
    pub patterns: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failed_in_a_row: i32,
    pub created_at: DateTime<Utc>,
}

/// What the sender needs of an enabled endpoint.
#[derive(Clone, sqlx::FromRow)]
pub struct Target {
    pub endpoint_id: i64,
    pub patterns: Vec<String>,
}

/// A delivery due now, leased to the caller.
#[derive(Clone, sqlx::FromRow)]
pub struct Due {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub url: String,
    pub secret: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub correlation_id: Option<String>,
    pub body: String,
    /// This attempt's number (1 for the first), as the log numbers it.
    pub attempts: i32,
    /// Attempts since the delivery was last (re)started: what the budget counts.
    pub tries: i32,
    /// The event's trace context, sent on as the request's `traceparent`.
    pub traceparent: Option<String>,
    /// How much of the lease was left when the claim returned, by the database's clock (the
    /// sender turns it into a deadline on its own monotonic clock: no skew between the two).
    pub lease_left_ms: i64,
}

impl std::fmt::Debug for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Due")
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub delivery_id: i64,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

pub async fn add_endpoint(
    pool: &PgPool,
    url: &str,
    patterns: &[String],
    secret: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (url, patterns, secret) VALUES ($1, $2, $3)
         RETURNING endpoint_id",
    )
    .bind(url)
    .bind(patterns)
    .bind(secret)
    .fetch_one(pool)
    .await
}

pub async fn endpoints(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT endpoint_id, url, patterns, enabled, disabled_reason, failed_in_a_row, created_at
         FROM webhook_endpoints ORDER BY endpoint_id",
    )
    .fetch_all(pool)
    .await
}

/// Enables or disables an endpoint; false when there is no such endpoint. Enabling resets
/// its failure count.
pub async fn set_enabled(
    pool: &PgPool,
    endpoint_id: i64,
    enabled: bool,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints
         SET enabled = $2,
             disabled_at = CASE WHEN $2 THEN NULL ELSE now() END,
             disabled_reason = CASE WHEN $2 THEN NULL ELSE $3 END,
             failed_in_a_row = CASE WHEN $2 THEN 0 ELSE failed_in_a_row END
         WHERE endpoint_id = $1",
    )
    .bind(endpoint_id)
    .bind(enabled)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove_endpoint(pool: &PgPool, endpoint_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE endpoint_id = $1")
        .bind(endpoint_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Endpoints disabled (by an operator or for their failures), for `/metrics`.
/// Endpoints failing (enabled, with deliveries given up since their last success) and
/// disabled.
pub async fn count_failing(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE enabled AND failed_in_a_row > 0),
                count(*) FILTER (WHERE NOT enabled)
         FROM webhook_endpoints",
    )
    .fetch_one(pool)
    .await
}

/// The enabled endpoints and what they want.
pub async fn targets(pool: &PgPool) -> Result<Vec<Target>, sqlx::Error> {
    sqlx::query_as("SELECT endpoint_id, patterns FROM webhook_endpoints WHERE enabled")
        .fetch_all(pool)
        .await
}

/// One delivery per (endpoint, event); a repeat of the same event adds nothing.
/// One delivery to insert: an endpoint and the event it wants.
pub struct NewDelivery {
    pub endpoint_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub correlation_id: Option<String>,
    pub body: String,
    pub traceparent: Option<String>,
}

pub async fn insert_deliveries(
    conn: &mut PgConnection,
    rows: &[NewDelivery],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let endpoints: Vec<i64> = rows.iter().map(|r| r.endpoint_id).collect();
    let events: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let traces: Vec<Option<&str>> = rows.iter().map(|r| r.traceparent.as_deref()).collect();
    let correlations: Vec<Option<&str>> =
        rows.iter().map(|r| r.correlation_id.as_deref()).collect();
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, traceparent,
                                         correlation_id)
         SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                              $6::text[])
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(&endpoints)
    .bind(&events)
    .bind(&types)
    .bind(&bodies)
    .bind(&traces)
    .bind(&correlations)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Leases up to `limit` due deliveries of enabled endpoints not in `busy`, counting the
/// attempt now (a sender that dies mid-call has still spent it).
///
/// The lease starts when the rows are taken (`clock_timestamp()`), not when the statement
/// began (`now()`): a claim that waited on a lock would otherwise hand out leases already run
/// out, and the next claim would take the same deliveries again. The attempt number the claim
/// sets is the holder's fencing token: [`give_back`] and [`record_attempt`] change a delivery
/// only while its number is still theirs.
pub async fn claim_due(
    pool: &PgPool,
    busy: &[i64],
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT d.delivery_id FROM webhook_deliveries d
             JOIN webhook_endpoints e USING (endpoint_id)
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               AND (d.leased_until IS NULL OR d.leased_until < now())
               AND e.enabled AND NOT (d.endpoint_id = ANY($1))
             ORDER BY d.next_attempt_at
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE webhook_deliveries d
         SET leased_until = clock_timestamp() + make_interval(secs => $3),
             attempts = d.attempts + 1
         FROM due, webhook_endpoints e
         WHERE d.delivery_id = due.delivery_id AND e.endpoint_id = d.endpoint_id
         RETURNING d.delivery_id, d.endpoint_id, e.url, e.secret, d.event_id, d.event_type,
                   d.correlation_id, d.body, d.attempts,
                   d.attempts - d.attempts_before AS tries, d.traceparent,
                   (extract(epoch FROM d.leased_until - clock_timestamp()) * 1000)::bigint
                       AS lease_left_ms",
    )
    .bind(busy)
    .bind(limit)
    .bind(lease_seconds)
    .fetch_all(pool)
    .await
}

/// Deliveries leased now (being sent), per endpoint.
pub async fn leased_per_endpoint(pool: &PgPool) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT endpoint_id, count(*) FROM webhook_deliveries
         WHERE status = 'pending' AND leased_until > now() GROUP BY endpoint_id",
    )
    .fetch_all(pool)
    .await
}

/// Returns leased deliveries unsent, their attempt not spent; a delivery claimed again since
/// (its lease ran out) is the new holder's and stays as it is.
pub async fn give_back(pool: &PgPool, leased: &[&Due]) -> Result<(), sqlx::Error> {
    if leased.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = leased.iter().map(|d| d.delivery_id).collect();
    let attempts: Vec<i32> = leased.iter().map(|d| d.attempts).collect();
    sqlx::query(
        "UPDATE webhook_deliveries d SET leased_until = NULL, attempts = d.attempts - 1
         FROM UNNEST($1::bigint[], $2::int[]) AS held (delivery_id, attempts)
         WHERE d.delivery_id = held.delivery_id AND d.attempts = held.attempts
           AND d.status = 'pending'",
    )
    .bind(&ids)
    .bind(&attempts)
    .execute(pool)
    .await?;
    Ok(())
}

/// What one attempt got.
pub struct Answered<'a> {
    /// The endpoint's status, or `None` when it did not answer.
    pub status_code: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: i32,
}

/// How an attempt ended, for [`record_attempt`].
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// An endpoint just disabled for its failures.
#[derive(Debug, Clone)]
pub struct Disabled {
    pub endpoint_id: i64,
    pub url: String,
    pub failed_in_a_row: i32,
}

/// What [`record_attempt`] did.
#[derive(Debug)]
pub enum Recorded {
    /// The delivery moved on as `next` said; `Some` when its endpoint was disabled just now.
    Applied(Option<Disabled>),
    /// The attempt is logged, but the delivery was claimed again meanwhile (this holder's
    /// lease ran out): its state is the new holder's to set, and is left alone.
    Superseded,
}

/// Records an attempt and what follows, in one transaction; when the delivery is given up
/// and the endpoint has now failed `disable_after` deliveries in a row, disables it and
/// queues `announce` (with its data) in the outbox, and says so. The delivery changes only
/// while `due.attempts` is still its attempt number (see [`claim_due`]).
pub async fn record_attempt(
    pool: &PgPool,
    due: &Due,
    answered: Answered<'_>,
    next: Next,
    disable_after: i32,
    announce: impl FnOnce(&Disabled) -> crate::messages::OutgoingMessage,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(due.delivery_id)
    .bind(due.attempts)
    .bind(answered.status_code)
    .bind(answered.error)
    .bind(answered.duration_ms)
    .execute(&mut *tx)
    .await?;
    let (status, next_attempt_at) = match next {
        Next::Delivered => ("delivered", None),
        Next::RetryAt(at) => ("pending", Some(at)),
        Next::GiveUp => ("failed", None),
    };
    let moved = sqlx::query(
        "UPDATE webhook_deliveries
         SET status = $3, leased_until = NULL,
             delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END,
             next_attempt_at = coalesce($4, next_attempt_at)
         WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'",
    )
    .bind(due.delivery_id)
    .bind(due.attempts)
    .bind(status)
    .bind(next_attempt_at)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        tx.commit().await?;
        return Ok(Recorded::Superseded);
    }
    let mut disabled = None;
    match next {
        Next::Delivered => {
            sqlx::query("UPDATE webhook_endpoints SET failed_in_a_row = 0 WHERE endpoint_id = $1")
                .bind(due.endpoint_id)
                .execute(&mut *tx)
                .await?;
        }
        Next::RetryAt(_) => {}
        Next::GiveUp => {
            let row: Option<(String, i32)> = sqlx::query_as(
                "UPDATE webhook_endpoints SET failed_in_a_row = failed_in_a_row + 1,
                     enabled = CASE WHEN failed_in_a_row + 1 >= $2 THEN false ELSE enabled END,
                     disabled_at = CASE WHEN failed_in_a_row + 1 >= $2 AND enabled THEN now()
                                        ELSE disabled_at END,
                     disabled_reason = CASE WHEN failed_in_a_row + 1 >= $2 AND enabled
                         THEN (failed_in_a_row + 1) || ' deliveries failed in a row'
                         ELSE disabled_reason END
                 WHERE endpoint_id = $1
                 RETURNING url, failed_in_a_row",
            )
            .bind(due.endpoint_id)
            .bind(disable_after)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((url, failed)) = row
                && failed == disable_after
            {
                let d = Disabled {
                    endpoint_id: due.endpoint_id,
                    url,
                    failed_in_a_row: failed,
                };
                super::outbox::insert(&mut tx, vec![announce(&d)], None).await?;
                disabled = Some(d);
            }
        }
    }
    tx.commit().await?;
    Ok(Recorded::Applied(disabled))
}

pub async fn deliveries(
    pool: &PgPool,
    failed_only: bool,
    endpoint: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT delivery_id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at,
                created_at, delivered_at
         FROM webhook_deliveries
         WHERE (NOT $1 OR status = 'failed') AND ($2::bigint IS NULL OR endpoint_id = $2)
         ORDER BY delivery_id DESC LIMIT $3",
    )
    .bind(failed_only)
    .bind(endpoint)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn attempts(pool: &PgPool, delivery_ids: &[i64]) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
    )
    .bind(delivery_ids)
    .fetch_all(pool)
    .await
}

/// Sends a delivery again, with a whole attempt budget; false when there is no such delivery.
pub async fn redeliver(pool: &PgPool, delivery_id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts_before = attempts,
             next_attempt_at = now(), leased_until = NULL, delivered_at = NULL
         WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .execute(pool)
    .await?;
    // Its earlier attempts stay in the log under their numbers; the new ones continue after.
    Ok(done.rows_affected() == 1)
}
