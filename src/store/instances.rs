//! Instances and the actors who manage them.

use sqlx::PgConnection;

use crate::domain::instance::{Actor, Instance, InstanceListItem};

const INSTANCE_COLUMNS: &str = "instance_id, client_id, instance_name, client_alias, instance_status, \
     created_at, updated_at";

/// The user a command names, with the client they belong to; `None` when there is no such
/// user, or the user or the client was deleted.
pub async fn actor(conn: &mut PgConnection, user_id: i32) -> Result<Option<Actor>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, u.client_id, u.role, c.is_active AS client_active, c.client_status
         FROM users u JOIN clients c ON c.client_id = u.client_id
         WHERE u.user_id = $1 AND u.deleted_at IS NULL AND c.deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Inserts an ACTIVE instance; `None` when the client already has one with that name (the
/// unique index decides, waiting for a concurrent insert of the same name to end first).
pub async fn insert(
    conn: &mut PgConnection,
    client_id: i32,
    instance_name: &str,
) -> Result<Option<Instance>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO instances (client_id, instance_name, instance_status)
         VALUES ($1, $2, 'ACTIVE')
         ON CONFLICT (client_id, instance_name) DO NOTHING
         RETURNING {INSTANCE_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(instance_name)
        .fetch_optional(conn)
        .await
}

/// Reads and locks an instance, so a rename and a delete of it cannot interleave.
pub async fn lock(
    conn: &mut PgConnection,
    instance_id: i32,
) -> Result<Option<Instance>, sqlx::Error> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = $1 FOR UPDATE");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(instance_id)
        .fetch_optional(conn)
        .await
}

pub async fn update_alias(
    conn: &mut PgConnection,
    instance_id: i32,
    alias: &str,
) -> Result<Instance, sqlx::Error> {
    set(conn, instance_id, "client_alias", alias).await
}

/// Sets an instance's status (ACTIVE or INACTIVE).
pub async fn set_status(
    conn: &mut PgConnection,
    instance_id: i32,
    status: &str,
) -> Result<Instance, sqlx::Error> {
    set(conn, instance_id, "instance_status", status).await
}

/// One column of an instance changed, `updated_at` with it.
async fn set(
    conn: &mut PgConnection,
    instance_id: i32,
    column: &'static str,
    value: &str,
) -> Result<Instance, sqlx::Error> {
    let sql = format!(
        "UPDATE instances SET {column} = $2, updated_at = now() WHERE instance_id = $1
         RETURNING {INSTANCE_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(instance_id)
        .bind(value)
        .fetch_one(conn)
        .await
}

/// Deletes for good (seed: "cannot be undone").
pub async fn delete(conn: &mut PgConnection, instance_id: i32) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A client's instances with its code, country and eKYC status joined in, oldest first.
pub async fn list_for_client(
    conn: &mut PgConnection,
    client_id: i32,
) -> Result<Vec<InstanceListItem>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.instance_id, i.client_id, i.instance_name, i.client_alias, i.instance_status,
                c.ekyc_status, c.client_code, c.country_code
         FROM instances i JOIN clients c ON c.client_id = i.client_id
         WHERE i.client_id = $1
         ORDER BY i.instance_id",
    )
    .bind(client_id)
    .fetch_all(conn)
    .await
}
