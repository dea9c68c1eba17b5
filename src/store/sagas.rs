//! Create-client saga rows: where each onboarding stands and who is running it.
//!
//! A saga is leased by the worker running it (`lease_owner`, `lease_until`); while leased its
//! `due_at` is the lease's end, while it waits for a retry `due_at` is that retry's time. A
//! sweeper takes what is due (`FOR UPDATE SKIP LOCKED`): waiting sagas whose time came, and
//! sagas whose owner's lease ran out.
//!
//! `lease_epoch` is the lease's fencing token: every change of holder (a start leased to a
//! worker, a claim, a lease given back, postponed or taken from a dead worker) bumps it, and
//! every write of a running step names the [`Lease`] (id and epoch) it holds. A copy of a
//! step whose lease ran out and was claimed again, by another worker or by its own, changes
//! nothing: its statements match no row.
//!
//! The welcome email's send is claimed here before the email goes out
//! ([`claim_sends`]): `send_claim_epoch` names the lease that sends it. A second holder that
//! finds a live claim (renewed within a lease's length, by an owner not found dead) does not
//! send; the claim's holder records the outcome ([`Fence::SendClaim`]) even if its lease moved
//! on meanwhile.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::saga::{SagaStatus, Step};

const SAGA_COLUMNS: &str = "saga_id, client_id, admin_user_id, message_id, correlation_id, reply_to, \
     traceparent, step, status, attempts, last_error, data, lease_epoch";

/// A saga row as the steps read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Saga {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub admin_user_id: i32,
    /// The client.create that started it, and where its answer goes.
    pub message_id: String,
    pub correlation_id: String,
    pub reply_to: Option<String>,
    pub traceparent: Option<String>,
    pub step: Step,
    pub status: SagaStatus,
    /// Failed attempts of the current step.
    pub attempts: i32,
    pub last_error: Option<String>,
    /// What the steps learnt (PSP, Xendit integration, email outcome).
    pub data: Value,
    /// The fencing token of the lease the reader holds (after a claim).
    pub lease_epoch: i64,
}

/// A saga a worker holds: which one, and the epoch its lease was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub saga_id: Uuid,
    pub epoch: i64,
}

fn columns(leases: &[Lease]) -> (Vec<Uuid>, Vec<i64>) {
    leases.iter().map(|l| (l.saga_id, l.epoch)).unzip()
}

/// A saga to start.
#[derive(Debug, Clone)]
pub struct NewSaga<'a> {
    pub saga_id: Uuid,
    /// Its client; its admin is the one inserted with it (`insert_admins_with_sagas`).
    pub client_id: i32,
    pub message_id: &'a str,
    pub correlation_id: &'a str,
    pub reply_to: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub first_step: Step,
    pub data: Value,
    /// Leased to the worker that persists it (epoch 1), which has a slot to run its first
    /// step at once; otherwise due now, for a sweeper with room.
    pub leased: bool,
}

/// The epoch of a saga started leased ([`NewSaga::leased`]).
pub const FIRST_EPOCH: i64 = 1;

/// Leases up to `limit` sagas due at `step` to `owner`, oldest due first, each under a new
/// epoch; sagas another sweeper is taking at the same moment are skipped, not waited for.
/// The lease counts from when the rows are taken (`clock_timestamp()`), not from the
/// statement's start, so a claim that waited does not hand out a lease already running out.
pub async fn claim_due(
    pool: &PgPool,
    owner: Uuid,
    step: Step,
    lease_seconds: f64,
    limit: i64,
) -> Result<Vec<Saga>, sqlx::Error> {
    let sql = format!(
        "UPDATE onboarding_sagas s
         SET lease_owner = $1, lease_until = clock_timestamp() + make_interval(secs => $2),
             due_at = clock_timestamp() + make_interval(secs => $2),
             lease_epoch = s.lease_epoch + 1,
             updated_at = now()
         FROM (SELECT saga_id FROM onboarding_sagas
               WHERE status <> 'completed' AND due_at <= now() AND step = $4
               ORDER BY due_at LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE s.saga_id = due.saga_id
         RETURNING {}",
        prefixed("s.")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(lease_seconds)
        .bind(limit)
        .bind(step)
        .fetch_all(pool)
        .await
}

fn prefixed(prefix: &str) -> String {
    SAGA_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `leases` still held at `step`, locked in saga-id order (every multi-row
/// statement here locks in that order, so two of them never wait for each other in a
/// circle), as the CTE `held(saga_id, ep)` of the statement that follows.
const HELD: &str = "held AS (
         SELECT s.saga_id, x.ep FROM onboarding_sagas s
         JOIN UNNEST($1::uuid[], $2::int8[]) AS x(id, ep) ON s.saga_id = x.id
         WHERE s.lease_epoch = x.ep AND s.step = $3
         ORDER BY s.saga_id
         FOR UPDATE OF s)";

/// Extends the leases still held at `step` (and the send claims made under them); returns
/// the sagas still held.
pub async fn renew(
    conn: &mut PgConnection,
    leases: &[Lease],
    step: Step,
    lease_seconds: f64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, epochs) = columns(leases);
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH {HELD}
         UPDATE onboarding_sagas s
         SET lease_until = clock_timestamp() + make_interval(secs => $4),
             due_at = clock_timestamp() + make_interval(secs => $4),
             send_claimed_at = CASE WHEN s.send_claim_epoch = s.lease_epoch
                                    THEN now() ELSE s.send_claimed_at END
         FROM held WHERE s.saga_id = held.saga_id
         RETURNING s.saga_id"
    )))
    .bind(&ids)
    .bind(&epochs)
    .bind(step)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await
}

