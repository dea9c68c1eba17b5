//! Clients, their admin users, PSPs and the client-code counter.

use sqlx::{Connection, PgConnection};

use crate::domain::{AdminUser, Client, ClientStatus, EkycStatus, NewClient, PspCandidate};

mod columns;
mod search;
mod users;
use columns::select_from;
pub use search::{ClientFilter, ClientKey, PageStart, count_clients, find_client, list_clients};
pub use users::{get_admin_user, insert_admins_with_sagas, store_first_access};

/// Every PSP configured for these countries, with its country (the choice between them is
/// `domain::choose_psp`).
pub async fn psp_candidates(
    conn: &mut PgConnection,
    country_codes: &[&str],
) -> Result<Vec<(String, PspCandidate)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        country_code: String,
        #[sqlx(flatten)]
        psp: PspCandidate,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT country_code, psp_id, psp_name, psp_type, COALESCE(priority, 0) AS priority, created_at
         FROM psp_providers WHERE country_code = ANY($1::text[])",
    )
    .bind(country_codes)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.country_code, r.psp)).collect())
}

/// For each email, in order: its lower-case form as PostgreSQL folds it (the unique indexes
/// fold with `lower()`), and whether a live client or user already has it (a deleted
/// client's email is free).
pub async fn emails_taken(
    conn: &mut PgConnection,
    emails: &[&str],
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    // One probe of each unique index per email. As EXISTS in the select list, the generic plan
    // made on a fresh database (tables never analysed; kept for the connection's life, until
    // the first ANALYZE) hashed every client for each batch instead: 4.4 ms per batch at 7,000
    // clients, growing with the table. A LATERAL probe is planned as an index scan there.
    // The array comes through a sub-select so that its length is unknown to every plan: with
    // `UNNEST($1)` a custom plan sees the batch's few emails and looks cheaper than the generic
    // plan's ten, so PostgreSQL planned the check again on almost every call of a steady load
    // (0.16 ms each, 5% of its CPU at 900 commands/s: docs/benchmark.md, issue 24's ninth day).
    sqlx::query_as(
        "SELECT lower(x.e), c.one IS NOT NULL OR u.one IS NOT NULL
         FROM UNNEST((SELECT $1::text[])) WITH ORDINALITY AS x(e, i)
         LEFT JOIN LATERAL (SELECT 1 AS one FROM clients
                            WHERE lower(email) = lower(x.e) AND deleted_at IS NULL
                            LIMIT 1) c ON true
         LEFT JOIN LATERAL (SELECT 1 AS one FROM users
                            WHERE lower(email) = lower(x.e) AND deleted_at IS NULL
                            LIMIT 1) u ON true
         ORDER BY x.i",
    )
    .bind(emails)
    .fetch_all(conn)
    .await
}

/// Whether another live client or another client's live user has `email` (for an update of
/// `client_id`'s email).
pub async fn email_taken_by_other(
    conn: &mut PgConnection,
    email: &str,
    client_id: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM clients
                        WHERE lower(email) = lower($1) AND deleted_at IS NULL AND client_id <> $2)
             OR EXISTS (SELECT 1 FROM users
                        WHERE lower(email) = lower($1) AND deleted_at IS NULL AND client_id <> $2)",
    )
    .bind(email)
    .bind(client_id)
    .fetch_one(conn)
    .await
}

/// For each external id, in order: the live client that has it, if any (id and code).
pub async fn external_ids_taken(
    conn: &mut PgConnection,
    external_ids: &[&str],
) -> Result<Vec<Option<(i32, String)>>, sqlx::Error> {
    // Most batches name none: no round trip for them.
    if external_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT c.client_id, c.client_code
         FROM UNNEST($1::text[]) WITH ORDINALITY AS x(e, i)
         LEFT JOIN clients c ON c.external_id = x.e AND c.deleted_at IS NULL
         ORDER BY x.i",
    )
    .bind(external_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id, code)| id.zip(code)).collect())
}

