//! The create-client saga after step 1 (which is `handlers::client_create`):
//!
//! 2. [`xendit_step`]: BUSINESS and INDIVIDUAL customers at Xendit, for Xendit clients only;
//!    never fails the onboarding.
//! 3. [`email_step`]: the welcome email with the admin's first-access secret; completion (4)
//!    is written in the same transaction that records the email's outcome.
//!
//! Steps do not travel through the broker. When a batch of `client.create` commits, the
//! worker that ran it carries its sagas on at once, in memory ([`runner`]); what comes next
//! is durable in each saga row all the same (step, due time, lease owner, attempts), so a
//! [`runner`] sweeper in every worker takes over sagas that are due: a retry whose time came,
//! or the sagas of a worker that died. Steps run on batches of sagas: one transaction to
//! record many outcomes, the outside calls in parallel.
//!
//! Each step talks to the outside world between transactions; what it learns is committed
//! together with the move to the next step, and only by the worker holding the saga's lease.
//! A re-run finds either the saga already past the step or the same Xendit customers
//! (idempotency keys and references derived from our ids).

pub mod email_step;
pub mod env;
mod job;
pub mod lease;
pub mod runner;
mod services;
mod step;
pub mod xendit_step;

pub use crate::domain::saga::Step;
pub use email_step::{COMPLETED, completion_messages};
pub use env::{Env, Slot, Slots};
pub use job::{ORIGIN_TYPE, SagaJob};
pub use runner::Runner;
pub use services::Services;
