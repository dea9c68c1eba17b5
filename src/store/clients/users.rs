//! Clients' admin users: inserted with their clients, read back, and their first access.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::AdminUser;

/// Users by id, in any order (one row per id given). A primary-key probe per id: as `=
/// ANY($1)`, the generic plan made on a fresh database (the table never analysed) read the
/// whole table for every saga step batch until the first ANALYZE.
pub async fn get_admin_users(
    conn: &mut PgConnection,
    ids: &[i32],
) -> Result<Vec<AdminUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, u.client_id, u.username, u.email, u.phone, u.role, u.user_status,
                u.ekyc_status
         FROM UNNEST($1::int[]) AS k(id)
         CROSS JOIN LATERAL (SELECT * FROM users WHERE user_id = k.id LIMIT 1) u",
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
