-- Issue 10: the client profile (external id, metadata, identity, address, partner), its
-- version, deactivation and soft delete; the partner tree.
--
-- Safe on a table that already holds millions of clients: every column is added without a
-- rewrite (nullable, or with a constant default, which PostgreSQL 11+ keeps in the catalogue),
-- the foreign key is added NOT VALID (no scan here; 0008 validates it without blocking
-- writes), and the indexes are built CONCURRENTLY by 0009-0013. The ACCESS EXCLUSIVE lock the
-- ALTERs take is held for milliseconds; if it cannot be had within 10 s (a long transaction
-- on clients) the migration fails and is tried again at the next start, instead of queueing
-- every other writer behind it.
SET LOCAL lock_timeout = '10s';

CREATE TABLE partners (
    partner_id        SERIAL PRIMARY KEY,
    name              VARCHAR(255) NOT NULL,
    parent_partner_id INTEGER REFERENCES partners (partner_id),
    -- The root of the partner's tree (itself for a partner without parent): partners are
    -- never moved, so it is fixed at creation.
    root_partner_id   INTEGER NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Names are unique, case-insensitive ("Acme" and "ACME" are one partner).
CREATE UNIQUE INDEX partners_name_key ON partners (lower(name));
CREATE INDEX partners_parent ON partners (parent_partner_id);

ALTER TABLE clients
    -- The upstream system's own id: unique among clients not deleted, immutable once set.
    ADD COLUMN external_id       TEXT,
    -- Free key/value pairs (at most 50, 8 KiB), updated as a JSON merge patch.
    ADD COLUMN metadata          JSONB,
    -- {type: corporate|individual, ...}: normalised, every key present.
    ADD COLUMN identity          JSONB,
    -- Registration (corporate) or residential (individual) address.
    ADD COLUMN address           JSONB,
    ADD COLUMN direct_partner_id INTEGER,
    ADD COLUMN is_active         BOOLEAN NOT NULL DEFAULT true,
    -- +1 on every change of the record by client.update, deactivate, reactivate, delete.
    ADD COLUMN version           INTEGER NOT NULL DEFAULT 0,
    -- Soft delete: a deleted client is hidden and its email and external_id are free again.
    ADD COLUMN deleted_at        TIMESTAMPTZ;
ALTER TABLE clients ADD CONSTRAINT clients_direct_partner_fkey
    FOREIGN KEY (direct_partner_id) REFERENCES partners (partner_id) NOT VALID;

-- The admin users of a deleted client are INACTIVE and deleted with it: their emails are free.
ALTER TABLE users ADD COLUMN deleted_at TIMESTAMPTZ;
