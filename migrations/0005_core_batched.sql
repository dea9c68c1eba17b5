-- Issue 9: the inbox comes first and remembers what it saw; sagas continue in the worker that
-- created them, with a lease and a due time instead of a step command on the queue.
--
-- Every change here is cheap on a database that already holds data: columns are added without
-- defaults (no table rewrite), and the one UPDATE touches only sagas that are still open.

-- The inbox claims a message_id before any effect, with a hash of the command (type and
-- canonical body): a repeat with the same hash is a duplicate, with another hash a reused key.
-- Rows written before this migration have no hash; a repeat of one is taken as a duplicate.
ALTER TABLE inbox ADD COLUMN body_sha256 BYTEA;

-- Where each onboarding stands, and who is running it:
-- - due_at: when the sweeper may take the saga. A waiting saga is due when its next attempt
--   is; a leased saga is due when its lease runs out (so a crashed owner's sagas come due).
-- - lease_owner: the worker running it now (see `workers`); NULL while it waits.
-- - traceparent: the trace of the client.create that started it, for the later steps.
ALTER TABLE onboarding_sagas
    ADD COLUMN due_at      TIMESTAMPTZ,
    ADD COLUMN lease_owner UUID,
    ADD COLUMN traceparent TEXT;
UPDATE onboarding_sagas SET due_at = now(), lease_until = NULL
WHERE status <> 'completed';
DROP INDEX IF EXISTS onboarding_sagas_open;
CREATE INDEX onboarding_sagas_due ON onboarding_sagas (due_at) WHERE status <> 'completed';

-- The workers alive now: each one upserts its row every second or so. A saga leased by a
-- worker whose row went stale is taken over by the others' sweepers without waiting for the
-- lease to run out; a worker that stops cleanly deletes its row and gives its leases back.
CREATE TABLE workers (
    worker_id  UUID PRIMARY KEY,
    host       TEXT,
    pid        INTEGER,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
