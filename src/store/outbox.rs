//! The outbox: rows written by handlers and saga steps, each published by one publisher: the
//! worker that wrote it (its claim is made with the insert) or, once that claim ran out or was
//! given back, a relay (its claim is its row locks).
//!
//! `outbox` holds the messages and is only ever appended to (and pruned); what is still to be
//! published is `outbox_pending`, a narrow row per message written by the same statement and
//! deleted once the broker confirmed it (migration 0029): publishing rewrites no message.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, PgConnection, PgPool, Postgres, Type};
use uuid::Uuid;

use crate::messages::{OutgoingKind, OutgoingMessage, Payload};

/// A claimed, not yet published row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    /// Its payload is text (as it goes on the wire: serialised once, for the insert and the
    /// publish alike).
    pub message: OutgoingMessage,
    pub created_at: DateTime<Utc>,
    /// An earlier row of its correlation was still unpublished when it was written: it was
    /// written unclaimed, and a relay publishes it after that one (subscribers get a
    /// correlation's events in order).
    pub waits: bool,
    /// Until when the writer's claim lasts, by this process's clock (measured from before the
    /// insert, so it ends no later than the database's): `None` for rows a relay claimed.
    pub claimed_until: Option<Instant>,
}

/// Who claims the rows [`insert`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriterClaim {
    /// The worker that will publish them right after its commit.
    pub worker_id: Uuid,
    /// How long the claim lasts from the insert (`outbox.dispatch_grace_ms`).
    pub seconds: f64,
}

/// Queues messages for publishing; returns the rows written. A message whose id is already
/// there is skipped (and not returned): the same cause re-run writes the same ids, so nothing
/// is announced twice. With `claim`, each row that does not wait for an earlier one of its
/// correlation is claimed by the writer from now (the insert's own clock, not the
/// transaction's start) for the claim's length; without, every row is the relays'.
pub async fn insert(
    conn: &mut PgConnection,
    mut messages: Vec<OutgoingMessage>,
    claim: Option<WriterClaim>,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let claimed_until = claim.map(|c| Instant::now() + Duration::from_secs_f64(c.seconds));
    let mut ids = Vec::with_capacity(messages.len());
    let mut kinds = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut types = Vec::with_capacity(messages.len());
    let mut correlations = Vec::with_capacity(messages.len());
    let mut headers = Vec::with_capacity(messages.len());
    // Each payload serialised once (or made as text already): the same text is bound here (as
    // `json`, the column's type since migration 0031, so PostgreSQL checks it and keeps it as
    // it is), kept in the row, and published after commit (issue 24: serialising each payload
    // twice and copying each message into its row was a sixth of the worker's CPU under the
    // benchmark).
    for m in &mut messages {
        m.payload.to_text_form();
    }
    let bodies: Vec<_> = messages.iter().map(|m| m.payload.text()).collect();
    let payloads: Vec<JsonText> = bodies.iter().map(|b| JsonText(b)).collect();
    for m in &messages {
        ids.push(m.message_id);
        kinds.push(m.kind.as_str());
        keys.push(m.routing_key.as_str());
        types.push(m.message_type.as_str());
        correlations.push(m.correlation_id.as_deref());
        headers.push(sqlx::types::Json(&m.headers));
    }
    // One statement for the whole set: fewer round trips on the hot path. It writes each
    // outbox row and its pending row together (no outbox row is ever written without one).
    // Whether a row must wait for an earlier one of its correlation is answered inside the
    // same statement: `earlier` sees `outbox_pending` as it was before the insert. It is one
    // lookup for the whole set, not one per row: `outbox_pending` is a queue table, near empty
    // after a vacuum and thousands of pages of dead rows before the next, and a plan made at
    // the first (its generic plan is kept for the connection's life) scanned it whole for
    // every row at the second (issue 24: a backlog's insert of 512 rows took over a second).
    // At worst `earlier` reads the table once.
    let written: Vec<(i64, Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
        "WITH written AS (
             INSERT INTO outbox (message_id, kind, routing_key, message_type, correlation_id,
                                 headers, payload)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::jsonb[], $7::json[])
             ON CONFLICT (message_id) DO NOTHING
             RETURNING id, message_id, correlation_id, created_at
         ), earlier AS (
             SELECT DISTINCT e.correlation_id FROM outbox_pending e
             WHERE e.correlation_id = ANY($5::text[])
         ), pending AS (
             INSERT INTO outbox_pending (id, correlation_id, claimed_by, claimed_until)
             SELECT w.id, w.correlation_id,
                    CASE WHEN $8::uuid IS NOT NULL AND x.correlation_id IS NULL THEN $8::uuid END,
                    CASE WHEN $8::uuid IS NOT NULL AND x.correlation_id IS NULL
                         THEN clock_timestamp() + make_interval(secs => $9) END
             FROM written w
             LEFT JOIN earlier x ON x.correlation_id = w.correlation_id
             RETURNING id, claimed_by IS NULL AS unclaimed
         )
         SELECT w.id, w.message_id, w.created_at, p.unclaimed
         FROM written w JOIN pending p USING (id)",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&keys)
    .bind(&types)
    .bind(&correlations)
    .bind(&headers)
    .bind(&payloads)
    .bind(claim.map(|c| c.worker_id))
    .bind(claim.map_or(0.0, |c| c.seconds))
    .fetch_all(conn)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, (i64, DateTime<Utc>, bool)> = written
        .into_iter()
        .map(|(id, message_id, at, waits)| (message_id, (id, at, waits)))
        .collect();
    // In the order they were said, so they are published in that order.
    Ok(messages
        .into_iter()
        .filter_map(|m| {
            by_id
                .remove(&m.message_id)
                .map(|(id, created_at, waits)| OutboxRow {
                    id,
                    message: m,
                    created_at,
                    waits,
                    claimed_until: if waits { None } else { claimed_until },
                })
        })
        .collect())
}

