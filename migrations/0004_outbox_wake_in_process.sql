-- The relays are woken in-process by the handler that committed outbox rows, no longer by a
-- trigger's NOTIFY: PostgreSQL takes one database-wide lock for every committing transaction
-- that notified and holds it across the WAL flush, so with the trigger every command's commit
-- waited for the one before it (no group commit). Measured on 2 cores: a loop of one
-- transaction of four inserts fell from ~2,200 to ~1,500/s with a NOTIFY in each, and the
-- whole saga went from ~170 to ~260 onboardings/s without the trigger (docs/benchmark.md).
-- Relays still LISTEN on onboard_outbox, so a tool that writes the outbox can wake them with
-- NOTIFY; every relay also polls (outbox.poll_interval_ms) for rows another worker wrote.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
