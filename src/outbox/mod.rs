//! The outbox relay: publishes what handlers wrote to the outbox, after their commit.

pub mod relay;