/// A client to insert, with its PSP and normalised profile decided (its code comes from the
/// insert, [`insert_clients`]).
pub struct ClientRow<'a> {
    pub new: &'a NewClient,
    pub psp_id: i32,
    pub external_id: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
    pub identity: &'a serde_json::Value,
    pub address: Option<&'a serde_json::Value>,
    pub direct_partner_id: Option<i32>,
    pub is_active: bool,
    pub description: Option<&'a str>,
    pub contact: Option<&'a serde_json::Value>,
}

/// Inserts clients in one statement, numbered from the current (UTC) month's client-code
/// counter, which the same statement moves on by `rows.len()` (creating it when the month is
/// new) and so locks until the transaction ends: whoever holds it is the only one inserting
/// clients this month, so the numbers are gap-free and race-free (a rollback gives them back
/// with the lock). The rows are numbered in order, `CL-YYYYMM-NNNN` as
/// [`crate::domain::client_code`] writes it. A row whose email or external id was taken
/// meanwhile fails the statement with a unique violation (the unique indexes decide, after
/// waiting for a concurrent insert to end), and the transaction with it, numbers and all: the
/// caller retries the batch. A plain insert, not `ON CONFLICT DO NOTHING`: no speculative
/// insertion (an extra probe of each of the four unique indexes and an extra WAL record per
/// row, under the counter's lock) for a conflict that almost never comes.
///
/// One statement from the lock to the inserted rows: the lock is held from here to COMMIT, and
/// the other batch slot's creates wait for it, so every round trip under it counts twice.
pub async fn insert_clients(
    conn: &mut PgConnection,
    rows: &[ClientRow<'_>],
) -> Result<Vec<Client>, sqlx::Error> {
    let emails: Vec<&str> = rows.iter().map(|r| r.new.email.as_str()).collect();
    let aliases: Vec<&str> = rows.iter().map(|r| r.new.client_alias.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.new.client_type.as_str()).collect();
    let statuses: Vec<ClientStatus> = rows.iter().map(|r| r.new.client_status).collect();
    let countries: Vec<&str> = rows.iter().map(|r| r.new.country_code.as_str()).collect();
    let psps: Vec<i32> = rows.iter().map(|r| r.psp_id).collect();
    let phones: Vec<&str> = rows.iter().map(|r| r.new.phone.as_str()).collect();
    let external_ids: Vec<Option<&str>> = rows.iter().map(|r| r.external_id).collect();
    let metadata: Vec<Option<&serde_json::Value>> = rows.iter().map(|r| r.metadata).collect();
    let identities: Vec<&serde_json::Value> = rows.iter().map(|r| r.identity).collect();
    let addresses: Vec<Option<&serde_json::Value>> = rows.iter().map(|r| r.address).collect();
    let partners: Vec<Option<i32>> = rows.iter().map(|r| r.direct_partner_id).collect();
    let active: Vec<bool> = rows.iter().map(|r| r.is_active).collect();
    let descriptions: Vec<Option<&str>> = rows.iter().map(|r| r.description).collect();
    let contacts: Vec<Option<&serde_json::Value>> = rows.iter().map(|r| r.contact).collect();
    let sql = format!(
        "WITH counter AS (
             INSERT INTO client_code_counters AS c (year_month, last_value)
             VALUES (to_char(now() AT TIME ZONE 'UTC', 'YYYYMM'), $1)
             ON CONFLICT (year_month) DO UPDATE SET last_value = c.last_value + $1
             RETURNING year_month::text AS ym, last_value - $1 AS base
         ), inserted AS (
             INSERT INTO clients (client_code, email, client_alias, client_type, client_status, country_code,
                                  psp_id, phone, external_id, metadata, identity, address, direct_partner_id,
                                  is_active, description, contact)
             SELECT 'CL-' || k.ym || '-' || lpad((k.base + v.i)::text, greatest(4, length((k.base + v.i)::text)), '0'),
                    v.e, v.a, v.t, v.s, v.cc, v.p, v.ph, v.x, v.m, v.id, v.ad, v.dp, v.ac, v.de, v.co
             FROM counter k
             CROSS JOIN UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
                               $8::text[], $9::text[], $10::jsonb[], $11::jsonb[], $12::jsonb[], $13::int[],
                               $14::bool[], $15::text[], $16::jsonb[])
                  WITH ORDINALITY AS v(e, a, t, s, cc, p, ph, x, m, id, ad, dp, ac, de, co, i)
             ORDER BY v.i
             RETURNING *
         )
         {}",
        select_from("inserted")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(rows.len() as i32)
        .bind(&emails)
        .bind(&aliases)
        .bind(&types)
        .bind(&statuses)
        .bind(&countries)
        .bind(&psps)
        .bind(&phones)
        .bind(&external_ids)
        .bind(&metadata)
        .bind(&identities)
        .bind(&addresses)
        .bind(&partners)
        .bind(&active)
        .bind(&descriptions)
        .bind(&contacts)
        .fetch_all(conn)
        .await
}

