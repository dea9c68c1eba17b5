//! The ceiling benchmark's own tables (`onboard-lab bench-ceiling`): the same inserts a
//! `client.create` makes, in a scratch database, with nothing else around them.

use sqlx::PgPool;

/// The four tables, created when missing and emptied before each run, in a scratch database
/// of the ceiling's own (ops::ceiling refuses any other).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ceiling_inbox (message_id TEXT PRIMARY KEY, command_type TEXT NOT NULL,
        correlation_id TEXT NOT NULL, outcome TEXT NOT NULL, received_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS ceiling_clients (client_id SERIAL PRIMARY KEY, email TEXT NOT NULL,
        client_alias TEXT NOT NULL, country_code TEXT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE UNIQUE INDEX IF NOT EXISTS ceiling_clients_email ON ceiling_clients (lower(email))",
    "CREATE TABLE IF NOT EXISTS ceiling_users (user_id SERIAL PRIMARY KEY, client_id INTEGER NOT NULL
        REFERENCES ceiling_clients (client_id), email TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE UNIQUE INDEX IF NOT EXISTS ceiling_users_email ON ceiling_users (lower(email))",
    "CREATE TABLE IF NOT EXISTS ceiling_outbox (id BIGSERIAL PRIMARY KEY, message_id UUID NOT NULL UNIQUE,
        routing_key TEXT NOT NULL, payload JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        published_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS ceiling_counter (name TEXT PRIMARY KEY, last_value INTEGER NOT NULL)",
    "TRUNCATE ceiling_counter, ceiling_outbox, ceiling_users, ceiling_clients, ceiling_inbox",
];

/// The database's name, and the tables in it that are not the ceiling's (`ceiling_*`).
pub async fn tables_not_its_own(pool: &PgPool) -> Result<(String, Vec<String>), sqlx::Error> {
    sqlx::query_as(
        "SELECT current_database(),
                COALESCE(array_agg(c.relname::text ORDER BY c.relname)
                         FILTER (WHERE c.relname IS NOT NULL), '{}')
         FROM (SELECT 1) one
         LEFT JOIN pg_class c
           ON c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relnamespace NOT IN (SELECT oid FROM pg_namespace
                                     WHERE nspname IN ('pg_catalog', 'information_schema')
                                        OR nspname LIKE 'pg\\_%')
          AND c.relname NOT LIKE 'ceiling\\_%'",
    )
    .fetch_one(pool)
    .await
}

/// Creates the ceiling's tables when missing and empties them.
pub async fn create_tables(pool: &PgPool) -> Result<(), sqlx::Error> {
    for statement in SCHEMA {
        sqlx::query(*statement).execute(pool).await?;
    }
    Ok(())
}

/// One message's four inserts (and, as asked, a `pg_notify` and a shared counter's bump) in
/// one transaction.
pub async fn one_transaction(
    pool: &PgPool,
    body: &[u8],
    (notify, counter): (bool, bool),
) -> Result<(), sqlx::Error> {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let email = body["email"].as_str().unwrap_or("?").to_string();
    let message_id = uuid::Uuid::new_v4();
    let mut tx = pool.begin().await?;
    if counter {
        sqlx::query(
            "INSERT INTO ceiling_counter AS c (name, last_value) VALUES ('clients', 1)
             ON CONFLICT (name) DO UPDATE SET last_value = c.last_value + 1",
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO ceiling_inbox (message_id, command_type, correlation_id, outcome)
         VALUES ($1, 'client.create', $1, 'succeeded')",
    )
    .bind(message_id.to_string())
    .execute(&mut *tx)
    .await?;
    let client_id: i32 = sqlx::query_scalar(
        "INSERT INTO ceiling_clients (email, client_alias, country_code) VALUES ($1, $2, 'SG')
         RETURNING client_id",
    )
    .bind(&email)
    .bind(body["client_alias"].as_str().unwrap_or("?"))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO ceiling_users (client_id, email) VALUES ($1, $2)")
        .bind(client_id)
        .bind(&email)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO ceiling_outbox (message_id, routing_key, payload) VALUES ($1, 'client.created', $2)",
    )
    .bind(message_id)
    .bind(&body)
    .execute(&mut *tx)
    .await?;
    if notify {
        sqlx::query("SELECT pg_notify('onboard_ceiling', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The four inserts of a whole batch as four multi-row statements, in one transaction, the
/// inbox first with `ON CONFLICT DO NOTHING RETURNING` as the worker claims it; with
/// `counter`, one bump of the shared counter row for the batch.
pub async fn batch_transaction(
    pool: &PgPool,
    batch: &[lapin::message::Delivery],
    counter: bool,
) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut emails = Vec::with_capacity(batch.len());
    let mut aliases = Vec::with_capacity(batch.len());
    let mut bodies = Vec::with_capacity(batch.len());
    for d in batch {
        let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap_or_default();
        ids.push(uuid::Uuid::new_v4());
        emails.push(body["email"].as_str().unwrap_or("?").to_string());
        aliases.push(body["client_alias"].as_str().unwrap_or("?").to_string());
        bodies.push(body);
    }
    let texts: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut tx = pool.begin().await?;
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO ceiling_inbox (message_id, command_type, correlation_id, outcome)
         SELECT m, 'client.create', m, 'succeeded' FROM UNNEST($1::text[]) AS x(m) ORDER BY m
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(&texts)
    .fetch_all(&mut *tx)
    .await?;
    if counter {
        sqlx::query(
            "INSERT INTO ceiling_counter AS c (name, last_value) VALUES ('clients', $1)
             ON CONFLICT (name) DO UPDATE SET last_value = c.last_value + $1",
        )
        .bind(claimed.len() as i32)
        .execute(&mut *tx)
        .await?;
    }
    let client_ids: Vec<i32> = sqlx::query_scalar(
        "INSERT INTO ceiling_clients (email, client_alias, country_code)
         SELECT e, a, 'SG' FROM UNNEST($1::text[], $2::text[]) AS x(e, a) RETURNING client_id",
    )
    .bind(&emails)
    .bind(&aliases)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ceiling_users (client_id, email) SELECT * FROM UNNEST($1::int[], $2::text[])",
    )
    .bind(&client_ids)
    .bind(&emails)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ceiling_outbox (message_id, routing_key, payload)
         SELECT m, 'client.created', p FROM UNNEST($1::uuid[], $2::jsonb[]) AS x(m, p)",
    )
    .bind(&ids)
    .bind(&bodies)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
