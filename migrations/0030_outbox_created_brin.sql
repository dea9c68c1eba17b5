-- no-transaction
-- Issue 24: the relay prunes published outbox rows by age (`created_at`), no longer by the
-- `published_at` that migration 0029 removed. Rows are appended in `created_at` order, so a
-- BRIN index finds the old pages at almost no cost per insert (a btree would add an entry to
-- every one). One statement per file: CREATE INDEX CONCURRENTLY cannot share a transaction.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_created ON outbox USING brin (created_at);
