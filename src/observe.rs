//! What observers of a worker see, and the seams through which tests watch or freeze it.
//!
//! A leaf module: the worker reports here, and the metrics and the tests listen here,
//! so neither needs the worker's internals (and the worker does not need them).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::domain::saga::Step;
use crate::messages::CommandMeta;

/// How a delivery ended in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Effects committed (or a refusal recorded), then acked.
    Handled,
    /// Already processed (inbox), acked without effect.
    Duplicate,
    /// Copied to a delay queue, then acked.
    RetryScheduled,
    /// Copied to the dead-letter queue, then acked.
    DeadLettered,
    /// Handed back to the broker unacked (it could not be copied anywhere).
    Requeued,
    /// Its end was committed (or its copy confirmed), but the ack did not reach the broker: the
    /// broker redelivers it, and the inbox recognises it.
    Unacked,
}

impl Disposition {
    /// How a delivery ended once its ack was tried: `self` when the ack went out, else
    /// [`Disposition::Unacked`].
    pub fn if_acked(self, acked: bool) -> Disposition {
        if acked { self } else { Disposition::Unacked }
    }
}

/// A delivery's end, as observers see it.
#[derive(Debug, Clone)]
pub struct Settled {
    pub message_id: Option<String>,
    pub routing_key: String,
    pub disposition: Disposition,
}

/// How a command's handler ended, for the latency histogram's `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerResult {
    Succeeded,
    Refused,
    Duplicate,
    /// Sent to a delay queue (a transient failure, or a client not there yet).
    RetryLater,
    /// Dead-lettered with `command.failed`: it can never succeed as sent.
    Failed,
}

impl HandlerResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerResult::Succeeded => "succeeded",
            HandlerResult::Refused => "refused",
            HandlerResult::Duplicate => "duplicate",
            HandlerResult::RetryLater => "retry_later",
            HandlerResult::Failed => "failed",
        }
    }
}

/// A test seam that may freeze the worker where it runs (a future that never ends holds it
/// there until the worker is killed).
pub type Seam<T> = Arc<dyn Fn(T) -> BoxFuture<'static, ()> + Send + Sync>;

/// Test seams: code run at chosen points of a command's or a saga's life, to freeze or crash
/// a worker exactly there (like crates.io's worker tests), or to watch deliveries end.
/// Production leaves them empty. The worker passes them to the parts that run them, the way
/// mini-redis passes its shutdown signal in.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs once per command after its batch's transaction committed and before its ack.
    pub after_commit: Option<Seam<CommandMeta>>,
    /// Runs inside a batch's transaction, after its effects and before its commit, with the
    /// number of commands in the batch.
    pub before_batch_commit: Option<Seam<usize>>,
    /// Runs inside a batch's transaction before a command decided on its own is decided
    /// (after the batch locked the clients it changes).
    pub before_command: Option<Seam<CommandMeta>>,
    /// Called once per delivery when it is settled.
    pub on_settled: Option<Arc<dyn Fn(Settled) + Send + Sync>>,
    /// Runs when a batch of sagas is about to run `step` (after the previous step committed).
    pub before_step: Option<Seam<Step>>,
    /// Runs in the Xendit step after Xendit answered and before the answer is stored.
    pub after_xendit_answered: Option<Seam<()>>,
    /// Runs in the email step once a batch's sends are claimed, before any is made (with the
    /// number of sends claimed).
    pub after_send_claim: Option<Seam<usize>>,
}

impl Hooks {
    pub fn settled(&self, message_id: Option<&str>, routing_key: &str, disposition: Disposition) {
        if let Some(f) = &self.on_settled {
            f(Settled {
                message_id: message_id.map(str::to_string),
                routing_key: routing_key.to_string(),
                disposition,
            });
        }
    }
}

/// Runs a seam if it is set.
pub async fn at<T>(seam: &Option<Seam<T>>, value: T) {
    if let Some(f) = seam {
        f(value).await;
    }
}
