-- Webhooks (DESIGN.md, "Relations, imports and webhooks"): endpoints registered by operators,
-- one delivery per (endpoint, event), and every attempt of a delivery. `onboard webhooks
-- serve` fills deliveries from a queue bound to the events exchange and works them off.
CREATE TABLE webhook_endpoints (
    endpoint_id BIGSERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    -- Event types it wants: exact (`instance.created`) or with `*` (`client.*`, `*`).
    patterns TEXT[] NOT NULL,
    -- `whsec_<base64>`: signs every delivery. Never printed or logged.
    secret TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT true,
    disabled_at TIMESTAMPTZ,
    disabled_reason TEXT,
    -- Deliveries given up in a row; reset by a delivered one.
    failed_in_a_row INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    delivery_id BIGSERIAL PRIMARY KEY,
    endpoint_id BIGINT NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    -- The exact body POSTed (and signed), the same on every attempt.
    body TEXT NOT NULL,
    -- pending | delivered | failed
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Attempts made before the last `redeliver`: the budget counts from there.
    attempts_before INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A sender holds the delivery until then; past it, another may take it (its process died).
    leased_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,
    UNIQUE (endpoint_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The endpoint's status, or null when it did not answer.
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
