//! Step 3 (and 4): the welcome email with the admin's first-access secret, then completion,
//! for a batch of sagas.
//!
//! The secret's hash is stored before any email carrying it goes out: by the `client.create`
//! batch itself for an activation link (the token travels to this step in memory), or here,
//! in one transaction for the batch, for a temporary password or a saga taken over from
//! another worker. The secret is derived from the saga (`FirstAccess::issue_for_saga`), so a
//! worker that takes a saga over makes and stores the very secret the first one made. The
//! sends run in parallel; one transaction then records every outcome:
//! `client_email_logs` rows, `client.welcome_email_sent` or `_failed`, the completion and the
//! reply for the sagas done, a later due time for those whose send failed transiently and
//! have attempts left. Only the worker holding a saga's lease records anything for it.
//!
//! A worker that dies after sending and before recording leaves the saga to another worker,
//! which sends again once the lease is given back: the welcome email is at-least-once, and
//! both emails carry the same working link or password.

use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;

use super::runner::Env;
use super::{SagaJob, Step, completion_messages};
use crate::domain::{AdminUser, Client};
use crate::email::{AccessMode, FirstAccess, StoredAccess, WelcomeEmail};
use crate::fault::HandlerError;
use crate::messages::OutgoingMessage;
use crate::store::{self, email_logs::EmailLog, sagas::Postpone};
use crate::uow::UnitOfWork;

pub const SENT: &str = "client.welcome_email_sent";
pub const FAILED: &str = "client.welcome_email_failed";

/// How one send went: `Err((transient, reason))`.
type Sent = Result<(), (bool, String)>;

pub async fn run(env: &Env, jobs: Vec<SagaJob>) -> Result<Vec<SagaJob>, HandlerError> {
    let jobs = with_snapshots(env, jobs).await?;
    let jobs = prepare_access(env, jobs).await?;
    let jobs = keep_leases(env, jobs, Step::WelcomeEmail).await?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let concurrency = env.services.settings.max_concurrent_sends.max(1);
    // Futures built in a loop, not a closure: a closure returning a borrowing future is not
    // general enough for the task this runs in to be `Send`.
    let mut sends = Vec::with_capacity(jobs.len());
    for job in &jobs {
        sends.push(send(env, job).instrument(job.span.clone()));
    }
    let sent: Vec<Sent> = futures::stream::iter(sends)
        .buffered(concurrency)
        .collect()
        .await;
    // The emails are out: record them, trying for as long as the leases last. Running the
    // step again would send them twice.
    let deadline = jobs
        .iter()
        .map(|j| j.leased_until)
        .min()
        .expect("not empty")
        .checked_sub(std::time::Duration::from_secs(5))
        .unwrap_or_else(Instant::now);
    if let Err(e) = env
        .retry_db_until("recording welcome emails", deadline, || {
            record(env, &jobs, &sent)
        })
        .await
    {
        tracing::error!(error = %e, sagas = jobs.len(), "welcome emails sent but not recorded; once the leases run out another worker sends them again");
    }
    Ok(Vec::new())
}

/// Completion on its own, for sagas found waiting at `complete` (written by an older version
/// of the worker, or replayed by an operator).
pub async fn complete_only(env: &Env, jobs: Vec<SagaJob>) -> Result<Vec<SagaJob>, HandlerError> {
    let jobs = with_snapshots(env, jobs).await?;
    env.retry_db("completing sagas", || async {
        let mut uow = UnitOfWork::begin(&env.pool).await?;
        let done: Vec<(uuid::Uuid, Value)> = jobs.iter().map(|j| (j.saga_id, json!({}))).collect();
        let completed =
            store::sagas::complete_many(uow.conn(), env.worker_id, Step::Complete, &done).await?;
        let fresh = Fresh::read(uow.conn(), &jobs).await?;
        for (saga_id, data) in completed {
            let job = jobs
                .iter()
                .find(|j| j.saga_id == saga_id)
                .expect("a job of ours");
            let (client, admin) = fresh.of(job);
            uow.say(completion_messages(
                &job.origin,
                saga_id,
                client,
                admin,
                &data,
            ));
        }
        commit(env, uow).await
    })
    .await?;
    Ok(Vec::new())
}

