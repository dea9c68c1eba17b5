//! The operator console's users, sessions and failed logins (migration 0025).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A console user as listed (never with the password hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// Adds a user; `false` when the name is taken.
pub async fn add_user(
    pool: &PgPool,
    name: &str,
    role: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO console_users (name, role, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role)
    .bind(password_hash)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn users(pool: &PgPool) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, name, role, created_at FROM console_users ORDER BY name")
        .fetch_all(pool)
        .await
}

/// Removes a user and its sessions; `false` when there is none.
pub async fn remove_user(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM console_users WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a user's password and ends its sessions; `false` when there is no such user.
pub async fn set_password(
    pool: &PgPool,
    name: &str,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let user: Option<i64> = sqlx::query_scalar(
        "UPDATE console_users SET password_hash = $2, updated_at = now() WHERE name = $1
         RETURNING user_id",
    )
    .bind(name)
    .bind(password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = user {
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(user.is_some())
}

/// The user of a name with its password hash, for a login.
pub async fn credentials(pool: &PgPool, name: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, password_hash FROM console_users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Failed logins in the last minute for this name, and for this address.
pub async fn recent_failures(
    pool: &PgPool,
    name: &str,
    address: &str,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE name = $1), count(*) FILTER (WHERE address = $2)
         FROM console_login_failures
         WHERE at > now() - interval '1 minute' AND (name = $1 OR address = $2)",
    )
    .bind(name)
    .bind(address)
    .fetch_one(pool)
    .await
}

/// Records a failed login, and forgets those older than a day.
pub async fn record_failure(pool: &PgPool, name: &str, address: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH old AS (DELETE FROM console_login_failures WHERE at < now() - interval '1 day')
         INSERT INTO console_login_failures (name, address) VALUES ($1, $2)",
    )
    .bind(name)
    .bind(address)
    .execute(pool)
    .await?;
    Ok(())
}

/// The user behind a live session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub csrf_token: String,
}

pub async fn open_session(
    pool: &PgPool,
    token_hash: &[u8],
    user_id: i64,
    csrf_token: &str,
    address: &str,
    hours: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now())
         INSERT INTO console_sessions (token_hash, user_id, csrf_token, address, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5))",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(csrf_token)
    .bind(address)
    .bind(i32::try_from(hours).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn session(pool: &PgPool, token_hash: &[u8]) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, u.name, u.role, s.csrf_token
         FROM console_sessions s JOIN console_users u USING (user_id)
         WHERE s.token_hash = $1 AND s.expires_at > now()",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}

pub async fn close_session(pool: &PgPool, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}
