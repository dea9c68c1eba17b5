//! Customers created at Xendit for our clients and admin users.

use std::collections::HashMap;

use sqlx::PgConnection;

/// Whom a Xendit customer stands for.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Client(i32),
    User(i32),
}

/// A customer Xendit holds for us.
pub struct Customer<'a> {
    pub owner: Owner,
    pub xendit_customer_id: &'a str,
    pub reference_id: &'a str,
    pub customer_type: &'a str,
}

/// Records customers in one statement; a second record of the same reference is ignored (a
/// retried step).
pub async fn insert_many(
    conn: &mut PgConnection,
    customers: &[Customer<'_>],
) -> Result<(), sqlx::Error> {
    if customers.is_empty() {
        return Ok(());
    }
    let mut clients = Vec::with_capacity(customers.len());
    let mut users = Vec::with_capacity(customers.len());
    for c in customers {
        let (client, user) = match c.owner {
            Owner::Client(id) => (Some(id), None),
            Owner::User(id) => (None, Some(id)),
        };
        clients.push(client);
        users.push(user);
    }
    let ids: Vec<&str> = customers.iter().map(|c| c.xendit_customer_id).collect();
    let refs: Vec<&str> = customers.iter().map(|c| c.reference_id).collect();
    let types: Vec<&str> = customers.iter().map(|c| c.customer_type).collect();
    sqlx::query(
        "INSERT INTO xendit_customers (client_id, user_id, xendit_customer_id, reference_id, customer_type, status)
         SELECT c, u, x, r, t::customer_type_enum, 'ACTIVE'
         FROM UNNEST($1::int[], $2::int[], $3::text[], $4::text[], $5::text[]) AS v(c, u, x, r, t)
         ON CONFLICT (reference_id) DO NOTHING",
    )
    .bind(&clients)
    .bind(&users)
    .bind(&ids)
    .bind(&refs)
    .bind(&types)
    .execute(conn)
    .await?;
    Ok(())
}

/// The Xendit ids already recorded for these references.
pub async fn find_many(
    conn: &mut PgConnection,
    reference_ids: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT reference_id, xendit_customer_id FROM xendit_customers WHERE reference_id = ANY($1::text[])",
    )
    .bind(reference_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}
