-- The tables of the original REST service (seed: Client API), kept column for column where
-- upstream readers depend on them, plus what a durable, message-driven saga needs:
-- an inbox (idempotency by message_id), an outbox (events and replies published after commit),
-- the saga state and a per-month counter for race-free client codes.

CREATE TABLE psp_providers (
    psp_id        SERIAL PRIMARY KEY,
    psp_name      VARCHAR(50)  NOT NULL,
    country_code  VARCHAR(3)   NOT NULL,
    api_endpoint  VARCHAR(255),
    currency_code VARCHAR(10),
    psp_type      VARCHAR(20),
    priority      INTEGER      DEFAULT 0,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX psp_providers_country ON psp_providers (country_code, priority, created_at);

-- The six PSPs of DESIGN.md, with the ids upstream clients already know.
INSERT INTO psp_providers (psp_id, psp_name, country_code, currency_code, psp_type, priority) VALUES
    (2,  'PSP_Singapore', 'SG', 'SGD', 'FIAT_PSP', 1),
    (3,  'PSP_India',     'IN', 'INR', 'FIAT_PSP', 1),
    (4,  'PSP_USA',       'US', 'USD', 'FIAT_PSP', 1),
    (6,  'PSP_Australia', 'AU', 'AUD', 'FIAT_PSP', 1),
    (10, 'PSP_Vietnam',   'VN', 'VND', 'FIAT_PSP', 1),
    (11, 'XENDIT',        'ID', 'IDR', 'FIAT_PSP', 1);
SELECT setval(pg_get_serial_sequence('psp_providers', 'psp_id'), 100);

CREATE TABLE clients (
    client_id     SERIAL PRIMARY KEY,
    client_code   VARCHAR(20)  NOT NULL UNIQUE,
    email         VARCHAR(255) NOT NULL,
    client_alias  VARCHAR(255) NOT NULL,
    client_type   VARCHAR(50)  NOT NULL,
    client_status VARCHAR(20)  NOT NULL DEFAULT 'PENDING',
    ekyc_status   VARCHAR(20)  NOT NULL DEFAULT 'PENDING',
    country_code  VARCHAR(3)   NOT NULL,
    psp_id        INTEGER REFERENCES psp_providers (psp_id),
    phone         VARCHAR(20)  NOT NULL,
    created       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated       TIMESTAMPTZ  NOT NULL DEFAULT now()
);
-- Email uniqueness is the index's job, not a SELECT's: two racing commands cannot both win.
-- Case-insensitive, because Admin@x.com and admin@x.com are one mailbox.
CREATE UNIQUE INDEX clients_email_key ON clients (lower(email));
-- Listing is newest first (seed: Get All Clients); the id breaks ties so paging is stable.
CREATE INDEX clients_created ON clients (created DESC, client_id DESC);

CREATE TABLE users (
    user_id                 SERIAL PRIMARY KEY,
    client_id               INTEGER      NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    username                VARCHAR(255) NOT NULL,
    email                   VARCHAR(255) NOT NULL,
    phone                   VARCHAR(20)  NOT NULL,
    role                    VARCHAR(20)  NOT NULL DEFAULT 'admin',
    user_status             VARCHAR(20)  NOT NULL DEFAULT 'ACTIVE',
    ekyc_status             VARCHAR(20)  NOT NULL DEFAULT 'PENDING',
    -- First access: only hashes are ever stored (the welcome-email step fills these).
    password_hash           TEXT,
    must_change_password    BOOLEAN      NOT NULL DEFAULT false,
    activation_token_sha256 TEXT,
    activation_expires_at   TIMESTAMPTZ,
    created_at              TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_client ON users (client_id);

CREATE TABLE instances (
    instance_id     SERIAL PRIMARY KEY,
    client_id       INTEGER      NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    instance_name   VARCHAR(255) NOT NULL,
    client_alias    VARCHAR(255),
    instance_status VARCHAR(20)  DEFAULT 'ACTIVE',
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);
-- "unique within client" (seed: Create Instance).
CREATE UNIQUE INDEX instances_client_name_key ON instances (client_id, instance_name);

CREATE TABLE client_email_logs (
    id         SERIAL PRIMARY KEY,
    client_id  INTEGER      NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    email      VARCHAR(255) NOT NULL,
    subject    VARCHAR(255) NOT NULL,
    status     VARCHAR(20)  NOT NULL,
    attempt    INTEGER      NOT NULL DEFAULT 1,
    error      TEXT,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX client_email_logs_client ON client_email_logs (client_id);

CREATE TYPE customer_type_enum AS ENUM ('BUSINESS', 'INDIVIDUAL');

CREATE TABLE xendit_customers (
    id                 SERIAL PRIMARY KEY,
    user_id            INTEGER REFERENCES users (user_id) ON DELETE CASCADE,
    client_id          INTEGER REFERENCES clients (client_id) ON DELETE CASCADE,
    xendit_customer_id VARCHAR(255) UNIQUE NOT NULL,
    -- Our own reference, sent to Xendit: a retry finds the same customer instead of a second one.
    reference_id       VARCHAR(255) UNIQUE NOT NULL,
    customer_type      customer_type_enum NOT NULL,
    status             VARCHAR(50)  DEFAULT 'ACTIVE',
    created_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE TABLE xendit_accounts (
    id                 SERIAL PRIMARY KEY,
    xendit_customer_id VARCHAR(255) REFERENCES xendit_customers (xendit_customer_id),
    account_type       VARCHAR(50),
    account_id         VARCHAR(255),
    currency           VARCHAR(10)   DEFAULT 'IDR',
    balance            NUMERIC(18,2) DEFAULT 0,
    status             VARCHAR(50)   DEFAULT 'ACTIVE',
    created_at         TIMESTAMPTZ   NOT NULL DEFAULT now()
);

-- Client codes CL-YYYYMM-NNNN come from this row, locked by the upsert that bumps it, and
-- rolled back with the transaction that took it: gap-free and race-free, never MAX()+1.
CREATE TABLE client_code_counters (
    year_month CHAR(6) PRIMARY KEY,
    last_value INTEGER NOT NULL
);

-- One row per command message_id ever handled: a redelivered or republished command is
-- recognised here, in the same transaction as its effects.
CREATE TABLE inbox (
    message_id     TEXT PRIMARY KEY,
    command_type   TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    -- succeeded | refused | rejected
    outcome        TEXT        NOT NULL,
    outcome_code   TEXT,
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Everything the worker says to the outside world, written in the transaction that decided it
-- and published afterwards by the relay (publisher confirms; marked only after the confirm).
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    -- The AMQP message_id subscribers dedupe on; deterministic for a given cause.
    message_id     UUID        NOT NULL UNIQUE,
    -- event: to the events exchange, routing key = event type
    -- reply: to the default exchange, routing key = the command's reply_to queue
    -- command: to the commands exchange (saga steps), routing key = command type
    kind           TEXT        NOT NULL CHECK (kind IN ('event', 'reply', 'command')),
    routing_key    TEXT        NOT NULL,
    message_type   TEXT        NOT NULL,
    correlation_id TEXT,
    headers        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    payload        JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at   TIMESTAMPTZ,
    attempts       INTEGER     NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wakes the relays (LISTEN onboard_outbox) when a transaction that wrote rows commits.
-- Statement-level, and PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('onboard_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The create-client saga: where each onboarding stands, queryable by operators.
CREATE TABLE onboarding_sagas (
    saga_id        UUID PRIMARY KEY,
    client_id      INTEGER     NOT NULL UNIQUE REFERENCES clients (client_id) ON DELETE CASCADE,
    admin_user_id  INTEGER     NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- The client.create command that started it, and where its answer goes.
    message_id     TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    reply_to       TEXT,
    -- xendit | welcome_email | complete | done
    step           TEXT        NOT NULL,
    -- waiting | completed
    status         TEXT        NOT NULL,
    attempts       INTEGER     NOT NULL DEFAULT 0,
    last_error     TEXT,
    -- What the steps learnt (the Xendit integration result, the email outcome).
    data           JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- A step with a side effect that must not run twice at once (the email) holds this lease.
    lease_until    TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at   TIMESTAMPTZ
);
CREATE INDEX onboarding_sagas_open ON onboarding_sagas (step, updated_at) WHERE status <> 'completed';
