-- no-transaction
-- Issue 22: the console's timeline of a client shows the webhook deliveries of its commands'
-- correlations.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_correlation
    ON webhook_deliveries (correlation_id);
