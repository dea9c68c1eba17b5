-- no-transaction
-- Email uniqueness among clients that are not deleted (a deleted client's email is free for a
-- new one). Built CONCURRENTLY: writes go on; 0010 then drops the index it replaces.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS clients_email_live_key
    ON clients (lower(email)) WHERE deleted_at IS NULL;
