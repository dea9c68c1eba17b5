//! A command on its way through a batch, and how it ended.

use crate::broker::Delivery;

use crate::handlers::Received;
use crate::messages::{Checked, IncomingMessage};
use crate::metrics::InFlight;
use crate::observe::HandlerResult;
use crate::registry::Entry;
use crate::saga::SagaJob;
use crate::store;

/// A command delivery on its way through a batch.
pub struct Item {
    pub delivery: Delivery,
    pub msg: IncomingMessage,
    pub cmd: Received,
    pub entry: &'static Entry,
    /// SHA-256 of the command (type and canonical body): what the inbox compares repeats by.
    pub hash: [u8; 32],
    /// The message's span: every line about it carries its ids.
    pub span: tracing::Span,
    pub in_flight: InFlight,
}

/// The hash the inbox keeps of a command: its type and its body in canonical form (keys
/// sorted, no spaces), so re-serialising the same JSON does not make it another command.
pub fn command_hash(cmd: &Checked) -> [u8; 32] {
    let body = serde_json::to_vec(&cmd.body).expect("JSON values serialise");
    store::inbox::body_hash(cmd.meta.command_type.as_str(), &body)
}

/// How one command of a batch ended.
#[derive(Debug)]
pub(super) enum End {
    Done {
        result: HandlerResult,
        code: Option<&'static str>,
        sagas: Vec<SagaJob>,
    },
    /// Its message id was already handled, for this same command.
    Duplicate,
    /// Its message id was already handled, for another command: refused, nothing changed.
    KeyReused,
    RetryLater(String),
    Failed(String),
}
