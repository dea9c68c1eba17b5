-- no-transaction
DROP INDEX CONCURRENTLY IF EXISTS clients_email_key;
