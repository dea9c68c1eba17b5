-- Issue 24: an outbox payload is written once, published as it was written and read by
-- PostgreSQL only for the console's timeline (`#>>`, which json has too). As json it is
-- checked and stored as the text it is; as jsonb each insert also built its binary form
-- (14 µs against 5-8 µs a row of about 1 kB here, three rows per onboarding) and each relay
-- read printed it back. The rewrite is of the outbox as it is: published rows are pruned.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
