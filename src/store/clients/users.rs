//! Clients' admin users: inserted with their clients (and the clients' sagas with them), read
//! back, and their first access.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client, EkycStatus};
use crate::email::StoredAccess;
use crate::store::sagas::{FIRST_EPOCH, NewSaga};

/// Inserts each freshly inserted client's admin user (seed: username = client alias, role
/// admin, ACTIVE, eKYC as the client's; with what is stored of their first-access secret when
/// it was made already) and the client's saga, in one statement: the saga is written with the
/// admin inserted for its client. An admin whose email was taken meanwhile fails the
/// statement with a unique violation (the unique index decides, after waiting for a
/// concurrent insert to end), and the transaction with it: the caller retries the batch.
/// A plain insert, not `ON CONFLICT DO NOTHING`: no speculative insertion (an extra probe of
/// each unique index and an extra WAL record per row) for a conflict that almost never comes.
/// Returns the admins inserted, one per client. Sagas `leased` go to `owner` for
/// `lease_seconds`, with epoch [`FIRST_EPOCH`], and a first step that is the welcome email has
/// its send claimed under that lease at once (the worker sends it right after commit); the
/// others are due now.
pub async fn insert_admins_with_sagas(
    conn: &mut PgConnection,
    admins: &[(&Client, Option<&StoredAccess>)],
    sagas: &[NewSaga<'_>],
    owner: Uuid,
    lease_seconds: f64,
) -> Result<Vec<AdminUser>, sqlx::Error> {
    if admins.is_empty() {
        return Ok(Vec::new());
    }
    let client_ids: Vec<i32> = admins.iter().map(|(c, _)| c.client_id).collect();
    let names: Vec<&str> = admins
        .iter()
        .map(|(c, _)| c.client_alias.as_str())
        .collect();
    let emails: Vec<&str> = admins.iter().map(|(c, _)| c.email.as_str()).collect();
    let phones: Vec<&str> = admins.iter().map(|(c, _)| c.phone.as_str()).collect();
    let ekyc: Vec<EkycStatus> = admins.iter().map(|(c, _)| c.ekyc_status).collect();
    let tokens: Vec<Option<&str>> = admins
        .iter()
        .map(|(_, a)| a.and_then(|a| a.activation_token_sha256.as_deref()))
        .collect();
    let expiries: Vec<Option<DateTime<Utc>>> = admins
        .iter()
        .map(|(_, a)| a.and_then(|a| a.activation_expires_at))
        .collect();
    let hashes: Vec<Option<&str>> = admins
        .iter()
        .map(|(_, a)| a.and_then(|a| a.password_hash.as_deref()))
        .collect();
    let must_change: Vec<bool> = admins
        .iter()
        .map(|(_, a)| a.is_some_and(|a| a.must_change_password))
        .collect();
    let ids: Vec<Uuid> = sagas.iter().map(|s| s.saga_id).collect();
    let saga_clients: Vec<i32> = sagas.iter().map(|s| s.client_id).collect();
    let messages: Vec<&str> = sagas.iter().map(|s| s.message_id).collect();
    let correlations: Vec<&str> = sagas.iter().map(|s| s.correlation_id).collect();
    let replies: Vec<Option<&str>> = sagas.iter().map(|s| s.reply_to).collect();
    let traces: Vec<Option<&str>> = sagas.iter().map(|s| s.traceparent).collect();
    let steps: Vec<Step> = sagas.iter().map(|s| s.first_step).collect();
    let data: Vec<&Value> = sagas.iter().map(|s| &s.data).collect();
    let leased: Vec<bool> = sagas.iter().map(|s| s.leased).collect();
    sqlx::query_as(
        "WITH admins AS (
             INSERT INTO users (client_id, username, email, phone, role, user_status, ekyc_status,
                                activation_token_sha256, activation_expires_at, password_hash,
                                must_change_password)
             SELECT c, n, e, p, 'admin', 'ACTIVE', k, t, x, h, m
             FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::text[], $9::bool[]) AS v(c, n, e, p, k, t, x, h, m)
             RETURNING user_id, client_id, username, email, phone, role, user_status, ekyc_status
         ), sagas AS (
             INSERT INTO onboarding_sagas
               (saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to,
                traceparent, step, status, data, lease_owner, lease_until, due_at, lease_epoch,
                send_claim_epoch, send_claimed_at)
             SELECT x.id, a.client_id, a.user_id, x.m, x.co, x.r, x.tp, x.st, 'waiting', x.d,
                    CASE WHEN x.l THEN $19::uuid END,
                    CASE WHEN x.l THEN now() + make_interval(secs => $20) END,
                    CASE WHEN x.l THEN now() + make_interval(secs => $20) ELSE now() END,
                    CASE WHEN x.l THEN $21::int8 ELSE 0 END,
                    CASE WHEN x.l AND x.st = 'welcome_email' THEN $21::int8 END,
                    CASE WHEN x.l AND x.st = 'welcome_email' THEN now() END
             FROM admins a
             JOIN UNNEST($10::uuid[], $11::int[], $12::text[], $13::text[], $14::text[],
                         $15::text[], $16::text[], $17::jsonb[], $18::bool[])
                  AS x(id, c, m, co, r, tp, st, d, l) ON x.c = a.client_id
         )
         SELECT user_id, client_id, username, email, phone, role, user_status, ekyc_status
         FROM admins",
    )
    .bind(&client_ids)
    .bind(&names)
    .bind(&emails)
    .bind(&phones)
    .bind(&ekyc)
    .bind(&tokens)
    .bind(&expiries)
    .bind(&hashes)
    .bind(&must_change)
    .bind(&ids)
    .bind(&saga_clients)
    .bind(&messages)
    .bind(&correlations)
    .bind(&replies)
    .bind(&traces)
    .bind(&steps)
    .bind(&data)
    .bind(&leased)
    .bind(owner)
    .bind(lease_seconds)
    .bind(FIRST_EPOCH)
    .fetch_all(conn)
    .await
}

