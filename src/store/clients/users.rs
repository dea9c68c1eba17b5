//! Clients' admin users: inserted with their clients, read back, and their first access.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{AdminUser, Client, EkycStatus};

/// The admin users of freshly inserted clients, in one statement (seed: username = client
/// alias, role admin, ACTIVE, eKYC as the client's), with what is stored of their first-access
/// secret when it was made already. Rows whose email a user has meanwhile are skipped.
pub async fn insert_admin_users(
    conn: &mut PgConnection,
    admins: &[(&Client, Option<&crate::email::StoredAccess>)],
) -> Result<Vec<AdminUser>, sqlx::Error> {
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
    sqlx::query_as(
        "INSERT INTO users (client_id, username, email, phone, role, user_status, ekyc_status,
                            activation_token_sha256, activation_expires_at, password_hash, must_change_password)
         SELECT c, n, e, p, 'admin', 'ACTIVE', k, t, x, h, m
         FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::text[], $9::bool[]) AS v(c, n, e, p, k, t, x, h, m)
         ON CONFLICT DO NOTHING
         RETURNING user_id, client_id, username, email, phone, role, user_status, ekyc_status",
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
    .fetch_all(conn)
    .await
}

/// Users by id, in any order.
pub async fn get_admin_users(
    conn: &mut PgConnection,
    ids: &[i32],
) -> Result<Vec<AdminUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, client_id, username, email, phone, role, user_status, ekyc_status
         FROM users WHERE user_id = ANY($1)",
    )
    .bind(ids)
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
