-- no-transaction
-- client.list by partner: the clients of a set of partners, newest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS clients_direct_partner
    ON clients (direct_partner_id, created DESC, client_id DESC) WHERE direct_partner_id IS NOT NULL;