pub async fn get_admin_user(
    conn: &mut PgConnection,
    user_id: i32,
) -> Result<Option<AdminUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, client_id, username, email, phone, role, user_status, ekyc_status
         FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Stores what the database keeps of admins' first-access secrets (hashes only), in one
/// statement, for the sagas still held under the lease named with each (the saga rows are
/// read, not locked); returns the sagas whose admin's secret was stored.
pub async fn store_first_access(
    conn: &mut PgConnection,
    stored: &[(i32, crate::store::sagas::Lease, &crate::email::StoredAccess)],
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i32> = stored.iter().map(|(id, _, _)| *id).collect();
    let tokens: Vec<Option<&str>> = stored
        .iter()
        .map(|(_, _, a)| a.activation_token_sha256.as_deref())
        .collect();
    let expiries: Vec<Option<DateTime<Utc>>> = stored
        .iter()
        .map(|(_, _, a)| a.activation_expires_at)
        .collect();
    let hashes: Vec<Option<&str>> = stored
        .iter()
        .map(|(_, _, a)| a.password_hash.as_deref())
        .collect();
    let must_change: Vec<bool> = stored
        .iter()
        .map(|(_, _, a)| a.must_change_password)
        .collect();
    let sagas: Vec<uuid::Uuid> = stored.iter().map(|(_, l, _)| l.saga_id).collect();
    let epochs: Vec<i64> = stored.iter().map(|(_, l, _)| l.epoch).collect();
    sqlx::query_scalar(
        "UPDATE users
         SET activation_token_sha256 = v.t, activation_expires_at = v.x, password_hash = v.h,
             must_change_password = v.m, updated_at = now()
         FROM UNNEST($1::int[], $2::text[], $3::timestamptz[], $4::text[], $5::bool[],
                     $6::uuid[], $7::int8[]) AS v(id, t, x, h, m, saga, ep)
         JOIN onboarding_sagas s ON s.saga_id = v.saga AND s.lease_epoch = v.ep
         WHERE users.user_id = v.id
         RETURNING v.saga",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&expiries)
    .bind(&hashes)
    .bind(&must_change)
    .bind(&sagas)
    .bind(&epochs)
    .fetch_all(conn)
    .await
}
