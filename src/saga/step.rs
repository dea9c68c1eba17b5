//! What every step does around its outside calls: read the rows of sagas taken from the
//! database, make sure the worker still holds a batch's sagas before calling anyone, commit
//! its record and publish what it said.

use std::collections::HashMap;

use super::env::{Env, Slot};
use super::job::SagaJob;
use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client};
use crate::fault::HandlerError;
use crate::store::{self, sagas::Lease};

/// What a step returns: the sagas that moved on to the next step, and the slot they run it in.
pub type Moved = (Vec<SagaJob>, Option<Slot>);

/// Fills in the client and admin of sagas taken from the database (one read for the batch).
/// A saga whose rows are gone is dropped (its client was deleted; the saga went with it).
pub async fn with_snapshots(env: &Env, jobs: Vec<SagaJob>) -> Result<Vec<SagaJob>, HandlerError> {
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
pub struct Fresh {
    clients: HashMap<i32, Client>,
    admins: HashMap<i32, AdminUser>,
}

impl Fresh {
    pub async fn read(
        conn: &mut sqlx::PgConnection,
        jobs: &[SagaJob],
    ) -> Result<Fresh, sqlx::Error> {
        let pairs: Vec<(i32, i32)> = jobs
            .iter()
            .map(|j| (j.client_id, j.admin_user_id))
            .collect();
        let (mut clients, mut admins) = (HashMap::new(), HashMap::new());
        for (client, admin) in store::clients::with_admins(conn, &pairs).await? {
            admins.insert(admin.user_id, admin);
            clients.insert(client.client_id, client);
        }
        Ok(Fresh { clients, admins })
    }

    fn get(&self, job: &SagaJob) -> Option<(&Client, &AdminUser)> {
        Some((
            self.clients.get(&job.client_id)?,
            self.admins.get(&job.admin_user_id)?,
        ))
    }

    /// The rows as they are now, else as the job last saw them.
    pub fn of<'a>(&'a self, job: &'a SagaJob) -> (&'a Client, &'a AdminUser) {
        match (self.get(job), &job.snapshot) {
            (Some(now), _) => now,
            (None, Some((c, a))) => (c, a),
            (None, None) => unreachable!("with_snapshots drops jobs without rows"),
        }
    }
}

/// The sagas of `jobs` this worker still holds at `step`, their leases renewed (one statement):
/// the fence a step passes before it calls anyone. A copy of the step whose lease was taken
/// meanwhile stops here.
pub async fn still_held(
    env: &Env,
    jobs: Vec<SagaJob>,
    step: Step,
) -> Result<Vec<SagaJob>, HandlerError> {
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let leases: Vec<Lease> = jobs.iter().map(SagaJob::lease).collect();
    let lease = env.services.lease_seconds();
    let held = env
        .retry_db("renewing leases", || async {
            let mut conn = env.pool.acquire().await?;
            Ok(store::sagas::renew(&mut conn, &leases, step, lease).await?)
        })
        .await?;
    let before = jobs.len();
    let jobs: Vec<SagaJob> = jobs
        .into_iter()
        .filter(|j| {
            let ours = held.contains(&j.saga_id);
            if !ours {
                tracing::info!(saga_id = %j.saga_id, step = step.as_str(), "saga no longer leased to this worker under this epoch; leaving it");
            }
            ours
        })
        .collect();
    env.metrics.saga_fenced(step.as_str(), before - jobs.len());
    Ok(jobs)
}
