-- no-transaction
-- Issue 22: the console's timeline of a client shows the events published in its commands'
-- correlations. `outbox_pending_correlation` (0016) holds pending rows only and stays for the
-- relay (an import's thousands of rows in one correlation would make a full index's probe
-- for "an earlier pending row" read them all); this one holds every row. It costs each
-- insert and each publish one index entry (measured in docs/benchmark.md).
-- One statement per file: CREATE INDEX CONCURRENTLY cannot share a transaction block.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_correlation ON outbox (correlation_id);
