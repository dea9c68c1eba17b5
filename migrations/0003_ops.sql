-- Operator actions on the dead-letter queue, one row per `onboard dlq replay|purge` run:
-- who did what to which messages, selected how, and how far it got. The row is written
-- before the first message moves and completed afterwards, so a run that was killed
-- half-way shows up as started and never finished.
CREATE TABLE dlq_audit (
    id           BIGSERIAL PRIMARY KEY,
    -- replay | purge
    action       TEXT        NOT NULL CHECK (action IN ('replay', 'purge')),
    -- --actor, else the OS user running the tool
    actor        TEXT        NOT NULL,
    host         TEXT,
    -- free text the operator gave (--note), e.g. the ticket or the fix deployed
    note         TEXT,
    queue        TEXT        NOT NULL,
    -- the selectors as given: ids, group fingerprint, type, reason, ages, all
    selector     JSONB       NOT NULL,
    -- the messages selected: [{message_id, type, fingerprint, reason}]
    messages     JSONB       NOT NULL,
    selected     INTEGER     NOT NULL,
    -- message ids actually replayed (confirmed, then acked) or purged
    done_ids     TEXT[]      NOT NULL DEFAULT '{}',
    done         INTEGER     NOT NULL DEFAULT 0,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    -- completed | partial | failed; NULL while running or when the run was killed
    outcome      TEXT,
    error        TEXT
);
CREATE INDEX dlq_audit_started ON dlq_audit (started_at DESC);
