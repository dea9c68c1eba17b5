//! Clients, their admin users, PSPs and the client-code counter.

use sqlx::PgConnection;

use crate::domain::{AdminUser, Client, NewClient, PspCandidate, client_code};

const CLIENT_COLUMNS: &str = "client_id, client_code, email, client_alias, client_type, client_status, \
     ekyc_status, country_code, psp_id, phone, created, updated";

/// Every PSP configured for a country (the choice between them is `domain::choose_psp`).
pub async fn psp_candidates(
    conn: &mut PgConnection,
    country_code: &str,
) -> Result<Vec<PspCandidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT psp_id, psp_name, psp_type, COALESCE(priority, 0) AS priority, created_at
         FROM psp_providers WHERE country_code = $1",
    )
    .bind(country_code)
    .fetch_all(conn)
    .await
}

/// Takes the next client code of the current (UTC) month. The upsert locks the month's
/// counter row until the transaction ends, so concurrent creations get consecutive numbers,
/// and a rollback (to a savepoint, too) gives the number back: no gaps, no duplicates.
pub async fn next_client_code(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    let (year_month, seq): (String, i32) = sqlx::query_as(
        "INSERT INTO client_code_counters AS c (year_month, last_value)
         VALUES (to_char(now() AT TIME ZONE 'UTC', 'YYYYMM'), 1)
         ON CONFLICT (year_month) DO UPDATE SET last_value = c.last_value + 1
         RETURNING year_month::text, last_value",
    )
    .fetch_one(conn)
    .await?;
    Ok(client_code(&year_month, seq))
}

/// Inserts the client; `None` when the email is already taken (the unique index decides,
/// waiting for a concurrent insert of the same email to commit or roll back first).
pub async fn insert_client(
    conn: &mut PgConnection,
    new: &NewClient,
    code: &str,
    psp_id: i32,
) -> Result<Option<Client>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO clients (client_code, email, client_alias, client_type, client_status, country_code, psp_id, phone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT ((lower(email))) DO NOTHING
         RETURNING {CLIENT_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(code)
        .bind(new.email.as_str())
        .bind(&new.client_alias)
        .bind(&new.client_type)
        .bind(&new.client_status)
        .bind(&new.country_code)
        .bind(psp_id)
        .bind(&new.phone)
        .fetch_optional(conn)
        .await
}

/// The client's admin user (seed: username = client alias, role admin, ACTIVE, eKYC PENDING).
/// `None` when a user already has that email.
pub async fn insert_admin_user(
    conn: &mut PgConnection,
    client: &Client,
) -> Result<Option<AdminUser>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (client_id, username, email, phone, role, user_status, ekyc_status)
         VALUES ($1, $2, $3, $4, 'admin', 'ACTIVE', $5)
         ON CONFLICT ((lower(email))) DO NOTHING
         RETURNING user_id, client_id, username, email, phone, role, user_status, ekyc_status",
    )
    .bind(client.client_id)
    .bind(&client.client_alias)
    .bind(&client.email)
    .bind(&client.phone)
    .bind(&client.ekyc_status)
    .fetch_optional(conn)
    .await
}

pub async fn get_client(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<Option<Client>, sqlx::Error> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(conn)
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

/// Stores what the database keeps of the admin's first-access secret: hashes only.
pub async fn store_first_access(
    conn: &mut PgConnection,
    user_id: i32,
    stored: &crate::email::StoredAccess,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users
         SET activation_token_sha256 = $2, activation_expires_at = $3, password_hash = $4,
             must_change_password = $5, updated_at = now()
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(stored.activation_token_sha256.as_deref())
    .bind(stored.activation_expires_at)
    .bind(stored.password_hash.as_deref())
    .bind(stored.must_change_password)
    .execute(conn)
    .await?;
    Ok(())
}