/// What [`claim_sends`] found.
#[derive(Debug, Default)]
pub struct SendClaims {
    /// Claimed now (or already, under this lease): send.
    pub claimed: Vec<Uuid>,
    /// Another holder's send may still be under way: not sent now; the lease is given back
    /// and the saga is due when that claim runs out.
    pub busy: Vec<Uuid>,
}

/// Claims the welcome-email sends of `leases` (at `welcome_email`, still held), renewing their
/// leases. A live claim of another lease (renewed within two lease lengths: its holder renews
/// it every third of one while it sends) is not taken over. Sagas neither claimed nor busy
/// are no longer held.
pub async fn claim_sends(
    conn: &mut PgConnection,
    leases: &[Lease],
    lease_seconds: f64,
) -> Result<SendClaims, sqlx::Error> {
    if leases.is_empty() {
        return Ok(SendClaims::default());
    }
    let (ids, epochs) = columns(leases);
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {HELD},
         judged AS (
             SELECT s.saga_id, held.ep,
                    (s.send_claim_epoch IS NULL OR s.send_claim_epoch = held.ep
                     OR s.send_claimed_at < now() - make_interval(secs => 2 * $4)) AS free,
                    s.send_claimed_at
             FROM onboarding_sagas s JOIN held ON s.saga_id = held.saga_id)
         UPDATE onboarding_sagas s
         SET send_claim_epoch = CASE WHEN j.free THEN j.ep ELSE s.send_claim_epoch END,
             send_claimed_at = CASE WHEN j.free THEN now() ELSE s.send_claimed_at END,
             lease_owner = CASE WHEN j.free THEN s.lease_owner END,
             lease_until = CASE WHEN j.free THEN now() + make_interval(secs => $4) END,
             lease_epoch = CASE WHEN j.free THEN s.lease_epoch ELSE s.lease_epoch + 1 END,
             due_at = CASE WHEN j.free THEN now() + make_interval(secs => $4)
                           ELSE j.send_claimed_at + make_interval(secs => 2 * $4) END,
             updated_at = now()
         FROM judged j WHERE s.saga_id = j.saga_id
         RETURNING s.saga_id, j.free"
    )))
    .bind(&ids)
    .bind(&epochs)
    .bind(Step::WelcomeEmail)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await?;
    let mut claims = SendClaims::default();
    for (id, free) in rows {
        if free {
            claims.claimed.push(id);
        } else {
            claims.busy.push(id);
        }
    }
    Ok(claims)
}

/// One saga moved on by [`advance_many`].
pub struct Advance<'a> {
    pub lease: Lease,
    pub next: Step,
    /// What the step learnt, merged into `data`.
    pub learnt: &'a Value,
}

