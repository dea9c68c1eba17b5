//! Keeping the leases of a step batch while its outside calls run.
//!
//! A step batch's Xendit calls or welcome emails can take longer than a lease (a slow
//! Xendit, an SMTP server taking a second per message). While they run, a [`Keeper`] renews
//! the batch's leases (and the send claims made under them) every third of a lease, so a
//! lease setting that is longer than any single outside call is always safe. A saga whose
//! renewal finds it held by someone else is marked lost: calls not yet started for it are
//! not made, and its step's record, conditioned on the epoch, would change nothing anyway.
//!
//! The keeper stops before the step records its outcome: the record's transaction and a
//! renewal never update the same rows at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::Env;
use crate::domain::saga::Step;
use crate::store::{self, sagas::Lease};

/// Renews a step batch's leases in the background until stopped.
pub struct Keeper {
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct State {
    lost: HashSet<Uuid>,
    /// When the last renewal that reached the database started (or the keeper did).
    renewed_at: Instant,
}

impl Keeper {
    /// Starts renewing `leases` (held at `step`) every third of the lease.
    pub fn start(env: &Env, step: Step, leases: Vec<Lease>) -> Keeper {
        let state = Arc::new(Mutex::new(State {
            lost: HashSet::new(),
            renewed_at: Instant::now(),
        }));
        let stop = CancellationToken::new();
        let lease_seconds = env.services.lease_seconds();
        let every = Duration::from_secs_f64((lease_seconds / 3.0).max(0.05));
        let pool = env.pool.clone();
        let task = tokio::spawn({
            let state = state.clone();
            let stop = stop.clone();
            async move {
                let mut held: Vec<Lease> = leases;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                    let started = Instant::now();
                    let renewed = async {
                        let mut conn = pool.acquire().await?;
                        store::sagas::renew(&mut conn, &held, step, lease_seconds).await
                    }
                    .await;
                    match renewed {
                        Ok(still) => {
                            let still: HashSet<Uuid> = still.into_iter().collect();
                            let mut state = state.lock().expect("not poisoned");
                            for lease in held.iter().filter(|l| !still.contains(&l.saga_id)) {
                                tracing::warn!(saga_id = %lease.saga_id, "saga lease lost while its step ran; its remaining calls are not made");
                                state.lost.insert(lease.saga_id);
                            }
                            state.renewed_at = started;
                            drop(state);
                            held.retain(|l| still.contains(&l.saga_id));
                        }
                        // Tried again at the next tick; the lease has two more thirds.
                        Err(e) => tracing::warn!(error = %e, "saga leases not renewed"),
                    }
                }
            }
        });
        Keeper { state, stop, task }
    }

    /// Whether this worker still holds `saga_id` as far as the last renewal knows.
    pub fn holds(&self, saga_id: Uuid) -> bool {
        !self
            .state
            .lock()
            .expect("not poisoned")
            .lost
            .contains(&saga_id)
    }

    /// Stops renewing. Returns the sagas found lost, and when the leases were last renewed
    /// (they run until a lease's length after that).
    pub async fn stop(self) -> (HashSet<Uuid>, Instant) {
        self.stop.cancel();
        let _ = self.task.await;
        let state = self.state.lock().expect("not poisoned");
        (state.lost.clone(), state.renewed_at)
    }
}
