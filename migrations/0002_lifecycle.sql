-- Issue 4: the client lifecycle, eKYC and instances. 0001 is never edited (it may already be
-- applied somewhere); everything issue 4 needs on top of it is here.

-- Every lifecycle move of a client, written in the transaction that made it (the same one as
-- the status update, the inbox row and the event). Refusals change nothing and leave no row.
CREATE TABLE client_status_history (
    id          BIGSERIAL PRIMARY KEY,
    client_id   INTEGER     NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    from_status VARCHAR(20) NOT NULL,
    to_status   VARCHAR(20) NOT NULL,
    -- The command's routing key, e.g. client.approve.
    action      TEXT        NOT NULL,
    -- The operator's reason, when the command gave one.
    reason      TEXT,
    -- What the command carried beyond the reason (e.g. the first transaction's id).
    details     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- The command that caused it: one command moves a client at most once.
    message_id  TEXT        NOT NULL UNIQUE,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- A client's history in order: the id breaks ties between moves of one instant.
CREATE INDEX client_status_history_client ON client_status_history (client_id, id);

-- eKYC outcomes, kept apart from the lifecycle: eKYC and client statuses share spellings
-- (PENDING, APPROVED, REJECTED), and one table per fact keeps "from"/"to" unambiguous.
CREATE TABLE client_ekyc_history (
    id          BIGSERIAL PRIMARY KEY,
    client_id   INTEGER     NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    from_status VARCHAR(20) NOT NULL,
    to_status   VARCHAR(20) NOT NULL,
    -- Admin users whose ekyc_status followed the client's.
    admin_users INTEGER     NOT NULL,
    message_id  TEXT        NOT NULL UNIQUE,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX client_ekyc_history_client ON client_ekyc_history (client_id, id);

-- client.list filters by status, country and type and pages newest first: each filter with
-- the (created DESC, client_id DESC) order, so a filtered page is an index range scan too.
CREATE INDEX clients_status_created ON clients (client_status, created DESC, client_id DESC);
CREATE INDEX clients_country_created ON clients (country_code, created DESC, client_id DESC);
CREATE INDEX clients_type_created ON clients (client_type, created DESC, client_id DESC);