/// Clients with their admins, by (client id, admin user id) pair, in one statement (the saga
/// steps read both for a batch: one round trip, not two); a pair whose client or admin is gone
/// is left out. A primary-key probe of each table per pair: as `= ANY($1)`, the generic plan
/// made on a fresh database (the tables never analysed) read both tables whole for every saga
/// step batch until the first ANALYZE.
pub async fn with_admins(
    conn: &mut PgConnection,
    pairs: &[(i32, i32)],
) -> Result<Vec<(Client, AdminUser)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        client: Client,
        admin_user_id: i32,
        admin_client_id: i32,
        admin_username: String,
        admin_email: String,
        admin_phone: String,
        admin_role: String,
        admin_user_status: String,
        admin_ekyc_status: EkycStatus,
    }
    let (client_ids, user_ids): (Vec<i32>, Vec<i32>) = pairs.iter().copied().unzip();
    let sql = format!(
        "SELECT {},
                a.user_id AS admin_user_id, a.client_id AS admin_client_id,
                a.username AS admin_username, a.email AS admin_email, a.phone AS admin_phone,
                a.role AS admin_role, a.user_status AS admin_user_status,
                a.ekyc_status AS admin_ekyc_status
         FROM UNNEST($1::int[], $2::int[]) AS k(cid, uid)
         CROSS JOIN LATERAL (SELECT * FROM clients WHERE client_id = k.cid LIMIT 1) c
         CROSS JOIN LATERAL (SELECT * FROM users WHERE user_id = k.uid LIMIT 1) a
         {}",
        columns::CLIENT_COLUMNS,
        columns::PARTNER_JOINS
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&client_ids)
        .bind(&user_ids)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let admin = AdminUser {
                user_id: r.admin_user_id,
                client_id: r.admin_client_id,
                username: r.admin_username,
                email: r.admin_email,
                phone: r.admin_phone,
                role: r.admin_role,
                user_status: r.admin_user_status,
                ekyc_status: r.admin_ekyc_status,
            };
            (r.client, admin)
        })
        .collect())
}

