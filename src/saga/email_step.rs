//! Step 3 (and 4): the welcome email with the admin's first-access secret, then completion,
//! for a batch of sagas.
//!
//! The send is claimed in the database before the email goes out, under the lease's epoch
//! ([`store::sagas::claim_sends`]; a batch whose sagas this worker started or moved here
//! claimed it in that same statement). A copy of the step that finds another lease's claim
//! still live does not send: it gives its lease back and the saga is due when that claim
//! would run out. While the sends run, a [`Keeper`] renews the leases and the claims, so a
//! batch of sends that takes longer than a lease stays claimed.
//!
//! The secret's hash is stored before any email carrying it goes out: by the `client.create`
//! batch itself for an activation link (the token travels to this step in memory), or here,
//! in one statement for the batch, for a temporary password or a saga taken over from another
//! worker. The secret is derived from the saga (`FirstAccess::issue_for_saga`), so a worker
//! that takes a saga over makes and stores the very secret the first one made. The sends run
//! in parallel; one transaction then records every outcome under the claims they were sent
//! under: `client_email_logs` rows, `client.welcome_email_sent` or `_failed`, the completion
//! and the reply for the sagas done, a later due time for those whose send failed
//! transiently and have attempts left.
//!
//! Only a worker that dies (or is taken for dead) between its claim and recording the SMTP
//! server's answer leaves a send that may go out again: the welcome email is at-least-once
//! across a crash, never twice because a worker was slow, and both emails carry the same
//! working link or password.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;

use super::env::Env;
use super::job::SagaJob;
use super::lease::Keeper;
use super::step::Moved;
use super::step::{Fresh, with_snapshots};
use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client, CreatedBody};
use crate::email::{AccessMode, FirstAccess, StoredAccess, WelcomeEmail};
use crate::fault::HandlerError;
use crate::messages::CommandMeta;
use crate::messages::{OutgoingMessage, Payload};
use crate::observe;
use crate::store::{
    self,
    email_logs::EmailLog,
    sagas::{Fence, Lease, Postpone},
};

pub const SENT: &str = "client.welcome_email_sent";
pub const FAILED: &str = "client.welcome_email_failed";

/// How one send went: `Err((transient, reason))`.
type Sent = Result<(), (bool, String)>;

pub async fn run(env: &Env, jobs: Vec<SagaJob>) -> Result<Moved, HandlerError> {
    let jobs = with_snapshots(env, jobs).await?;
    let jobs = claim(env, jobs).await?;
    if jobs.is_empty() {
        return Ok((Vec::new(), None));
    }
    observe::at(&env.hooks.after_send_claim, jobs.len()).await;
    let keeper = Keeper::start(
        env,
        Step::WelcomeEmail,
        jobs.iter().map(SagaJob::lease).collect(),
    );
    let jobs = match prepare_access(env, jobs).await {
        Ok(jobs) => jobs,
        Err(e) => {
            keeper.stop().await;
            return Err(e);
        }
    };
    let concurrency = env.services.settings.max_concurrent_sends.max(1);
    // Futures built in a loop, not a closure: a closure returning a borrowing future is not
    // general enough for the task this runs in to be `Send`.
    let mut sends = Vec::with_capacity(jobs.len());
    for job in &jobs {
        sends.push(send_if_held(env, &keeper, job).instrument(job.span.clone()));
    }
    let sent: Vec<Option<Sent>> = futures::stream::iter(sends)
        .buffered(concurrency)
        .collect()
        .await;
    let (lost, renewed_at) = keeper.stop().await;
    env.metrics
        .saga_fenced(Step::WelcomeEmail.as_str(), lost.len());
    // A send not made (the lease was lost first) is not recorded: its claim runs out and the
    // saga's holder sends it.
    let (jobs, sent): (Vec<SagaJob>, Vec<Sent>) = jobs
        .into_iter()
        .zip(sent)
        .filter_map(|(job, sent)| sent.map(|s| (job, s)))
        .unzip();
    if jobs.is_empty() {
        return Ok((Vec::new(), None));
    }
    // The emails are out: record them, trying for as long as the claims are surely ours (two
    // lease lengths after their last renewal; five seconds of margin). Running the step
    // again would send them twice.
    let lease = Duration::from_secs_f64(env.services.lease_seconds());
    let deadline = (renewed_at + lease * 2)
        .checked_sub(Duration::from_secs(5))
        .unwrap_or(renewed_at);
    if let Err(e) = env
        .retry_db_until("recording welcome emails", deadline, || {
            record(env, &jobs, &sent)
        })
        .await
    {
        tracing::error!(error = %e, sagas = jobs.len(), "welcome emails sent but not recorded; once their claims run out the sagas' holders send them again");
    }
    Ok((Vec::new(), None))
}

