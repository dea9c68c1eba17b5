//! Carries sagas on inside the worker: step batches that run at once when there is room,
//! a sweeper that takes due sagas from the database when there is room, and a heartbeat that
//! tells the other workers this one is alive.
//!
//! ```text
//! client.create batch commits ──> Runner::start (the batch reserved a slot) ──┐
//! sweeper: a free slot, then due sagas of that step (SKIP LOCKED) ────────────┼──> step batch
//!          dead workers' sagas given back                                     │  (its slot)
//! step batch done ─> next step in a slot of its own, or given back (due now) <┘
//! ```
//!
//! Under a steady load the `client.create` batches are small, and every step batch costs its
//! statements whatever its size. The sagas of a batch smaller than a full one are gathered
//! for `saga.step_linger_ms` with those of the next batches, under the first one's slot (the
//! others' slots are given back), and run as one step batch: when the linger ends, or at once
//! when the gathering reaches a full batch. A full batch's sagas run at once.
//!
//! Room is counted in slots: `saga.steps_in_flight` step batches per step. A slot is taken
//! before any saga is leased for it (a `client.create` batch reserves one before it inserts
//! sagas leased to this worker; the sweeper takes one before it claims), so nothing leased
//! here ever waits for room while its lease runs out, and the work in flight is bounded by
//! configuration. A saga for which there was no room is left due in the database, for this
//! worker's sweeper (woken when a slot frees) or another's.
//!
//! Nothing here decides correctness from memory: a job is only a hint to run a saga this
//! worker holds the lease of, and every write names the lease's epoch. If the worker dies,
//! the lease runs out (or its heartbeat goes stale, which is sooner) and another worker's
//! sweeper takes the saga from its row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::env::{Env, Slot, Slots};
use super::job::SagaJob;
use super::{email_step, xendit_step};
use crate::domain::saga::Step;
use crate::observe;
use crate::store::{self, sagas::Lease};

/// Starts step batches of sagas this worker holds. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    env: Arc<Env>,
    /// Sagas waiting for the next batches' before their first step runs, by step, with the
    /// slot they will run in.
    gathering: Arc<Mutex<HashMap<Step, Gathered>>>,
    /// Every step batch runs in this set, so [`Tasks::abort`] ends them all (a crash).
    batches: Arc<Mutex<JoinSet<()>>>,
    /// Set once the worker stops taking sagas: what is handed over then is left to the
    /// sweepers (its leases are given back at stop).
    stopping: CancellationToken,
}

impl Runner {
    /// Runs the first step of sagas a `client.create` batch started, leased to this worker
    /// under the slots that batch reserved (each job carries its step's slot), now or, when
    /// the batch was not full, with the next batches' (see the module docs). Never waits.
    /// A job without a slot was started unleased (there was no room): a sweeper takes it.
    pub fn start(&self, jobs: Vec<SagaJob>) {
        let mut by_step: HashMap<Step, (Arc<Slot>, Vec<SagaJob>)> = HashMap::new();
        for mut job in jobs {
            let Some(slot) = job.slot.take() else {
                continue;
            };
            by_step
                .entry(job.step)
                .or_insert_with(|| (slot, Vec::new()))
                .1
                .push(job);
        }
        for (step, (slot, jobs)) in by_step {
            self.gather(step, slot, jobs);
        }
    }

    /// Adds a batch's sagas of `step` to what is gathered for it (giving their slot back when
    /// another batch's holds the gathering), and starts the gathered step batch once it is
    /// full; the first batch of a gathering starts the timer that runs it at the latest.
    fn gather(&self, step: Step, slot: Arc<Slot>, jobs: Vec<SagaJob>) {
        let full = self.env.batch_size.max(1);
        let linger = Duration::from_millis(self.env.services.settings.step_linger_ms);
        if linger.is_zero() || jobs.len() >= full {
            self.spawn(slot, jobs);
            return;
        }
        let mut gathering = self.gathering.lock().expect("not poisoned");
        if let Some(gathered) = gathering.get_mut(&step) {
            gathered.jobs.extend(jobs);
            // One slot for the one step batch: this batch's is given back.
            drop(slot);
            if gathered.jobs.len() >= full {
                let gathered = gathering.remove(&step).expect("just found");
                drop(gathering);
                self.spawn(gathered.slot, gathered.jobs);
            }
            return;
        }
        // The timer knows its gathering by its slot, held weakly: the slot is given back when
        // its step batch ends, not when the timer fires.
        let mine = Arc::downgrade(&slot);
        gathering.insert(step, Gathered { slot, jobs });
        drop(gathering);
        let runner = self.clone();
        self.batches
            .lock()
            .expect("not poisoned")
            .spawn(async move {
                tokio::time::sleep(linger).await;
                runner.run_gathered(step, &mine);
            });
    }

