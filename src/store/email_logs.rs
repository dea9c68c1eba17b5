//! `client_email_logs`: one row per welcome-email attempt, SENT or FAILED.

use sqlx::PgConnection;

pub struct EmailLog<'a> {
    pub client_id: i32,
    pub email: &'a str,
    pub subject: &'a str,
    /// SENT | FAILED
    pub status: &'a str,
    pub attempt: i32,
    /// Why it failed (never the message, never a secret).
    pub error: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, log: &EmailLog<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO client_email_logs (client_id, email, subject, status, attempt, error)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(log.client_id)
    .bind(log.email)
    .bind(log.subject)
    .bind(log.status)
    .bind(log.attempt)
    .bind(log.error)
    .execute(conn)
    .await?;
    Ok(())
}