/// Claims the sends of the jobs that have no claim under their lease yet (one statement),
/// renewing their leases; returns the jobs to send now. The others are left: held by
/// someone else now, or waiting for another lease's live claim.
async fn claim(env: &Env, jobs: Vec<SagaJob>) -> Result<Vec<SagaJob>, HandlerError> {
    let (claimed, unclaimed): (Vec<SagaJob>, Vec<SagaJob>) =
        jobs.into_iter().partition(|j| j.send_claimed);
    if unclaimed.is_empty() {
        return Ok(claimed);
    }
    let leases: Vec<Lease> = unclaimed.iter().map(SagaJob::lease).collect();
    let lease = env.services.lease_seconds();
    let claims = env
        .retry_db("claiming welcome-email sends", || async {
            let mut conn = env.pool.acquire().await?;
            Ok(store::sagas::claim_sends(&mut conn, &leases, lease).await?)
        })
        .await?;
    for id in &claims.busy {
        tracing::warn!(saga_id = %id, "another worker's send of this welcome email may still be under way; not sending, the saga is due when its claim runs out");
    }
    let mut out = claimed;
    let mut fenced = 0;
    for mut job in unclaimed {
        if claims.claimed.contains(&job.saga_id) {
            job.send_claimed = true;
            out.push(job);
        } else if !claims.busy.contains(&job.saga_id) {
            tracing::info!(saga_id = %job.saga_id, "saga no longer leased to this worker under this epoch; leaving it");
            fenced += 1;
        }
    }
    env.metrics.saga_fenced(Step::WelcomeEmail.as_str(), fenced);
    Ok(out)
}

async fn send_if_held(env: &Env, keeper: &Keeper, job: &SagaJob) -> Option<Sent> {
    if !keeper.holds(job.saga_id) {
        return None;
    }
    Some(send(env, job).await)
}

/// Completion on its own, for sagas found waiting at `complete` (written by an older version
/// of the worker, or replayed by an operator).
pub async fn complete_only(env: &Env, jobs: Vec<SagaJob>) -> Result<Moved, HandlerError> {
    let jobs = with_snapshots(env, jobs).await?;
    env.retry_db("completing sagas", || async {
        let mut uow = env.outbox.begin().await?;
        let done: Vec<(Lease, Value)> = jobs.iter().map(|j| (j.lease(), json!({}))).collect();
        let completed =
            store::sagas::complete_many(uow.conn(), Step::Complete, &done, Fence::Lease).await?;
        env.metrics
            .saga_fenced(Step::Complete.as_str(), done.len() - completed.len());
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
        Ok(env.outbox.commit(uow).await?)
    })
    .await?;
    Ok((Vec::new(), None))
}