/// Fills in the client and admin of sagas taken from the database (two reads for the batch).
/// A saga whose rows are gone is dropped (its client was deleted; the saga went with it).
pub(super) async fn with_snapshots(
    env: &Env,
    jobs: Vec<SagaJob>,
) -> Result<Vec<SagaJob>, HandlerError> {
    if jobs.iter().all(|j| j.snapshot.is_some()) {
        return Ok(jobs);
    }
    let mut conn = env.pool.acquire().await?;
    let fresh = Fresh::read(&mut conn, &jobs).await?;
    Ok(jobs
        .into_iter()
        .filter_map(|mut job| {
            if job.snapshot.is_none() {
                match fresh.get(&job) {
                    Some((c, a)) => job.snapshot = Some((c.clone(), a.clone())),
                    None => {
                        tracing::warn!(saga_id = %job.saga_id, "the client or admin of a saga is gone; skipping it");
                        return None;
                    }
                }
            }
            Some(job)
        })
        .collect())
}

/// The clients and admins of a batch as they are now.
pub(super) struct Fresh {
    clients: std::collections::HashMap<i32, Client>,
    admins: std::collections::HashMap<i32, AdminUser>,
}

impl Fresh {
    pub(super) async fn read(
        conn: &mut sqlx::PgConnection,
        jobs: &[SagaJob],
    ) -> Result<Fresh, sqlx::Error> {
        let client_ids: Vec<i32> = jobs.iter().map(|j| j.client_id).collect();
        let admin_ids: Vec<i32> = jobs.iter().map(|j| j.admin_user_id).collect();
        let clients = store::clients::get_clients(conn, &client_ids).await?;
        let admins = store::clients::get_admin_users(conn, &admin_ids).await?;
        Ok(Fresh {
            clients: clients.into_iter().map(|c| (c.client_id, c)).collect(),
            admins: admins.into_iter().map(|a| (a.user_id, a)).collect(),
        })
    }

    fn get(&self, job: &SagaJob) -> Option<(&Client, &AdminUser)> {
        Some((
            self.clients.get(&job.client_id)?,
            self.admins.get(&job.admin_user_id)?,
        ))
    }

    /// The rows as they are now, else as the job last saw them.
    pub(super) fn of<'a>(&'a self, job: &'a SagaJob) -> (&'a Client, &'a AdminUser) {
        match (self.get(job), &job.snapshot) {
            (Some(now), _) => now,
            (None, Some((c, a))) => (c, a),
            (None, None) => unreachable!("with_snapshots drops jobs without rows"),
        }
    }
}

