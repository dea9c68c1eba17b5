-- no-transaction
-- The same for users: the admins of a deleted client no longer hold their emails.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_live_key
    ON users (lower(email)) WHERE deleted_at IS NULL;
