//! One file per command. Each command is one implementation of [`Command`]: its routing key,
//! its schema, where its refusals are announced, its typed body (schema-checked, then read
//! once at the edge), the client it changes, and how it is decided: one at a time
//! ([`DecideOne`]) or a slice at once with a few multi-row statements ([`DecideMany`],
//! `client.create`). Queries are [`Query`] implementations. The registry
//! (registry.rs, above the handlers) lists the implementations; everything it knows about a type (its
//! name, its schema, dispatch) is read from them.
//!
//! A handler decides inside the transaction of the batch its commands arrived in, in a
//! savepoint the unit of work gives it (`worker::batch`): the worker claimed their inbox rows
//! before and writes the outbox and commits after. A command that one-at-a-time decides to
//! refuse, to retry later or that fails leaves nothing behind: its savepoint is rolled back,
//! and its neighbours commit.

/// `impl Command` for a command about one existing client (its body has `client_id`): the
/// client is its target, locked with the batch's others before any command decides.
macro_rules! client_command {
    ($name:ident, $type:literal, $refusal_event:expr) => {
        impl $crate::handlers::Command for $name {
            const TYPE: $crate::messages::CommandType = $crate::messages::CommandType::new($type);
            const SCHEMA: &'static str = $crate::schema!($type);
            const REFUSAL_EVENT: &'static str = $refusal_event;

            fn target(&self) -> $crate::handlers::Target {
                $crate::handlers::Target::Client(self.client_id)
            }
        }
    };
}

pub mod body;
pub mod client_create;
pub mod client_import;
pub mod client_state;
pub mod client_update;
mod handler;
pub mod instances;
pub mod kyc;
pub mod lifecycle;
pub mod partners;
pub mod queries;
pub mod relations;

pub use crate::fault::HandlerError;
pub use handler::{
    Answer, Body, Cmd, Command, Cx, DecideMany, DecideOne, Decision, Outcome, Query, Received,
    RunMany, RunOne, RunQuery, Target, refusal_messages,
};
