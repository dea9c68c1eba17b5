//! `onboard`: onboards business clients of a payments platform from RabbitMQ commands, as a
//! durable saga over PostgreSQL with events published through a transactional outbox.
//!
//! # Layout (follow a message)
//!
//! - [`broker`]: connect (automatic recovery), declare the topology, publish with confirms.
//! - [`worker`]: consume with bounded concurrency; per delivery, [`worker::pipeline`] parses,
//!   runs the handler, and acks, or [`worker::failure`] sends it to a delay queue or the
//!   dead-letter queue. Queries skip the transaction: [`worker::query`] answers them
//!   straight to `reply_to`.
//! - [`messages`]: the contract: command parsing and schema checks, event and reply envelopes,
//!   the error table.
//! - [`handlers`]: one file per command; each decides inside one transaction.
//! - [`saga`]: the create-client saga's later steps (Xendit customers, welcome email,
//!   completion), each its own resumable command.
//! - [`domain`]: business rules as plain functions (client code, PSP choice, lifecycle).
//! - [`store`]: all SQL (inbox, outbox, clients, sagas) and the embedded migrations.
//! - [`outbox`]: the relay that publishes what handlers wrote, after commit.
//! - [`xendit`], [`email`]: the outside world of the saga's later steps.
//! - [`http`], [`metrics`], [`telemetry`], [`configuration`]: operating it.
//! - [`ops`]: operator tools behind the CLI (publishing commands, the dead-letter queue).

pub mod broker;
pub mod configuration;
pub mod domain;
pub mod email;
pub mod handlers;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod saga;
pub mod store;
pub mod telemetry;
pub mod worker;
pub mod xendit;