/// Moves sagas held at `from` on to their next step, merging what the step learnt into
/// `data`. With `carry_on` the worker keeps the leases (it has room to run the next step at
/// once), and a next step that is the welcome email has its send claimed under them;
/// without, the leases are given back and the sagas are due now. Returns the sagas moved,
/// with their data now.
pub async fn advance_many(
    conn: &mut PgConnection,
    from: Step,
    moves: &[Advance<'_>],
    carry_on: bool,
    lease_seconds: f64,
) -> Result<Vec<(Uuid, Value)>, sqlx::Error> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, epochs): (Vec<Uuid>, Vec<i64>) = moves
        .iter()
        .map(|m| (m.lease.saga_id, m.lease.epoch))
        .unzip();
    let next: Vec<Step> = moves.iter().map(|m| m.next).collect();
    let learnt: Vec<&Value> = moves.iter().map(|m| m.learnt).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {HELD},
         moves AS (SELECT * FROM UNNEST($1::uuid[], $4::text[], $5::jsonb[]) AS m(id, next, d))
         UPDATE onboarding_sagas s
         SET step = m.next, data = s.data || m.d, attempts = 0, last_error = NULL,
             lease_owner = CASE WHEN $6 THEN s.lease_owner END,
             lease_until = CASE WHEN $6 THEN now() + make_interval(secs => $7) END,
             due_at = CASE WHEN $6 THEN now() + make_interval(secs => $7) ELSE now() END,
             lease_epoch = CASE WHEN $6 THEN s.lease_epoch ELSE s.lease_epoch + 1 END,
             send_claim_epoch = CASE WHEN $6 AND m.next = 'welcome_email' THEN s.lease_epoch END,
             send_claimed_at = CASE WHEN $6 AND m.next = 'welcome_email' THEN now() END,
             updated_at = now()
         FROM held JOIN moves m ON m.id = held.saga_id
         WHERE s.saga_id = held.saga_id
         RETURNING s.saga_id, s.data"
    )))
    .bind(&ids)
    .bind(&epochs)
    .bind(from)
    .bind(&next)
    .bind(&learnt)
    .bind(carry_on)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await
}

/// Which token a step's last write is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The lease: the saga is still held under the epoch named (every step but the send's
    /// record).
    Lease,
    /// The welcome email's send claim: the send made under the epoch named is recorded by
    /// the lease that claimed it, even if that lease moved on while it was being sent (the
    /// next holder found the claim live and did not send).
    SendClaim,
}

impl Fence {
    /// The condition on `s` (the row) and `x.ep` (the epoch named).
    fn condition(self) -> &'static str {
        match self {
            Fence::Lease => "s.lease_epoch = x.ep",
            Fence::SendClaim => "s.send_claim_epoch = x.ep",
        }
    }
}

/// Completes sagas at `from` held under `fence`, merging what the last step learnt. Returns
/// the sagas completed now, with their data.
pub async fn complete_many(
    conn: &mut PgConnection,
    from: Step,
    done: &[(Lease, Value)],
    fence: Fence,
) -> Result<Vec<(Uuid, Value)>, sqlx::Error> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let leases: Vec<Lease> = done.iter().map(|d| d.0).collect();
    let (ids, epochs) = columns(&leases);
    let learnt: Vec<&Value> = done.iter().map(|d| &d.1).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE onboarding_sagas s
         SET step = 'done', status = 'completed', data = s.data || x.d, lease_owner = NULL,
             lease_until = NULL, due_at = NULL, lease_epoch = s.lease_epoch + 1,
             send_claim_epoch = NULL, send_claimed_at = NULL,
             updated_at = now(), completed_at = now()
         FROM (SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::jsonb[]) AS x(id, ep, d)
               ORDER BY id) x
         WHERE s.saga_id = x.id AND s.step = $4 AND {}
         RETURNING s.saga_id, s.data",
        fence.condition()
    )))
    .bind(&ids)
    .bind(&epochs)
    .bind(&learnt)
    .bind(from)
    .fetch_all(conn)
    .await
}

/// A failed attempt of a step that will be tried again: counted, its error kept for
/// operators, due again after its delay, the lease (and any send claim) given back.
pub struct Postpone<'a> {
    pub lease: Lease,
    pub error: &'a str,
    pub delay_seconds: f64,
    /// Whether this try counts against the step's attempts.
    pub counted: bool,
}

pub async fn postpone_many(
    conn: &mut PgConnection,
    step: Step,
    later: &[Postpone<'_>],
    fence: Fence,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if later.is_empty() {
        return Ok(Vec::new());
    }
    let leases: Vec<Lease> = later.iter().map(|p| p.lease).collect();
    let (ids, epochs) = columns(&leases);
    let errors: Vec<&str> = later.iter().map(|p| p.error).collect();
    let delays: Vec<f64> = later.iter().map(|p| p.delay_seconds).collect();
    let counted: Vec<bool> = later.iter().map(|p| p.counted).collect();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE onboarding_sagas s
         SET attempts = s.attempts + x.counted::int, last_error = x.e,
             due_at = now() + make_interval(secs => x.delay),
             lease_owner = NULL, lease_until = NULL, lease_epoch = s.lease_epoch + 1,
             send_claim_epoch = NULL, send_claimed_at = NULL, updated_at = now()
         FROM (SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::float8[], $6::bool[])
                 AS x(id, ep, e, delay, counted) ORDER BY id) x
         WHERE s.saga_id = x.id AND s.step = $5 AND {}
         RETURNING s.saga_id",
        fence.condition()
    )))
    .bind(&ids)
    .bind(&epochs)
    .bind(&errors)
    .bind(&delays)
    .bind(step)
    .bind(&counted)
    .fetch_all(conn)
    .await
}

