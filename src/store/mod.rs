//! All SQL lives here (and in `migrations/`). Handlers call these functions inside the
//! transaction the pipeline gives them.

pub mod audit;
pub mod ceiling;
pub mod clients;
pub mod console;
pub mod dlq;
pub mod email_logs;
pub mod history;
pub mod inbox;
pub mod instances;
pub mod outbox;
pub mod partners;
pub mod relations;
pub mod sagas;
mod text_enum;
pub mod timeline;
pub mod uow;
pub mod webhooks;
pub mod workers;
pub mod xendit_customers;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::configuration::DatabaseSettings;

pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The advisory lock that lets one process at a time migrate (a constant of our own).
const MIGRATION_LOCK: i64 = 0x6f6e_626f_6172_6401;

/// A pool that connects lazily: the worker can start (and report not-ready) while the
/// database is still coming up.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    pool_of(settings, settings.max_connections)
}

/// [`pool`], `size` connections at most.
///
/// Its connections run without PostgreSQL's JIT compiler (`jit = off`, a startup option: no
/// round trip). Every statement here touches a handful of rows per command, which JIT does
/// not speed up, but the cost model can still call for it: a bloated queue table
/// (`outbox_pending` between two vacuums) priced a backlog's outbox insert of 512 rows above
/// `jit_optimize_above_cost`, so each such statement paid for compiling 31 functions with
/// inlining and optimisation on top of its work (issue 24, one to two and a half seconds
/// each under a steady load; `docs/benchmark.md`).
pub fn pool_of(settings: &DatabaseSettings, size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(
            options
                .application_name("onboard")
                .options([("jit", "off")]),
        ))
}

/// Applies the embedded migrations (`migrations/`): `onboard migrate`, and every worker at start.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrate_to(pool, None).await
}

/// Applies the migrations up to `target` (all when `None`). Several workers may start at
/// once: one migrates and the others wait for it, polling a lock rather than waiting in a
/// statement. (A statement waiting for sqlx's own lock keeps a snapshot open, and the
/// migrating worker's `CREATE INDEX CONCURRENTLY` waits for every such snapshot to end: the
/// two would wait for each other.)
pub async fn migrate_to(
    pool: &PgPool,
    target: Option<i64>,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_locking(false);
    let mut conn = pool.acquire().await?;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if taken {
            break;
        }
        tracing::info!("another process is migrating the database; waiting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let result = migrator.run_direct(target, &mut *conn, false).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result
}

/// Whether the database answers a trivial query (for `/readyz`).
/// The deployment's secret key (migration 0015's `header_key`; see `key.rs`).
pub async fn deployment_key(pool: &PgPool) -> Result<crate::key::DeploymentKey, sqlx::Error> {
    let bytes: Vec<u8> = sqlx::query_scalar("SELECT key FROM header_key WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(crate::key::DeploymentKey::new(bytes))
}

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

/// What PostgreSQL knows of transaction `xid` (from `txid_current()`): `Some(true)` committed,
/// `Some(false)` aborted, `None` still in progress or too old to say. For a COMMIT whose answer
/// was lost with the connection: it may have committed all the same.
pub async fn txid_committed(pool: &PgPool, xid: i64) -> Result<Option<bool>, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar("SELECT txid_status($1)")
        .bind(xid)
        .fetch_one(pool)
        .await?;
    Ok(match status.as_deref() {
        Some("committed") => Some(true),
        Some("aborted") => Some(false),
        _ => None,
    })
}
