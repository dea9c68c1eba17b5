//! Carries sagas on inside the worker: a dispatcher that runs the steps on batches of sagas,
//! a sweeper that takes due sagas from the database, and a heartbeat that tells the other
//! workers this one is alive.
//!
//! ```text
//! client.create batch commits ──> Runner::carry_on ──┐
//! sweeper: due sagas (SKIP LOCKED), dead owners' ────┼──> dispatcher ──> step batches
//!          sagas given back                          │     (xendit ─> welcome email, in one task)
//! ```
//!
//! Nothing here decides correctness from memory: a job is only a hint to run a saga this
//! worker holds the lease of. If the worker dies, the lease runs out (or its heartbeat goes
//! stale, which is sooner) and another worker's sweeper takes the saga from its row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{SagaJob, Services, Step, email_step, xendit_step};
use crate::fault::HandlerError;
use crate::metrics::Metrics;
use crate::observe::{self, Hooks};
use crate::outbox::Dispatcher;
use crate::store;

/// What the steps share.
pub struct Env {
    pub pool: PgPool,
    /// The deployment's secret key: each saga's first-access secret is derived from it.
    pub key: crate::key::DeploymentKey,
    pub services: Arc<Services>,
    /// This worker: the owner named on its leases.
    pub worker_id: Uuid,
    pub hooks: Hooks,
    /// Publishes what a step's transaction wrote to the outbox, once it committed.
    pub outbox: Arc<Dispatcher>,
    pub metrics: Metrics,
    /// Sagas per step batch.
    pub batch_size: usize,
    /// Step batches running at once.
    pub steps_in_flight: usize,
    /// In-process attempts of a step's transaction before the step is given up and tried
    /// again later (see [`run_step`]).
    pub db_attempts: usize,
    /// This worker's own runner, for steps to be tried again later.
    pub runner: Runner,
}

impl Env {
    /// Retries a transaction of a step at once while its failure is worth it.
    pub async fn retry_db<T, F, Fut>(&self, what: &str, f: F) -> Result<T, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HandlerError>>,
    {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.db_attempts.saturating_sub(1))
            .with_jitter();
        f.retry(policy)
            .when(HandlerError::retry_at_once)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "{what} failed; retrying"))
            .await
    }

    /// Retries a transaction while its failure is worth it, until `deadline` (e.g. before the
    /// leases it writes under run out): for outcomes that must not be produced twice, like
    /// the record of emails already sent.
    pub async fn retry_db_until<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        f: F,
    ) -> Result<T, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HandlerError>>,
    {
        let budget = deadline.saturating_duration_since(Instant::now());
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(usize::MAX)
            .with_total_delay(Some(budget))
            .with_jitter();
        f.retry(policy)
            .when(HandlerError::retry_at_once)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "{what} failed; retrying"))
            .await
    }
}

/// Hands sagas to this worker's dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    jobs: mpsc::Sender<SagaJob>,
}

impl Runner {
    /// Runs the next step of each saga as soon as the dispatcher can. Waits while it is
    /// busy (back-pressure on whoever produces them). If the runner has stopped, the sagas
    /// stay leased in the database, and a sweeper takes them once the lease is given back or
    /// runs out.
    pub async fn carry_on(&self, jobs: impl IntoIterator<Item = SagaJob>) {
        for job in jobs {
            if self.jobs.send(job).await.is_err() {
                tracing::debug!("saga runner stopped; the sweeper will take the saga");
            }
        }
    }
}

/// The runner's tasks.
pub struct Tasks {
    dispatcher: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    sweep_stop: CancellationToken,
    dispatch_stop: CancellationToken,
    heartbeat_stop: CancellationToken,
    env: Arc<Env>,
}

/// The runner's channel: a [`Runner`] to give to whoever makes sagas (and to the [`Env`]),
/// and the receiving end for [`start`].
pub fn channel(batch_size: usize) -> (Runner, mpsc::Receiver<SagaJob>) {
    let (tx, rx) = mpsc::channel(batch_size.max(1) * 4);
    (Runner { jobs: tx }, rx)
}