/// Gives back leases this worker holds (a step that could not run now, or no room for the
/// next one): the sagas are due after `delay_seconds`, not counted as an attempt. A send
/// claimed under one of them is given back too: nothing was sent under it.
pub async fn release(
    pool: &PgPool,
    leases: &[Lease],
    delay_seconds: f64,
) -> Result<u64, sqlx::Error> {
    if leases.is_empty() {
        return Ok(0);
    }
    let (ids, epochs) = columns(leases);
    Ok(sqlx::query(
        "UPDATE onboarding_sagas s
         SET lease_owner = NULL, lease_until = NULL, lease_epoch = s.lease_epoch + 1,
             due_at = now() + make_interval(secs => $3),
             send_claim_epoch = CASE WHEN s.send_claim_epoch = s.lease_epoch THEN NULL
                                     ELSE s.send_claim_epoch END,
             send_claimed_at = CASE WHEN s.send_claim_epoch = s.lease_epoch THEN NULL
                                    ELSE s.send_claimed_at END
         FROM (SELECT * FROM UNNEST($1::uuid[], $2::int8[]) AS x(id, ep) ORDER BY id) x
         WHERE s.saga_id = x.id AND s.lease_epoch = x.ep AND s.status <> 'completed'",
    )
    .bind(&ids)
    .bind(&epochs)
    .bind(delay_seconds)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Gives back every lease of these owners (a worker stopping, or workers found dead): their
/// sagas are due at once for whoever sweeps next, under a new epoch, and a send they had
/// claimed is theirs no more (a send cut short by the end of its worker may go out twice:
/// the welcome email is at-least-once across a crash).
pub async fn release_leases(pool: &PgPool, owners: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE onboarding_sagas
         SET lease_owner = NULL, lease_until = NULL, due_at = now(),
             lease_epoch = lease_epoch + 1, send_claim_epoch = NULL, send_claimed_at = NULL
         WHERE status <> 'completed' AND lease_owner = ANY($1)",
    )
    .bind(owners)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Reads a saga without locking it.
pub async fn get(pool: &PgPool, saga_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    let sql = format!("SELECT {SAGA_COLUMNS} FROM onboarding_sagas WHERE saga_id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(saga_id)
        .fetch_optional(pool)
        .await
}

/// A saga that should have run and did not, for operators.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Stuck {
    pub saga_id: Uuid,
    pub client_id: i32,
    pub step: Step,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

/// Sagas not completed that have been due for longer than `seconds` (no worker took them, or
/// their owner's lease ran out that long ago), oldest first.
pub async fn stuck(pool: &PgPool, seconds: f64, limit: i64) -> Result<Vec<Stuck>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id, client_id, step, attempts, last_error, due_at, lease_owner, updated_at
         FROM onboarding_sagas
         WHERE status <> 'completed' AND due_at < now() - make_interval(secs => $1)
         ORDER BY due_at LIMIT $2",
    )
    .bind(seconds)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many sagas [`stuck`] would list (for `/metrics`).
pub async fn count_stuck(pool: &PgPool, seconds: f64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM onboarding_sagas
         WHERE status <> 'completed' AND due_at < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .fetch_one(pool)
    .await
}

/// Makes a client's saga due now (an operator's retry), unless it is completed or a worker
/// holds it; whether it did.
pub async fn retry_now(pool: &PgPool, client_id: i32) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE onboarding_sagas SET due_at = now(), updated_at = now()
         WHERE client_id = $1 AND status <> 'completed'
           AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(client_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sagas not completed that failed at least once or are stuck, for the console: the most
/// recently changed first.
pub async fn troubled(
    pool: &PgPool,
    stuck_seconds: f64,
    limit: i64,
) -> Result<Vec<Stuck>, sqlx::Error> {
    sqlx::query_as(
        "SELECT saga_id, client_id, step, attempts, last_error, due_at, lease_owner, updated_at
         FROM onboarding_sagas
         WHERE status <> 'completed'
           AND (attempts > 0 OR last_error IS NOT NULL
                OR due_at < now() - make_interval(secs => $1))
         ORDER BY updated_at DESC LIMIT $2",
    )
    .bind(stuck_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await
}
