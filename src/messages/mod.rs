//! The message contract: what a command looks like when it arrives, the checks it passes
//! before any handler sees it, and the envelope of every event and reply we send.
//!
//! Nothing here touches the broker or the database, so the whole parsing path can be unit
//! tested and fuzzed.

pub mod command;
pub mod event;
pub mod names;
pub mod schema;

pub use crate::domain::Refusal;
pub use command::{Checked, CommandMeta, CommandType, IncomingMessage, Rejection, parse};
pub use event::{EventEnvelope, OutgoingKind, OutgoingMessage, Payload};
pub use schema::Schemas;
