//! What happened to a client, one row per command that changed it: lifecycle moves and
//! eKYC outcomes. Written in the transaction of the change itself.

use serde_json::Value;
use sqlx::PgConnection;

use crate::messages::CommandMeta;

/// A lifecycle move, as recorded.
pub struct StatusChange<'a> {
    pub client_id: i32,
    pub from: &'a str,
    pub to: &'a str,
    pub reason: Option<&'a str>,
    /// Anything else the command carried (e.g. `transaction_id`).
    pub details: Value,
}

pub async fn record_status(
    conn: &mut PgConnection,
    meta: &CommandMeta,
    change: &StatusChange<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO client_status_history
           (client_id, from_status, to_status, action, reason, details, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(change.client_id)
    .bind(change.from)
    .bind(change.to)
    .bind(meta.command_type.as_str())
    .bind(change.reason)
    .bind(&change.details)
    .bind(&meta.message_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn record_ekyc(
    conn: &mut PgConnection,
    meta: &CommandMeta,
    client_id: i32,
    from: &str,
    to: &str,
    admin_users: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO client_ekyc_history (client_id, from_status, to_status, admin_users, message_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(client_id)
    .bind(from)
    .bind(to)
    .bind(i32::try_from(admin_users).unwrap_or(i32::MAX))
    .bind(&meta.message_id)
    .execute(conn)
    .await?;
    Ok(())
}
