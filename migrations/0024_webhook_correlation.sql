-- The webhook body is seed 004's container (issue 21), whose `metadata` stays empty: the
-- event's correlation id travels in the `onboard-correlation-id` header instead, so each
-- delivery keeps it beside the body.
ALTER TABLE webhook_deliveries ADD COLUMN correlation_id TEXT;
