//! Create-client saga rows: where each onboarding stands and who is running it.
//!
//! A saga is leased by the worker running it (`lease_owner`, `lease_until`); while leased its
//! `due_at` is the lease's end, while it waits for a retry `due_at` is that retry's time. A
//! sweeper takes what is due (`FOR UPDATE SKIP LOCKED`): waiting sagas whose time came, and
//! sagas whose owner's lease ran out. Every write of a running step names the owner and the
//! step it expects, so a worker that lost its lease changes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::saga::{SagaStatus, Step};

const SAGA_COLUMNS: &str = "saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, \
     traceparent, step, status, attempts, last_error, data";

/// A saga row as the steps read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Saga {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub admin_user_id: i32,
    /// The client.create that started it, and where its answer goes.
    pub message_id: String,
    pub correlation_id: String,
    pub reply_to: Option<String>,
    pub traceparent: Option<String>,
    pub step: Step,
    pub status: SagaStatus,
    /// Failed attempts of the current step.
    pub attempts: i32,
    pub last_error: Option<String>,
    /// What the steps learnt (PSP, Xendit integration, email outcome).
    pub data: Value,
}

/// A saga to start, leased to the worker that persisted its client.
#[derive(Debug, Clone)]
pub struct NewSaga<'a> {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub admin_user_id: i32,
    pub message_id: &'a str,
    pub correlation_id: &'a str,
    pub reply_to: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub first_step: Step,
    pub data: Value,
}

/// Starts sagas, leased to `owner` for `lease_seconds` (one statement for the batch).
pub async fn insert_many(
    conn: &mut PgConnection,
    sagas: &[NewSaga<'_>],
    owner: Uuid,
    lease_seconds: f64,
) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = sagas.iter().map(|s| s.saga_id).collect();
    let clients: Vec<i32> = sagas.iter().map(|s| s.client_id).collect();
    let users: Vec<i32> = sagas.iter().map(|s| s.admin_user_id).collect();
    let messages: Vec<&str> = sagas.iter().map(|s| s.message_id).collect();
    let correlations: Vec<&str> = sagas.iter().map(|s| s.correlation_id).collect();
    let replies: Vec<Option<&str>> = sagas.iter().map(|s| s.reply_to).collect();
    let traces: Vec<Option<&str>> = sagas.iter().map(|s| s.traceparent).collect();
    let steps: Vec<Step> = sagas.iter().map(|s| s.first_step).collect();
    let data: Vec<&Value> = sagas.iter().map(|s| &s.data).collect();
    sqlx::query(
        "INSERT INTO onboarding_sagas
           (saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, traceparent,
            step, status, data, lease_owner, lease_until, due_at)
         SELECT id, c, u, m, co, r, tp, st, 'waiting', d, $10,
                now() + make_interval(secs => $11), now() + make_interval(secs => $11)
         FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::jsonb[]) AS x(id, c, u, m, co, r, tp, st, d)",
    )
    .bind(&ids)
    .bind(&clients)
    .bind(&users)
    .bind(&messages)
    .bind(&correlations)
    .bind(&replies)
    .bind(&traces)
    .bind(&steps)
    .bind(&data)
    .bind(owner)
    .bind(lease_seconds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Leases up to `limit` sagas that are due to `owner`, oldest due first; sagas another
/// sweeper is taking at the same moment are skipped, not waited for.
pub async fn claim_due(
    pool: &PgPool,
    owner: Uuid,
    lease_seconds: f64,
    limit: i64,
) -> Result<Vec<Saga>, sqlx::Error> {
    let sql = format!(
        "UPDATE onboarding_sagas s
         SET lease_owner = $1, lease_until = now() + make_interval(secs => $2),
             due_at = now() + make_interval(secs => $2), updated_at = now()
         FROM (SELECT saga_id FROM onboarding_sagas
               WHERE status <> 'completed' AND due_at <= now()
               ORDER BY due_at LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE s.saga_id = due.saga_id
         RETURNING {}",
        prefixed("s.")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(lease_seconds)
        .bind(limit)
        .fetch_all(pool)
        .await
}

fn prefixed(prefix: &str) -> String {
    SAGA_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Extends `owner`'s leases on `saga_ids` at `step`; returns the ones it still held there.
pub async fn renew(
    conn: &mut PgConnection,
    saga_ids: &[Uuid],
    owner: Uuid,
    step: Step,
    lease_seconds: f64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE onboarding_sagas
         SET lease_until = now() + make_interval(secs => $4), due_at = now() + make_interval(secs => $4)
         WHERE saga_id = ANY($1) AND lease_owner = $2 AND step = $3
         RETURNING saga_id",
    )
    .bind(saga_ids)
    .bind(owner)
    .bind(step)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await
}

/// Moves sagas `owner` runs at `from` on to their next step, merging what the step learnt
/// into `data`; the lease is kept (the worker carries on). Returns the sagas moved, with
/// their data now.
pub async fn advance_many(
    conn: &mut PgConnection,
    owner: Uuid,
    from: Step,
    moves: &[(Uuid, Step, Value)],
    lease_seconds: f64,
) -> Result<Vec<(Uuid, Value)>, sqlx::Error> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = moves.iter().map(|m| m.0).collect();
    let next: Vec<Step> = moves.iter().map(|m| m.1).collect();
    let learnt: Vec<&Value> = moves.iter().map(|m| &m.2).collect();
    sqlx::query_as(
        "UPDATE onboarding_sagas s
         SET step = x.next, data = s.data || x.d, attempts = 0, last_error = NULL,
             lease_until = now() + make_interval(secs => $6), due_at = now() + make_interval(secs => $6),
             updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[]) AS x(id, next, d)
         WHERE s.saga_id = x.id AND s.lease_owner = $4 AND s.step = $5
         RETURNING s.saga_id, s.data",
    )
    .bind(&ids)
    .bind(&next)
    .bind(&learnt)
    .bind(owner)
    .bind(from)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await
}

/// Completes sagas `owner` runs at `from`, merging what the last step learnt. Returns the
/// sagas completed now, with their data.
pub async fn complete_many(
    conn: &mut PgConnection,
    owner: Uuid,
    from: Step,
    done: &[(Uuid, Value)],
) -> Result<Vec<(Uuid, Value)>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
    let learnt: Vec<&Value> = done.iter().map(|d| &d.1).collect();
    sqlx::query_as(
        "UPDATE onboarding_sagas s
         SET step = 'done', status = 'completed', data = s.data || x.d, lease_owner = NULL,
             lease_until = NULL, due_at = NULL, updated_at = now(), completed_at = now()
         FROM UNNEST($1::uuid[], $2::jsonb[]) AS x(id, d)
         WHERE s.saga_id = x.id AND s.lease_owner = $3 AND s.step = $4
         RETURNING s.saga_id, s.data",
    )
    .bind(&ids)
    .bind(&learnt)
    .bind(owner)
    .bind(from)
    .fetch_all(conn)
    .await
}

