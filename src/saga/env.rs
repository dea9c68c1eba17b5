//! What the saga's steps share: the worker's pools, services and seams ([`Env`]), and the
//! room step batches run in ([`Slots`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use backon::Retryable;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::services::Services;
use crate::domain::saga::Step;
use crate::fault::{Backoff, HandlerError};
use crate::metrics::Metrics;
use crate::observe::Hooks;
use crate::outbox::Dispatcher;

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
    /// In-process retries of a step's transaction before the step is given up and its
    /// sagas are given back (see the runner).
    pub db: Backoff,
    /// Room for step batches.
    pub slots: Slots,
}

impl Env {
    /// Retries a transaction of a step at once while its failure is worth it.
    pub async fn retry_db<T, F, Fut>(&self, what: &str, f: F) -> Result<T, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HandlerError>>,
    {
        f.retry(self.db.policy())
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
        f.retry(self.db.within(budget))
            .when(HandlerError::retry_at_once)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "{what} failed; retrying"))
            .await
    }
}

/// Room for step batches: `saga.steps_in_flight` per step, each a [`Slot`]. Cheap to clone.
#[derive(Clone)]
pub struct Slots {
    per_step: Arc<HashMap<Step, Arc<Semaphore>>>,
    /// Rung when a slot frees: the sweeper looks for due sagas at once.
    freed: Arc<Notify>,
}

impl Slots {
    pub fn new(steps_in_flight: usize) -> Slots {
        Slots {
            per_step: Arc::new(
                [Step::Xendit, Step::WelcomeEmail, Step::Complete]
                    .into_iter()
                    .map(|s| (s, Arc::new(Semaphore::new(steps_in_flight.max(1)))))
                    .collect(),
            ),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Room for one batch of `step`, if there is any now (never waits).
    pub fn reserve(&self, step: Step) -> Option<Slot> {
        let permit = self.per_step.get(&step)?.clone().try_acquire_owned().ok()?;
        Some(Slot {
            step,
            _permit: permit,
            freed: Some(self.freed.clone()),
        })
    }

    /// Ends when a slot was freed (since the last call, or from now on).
    pub async fn freed(&self) {
        self.freed.notified().await
    }
}

/// Room for one step batch, held while it runs; freeing it after a batch ran in it wakes the
/// sweeper.
#[derive(Debug)]
pub struct Slot {
    step: Step,
    _permit: OwnedSemaphorePermit,
    /// Rung on drop; `None` once [`Slot::unused`] said nothing ran in it.
    freed: Option<Arc<Notify>>,
}

impl Slot {
    pub fn step(&self) -> Step {
        self.step
    }

    /// Gives the slot back without waking the sweeper: nothing ran in it, so nothing new
    /// could be due because of it (the sweeper's own empty claims would otherwise wake it
    /// again and again).
    pub fn unused(mut self) {
        self.freed = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(freed) = &self.freed {
            freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweeper reserves a slot before it claims; when it finds nothing due, giving the
    /// slot back must not wake it again (it once spun on its own empty claims: 20,000
    /// statements for 2,000 onboardings). A slot a batch ran in does wake it.
    #[tokio::test]
    async fn only_a_slot_a_batch_ran_in_wakes_the_sweeper_when_freed() {
        let slots = Slots::new(1);
        let slot = slots.reserve(Step::WelcomeEmail).expect("room");
        assert!(slots.reserve(Step::WelcomeEmail).is_none(), "one at a time");
        slot.unused();
        let mut woken = std::pin::pin!(slots.freed());
        assert!(futures::poll!(woken.as_mut()).is_pending());
        let slot = slots.reserve(Step::WelcomeEmail).expect("given back");
        drop(slot);
        assert!(futures::poll!(woken.as_mut()).is_ready());
    }
}
