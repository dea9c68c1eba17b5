-- Issue 24: publishing an event no longer rewrites its outbox row.
--
-- Until now a row was pending while `outbox.published_at` was NULL, and publishing it set the
-- column: an UPDATE that wrote a whole new version of the row (about 1.5 KB of JSON) and four
-- new index entries, since `published_at` was in three of its indexes. Now the pending set is a
-- narrow table of its own: the statement that writes an outbox row writes its `outbox_pending`
-- row too, and publishing deletes that row. `outbox` is append-only (pruned by age, the rows
-- no longer pending). A row is published when it has no pending row.
--
-- Workers of an earlier version read and write `outbox.published_at` and the claim columns in
-- every statement they run on the outbox; the columns go, so such a worker fails every one of
-- them (its commands are retried, then dead-lettered, none lost) instead of publishing rows
-- this version also publishes, and one started later refuses to start (it does not know this
-- migration). Stop them before running it (docs/operating.md, Migrations).
DROP INDEX IF EXISTS outbox_pending;
DROP INDEX IF EXISTS outbox_pending_correlation;
DROP INDEX IF EXISTS outbox_published;

-- id is outbox.id. No foreign key: the key check would lock the outbox row in every insert;
-- both rows are written by one statement (store::outbox::insert) and only a published row's
-- outbox row is ever pruned.
CREATE TABLE outbox_pending (
    id             BIGINT      PRIMARY KEY,
    -- outbox.correlation_id, copied: a row waits for the earlier pending rows of its
    -- correlation (issue 12), found by this table's index alone.
    correlation_id TEXT,
    -- The writer's claim (issue 20, migration 0022): who publishes the row until when.
    claimed_until  TIMESTAMPTZ,
    claimed_by     UUID,
    -- Failed publishes, and the last one's error (operators).
    attempts       INTEGER     NOT NULL DEFAULT 0,
    last_error     TEXT
);

INSERT INTO outbox_pending (id, correlation_id, claimed_until, claimed_by, attempts, last_error)
SELECT id, correlation_id, claimed_until, claimed_by, attempts, last_error
FROM outbox
WHERE published_at IS NULL;

CREATE INDEX outbox_pending_correlation ON outbox_pending (correlation_id, id);

ALTER TABLE outbox
    DROP COLUMN published_at,
    DROP COLUMN claimed_until,
    DROP COLUMN claimed_by,
    DROP COLUMN attempts,
    DROP COLUMN last_error;
