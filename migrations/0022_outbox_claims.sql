-- One publisher per outbox row (issue 20).
--
-- claimed_until: the row is being published by whoever claimed it until then. The worker that
-- writes a row claims it in the very statement that inserts it (the last one before COMMIT, so
-- the claim is measured from about the commit, never from the transaction's start): it
-- publishes the row right after its commit. A relay takes only rows with no claim or an
-- expired one (a publisher that died), and holds them with its row locks while it publishes.
-- claimed_by names the worker (for operators).
--
-- Rows written before this migration have no claim: the relays take them.
ALTER TABLE outbox
    ADD COLUMN claimed_until TIMESTAMPTZ,
    ADD COLUMN claimed_by    UUID;
