-- Fenced saga leases and claimed welcome-email sends (issue 20).
--
-- lease_epoch: a fencing token. Every change of who holds a saga (a start leased to a worker,
-- a sweeper's claim, a lease given back or taken from a dead worker, a retry postponed) bumps
-- it, and every write of a running step names the epoch it was claimed under: a copy of a step
-- whose lease ran out and was claimed again writes nothing, however long it waited.
--
-- send_claim_epoch / send_claimed_at: the welcome email's send, claimed in the database under
-- the lease's epoch before the email goes out (renewed while it is being sent). A second copy
-- of the step sees a live claim and does not send; a claim goes with its owner when that
-- worker is found dead, or runs out a lease's length after its last renewal.
--
-- NOT NULL DEFAULT 0 is a constant default: no table rewrite (PostgreSQL 11+).
ALTER TABLE onboarding_sagas
    ADD COLUMN lease_epoch      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN send_claim_epoch BIGINT,
    ADD COLUMN send_claimed_at  TIMESTAMPTZ;