/// Starts the dispatcher, the sweeper and the heartbeat.
pub fn start(env: Arc<Env>, rx: mpsc::Receiver<SagaJob>) -> (Runner, Tasks) {
    let runner = env.runner.clone();
    let sweep_stop = CancellationToken::new();
    let dispatch_stop = CancellationToken::new();
    let heartbeat_stop = CancellationToken::new();
    let dispatcher = tokio::spawn(dispatch(env.clone(), rx, dispatch_stop.clone()));
    let sweeper = tokio::spawn(sweep(env.clone(), runner.clone(), sweep_stop.clone()));
    let heartbeat = tokio::spawn(heartbeat(env.clone(), heartbeat_stop.clone()));
    (
        runner,
        Tasks {
            dispatcher,
            sweeper,
            heartbeat,
            sweep_stop,
            dispatch_stop,
            heartbeat_stop,
            env,
        },
    )
}

impl Tasks {
    /// Stops taking sagas, finishes (within `bound`) the ones handed over already, then
    /// gives back every lease this worker still holds and says it is gone, so the other
    /// workers take its sagas at once.
    pub async fn stop(self, bound: Duration) {
        self.sweep_stop.cancel();
        let _ = self.sweeper.await;
        self.dispatch_stop.cancel();
        if tokio::time::timeout(bound, self.dispatcher).await.is_err() {
            tracing::warn!(
                ?bound,
                "saga steps still running at shutdown; their sagas are given back"
            );
        }
        // Alive until the steps are done, so nobody takes their sagas meanwhile.
        self.heartbeat_stop.cancel();
        let _ = self.heartbeat.await;
        let me = [self.env.worker_id];
        match store::sagas::release_leases(&self.env.pool, &me).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sagas = n, "gave back the leases of unfinished sagas"),
            Err(e) => {
                tracing::warn!(error = %e, "could not give back leases; they run out by themselves")
            }
        }
        let _ = store::workers::forget(&self.env.pool, &me).await;
    }

    /// Stops abruptly, as a crash would (tests).
    pub fn abort(&self) {
        self.dispatcher.abort();
        self.sweeper.abort();
        self.heartbeat.abort();
    }
}

/// How long the dispatcher waits for more sagas to join a batch.
const LINGER: Duration = Duration::from_millis(2);

