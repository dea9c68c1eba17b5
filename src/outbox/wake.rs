//! How a worker's dispatcher wakes its own relay for rows that waited.
//!
//! A row written while an earlier row of its correlation was still unpublished waits for it
//! (subscribers get a correlation's events in order): it is written unclaimed, and only a
//! relay publishes it, once the earlier row is gone. When that earlier row is this worker's
//! own, its dispatcher knows the moment it is published and wakes the relay then, instead of
//! leaving the waiting row to the relay's next poll (`outbox.poll_interval_ms`, a second by
//! default). Rows that wait for another worker's row are still found by the poll (or by a
//! `NOTIFY onboard_outbox`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Shared by a worker's dispatcher and its relay. Cheap to clone.
#[derive(Clone, Default)]
pub struct Wake {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    notify: Notify,
    /// Until when a row this worker wrote may still be waiting for one this worker publishes:
    /// the claim length of the rows written with it (the earlier row is this worker's for at
    /// most that long; after it, it is a relay's).
    waiting_until: Mutex<Option<Instant>>,
}

impl Wake {
    /// Rows were written waiting for earlier ones, which may be this worker's for up to
    /// `claim`: wake the relay now (the earlier row may be gone already) and after each
    /// publish of this worker's until then.
    pub fn rows_wait(&self, claim: Duration) {
        let until = Instant::now() + claim;
        {
            let mut waiting = self.inner.waiting_until.lock().expect("not poisoned");
            if waiting.is_none_or(|w| w < until) {
                *waiting = Some(until);
            }
        }
        self.inner.notify.notify_one();
    }

    /// This worker published (and marked) rows: wakes the relay if a row may be waiting for
    /// one of them. Costs nothing while none waits.
    pub fn published(&self) {
        let now = Instant::now();
        let mut waiting = self.inner.waiting_until.lock().expect("not poisoned");
        match *waiting {
            Some(until) if now < until => self.inner.notify.notify_one(),
            Some(_) => *waiting = None,
            None => {}
        }
    }

    /// Resolves at the next wake (at once if one came since the last call).
    pub async fn notified(&self) {
        self.inner.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publish_wakes_the_relay_only_while_a_row_may_wait() {
        let wake = Wake::default();
        wake.published();
        let idle = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        assert!(idle.is_err(), "nothing waits: no wake");

        wake.rows_wait(Duration::from_secs(60));
        wake.notified().await; // the wake of rows_wait itself
        wake.published();
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("a publish while a row waits wakes the relay");

        let wake = Wake::default();
        wake.rows_wait(Duration::ZERO);
        wake.notified().await;
        std::thread::sleep(Duration::from_millis(2));
        wake.published();
        let after = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        assert!(
            after.is_err(),
            "after the claim ran out the poll takes over"
        );
    }
}