    /// Runs what is gathered for `step`, if it is still the gathering the timer was started
    /// for (a full one already ran, and a later one has its own timer).
    fn run_gathered(&self, step: Step, mine: &Weak<Slot>) {
        let taken = {
            let mut gathering = self.gathering.lock().expect("not poisoned");
            match gathering.get(&step) {
                Some(g) if std::ptr::eq(Arc::as_ptr(&g.slot), mine.as_ptr()) => {
                    gathering.remove(&step)
                }
                _ => None,
            }
        };
        if let Some(gathered) = taken {
            self.spawn(gathered.slot, gathered.jobs);
        }
    }

    fn spawn(&self, slot: Arc<Slot>, jobs: Vec<SagaJob>) {
        if self.stopping.is_cancelled() {
            // Stopping: the leases are given back with the others at stop.
            return;
        }
        let env = self.env.clone();
        let mut batches = self.batches.lock().expect("not poisoned");
        // The batches that ended are reaped here, so the set holds only those running.
        while batches.try_join_next().is_some() {}
        batches.spawn(async move { run_step(&env, slot, jobs).await });
    }

    /// The room the handlers reserve slots from.
    pub fn slots(&self) -> &Slots {
        &self.env.slots
    }
}

/// Sagas gathered for one step batch, in the slot it will run in.
struct Gathered {
    slot: Arc<Slot>,
    jobs: Vec<SagaJob>,
}

/// The runner's tasks.
pub struct Tasks {
    sweeper: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    sweep_stop: CancellationToken,
    heartbeat_stop: CancellationToken,
    runner: Runner,
}

/// Starts the sweeper and the heartbeat; the [`Runner`] starts step batches.
pub fn start(env: Arc<Env>) -> (Runner, Tasks) {
    let runner = Runner {
        env: env.clone(),
        gathering: Arc::new(Mutex::new(HashMap::new())),
        batches: Arc::new(Mutex::new(JoinSet::new())),
        stopping: CancellationToken::new(),
    };
    let sweep_stop = CancellationToken::new();
    let heartbeat_stop = CancellationToken::new();
    let sweeper = tokio::spawn(sweep(runner.clone(), sweep_stop.clone()));
    let heartbeat = tokio::spawn(heartbeat(env, heartbeat_stop.clone()));
    (
        runner.clone(),
        Tasks {
            sweeper,
            heartbeat,
            sweep_stop,
            heartbeat_stop,
            runner,
        },
    )
}

impl Tasks {
    /// Stops taking sagas, finishes (within `bound`) the step batches running, then gives
    /// back every lease this worker still holds and says it is gone, so the other workers
    /// take its sagas at once.
    pub async fn stop(self, bound: Duration) {
        self.sweep_stop.cancel();
        let _ = self.sweeper.await;
        self.runner.stopping.cancel();
        let mut batches = std::mem::take(&mut *self.runner.batches.lock().expect("not poisoned"));
        let all = async { while batches.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!(
                ?bound,
                "saga steps still running at shutdown; their sagas are given back"
            );
            batches.shutdown().await;
        }
        // Alive until the steps are done, so nobody takes their sagas meanwhile.
        self.heartbeat_stop.cancel();
        let _ = self.heartbeat.await;
        let env = &self.runner.env;
        let me = [env.worker_id];
        match store::sagas::release_leases(&env.pool, &me).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sagas = n, "gave back the leases of unfinished sagas"),
            Err(e) => {
                tracing::warn!(error = %e, "could not give back leases; they run out by themselves")
            }
        }
        let _ = store::workers::forget(&env.pool, &me).await;
    }

    /// Stops abruptly, as a crash would (tests).
    pub fn abort(&self) {
        self.runner.stopping.cancel();
        self.runner
            .batches
            .lock()
            .expect("not poisoned")
            .abort_all();
        self.sweeper.abort();
        self.heartbeat.abort();
    }
}

