//! The inbox: one row per command `message_id`, claimed first in the transaction that carries
//! the command's effects, so "already processed" and "effects committed" are one fact, and a
//! duplicate stops before it takes any lock or makes any effect.
//!
//! Each row keeps a hash of the command (its type and canonical body): a repeat with the same
//! hash is a duplicate; a repeat with another hash reuses the key for a different command.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres};

/// How a command ended, as the inbox records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOutcome {
    /// Its effects were committed.
    Succeeded,
    /// A business refusal (contract code in `outcome_code`).
    Refused,
    /// Malformed: dead-lettered with a `command.rejected` event.
    Rejected,
}

impl InboxOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxOutcome::Succeeded => "succeeded",
            InboxOutcome::Refused => "refused",
            InboxOutcome::Rejected => "rejected",
        }
    }
}

/// The hash the inbox keeps of a message, what repeats of a message id are compared by: its
/// type (or routing key) and its body's bytes. A command's body is hashed in canonical form
/// (keys sorted, no spaces; see the worker's batch), so re-serialising the same JSON does not
/// make it another command; a rejected message's body as it arrived.
pub fn body_hash(command_type: &str, body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(command_type.as_bytes())
        .chain_update([0x1f])
        .chain_update(body)
        .finalize()
        .into()
}

/// The outcome and outcome code the inbox has for each of `ids` that it has.
pub async fn outcomes(
    pool: &PgPool,
    ids: &[String],
) -> Result<HashMap<String, (String, Option<String>)>, sqlx::Error> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(5_000) {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT message_id, outcome, outcome_code FROM inbox WHERE message_id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        for (id, outcome, code) in rows {
            found.insert(id, (outcome, code));
        }
    }
    Ok(found)
}

/// One command to claim.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub message_id: &'a str,
    pub command_type: &'a str,
    pub correlation_id: &'a str,
    pub body_sha256: &'a [u8],
}

/// Claims every message id of a batch in one statement, recorded as succeeded (the common
/// case; refusals are corrected by [`set_outcomes`] before commit). Returns the ids claimed
/// now. The others were there already: committed by an earlier copy, or claimed by a
/// concurrent transaction that has committed by the time this returns (the insert waits for
/// it). Ids are claimed in sorted order, so two batches never wait on each other in a cycle.
/// With the ids, the transaction's id when it claimed any (read with the claim rather than
/// in a round trip of its own before COMMIT, where the batch may hold the month's code
/// counter).
pub async fn claim(
    conn: &mut PgConnection,
    claims: &[Claim<'_>],
) -> Result<(HashSet<String>, Option<i64>), sqlx::Error> {
    let mut sorted: Vec<&Claim> = claims.iter().collect();
    sorted.sort_by_key(|c| c.message_id);
    let ids: Vec<&str> = sorted.iter().map(|c| c.message_id).collect();
    let types: Vec<&str> = sorted.iter().map(|c| c.command_type).collect();
    let correlations: Vec<&str> = sorted.iter().map(|c| c.correlation_id).collect();
    let hashes: Vec<&[u8]> = sorted.iter().map(|c| c.body_sha256).collect();
    let claimed: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO inbox (message_id, command_type, correlation_id, outcome, body_sha256)
         SELECT m, t, c, 'succeeded', h
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[]) AS x(m, t, c, h)
         ORDER BY m
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id, txid_current()",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&correlations)
    .bind(&hashes)
    .fetch_all(conn)
    .await?;
    let txid = claimed.first().map(|(_, txid)| *txid);
    Ok((claimed.into_iter().map(|(id, _)| id).collect(), txid))
}

/// The stored hash of each of `message_ids` that is in the inbox (`None` for rows older
/// than hashing).
pub async fn hashes(
    conn: &mut PgConnection,
    message_ids: &[&str],
) -> Result<HashMap<String, Option<Vec<u8>>>, sqlx::Error> {
    let rows: Vec<(String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT message_id, body_sha256 FROM inbox WHERE message_id = ANY($1::text[])",
    )
    .bind(message_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Records the outcome of claimed commands that did not simply succeed.
pub async fn set_outcomes(
    conn: &mut PgConnection,
    outcomes: &[(&str, InboxOutcome, Option<&str>)],
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = outcomes.iter().map(|o| o.0).collect();
    let kinds: Vec<&str> = outcomes.iter().map(|o| o.1.as_str()).collect();
    let codes: Vec<Option<&str>> = outcomes.iter().map(|o| o.2).collect();
    sqlx::query(
        "UPDATE inbox SET outcome = x.o, outcome_code = x.c
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS x(m, o, c)
         WHERE inbox.message_id = x.m",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&codes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives claims back: the commands made no effect and will come again (a delayed retry, or a
/// dead letter an operator may replay once the cause is fixed).
pub async fn release(conn: &mut PgConnection, message_ids: &[&str]) -> Result<(), sqlx::Error> {
    if message_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM inbox WHERE message_id = ANY($1::text[])")
        .bind(message_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a message rejected before parsing finished; `false` when its message_id was
/// already there.
pub async fn record_rejected(
    conn: &mut PgConnection,
    message_id: &str,
    routing_key: &str,
    correlation_id: &str,
    body_sha256: &[u8],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (message_id, command_type, correlation_id, outcome, outcome_code, body_sha256)
         VALUES ($1, $2, $3, 'rejected', 'COMMAND_REJECTED', $4)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(routing_key)
    .bind(correlation_id)
    .bind(body_sha256)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn contains<'e, E>(executor: E, message_id: &str) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inbox WHERE message_id = $1)")
        .bind(message_id)
        .fetch_one(executor)
        .await
}

/// The outcome recorded for a message id, if any (operators and tests).
pub async fn outcome(pool: &PgPool, message_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT outcome FROM inbox WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(pool)
        .await
}

/// Deletes up to `limit` rows older than `retention`; returns how many. In slices, so a big
/// backlog never holds a long lock.
pub async fn prune(pool: &PgPool, retention: Duration, limit: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM inbox WHERE message_id IN (
             SELECT message_id FROM inbox
             WHERE received_at < now() - make_interval(secs => $1)
             LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Commands received per minute and outcome since `since` (the console's chart), through the
/// `inbox_received` index.
pub async fn per_minute(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT date_trunc('minute', received_at), outcome, count(*)
         FROM inbox WHERE received_at >= $1 GROUP BY 1, 2",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}