/// A failed attempt of `step` that will be tried again: counted, its error kept for
/// operators, due again after its delay, the lease given back.
pub struct Postpone<'a> {
    pub saga_id: Uuid,
    pub error: &'a str,
    pub delay_seconds: f64,
}

pub async fn postpone_many(
    conn: &mut PgConnection,
    owner: Uuid,
    step: Step,
    later: &[Postpone<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if later.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = later.iter().map(|p| p.saga_id).collect();
    let errors: Vec<&str> = later.iter().map(|p| p.error).collect();
    let delays: Vec<f64> = later.iter().map(|p| p.delay_seconds).collect();
    sqlx::query_scalar(
        "UPDATE onboarding_sagas s
         SET attempts = s.attempts + 1, last_error = x.e, due_at = now() + make_interval(secs => x.delay),
             lease_owner = NULL, lease_until = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::float8[]) AS x(id, e, delay)
         WHERE s.saga_id = x.id AND s.lease_owner = $4 AND s.step = $5
         RETURNING s.saga_id",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(&delays)
    .bind(owner)
    .bind(step)
    .fetch_all(conn)
    .await
}

/// Gives back every lease of these owners (a worker stopping, or workers found dead): their
/// sagas are due at once for whoever sweeps next.
pub async fn release_leases(pool: &PgPool, owners: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE onboarding_sagas SET lease_owner = NULL, lease_until = NULL, due_at = now()
         WHERE status <> 'completed' AND lease_owner = ANY($1)",
    )
    .bind(owners)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Reads a saga without locking it.
pub async fn get(pool: &PgPool, saga_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    let sql = format!("SELECT {SAGA_COLUMNS} FROM onboarding_sagas WHERE saga_id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(saga_id)
        .fetch_optional(pool)
        .await
}

/// A saga that should have run and did not, for operators.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Stuck {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub step: Step,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

/// Sagas not completed that have been due for longer than `seconds` (no worker took them, or
/// their owner's lease ran out that long ago), oldest first.
pub async fn stuck(pool: &PgPool, seconds: f64, limit: i64) -> Result<Vec<Stuck>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id, client_id, step, attempts, last_error, due_at, lease_owner, updated_at
         FROM onboarding_sagas
         WHERE status <> 'completed' AND due_at < now() - make_interval(secs => $1)
         ORDER BY due_at LIMIT $2",
    )
    .bind(seconds)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many sagas [`stuck`] would list (for `/metrics`).
pub async fn count_stuck(pool: &PgPool, seconds: f64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM onboarding_sagas
         WHERE status <> 'completed' AND due_at < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .fetch_one(pool)
    .await
}