/// Makes and stores (hashes only) the secret of every saga that has none yet, in one
/// transaction, before any of them is sent. Sagas this worker no longer holds are dropped.
async fn prepare_access(env: &Env, jobs: Vec<SagaJob>) -> Result<Vec<SagaJob>, HandlerError> {
    let (ready, mut bare): (Vec<SagaJob>, Vec<SagaJob>) =
        jobs.into_iter().partition(|j| j.access.is_some());
    if bare.is_empty() {
        return Ok(ready);
    }
    let settings = env.services.email.clone();
    let issued: Vec<(FirstAccess, StoredAccess)> = match settings.access {
        // argon2 costs tens of milliseconds of CPU each: off the async threads, in parallel.
        AccessMode::TemporaryPassword => {
            let tasks = bare.iter().map(|job| {
                let settings = settings.clone();
                let key = env.key.clone();
                let saga_id = job.saga_id;
                tokio::task::spawn_blocking(move || {
                    FirstAccess::issue_for_saga(&settings, Utc::now(), &key, saga_id)
                })
            });
            let mut out = Vec::with_capacity(bare.len());
            for joined in futures::future::join_all(tasks).await {
                let issued = joined
                    .map_err(|e| {
                        HandlerError::Permanent(format!("secret generation panicked: {e}"))
                    })?
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                out.push(issued);
            }
            out
        }
        AccessMode::ActivationLink => bare
            .iter()
            .map(|job| FirstAccess::issue_for_saga(&settings, Utc::now(), &env.key, job.saga_id))
            .collect::<Result<_, _>>()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?,
    };
    let ids: Vec<uuid::Uuid> = bare.iter().map(|j| j.saga_id).collect();
    let lease = env.services.lease_seconds();
    let held = env
        .retry_db("storing first-access secrets", || async {
            let mut tx = env.pool.begin().await?;
            let held = store::sagas::renew(&mut tx, &ids, env.worker_id, Step::WelcomeEmail, lease)
                .await?;
            let stored: Vec<(i32, &StoredAccess)> = bare
                .iter()
                .zip(&issued)
                .filter(|(j, _)| held.contains(&j.saga_id))
                .map(|(j, (_, stored))| (j.admin_user_id, stored))
                .collect();
            store::clients::store_first_access(&mut tx, &stored).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await?;
    let renewed_at = Instant::now();
    let mut out = ready;
    for (mut job, (access, _)) in bare.drain(..).zip(issued) {
        if held.contains(&job.saga_id) {
            job.access = Some(access);
            job.leased_until = renewed_at + std::time::Duration::from_secs_f64(lease);
            out.push(job);
        } else {
            tracing::info!(saga_id = %job.saga_id, "saga no longer leased to this worker; leaving it");
        }
    }
    Ok(out)
}

/// Renews the leases that would run out before a send could finish; drops sagas this
/// worker no longer holds.
pub(super) async fn keep_leases(
    env: &Env,
    jobs: Vec<SagaJob>,
    step: Step,
) -> Result<Vec<SagaJob>, HandlerError> {
    let lease = env.services.lease_seconds();
    let margin = std::time::Duration::from_secs_f64(lease / 2.0);
    let now = Instant::now();
    let short: Vec<uuid::Uuid> = jobs
        .iter()
        .filter(|j| j.leased_until.saturating_duration_since(now) < margin)
        .map(|j| j.saga_id)
        .collect();
    if short.is_empty() {
        return Ok(jobs);
    }
    let held = env
        .retry_db("renewing leases", || async {
            let mut conn = env.pool.acquire().await?;
            Ok(store::sagas::renew(&mut conn, &short, env.worker_id, step, lease).await?)
        })
        .await?;
    let until = Instant::now() + std::time::Duration::from_secs_f64(lease);
    Ok(jobs
        .into_iter()
        .filter_map(|mut j| {
            if !short.contains(&j.saga_id) {
                return Some(j);
            }
            if held.contains(&j.saga_id) {
                j.leased_until = until;
                Some(j)
            } else {
                None
            }
        })
        .collect())
}

async fn send(env: &Env, job: &SagaJob) -> Sent {
    let services = &env.services;
    let (client, admin) = job.snapshot.as_ref().expect("snapshots filled in");
    let access = job.access.as_ref().expect("secrets prepared");
    let started = Instant::now();
    let result = match (WelcomeEmail {
        admin_name: &admin.username,
        admin_email: &admin.email,
        client_code: &client.client_code,
        client_alias: &client.client_alias,
        access,
        frontend_url: &services.email.frontend_url,
    })
    .message(&services.email.from, &services.email.subject)
    {
        Ok(message) => services
            .mailer
            .send(message)
            .instrument(crate::export_span!(
                "email.send",
                otel.kind = "client",
                user_id = admin.user_id
            ))
            .await
            .map_err(|e| (e.is_transient(), e.to_string())),
        Err(e) => Err((e.is_transient(), e.to_string())),
    };
    let outcome = match &result {
        Ok(()) => "ok",
        Err((true, _)) => "retryable",
        Err((false, _)) => "rejected",
    };
    env.metrics
        .observe_call("smtp", "send", outcome, started.elapsed());
    result
}

/// Records every send's outcome in one transaction.
async fn record(env: &Env, jobs: &[SagaJob], sent: &[Sent]) -> Result<(), HandlerError> {
    let services = &env.services;
    let budget = services.settings.email_max_attempts.max(1) as i32;
    let subject = services.email.subject.as_str();
    let mut done = Vec::new();
    let mut later = Vec::new();
    for (job, result) in jobs.iter().zip(sent) {
        let attempt = job.attempts + 1;
        match result {
            Ok(()) => done.push((job.saga_id, json!({ "welcome_email": { "status": "SENT", "attempts": attempt } }))),
            Err((true, error)) if attempt < budget => later.push(Postpone {
                saga_id: job.saga_id,
                error: error.as_str(),
                delay_seconds: services.delay_after(attempt).as_secs_f64(),
            }),
            Err((_, error)) => done.push((
                job.saga_id,
                json!({ "welcome_email": { "status": "FAILED", "attempts": attempt, "error": error } }),
            )),
        }
    }

    let mut uow = UnitOfWork::begin(&env.pool).await?;
    let completed =
        store::sagas::complete_many(uow.conn(), env.worker_id, Step::WelcomeEmail, &done).await?;
    let postponed =
        store::sagas::postpone_many(uow.conn(), env.worker_id, Step::WelcomeEmail, &later).await?;
    let ours: std::collections::HashSet<uuid::Uuid> = completed
        .iter()
        .map(|(id, _)| *id)
        .chain(postponed.iter().copied())
        .collect();

    let mut logs = Vec::with_capacity(ours.len());
    for (job, result) in jobs.iter().zip(sent) {
        if !ours.contains(&job.saga_id) {
            tracing::info!(saga_id = %job.saga_id, "saga no longer leased to this worker; its send is not recorded here");
            continue;
        }
        let (client, admin) = job.snapshot.as_ref().expect("snapshots filled in");
        let attempt = job.attempts + 1;
        logs.push(EmailLog {
            client_id: client.client_id,
            email: &admin.email,
            subject,
            status: if result.is_ok() { "SENT" } else { "FAILED" },
            attempt,
            error: result.as_ref().err().map(|(_, e)| e.as_str()),
        });
        if let Err((_, error)) = result
            && postponed.contains(&job.saga_id)
        {
            tracing::warn!(saga_id = %job.saga_id, attempt, error = %error, "welcome email not sent; retrying later");
        }
    }
    store::email_logs::insert_many(uow.conn(), &logs).await?;

    if !completed.is_empty() {
        let fresh = Fresh::read(uow.conn(), jobs).await?;
        for (saga_id, data) in &completed {
            let index = jobs
                .iter()
                .position(|j| j.saga_id == *saga_id)
                .expect("a job of ours");
            let job = &jobs[index];
            let (client, admin) = fresh.of(job);
            let attempt = job.attempts + 1;
            let mut event_data = json!({
                "client_id": client.client_id,
                "user_id": admin.user_id,
                "subject": subject,
                "attempts": attempt,
            });
            let event = match &sent[index] {
                Ok(()) => SENT,
                Err((_, error)) => {
                    tracing::error!(saga_id = %saga_id, attempt, error = %error, "welcome email failed for good; completing without it");
                    event_data["reason"] = json!(error);
                    FAILED
                }
            };
            uow.say([OutgoingMessage::event(&job.origin, event, event_data)]);
            uow.say(completion_messages(
                &job.origin,
                *saga_id,
                client,
                admin,
                data,
            ));
        }
    }
    commit(env, uow).await
}

/// Commits a step's unit of work and publishes what it said.
pub(super) async fn commit(env: &Env, uow: UnitOfWork) -> Result<(), HandlerError> {
    let rows = uow.commit().await?;
    env.outbox.dispatch(rows).await;
    Ok(())
}