/// Makes and stores (hashes only) the secret of every saga that has none yet, in one
/// statement, before any of them is sent; the write is fenced by each saga's lease. Sagas
/// whose secret could not be stored under their lease are dropped.
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
    let stored: Vec<(i32, Lease, &StoredAccess)> = bare
        .iter()
        .zip(&issued)
        .map(|(j, (_, stored))| (j.admin_user_id, j.lease(), stored))
        .collect();
    let held: HashSet<uuid::Uuid> = env
        .retry_db("storing first-access secrets", || async {
            let mut conn = env.pool.acquire().await?;
            Ok(store::clients::store_first_access(&mut conn, &stored).await?)
        })
        .await?
        .into_iter()
        .collect();
    let mut out = ready;
    for (mut job, (access, _)) in bare.drain(..).zip(issued) {
        if held.contains(&job.saga_id) {
            job.access = Some(access);
            out.push(job);
        } else {
            tracing::info!(saga_id = %job.saga_id, "saga no longer leased to this worker; leaving it");
            env.metrics.saga_fenced(Step::WelcomeEmail.as_str(), 1);
        }
    }
    Ok(out)
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

/// Records every send's outcome in one transaction, under the claims they were sent under.
async fn record(env: &Env, jobs: &[SagaJob], sent: &[Sent]) -> Result<(), HandlerError> {
    let services = &env.services;
    let budget = services.settings.email_max_attempts.max(1) as i32;
    let subject = services.email.subject.as_str();
    let mut done = Vec::new();
    let mut later = Vec::new();
    for (job, result) in jobs.iter().zip(sent) {
        let attempt = job.attempts + 1;
        match result {
            Ok(()) => done.push((job.lease(), json!({ "welcome_email": { "status": "SENT", "attempts": attempt } }))),
            Err((true, error)) if attempt < budget => later.push(Postpone {
                lease: job.lease(),
                error: error.as_str(),
                delay_seconds: services.delay_after(attempt).as_secs_f64(),
                counted: true,
            }),
            Err((_, error)) => done.push((
                job.lease(),
                json!({ "welcome_email": { "status": "FAILED", "attempts": attempt, "error": error } }),
            )),
        }
    }

    let mut uow = env.outbox.begin().await?;
    let completed =
        store::sagas::complete_many(uow.conn(), Step::WelcomeEmail, &done, Fence::SendClaim)
            .await?;
    let postponed =
        store::sagas::postpone_many(uow.conn(), Step::WelcomeEmail, &later, Fence::SendClaim)
            .await?;
    let ours: HashSet<uuid::Uuid> = completed
        .iter()
        .map(|(id, _)| *id)
        .chain(postponed.iter().copied())
        .collect();
    env.metrics
        .saga_fenced(Step::WelcomeEmail.as_str(), jobs.len() - ours.len());
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
    Ok(env.outbox.commit(uow).await?)
}

pub const COMPLETED: &str = "client.onboarding_completed";

/// Completion's messages: `client.onboarding_completed` (the seed's 201 body, with the email
/// outcome and the saga id) and the reply to the original `client.create`, when it asked.
pub fn completion_messages(
    origin: &CommandMeta,
    saga_id: uuid::Uuid,
    client: &Client,
    admin: &AdminUser,
    data: &Value,
) -> Vec<OutgoingMessage> {
    let body = CreatedBody::completed(client, admin, data);
    // The reply only when one was asked for (most commands ask for none).
    let reply = origin
        .reply_to
        .is_some()
        .then(|| OutgoingMessage::reply(origin, COMPLETED, 201, Payload::serialized(&body)))
        .flatten();
    let event_data = CompletedData {
        body,
        saga_id,
        welcome_email: data.get("welcome_email"),
    };
    let mut messages = vec![OutgoingMessage::serialized_event(
        origin,
        COMPLETED,
        &event_data,
    )];
    messages.extend(reply);
    messages
}

/// `client.onboarding_completed`'s data: the seed's 201 body, the saga, and how its welcome
/// email went (when it was tried).
#[derive(serde::Serialize)]
struct CompletedData<'a> {
    #[serde(flatten)]
    body: CreatedBody<'a>,
    saga_id: uuid::Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    welcome_email: Option<&'a Value>,
}
