-- The W3C traceparent of the event a delivery carries: sent on every attempt, so a subscriber's
-- trace of the webhook joins the trace of the command that caused the event. Nullable, no
-- default: adding it rewrites nothing.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT;
