-- Operator actions other than dead-letter moves (those have dlq_audit): who did what, from
-- where, through which door (console or CLI), on what (issue 22).
CREATE TABLE operator_actions (
    id       BIGSERIAL   PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor    TEXT        NOT NULL,
    -- console | cli
    source   TEXT        NOT NULL CHECK (source IN ('console', 'cli')),
    address  TEXT,
    -- e.g. webhook_endpoint.enable, webhook_endpoint.disable, webhook_delivery.redeliver, saga.retry
    action   TEXT        NOT NULL,
    -- what it was done to, e.g. {"endpoint_id": 3} or {"client_id": 42}
    subject  JSONB       NOT NULL,
    -- whether it found its subject
    done     BOOLEAN     NOT NULL
);
CREATE INDEX operator_actions_at ON operator_actions (at DESC);
