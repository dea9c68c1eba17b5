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

/// Whether a database error is worth trying again: the database was unreachable, busy, or
/// chose us as a deadlock victim. Anything else is still retried through the delay queues
/// (a bug may be fixed by a deploy), but is not worth an immediate in-process retry.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                // serialization_failure, deadlock_detected, the connection and
                // insufficient-resources classes, admin/crash shutdown, cannot_connect_now
                Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "53400")
            ) || db.code().is_some_and(|c| c.starts_with("08"))
        }
        _ => false,
    }
}
