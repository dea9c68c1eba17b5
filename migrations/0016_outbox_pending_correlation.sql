-- no-transaction
-- Issue 12: events of one correlation go out in the order they were decided. The relay and the
-- dispatcher look for an earlier unpublished row of the same correlation before publishing a
-- row; this index answers that from the pending rows only.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_pending_correlation
    ON outbox (correlation_id, id) WHERE published_at IS NULL;
