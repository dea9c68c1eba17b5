//! Publishing what a transaction wrote to the outbox as soon as it committed, by the worker
//! that wrote it: no relay round, one `DELETE` of their pending rows to mark the batch
//! published. The rows are this worker's because it claimed them in the statement that
//! inserted them ([`store::outbox::insert`]); a relay takes a row only once that claim ran
//! out (the worker died, or did not get to it in time) or was given back (its publish failed).
//!
//! The claim lasts `outbox.dispatch_grace_ms` from the insert. This worker starts publishing a
//! row only while at least half of it is left, so that a publish the broker confirms in time
//! cannot overlap with a relay's. (A publish that the broker holds up for longer, a connection
//! blocked by a memory alarm, can go out twice: subscribers dedupe on message_id.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use super::relay::publish_rows;
use super::wake::Wake;
use crate::broker::{Names, Publisher};
use crate::messages::OutgoingMessage;
use crate::store::uow::UnitOfWork;
use crate::store::{
    self,
    outbox::{OutboxRow, WriterClaim},
};

/// Publishes freshly committed outbox rows. Cheap to share.
pub struct Dispatcher {
    pool: PgPool,
    publisher: Publisher,
    names: Names,
    /// The claim this worker puts on the rows it writes.
    claim: WriterClaim,
    /// Its relay's: rows that waited for one this dispatcher publishes go out right after it.
    wake: Wake,
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        names: Names,
        worker_id: Uuid,
        claim_for: Duration,
        wake: Wake,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            pool,
            publisher,
            names,
            claim: WriterClaim {
                worker_id,
                seconds: claim_for.as_secs_f64(),
            },
            wake,
        })
    }

    /// A unit of work whose outbox rows this dispatcher publishes after commit.
    pub async fn begin(&self) -> Result<UnitOfWork, sqlx::Error> {
        self.begin_on(&self.pool).await
    }

    /// [`Self::begin`] on a connection of `pool` (a pool of the worker's other than the
    /// dispatcher's own).
    pub async fn begin_on(&self, pool: &PgPool) -> Result<UnitOfWork, sqlx::Error> {
        UnitOfWork::begin(pool, Some(self.claim)).await
    }

    /// Commits `uow` and publishes what it said at once: the end of every unit of work that
    /// says something.
    pub async fn commit(&self, uow: UnitOfWork) -> Result<(), sqlx::Error> {
        let said = uow.commit().await?;
        self.dispatch(said).await;
        Ok(())
    }

    /// Says `messages` in a transaction of their own (an announcement that goes with no other
    /// change), then publishes them.
    pub async fn announce(
        &self,
        messages: impl IntoIterator<Item = OutgoingMessage>,
    ) -> Result<(), sqlx::Error> {
        let mut uow = self.begin().await?;
        uow.say(messages);
        self.commit(uow).await
    }

    /// Publishes `rows` (in order, with confirms) and marks the confirmed ones published.
    /// Never fails: whatever does not get out is left to the relay. Rows written waiting for
    /// an earlier row of their correlation, and rows whose claim has less than half its length
    /// left, are the relay's (see the module docs); the relay is woken for the waiting ones
    /// now and after each of this dispatcher's publishes while their earlier rows may be ours.
    pub async fn dispatch(&self, rows: Vec<OutboxRow>) {
        let margin = Duration::from_secs_f64(self.claim.seconds / 2.0);
        let now = Instant::now();
        let waiting = rows.iter().filter(|r| r.waits).count();
        if waiting > 0 {
            tracing::debug!(
                rows = waiting,
                "outbox rows wait for an earlier row of their correlation; the relay publishes them after it"
            );
            self.wake
                .rows_wait(Duration::from_secs_f64(self.claim.seconds));
        }
        let (rows, late): (Vec<OutboxRow>, Vec<OutboxRow>) = rows
            .into_iter()
            .filter(|r| !r.waits)
            .partition(|r| r.claimed_until.is_some_and(|until| now + margin < until));
        if !late.is_empty() {
            tracing::warn!(
                rows = late.len(),
                "outbox rows committed too long ago to publish here safely; the relay takes them once their claim runs out"
            );
        }
        if rows.is_empty() {
            return;
        }
        let sent = publish_rows(&self.publisher, &self.names, &rows).await;
        if let Some(first) = &sent.first_error {
            tracing::warn!(failed = sent.failed.len(), error = %first, "outbox rows not published now; the relay will");
            let _ = store::outbox::mark_failed(&self.pool, &sent.failed, first).await;
        }
        if sent.published.is_empty() {
            return;
        }
        let marked = async {
            let mut conn = self.pool.acquire().await?;
            store::outbox::mark_published(&mut conn, &sent.published).await
        }
        .await;
        match marked {
            Ok(()) => self.wake.published(),
            Err(e) => {
                // Published but not marked: a relay publishes them again once the claim runs out
                // (subscribers dedupe on message_id).
                tracing::warn!(error = %e, rows = sent.published.len(), "published outbox rows not marked; they may be published twice");
            }
        }
    }
}
