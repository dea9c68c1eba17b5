//! What the saga's steps share: the worker's pools, services and seams ([`Env`]), and the
//! room step batches run in ([`Slots`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Rung when a slot frees while sagas may be waiting for one: the sweeper looks for due
    /// sagas at once.
    freed: Arc<Notify>,
    /// Someone found no room since the sweeper was last woken (a batch left its new sagas due
    /// for any worker, or the sweeper could not take a step's due ones): the next freed slot
    /// wakes the sweeper. Otherwise nothing was left due for want of room, and a freed slot
    /// wakes nobody; sagas due for other reasons (a retry's time came, a worker died) are the
    /// sweeper's periodic round's. At a steady load that never fills the slots, this spares a
    /// claim per step after every step batch (three empty statements per batch).
    wanted: Arc<AtomicBool>,
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
            wanted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Room for one batch of `step`, if there is any now (never waits).
    pub fn reserve(&self, step: Step) -> Option<Slot> {
        let Ok(permit) = self.per_step.get(&step)?.clone().try_acquire_owned() else {
            self.wanted.store(true, Ordering::SeqCst);
            return None;
        };
        Some(Slot {
            step,
            _permit: permit,
            freed: Some((self.freed.clone(), self.wanted.clone())),
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
    /// Rung on drop when room was wanted meanwhile; `None` once [`Slot::unused`] said
    /// nothing ran in it.
    freed: Option<(Arc<Notify>, Arc<AtomicBool>)>,
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
        if let Some((freed, wanted)) = &self.freed
            && wanted.swap(false, Ordering::SeqCst)
        {
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
        // Room was wanted while it was taken (the second reserve above found none).
        drop(slot);
        assert!(futures::poll!(woken.as_mut()).is_ready());
    }

    /// A slot a batch ran in wakes the sweeper only when someone found no room meanwhile:
    /// otherwise nothing was left due for want of one (at a steady load that never fills the
    /// slots, every step batch used to cost three empty claims).
    #[tokio::test]
    async fn a_freed_slot_wakes_the_sweeper_only_when_room_was_wanted() {
        let slots = Slots::new(2);
        let first = slots.reserve(Step::WelcomeEmail).expect("room");
        drop(first);
        let mut woken = std::pin::pin!(slots.freed());
        assert!(
            futures::poll!(woken.as_mut()).is_pending(),
            "nobody wanted room"
        );

        let a = slots.reserve(Step::Xendit).expect("room");
        let b = slots.reserve(Step::Xendit).expect("room");
        assert!(slots.reserve(Step::Xendit).is_none(), "full");
        drop(a);
        assert!(futures::poll!(woken.as_mut()).is_ready(), "room was wanted");
        // Once woken, the next freed slot wakes nobody unless room is wanted again.
        let mut again = std::pin::pin!(slots.freed());
        drop(b);
        assert!(futures::poll!(again.as_mut()).is_pending());
    }
}
