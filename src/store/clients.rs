//! Clients, their admin users, PSPs and the client-code counter.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

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

/// Reads a client and locks its row until the transaction ends: two commands for one client
/// (approve and blacklist, say) run one after the other, each seeing the other's result.
pub async fn lock_client(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<Option<Client>, sqlx::Error> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1 FOR UPDATE");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(conn)
        .await
}

/// Stores a lifecycle status the caller decided under [`lock_client`].
pub async fn set_status(
    conn: &mut PgConnection,
    client_id: i32,
    status: &str,
) -> Result<Client, sqlx::Error> {
    let sql = format!(
        "UPDATE clients SET client_status = $2, updated = now() WHERE client_id = $1
         RETURNING {CLIENT_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(status)
        .fetch_one(conn)
        .await
}

/// Stores the client's eKYC status and gives its admin users the same one; returns the
/// client and how many admin users followed.
pub async fn set_ekyc(
    conn: &mut PgConnection,
    client_id: i32,
    ekyc_status: &str,
) -> Result<(Client, u64), sqlx::Error> {
    let sql = format!(
        "UPDATE clients SET ekyc_status = $2, updated = now() WHERE client_id = $1
         RETURNING {CLIENT_COLUMNS}"
    );
    let client: Client = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(ekyc_status)
        .fetch_one(&mut *conn)
        .await?;
    let admins = sqlx::query(
        "UPDATE users SET ekyc_status = $2, updated_at = now()
         WHERE client_id = $1 AND role = 'admin'",
    )
    .bind(client_id)
    .bind(ekyc_status)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((client, admins))
}

/// The filters of `client.list`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    pub status: Option<String>,
    pub country_code: Option<String>,
    pub client_type: Option<String>,
}

impl ClientFilter {
    fn push_where(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        if let Some(s) = &self.status {
            q.push(" AND client_status = ").push_bind(s.clone());
        }
        if let Some(c) = &self.country_code {
            q.push(" AND country_code = ").push_bind(c.clone());
        }
        if let Some(t) = &self.client_type {
            q.push(" AND client_type = ").push_bind(t.clone());
        }
    }
}

/// Where a page of `client.list` starts.
#[derive(Debug, Clone, Copy)]
pub enum PageStart {
    /// Skip this many clients (offset paging).
    Offset(u64),
    /// Strictly after this `(created, client_id)` (keyset paging).
    After(DateTime<Utc>, i32),
}

/// One page of clients, newest first, the id breaking ties (index `clients_created` and the
/// filtered ones of 0002).
pub async fn list_clients(
    conn: &mut PgConnection,
    filter: &ClientFilter,
    start: PageStart,
    limit: i64,
) -> Result<Vec<Client>, sqlx::Error> {
    let mut q = QueryBuilder::new(format!("SELECT {CLIENT_COLUMNS} FROM clients"));
    filter.push_where(&mut q);
    if let PageStart::After(created, client_id) = start {
        q.push(" AND (created, client_id) < (")
            .push_bind(created)
            .push(", ")
            .push_bind(client_id)
            .push(")");
    }
    q.push(" ORDER BY created DESC, client_id DESC LIMIT ")
        .push_bind(limit);
    if let PageStart::Offset(n) = start {
        q.push(" OFFSET ")
            .push_bind(i64::try_from(n).unwrap_or(i64::MAX));
    }
    q.build_query_as().fetch_all(conn).await
}

/// How many clients match the filters.
pub async fn count_clients(
    conn: &mut PgConnection,
    filter: &ClientFilter,
) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM clients");
    filter.push_where(&mut q);
    q.build_query_scalar().fetch_one(conn).await
}
