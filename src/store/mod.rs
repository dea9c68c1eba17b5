//! All SQL lives here (and in `migrations/`). Handlers call these functions inside the
//! transaction the pipeline gives them.

pub mod clients;
pub mod dlq;
pub mod email_logs;
pub mod history;
pub mod inbox;
pub mod instances;
pub mod outbox;
pub mod sagas;
mod text_enum;
pub mod workers;
pub mod xendit_customers;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::configuration::DatabaseSettings;

pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The embedded migrations (`migrations/`), run by `onboard migrate` and at worker start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool that connects lazily: the worker can start (and report not-ready) while the
/// database is still coming up.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options.application_name("onboard")))
}

pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database answers a trivial query (for `/readyz`).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// A read-only transaction on one snapshot, for queries: a page and its total agree.
pub async fn read_only(pool: &PgPool) -> Result<Tx, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
