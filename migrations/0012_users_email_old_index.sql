-- no-transaction
DROP INDEX CONCURRENTLY IF EXISTS users_email_key;
