//! The outside world the saga's steps call, built once per worker from the settings.

use std::sync::Arc;
use std::time::Duration;

use crate::configuration::{RetrySettings, SagaSettings, Settings};
use crate::email::{EmailSettings, Mailer};
use crate::xendit::XenditClient;

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
