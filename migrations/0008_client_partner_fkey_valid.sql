-- no-transaction
-- Checks the existing clients against the partner key 0007 added NOT VALID: a scan under a
-- SHARE UPDATE EXCLUSIVE lock, which lets reads and writes go on meanwhile.
ALTER TABLE clients VALIDATE CONSTRAINT clients_direct_partner_fkey;
