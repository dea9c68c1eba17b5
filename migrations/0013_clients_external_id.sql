-- no-transaction
-- external_id is unique among clients that are not deleted.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS clients_external_id_key
    ON clients (external_id) WHERE deleted_at IS NULL AND external_id IS NOT NULL;
