-- no-transaction
-- Inbox rows older than `inbox.retention_hours` are pruned by age. Built CONCURRENTLY (outside
-- a transaction, hence the directive above) so a large inbox keeps taking commands meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_received ON inbox (received_at);
