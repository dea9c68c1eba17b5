//! `onboard`: onboards business clients of a payments platform from RabbitMQ commands, as a
//! durable saga over PostgreSQL with events published through a transactional outbox.
//!
//! # Layout (follow a message)
//!
//! Arrows run one way, from a message's arrival down to [`store`] and [`domain`]: no two
//! modules import each other, directly or around a circle. A parent module only declares and
//! re-exports its children, which import each other and never their parent. A unit test holds
//! the tree to both, and every file to 600 lines (`src/layout.rs`).
//!
//! - [`broker`]: connect (automatic recovery), declare the topology, publish with confirms.
//! - [`worker`]: consume; [`worker::pipeline`] checks each delivery; commands gather into
//!   batches that [`worker::batch`] runs as one unit of work ([`store::uow`]) and acks after
//!   commit, or [`worker::failure`] sends them to a delay queue or the dead-letter queue (and
//!   announces `command.failed`). Queries skip the transaction: [`worker::query`] answers them
//!   straight to `reply_to`.
//! - [`registry`]: command type → schema, kind (command or query), handler.
//! - [`messages`]: the contract: command parsing and schema checks, event and reply envelopes.
//! - [`handlers`]: one file per command (`handlers/handler.rs`: what a handler is); each
//!   decides inside its batch's transaction.
//! - [`saga`]: the create-client saga's later steps (Xendit customers, welcome email,
//!   completion), carried on in the worker that created the client, swept up by any worker
//!   when due.
//! - [`fault`]: the one failure policy (transient or permanent).
//! - [`key`]: the deployment's secret key in PostgreSQL, for the HMACs workers agree on.
//! - [`observe`]: what observers see (how deliveries ended) and the test seams.
//! - [`domain`]: business rules as plain functions (client code, PSP choice, lifecycle) and
//!   the contract's refusals, codes and texts ([`domain::refusal`]).
//! - [`store`]: all SQL (inbox, outbox, clients, sagas, workers, the ceiling's tables), the
//!   embedded migrations, and the unit of work of commands and saga steps ([`store::uow`]:
//!   inbox first, effects, outbox, commit); no transaction is begun outside it.
//! - [`outbox`]: publishing what a unit of work wrote: at once by the worker that committed it
//!   ([`outbox::dispatch`]), else by any worker's relay ([`outbox::relay`]).
//! - [`xendit`], [`email`]: the outside world of the saga's later steps; [`sources`]: the
//!   systems `client.import` reads records from.
//! - [`http`], [`metrics`], [`telemetry`], [`configuration`]: operating it.
//! - [`ops`]: operator tools behind the CLI (publishing commands, the dead-letter queue), and
//!   the lab's load generator and ceiling, which only `onboard-lab` calls; [`console`]: the
//!   operators' web console; [`webhooks`]: endpoints, deliveries and the delivering process.
//! - [`process`]: how both binaries run a command (settings, telemetry, SIGTERM/SIGINT):
//!   `onboard`, and `onboard-lab` with the fakes and benchmarks (`src/bin/onboard-lab.rs`).

pub mod broker;
pub mod configuration;
pub mod console;
pub mod domain;
pub mod email;
pub mod fault;
pub mod handlers;
pub mod http;
pub mod key;
pub mod messages;
pub mod metrics;
pub mod observe;
pub mod ops;
pub mod outbox;
pub mod process;
pub mod registry;
pub mod saga;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
pub mod xendit;

#[cfg(test)]
mod layout;
