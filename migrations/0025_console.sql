-- The operator console (issue 22): its users, their sessions, and failed logins (for the
-- limit of 5 a minute per user name or address).
CREATE TABLE console_users (
    user_id       BIGSERIAL PRIMARY KEY,
    name          TEXT        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    role          TEXT        NOT NULL CHECK (role IN ('viewer', 'operator')),
    -- argon2id, PHC string
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A session is known by the SHA-256 of its cookie's token: the token itself is never stored.
-- Each has its own CSRF token, which every changing form carries.
CREATE TABLE console_sessions (
    token_hash BYTEA       PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES console_users (user_id) ON DELETE CASCADE,
    csrf_token TEXT        NOT NULL,
    address    TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

CREATE TABLE console_login_failures (
    id      BIGSERIAL   PRIMARY KEY,
    name    TEXT        NOT NULL,
    address TEXT        NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX console_login_failures_name ON console_login_failures (name, at);
CREATE INDEX console_login_failures_address ON console_login_failures (address, at);
