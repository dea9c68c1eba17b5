//! The workers alive now (`workers`): each one upserts its row every heartbeat. The sweepers
//! of the others take over the sagas leased by a worker whose row went stale.

use sqlx::PgPool;
use uuid::Uuid;

/// Says this worker is alive (and registers it on the first call).
pub async fn heartbeat(pool: &PgPool, worker_id: Uuid, host: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workers (worker_id, host, pid) VALUES ($1, $2, $3)
         ON CONFLICT (worker_id) DO UPDATE SET seen_at = now()",
    )
    .bind(worker_id)
    .bind(host)
    .bind(std::process::id() as i32)
    .execute(pool)
    .await?;
    Ok(())
}

/// Workers not seen for `stale_seconds`: presumed dead.
pub async fn stale(pool: &PgPool, stale_seconds: f64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT worker_id FROM workers WHERE seen_at < now() - make_interval(secs => $1)",
    )
    .bind(stale_seconds)
    .fetch_all(pool)
    .await
}

/// Forgets workers (after their leases were given back).
pub async fn forget(pool: &PgPool, worker_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM workers WHERE worker_id = ANY($1)")
        .bind(worker_ids)
        .execute(pool)
        .await?;
    Ok(())
}
