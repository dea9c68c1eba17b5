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