async fn dispatch(env: Arc<Env>, mut rx: mpsc::Receiver<SagaJob>, stop: CancellationToken) {
    // Each step has its own batches in flight: a Xendit that hangs holds Xendit steps only,
    // and the welcome emails of other sagas go on. (A batch carried on to its next step keeps
    // the permit it started with.)
    let permits: HashMap<Step, Arc<Semaphore>> = Step::ALL
        .into_iter()
        .map(|s| (s, Arc::new(Semaphore::new(env.steps_in_flight.max(1)))))
        .collect();
    // The step batches run in this set, so aborting the dispatcher aborts them (a crash).
    let mut steps: JoinSet<()> = JoinSet::new();
    let mut stopping = false;
    loop {
        while steps.try_join_next().is_some() {}
        let first = if stopping {
            rx.recv().await
        } else {
            tokio::select! {
                job = rx.recv() => job,
                _ = stop.cancelled() => {
                    // Take nothing new; finish what was handed over already.
                    stopping = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < env.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            }
        }
        let mut by_step: HashMap<Step, Vec<SagaJob>> = HashMap::new();
        for job in batch {
            by_step.entry(job.step).or_default().push(job);
        }
        for (step, jobs) in by_step {
            // Waiting for a permit happens in the step's own task, so one step kind with
            // every permit taken does not stop this loop from handing out the others.
            let permit = permits[&step].clone();
            let env = env.clone();
            steps.spawn(async move {
                let Ok(_permit) = permit.acquire_owned().await else {
                    return;
                };
                run_step(&env, step, jobs).await;
            });
        }
    }
    // Wait for the steps still running.
    while steps.join_next().await.is_some() {}
}

/// Runs `step` on a batch of sagas, then the steps after it for those that moved on.
///
/// A step that fails (the database went away before it could record anything, after its
/// in-process retries) runs again here a little later, for as long as this worker holds the
/// leases; after that a sweeper takes the sagas. Steps are written so that a re-run before
/// their record is safe: Xendit answers a repeated request with the same customer, and the
/// email step records what it sent rather than send again (see its module docs).
async fn run_step(env: &Env, step: Step, jobs: Vec<SagaJob>) {
    let mut step = step;
    let mut jobs = jobs;
    while !jobs.is_empty() {
        observe::at(&env.hooks.before_step, step).await;
        for job in jobs.iter_mut() {
            job.enter_step(step);
        }
        let started = Instant::now();
        let count = jobs.len();
        let again = jobs.clone();
        let next = match step {
            Step::Xendit => xendit_step::run(env, jobs).await,
            Step::WelcomeEmail => email_step::run(env, jobs).await,
            Step::Complete => email_step::complete_only(env, jobs).await,
            Step::Done => Ok(Vec::new()),
        };
        let outcome = if next.is_ok() { "ran" } else { "failed" };
        env.metrics
            .observe_saga_step(step.as_str(), outcome, started.elapsed());
        tracing::debug!(
            step = step.as_str(),
            sagas = count,
            took_ms = started.elapsed().as_millis() as u64,
            "step batch done"
        );
        match next {
            Ok(next) => jobs = next,
            Err(e) => {
                tracing::error!(error = %e, step = step.as_str(), sagas = count, "saga step failed; trying again shortly");
                try_again_later(env, again);
                return;
            }
        }
        step = step.next();
    }
}

/// How long a failed step waits before it runs again in this worker.
const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Hands the sagas back to the dispatcher after [`AGAIN_AFTER`], those whose lease still has
/// time left; the others are left to the sweepers.
fn try_again_later(env: &Env, jobs: Vec<SagaJob>) {
    let runner = env.runner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(AGAIN_AFTER).await;
        let margin = Instant::now() + AGAIN_AFTER * 5;
        runner
            .carry_on(jobs.into_iter().filter(|j| j.leased_until > margin))
            .await;
    });
}

/// Takes due sagas from the database: retries whose time came, and sagas whose owner died.
async fn sweep(env: Arc<Env>, runner: Runner, stop: CancellationToken) {
    let settings = &env.services.settings;
    let mut tick = tokio::time::interval(Duration::from_millis(settings.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease = Duration::from_secs(settings.lease_seconds);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Workers that stopped saying they are alive: give their sagas back to everyone.
        match store::workers::stale(&env.pool, settings.worker_stale_seconds as f64).await {
            Ok(mut dead) => {
                dead.retain(|w| *w != env.worker_id);
                if !dead.is_empty() {
                    match store::sagas::release_leases(&env.pool, &dead).await {
                        Ok(n) => {
                            tracing::warn!(
                                workers = dead.len(),
                                sagas = n,
                                "took back the sagas of workers that stopped answering"
                            );
                            let _ = store::workers::forget(&env.pool, &dead).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not take back dead workers' sagas")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "sweeper: database not answering"),
        }
        // Only as many as the dispatcher can start on before their leases mean anything.
        let room = runner.jobs.capacity().min(env.batch_size);
        if room == 0 {
            continue;
        }
        match store::sagas::claim_due(&env.pool, env.worker_id, lease.as_secs_f64(), room as i64)
            .await
        {
            Ok(due) if !due.is_empty() => {
                tracing::info!(sagas = due.len(), "sweeper took due sagas");
                runner
                    .carry_on(due.into_iter().map(|s| SagaJob::from_row(s, lease)))
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "sweeper: could not take due sagas"),
        }
    }
}

/// Says this worker is alive, every `saga.heartbeat_ms`.
async fn heartbeat(env: Arc<Env>, stop: CancellationToken) {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "?".into());
    let every = Duration::from_millis(env.services.settings.heartbeat_ms.max(10));
    loop {
        if let Err(e) = store::workers::heartbeat(&env.pool, env.worker_id, &host).await {
            tracing::debug!(error = %e, "heartbeat not recorded");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
