//! Publishing what a transaction wrote to the outbox as soon as it committed, by the worker
//! that wrote it: no relay round, no claim, one `UPDATE` to mark the batch published. A row
//! that does not get out here (the worker dies, the broker refuses) stays pending, and a
//! relay takes it once it is older than `outbox.dispatch_grace_ms`.

use std::sync::Arc;

use sqlx::PgPool;

use super::relay::publish_rows;
use crate::broker::{Names, Publisher};
use crate::store::{self, outbox::OutboxRow};

/// Publishes freshly committed outbox rows. Cheap to share.
pub struct Dispatcher {
    pool: PgPool,
    publisher: Publisher,
    names: Names,
}

impl Dispatcher {
    pub fn new(pool: PgPool, publisher: Publisher, names: Names) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            pool,
            publisher,
            names,
        })
    }

    /// Publishes `rows` (in order, with confirms) and marks the confirmed ones published.
    /// Never fails: whatever does not get out is left to the relay. Rows of a correlation
    /// with an earlier row still unpublished (its dispatch failed) are left to the relay too,
    /// which publishes a correlation's rows in order (see [`OutboxRow::waits`]).
    pub async fn dispatch(&self, rows: Vec<OutboxRow>) {
        let rows: Vec<OutboxRow> = rows.into_iter().filter(|r| !r.waits).collect();
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
        if let Err(e) = marked {
            // Published but not marked: the relay publishes them again later (subscribers
            // dedupe on message_id).
            tracing::warn!(error = %e, rows = sent.published.len(), "published outbox rows not marked; they may be published twice");
        }
    }
}
