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

/// Records attempts, in one statement.
pub async fn insert_many(
    conn: &mut PgConnection,
    logs: &[EmailLog<'_>],
) -> Result<(), sqlx::Error> {
    if logs.is_empty() {
        return Ok(());
    }
    let clients: Vec<i32> = logs.iter().map(|l| l.client_id).collect();
    let emails: Vec<&str> = logs.iter().map(|l| l.email).collect();
    let subjects: Vec<&str> = logs.iter().map(|l| l.subject).collect();
    let statuses: Vec<&str> = logs.iter().map(|l| l.status).collect();
    let attempts: Vec<i32> = logs.iter().map(|l| l.attempt).collect();
    let errors: Vec<Option<&str>> = logs.iter().map(|l| l.error).collect();
    sqlx::query(
        "INSERT INTO client_email_logs (client_id, email, subject, status, attempt, error)
         SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[])",
    )
    .bind(&clients)
    .bind(&emails)
    .bind(&subjects)
    .bind(&statuses)
    .bind(&attempts)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}
