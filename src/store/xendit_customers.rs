//! Customers created at Xendit for our clients and admin users.

use sqlx::PgConnection;

/// Whom a Xendit customer stands for.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Client(i32),
    User(i32),
}

/// Records a customer; a second record of the same reference is ignored (a retried step).
pub async fn insert(
    conn: &mut PgConnection,
    owner: Owner,
    xendit_customer_id: &str,
    reference_id: &str,
    customer_type: &str,
) -> Result<(), sqlx::Error> {
    let (client_id, user_id) = match owner {
        Owner::Client(id) => (Some(id), None),
        Owner::User(id) => (None, Some(id)),
    };
    sqlx::query(
        "INSERT INTO xendit_customers (client_id, user_id, xendit_customer_id, reference_id, customer_type, status)
         VALUES ($1, $2, $3, $4, $5::customer_type_enum, 'ACTIVE')
         ON CONFLICT (reference_id) DO NOTHING",
    )
    .bind(client_id)
    .bind(user_id)
    .bind(xendit_customer_id)
    .bind(reference_id)
    .bind(customer_type)
    .execute(conn)
    .await?;
    Ok(())
}

/// The Xendit id already recorded for a reference, if any.
pub async fn find(
    conn: &mut PgConnection,
    reference_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT xendit_customer_id FROM xendit_customers WHERE reference_id = $1")
        .bind(reference_id)
        .fetch_optional(conn)
        .await
}