/// JSON text already serialised, bound as `json` (in the binary protocol a `json` value is its
/// text): sqlx binds its JSON types as `jsonb`, which a `json` column would convert back.
struct JsonText<'a>(&'a str);

impl Type<Postgres> for JsonText<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(114)) // json
    }
}

impl PgHasArrayType for JsonText<'_> {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(199)) // json[]
    }
}

impl Encode<'_, Postgres> for JsonText<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: i64,
    message_id: Uuid,
    kind: String,
    routing_key: String,
    message_type: String,
    correlation_id: Option<String>,
    headers: Value,
    /// The payload's text as it was written (the column is `json`), published as it is.
    body: String,
    created_at: DateTime<Utc>,
}

/// Claims, for the transaction of `conn` (its row locks are the claim), up to `limit`
/// unpublished rows that nobody else may be publishing: no writer's claim, or one that ran
/// out (its worker died, or could not publish and gave it back), in `id` order. `id` is drawn
/// by the insert, the last statement of its transaction before COMMIT, so it follows the
/// order of commits, not of transaction starts. Rows another relay holds are skipped, not
/// waited for, so several workers relay side by side without double publishing.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT o.id, o.message_id, o.kind, o.routing_key, o.message_type, o.correlation_id,
                o.headers, o.payload::text AS body, o.created_at
         FROM outbox_pending p
         JOIN outbox o ON o.id = p.id
         WHERE (p.claimed_until IS NULL OR p.claimed_until < clock_timestamp())
           -- A row waits for the earlier rows of its correlation: subscribers get one
           -- correlation's events in the order they were decided.
           AND NOT EXISTS (SELECT 1 FROM outbox_pending e
                           WHERE e.correlation_id = p.correlation_id AND e.id < p.id)
         ORDER BY p.id
         LIMIT $1
         FOR UPDATE OF p SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxRow {
            id: r.id,
            message: OutgoingMessage {
                message_id: r.message_id,
                kind: OutgoingKind::parse(&r.kind).unwrap_or(OutgoingKind::Event),
                routing_key: r.routing_key,
                message_type: r.message_type,
                correlation_id: r.correlation_id,
                headers: match r.headers {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                payload: Payload::from_json_column(r.body),
            },
            created_at: r.created_at,
            waits: false,
            claimed_until: None,
        })
        .collect())
}

/// A relay's round: rows claimed by a transaction that holds them (no other relay takes them)
/// until [`Round::finish`] marks the published ones and commits.
pub struct Round {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    pub rows: Vec<OutboxRow>,
}

/// Claims up to `limit` rows for a relay round (see [`claim`]).
pub async fn claim_round(pool: &PgPool, limit: i64) -> Result<Round, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = claim(&mut tx, limit).await?;
    Ok(Round { tx, rows })
}

impl Round {
    /// Marks `published` (rows of this round) published and ends the round.
    pub async fn finish(mut self, published: &[i64]) -> Result<(), sqlx::Error> {
        mark_published(&mut self.tx, published).await?;
        self.tx.commit().await
    }
}

/// Marks rows published: their pending rows go (the outbox row itself is not written again).
///
/// Planned on every run (an unnamed statement, about 0.03 ms of planning) rather than
/// prepared once: `outbox_pending` is a queue table, and the generic plan PostgreSQL settles
/// on after five runs, made while a vacuum had left it empty, read the whole table (or a whole
/// index) for every batch once it filled again (issue 24: 0.3 to 1.4 s per mark under a
/// steady load; 20,000 rows read to delete 10 in the test). Planned for the table as it is,
/// the mark probes the primary key.
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox_pending WHERE id = ANY($1)")
        .bind(ids)
        .persistent(false)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a failed publish on rows that stay pending (operators see `last_error`), and gives
/// back any writer's claim on them: a relay takes them at its next round.
pub async fn mark_failed(pool: &PgPool, ids: &[i64], error: &str) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox_pending SET attempts = attempts + 1, last_error = $2,
                                   claimed_until = NULL, claimed_by = NULL
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives back `worker_id`'s claims on rows it did not publish (a worker stopping): a relay
/// takes them at its next round.
pub async fn release_claims(pool: &PgPool, worker_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE outbox_pending SET claimed_until = NULL, claimed_by = NULL WHERE claimed_by = $1",
    )
    .bind(worker_id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes published rows written more than `retention` ago; returns how many. (Found by the
/// BRIN index on `created_at`; a row still pending is kept, however old.)
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let secs = retention.as_secs_f64();
    Ok(sqlx::query(
        "DELETE FROM outbox o WHERE o.created_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)",
    )
    .bind(secs)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Pending rows and the age of the oldest one, in seconds (metrics, readiness, drain).
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(o.created_at))::float8, 0)
         FROM outbox_pending p JOIN outbox o ON o.id = p.id",
    )
    .fetch_one(pool)
    .await
}