pub async fn get_client(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<Option<Client>, sqlx::Error> {
    let sql = format!("{} WHERE c.client_id = $1", select_from("clients"));
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(conn)
        .await
}

/// Locks, until the transaction ends, the clients with these ids and the clients of these
/// users, in client-id order (one statement): every batch takes the clients it changes in
/// the same order, so two batches never wait for each other in a circle.
pub async fn lock_in_order(
    conn: &mut PgConnection,
    client_ids: &[i32],
    user_ids: &[i32],
) -> Result<(), sqlx::Error> {
    if client_ids.is_empty() && user_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT c.client_id FROM clients c
         WHERE c.client_id = ANY($1)
            OR c.client_id IN (SELECT u.client_id FROM users u WHERE u.user_id = ANY($2))
         ORDER BY c.client_id
         FOR UPDATE OF c",
    )
    .bind(client_ids)
    .bind(user_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads a client (deleted ones too: the caller decides) and locks its row until the
/// transaction ends: two commands for one client (approve and blacklist, say) run one after
/// the other, each seeing the other's result.
pub async fn lock_client(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<Option<Client>, sqlx::Error> {
    let sql = format!(
        "{} WHERE c.client_id = $1 FOR UPDATE OF c",
        select_from("clients")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(conn)
        .await
}

/// Stores a lifecycle status the caller decided under [`lock_client`].
pub async fn set_status(
    conn: &mut PgConnection,
    client_id: i32,
    status: ClientStatus,
) -> Result<Client, sqlx::Error> {
    let sql = format!(
        "WITH updated AS (
             UPDATE clients SET client_status = $2, updated = now() WHERE client_id = $1 RETURNING *
         ) {}",
        select_from("updated")
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
    ekyc_status: EkycStatus,
) -> Result<(Client, u64), sqlx::Error> {
    let sql = format!(
        "WITH updated AS (
             UPDATE clients SET ekyc_status = $2, updated = now() WHERE client_id = $1 RETURNING *
         ) {}",
        select_from("updated")
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

/// What `client.update` may change, as it stands after the patch.
pub struct ProfileUpdate<'a> {
    pub client_alias: &'a str,
    pub client_type: &'a str,
    pub phone: &'a str,
    pub email: &'a str,
    pub metadata: Option<&'a serde_json::Value>,
    pub identity: Option<&'a serde_json::Value>,
    pub address: Option<&'a serde_json::Value>,
    pub direct_partner_id: Option<i32>,
    pub external_id: Option<&'a str>,
    pub description: Option<&'a str>,
    pub contact: Option<&'a serde_json::Value>,
}

/// Stores a client's profile as the caller decided it under [`lock_client`], one version on.
///
/// In a savepoint: a unique violation (another client took the email or external id since the
/// caller checked) is returned without spoiling the caller's transaction.
pub async fn update_profile(
    conn: &mut PgConnection,
    client_id: i32,
    u: &ProfileUpdate<'_>,
) -> Result<Client, sqlx::Error> {
    let mut savepoint = conn.begin().await?;
    let sql = format!(
        "WITH updated AS (
             UPDATE clients
             SET client_alias = $2, client_type = $3, phone = $4, email = $5, metadata = $6,
                 identity = $7, address = $8, direct_partner_id = $9, external_id = $10,
                 description = $11, contact = $12, version = version + 1, updated = now()
             WHERE client_id = $1
             RETURNING *
         ) {}",
        select_from("updated")
    );
    let updated = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(u.client_alias)
        .bind(u.client_type)
        .bind(u.phone)
        .bind(u.email)
        .bind(u.metadata)
        .bind(u.identity)
        .bind(u.address)
        .bind(u.direct_partner_id)
        .bind(u.external_id)
        .bind(u.description)
        .bind(u.contact)
        .fetch_one(&mut *savepoint)
        .await;
    match updated {
        Ok(client) => {
            savepoint.commit().await?;
            Ok(client)
        }
        Err(e) => {
            savepoint.rollback().await?;
            Err(e)
        }
    }
}

/// Deactivates or reactivates a client, one version on.
pub async fn set_active(
    conn: &mut PgConnection,
    client_id: i32,
    active: bool,
) -> Result<Client, sqlx::Error> {
    let sql = format!(
        "WITH updated AS (
             UPDATE clients SET is_active = $2, version = version + 1, updated = now()
             WHERE client_id = $1 RETURNING *
         ) {}",
        select_from("updated")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(active)
        .fetch_one(conn)
        .await
}

/// Soft-deletes a client (one version on) and makes its users INACTIVE and deleted with it,
/// which frees their emails and the client's external id; returns the client and how many
/// users followed.
pub async fn soft_delete(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<(Client, u64), sqlx::Error> {
    let sql = format!(
        "WITH updated AS (
             UPDATE clients SET deleted_at = now(), version = version + 1, updated = now()
             WHERE client_id = $1 RETURNING *
         ) {}",
        select_from("updated")
    );
    let client: Client = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_one(&mut *conn)
        .await?;
    let users = sqlx::query(
        "UPDATE users SET user_status = 'INACTIVE', deleted_at = now(), updated_at = now()
         WHERE client_id = $1 AND deleted_at IS NULL",
    )
    .bind(client_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((client, users))
}
