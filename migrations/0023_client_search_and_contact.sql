-- The seeds' remaining client fields and the client.list search (issue 21).
--
-- description (seed 003) and contact (seed 002: {name, email, phone}) as given on client.create.
-- full_name (seed 004's fullName) is derived from the identity, never written: the legal name,
-- or given and family name. search_text is what client.list's `q` matches, lower-cased: alias,
-- legal name (or the person's names), email, client code, external id. A trigram GIN index on
-- it serves `LIKE '%...%'` at any position, so a search stays an index scan at a million
-- clients (docs/operating.md has the plan and the figures).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE clients
    ADD COLUMN description TEXT,
    ADD COLUMN contact     JSONB,
    ADD COLUMN full_name   TEXT GENERATED ALWAYS AS (
        CASE WHEN identity ->> 'type' = 'individual'
             THEN NULLIF(btrim(coalesce(identity ->> 'given_name', '') || ' ' ||
                               coalesce(identity ->> 'family_name', '')), '')
             ELSE coalesce(identity ->> 'legal_name', client_alias)
        END) STORED,
    ADD COLUMN search_text TEXT GENERATED ALWAYS AS (
        lower(client_alias || ' ' ||
              coalesce(identity ->> 'legal_name', '') || ' ' ||
              coalesce(identity ->> 'given_name', '') || ' ' ||
              coalesce(identity ->> 'family_name', '') || ' ' ||
              email || ' ' || client_code || ' ' || coalesce(external_id, ''))) STORED;

CREATE INDEX clients_search ON clients USING gin (search_text gin_trgm_ops);
-- The other sort orders of client.list, with the id breaking ties as for `created`.
CREATE INDEX clients_updated ON clients (updated DESC, client_id DESC);
CREATE INDEX clients_alias ON clients (client_alias, client_id);
