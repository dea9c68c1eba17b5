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
mod step;
pub mod xendit_step;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::configuration::{RetrySettings, SagaSettings, Settings};
pub use crate::domain::saga::Step;
use crate::domain::{AdminUser, Client, completion_body};
use crate::email::{EmailSettings, Mailer};
use crate::messages::{CommandMeta, OutgoingMessage};
use crate::xendit::XenditClient;
pub use env::{Env, Slot, Slots};
pub use job::SagaJob;
pub use runner::Runner;

/// The outside world the steps need, built once per worker.
pub struct Services {
    /// `None` when no Xendit key is configured.
    pub xendit: Option<XenditClient>,
    pub mailer: Mailer,
    pub email: EmailSettings,
    pub settings: SagaSettings,
    /// The delays between attempts of a step (the same schedule as the delay queues').
    pub retry: RetrySettings,
}

impl Services {
    /// Needs a Tokio runtime (the SMTP pool starts a task).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Arc<Services>> {
        let xendit = match &settings.xendit {
            Some(x) => Some(XenditClient::new(x)?),
            None => {
                tracing::warn!(
                    "no [xendit] settings: Xendit clients are onboarded without Xendit customers"
                );
                None
            }
        };
        Ok(Arc::new(Services {
            xendit,
            mailer: Mailer::from_settings(&settings.email)?,
            email: settings.email.clone(),
            settings: settings.saga.clone(),
            retry: settings.retry.clone(),
        }))
    }

    /// How long after failed attempt `attempt` (1-based) the step is tried again.
    pub fn delay_after(&self, attempt: i32) -> Duration {
        self.retry.delay_for(attempt.max(1) as u32)
    }

    pub fn lease_seconds(&self) -> f64 {
        self.settings.lease_seconds as f64
    }
}

pub const COMPLETED: &str = "client.onboarding_completed";

/// Completion's messages: `client.onboarding_completed` (the seed's 201 body, with the email
/// outcome and the saga id) and the reply to the original `client.create`, when it asked.
pub fn completion_messages(
    origin: &CommandMeta,
    saga_id: uuid::Uuid,
    client: &Client,
    admin: &AdminUser,
    data: &Value,
) -> Vec<OutgoingMessage> {
    let body = completion_body(client, admin, data);
    let mut event_data = body.clone();
    event_data["saga_id"] = json!(saga_id);
    if let Some(email) = data.get("welcome_email") {
        event_data["welcome_email"] = email.clone();
    }
    let mut out = vec![OutgoingMessage::event(origin, COMPLETED, event_data)];
    out.extend(OutgoingMessage::reply(origin, COMPLETED, 201, body));
    out
}