/// Runs the step its slot is for on a batch of sagas, then the steps after it for those that
/// moved on, each in a slot of its own (the step records the move with the lease kept only
/// when it got one; otherwise it gives the lease back and the saga is due now).
///
/// A step that fails (the database went away before it could record anything, after its
/// in-process retries) gives its leases back, due a little later; when even that cannot be
/// written the leases run out by themselves and a sweeper takes the sagas then. Steps are
/// written so that a re-run before their record is safe: Xendit answers a repeated request
/// with the same customer, and the email step claims its sends before it makes them.
async fn run_step(env: &Env, slot: Arc<Slot>, jobs: Vec<SagaJob>) {
    let mut slot = slot;
    let mut jobs = jobs;
    loop {
        let step = slot.step();
        observe::at(&env.hooks.before_step, step).await;
        for job in jobs.iter_mut() {
            job.enter_step(step);
        }
        let started = Instant::now();
        let count = jobs.len();
        env.metrics.batch_sizes(Some(step.as_str()), count);
        let leases: Vec<Lease> = jobs.iter().map(SagaJob::lease).collect();
        let next = match step {
            Step::Xendit => xendit_step::run(env, jobs).await,
            Step::WelcomeEmail => email_step::run(env, jobs).await,
            Step::Complete => email_step::complete_only(env, jobs).await,
            Step::Done => Ok((Vec::new(), None)),
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
            Ok((next, Some(next_slot))) if !next.is_empty() => {
                // This step's slot frees as the next one is taken.
                slot = Arc::new(next_slot);
                jobs = next;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, step = step.as_str(), sagas = count, "saga step failed; its sagas are given back and tried again shortly");
                give_back(env, &leases, AGAIN_AFTER).await;
                return;
            }
        }
    }
}

/// How long a failed step waits before it is tried again.
const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Gives leases back, due after `delay` (best effort: otherwise they run out).
pub(super) async fn give_back(env: &Env, leases: &[Lease], delay: Duration) {
    if let Err(e) = store::sagas::release(&env.pool, leases, delay.as_secs_f64()).await {
        tracing::warn!(error = %e, sagas = leases.len(), "leases not given back; they run out by themselves");
    }
}

/// Takes due sagas from the database whenever a step has room: retries whose time came, sagas
/// given back, sagas whose owner died.
async fn sweep(runner: Runner, stop: CancellationToken) {
    let env = runner.env.clone();
    let settings = &env.services.settings;
    let mut tick = tokio::time::interval(Duration::from_millis(settings.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease = Duration::from_secs(settings.lease_seconds);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                take_back_from_dead_workers(&env).await;
            }
            _ = env.slots.freed() => {}
        }
        for step in [Step::Xendit, Step::WelcomeEmail, Step::Complete] {
            // The slot first, then the claim: nothing is leased that cannot run now.
            while let Some(slot) = env.slots.reserve(step) {
                match store::sagas::claim_due(
                    &env.pool,
                    env.worker_id,
                    step,
                    lease.as_secs_f64(),
                    env.batch_size as i64,
                )
                .await
                {
                    Ok(due) if !due.is_empty() => {
                        tracing::info!(
                            sagas = due.len(),
                            step = step.as_str(),
                            "sweeper took due sagas"
                        );
                        let full = due.len() == env.batch_size;
                        let jobs = due.into_iter().map(SagaJob::from_row).collect();
                        runner.spawn(Arc::new(slot), jobs);
                        if !full {
                            break;
                        }
                    }
                    Ok(_) => {
                        slot.unused();
                        break;
                    }
                    Err(e) => {
                        slot.unused();
                        tracing::debug!(error = %e, "sweeper: could not take due sagas");
                        break;
                    }
                }
            }
        }
    }
}

/// Workers that stopped saying they are alive: their sagas go back to everyone.
async fn take_back_from_dead_workers(env: &Env) {
    let settings = &env.services.settings;
    match store::workers::stale(&env.pool, settings.worker_stale_seconds as f64).await {
        Ok(mut dead) => {
            dead.retain(|w| *w != env.worker_id);
            if dead.is_empty() {
                return;
            }
            match store::sagas::release_leases(&env.pool, &dead).await {
                Ok(n) => {
                    tracing::warn!(
                        workers = dead.len(),
                        sagas = n,
                        "took back the sagas of workers that stopped answering"
                    );
                    let _ = store::workers::forget(&env.pool, &dead).await;
                }
                Err(e) => tracing::warn!(error = %e, "could not take back dead workers' sagas"),
            }
        }
        Err(e) => tracing::debug!(error = %e, "sweeper: database not answering"),
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
