//! The create-client saga after step 1 (which is `handlers::client_create`):
//!
//! 2. [`xendit_step`]: BUSINESS and INDIVIDUAL customers at Xendit, for Xendit clients only;
//!    never fails the onboarding.
//! 3. [`email_step`]: the admin's first-access secret (stored as a hash) and the welcome email;
//!    completion (4) is written in the same transaction that records the email's outcome.
//!
//! Each step arrives as a `saga.onboarding.step` command that the previous step wrote to the
//! outbox in the transaction that finished it, so a step is never lost between two workers,
//! and goes through the same inbox, delay queues and dead letters as any command. A step
//! talks to the outside world between transactions; what it learns is committed together
//! with the move to the next step, and a re-run (redelivery, replay) finds either the saga
//! already past the step (and does nothing) or the same Xendit customers (idempotency keys
//! and references derived from our ids).

pub mod complete;
pub mod email_step;
pub mod xendit_step;

use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::configuration::{SagaSettings, Settings};
use crate::domain::{AdminUser, Client};
use crate::email::{EmailSettings, Mailer};
use crate::handlers::{Handled, HandlerError};
use crate::messages::event::derived_id;
use crate::messages::{Command, CommandMeta, CommandType, OutgoingKind, OutgoingMessage};
use crate::store::{self, sagas::Saga, sagas::Step};
use crate::xendit::XenditClient;

/// The outside world the steps need, built once per worker.
pub struct Services {
    /// `None` when no Xendit key is configured.
    pub xendit: Option<XenditClient>,
    pub mailer: Mailer,
    pub email: EmailSettings,
    pub settings: SagaSettings,
    /// The delay-queue budget of any command; a step gives up gracefully before it.
    pub max_delayed_attempts: u32,
    /// Test seam (see `worker::Hooks::after_xendit_answered`).
    #[allow(clippy::type_complexity)]
    pub(crate) after_xendit_answered:
        Option<std::sync::Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>>,
}

impl Services {
    /// Needs a Tokio runtime (the SMTP pool starts a task).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Services> {
        let xendit = match &settings.xendit {
            Some(x) => Some(XenditClient::new(x)?),
            None => {
                tracing::warn!(
                    "no [xendit] settings: Xendit clients are onboarded without Xendit customers"
                );
                None
            }
        };
        Ok(Services {
            xendit,
            mailer: Mailer::from_settings(&settings.email)?,
            email: settings.email.clone(),
            settings: settings.saga.clone(),
            max_delayed_attempts: settings.retry.max_attempts,
            after_xendit_answered: None,
        })
    }

    #[allow(clippy::type_complexity)]
    pub fn with_hook(
        mut self,
        hook: Option<
            std::sync::Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
        >,
    ) -> Services {
        self.after_xendit_answered = hook;
        self
    }
}

#[derive(Deserialize)]
struct StepBody {
    saga_id: Uuid,
    step: String,
}

/// The `saga.onboarding.step` command that carries a saga to `step`, deterministic per
/// (saga, step) so the inbox recognises a second copy.
pub fn step_message(
    saga_id: Uuid,
    step: Step,
    correlation_id: &str,
    traceparent: Option<&str>,
) -> OutgoingMessage {
    let mut headers = serde_json::Map::new();
    if let Some(tp) = traceparent {
        headers.insert("traceparent".into(), json!(tp));
    }
    OutgoingMessage {
        message_id: derived_id(&saga_id.to_string(), step.as_str()),
        kind: OutgoingKind::Command,
        routing_key: CommandType::OnboardingStep.as_str().to_string(),
        message_type: CommandType::OnboardingStep.as_str().to_string(),
        correlation_id: Some(correlation_id.to_string()),
        headers,
        payload: json!({ "saga_id": saga_id, "step": step.as_str() }),
    }
}

/// The `client.create` command that started a saga, as the steps' events and the final reply
/// refer to it: same causation, correlation and reply_to.
pub fn origin(saga: &Saga, traceparent: Option<&str>) -> CommandMeta {
    CommandMeta {
        command_type: CommandType::ClientCreate,
        message_id: saga.message_id.clone(),
        correlation_id: saga.correlation_id.clone(),
        reply_to: saga.reply_to.clone(),
        traceparent: traceparent.map(str::to_string),
        attempt: 0,
    }
}

/// Runs one step command.
pub async fn run(
    pool: &PgPool,
    services: &Services,
    cmd: &Command,
) -> Result<Handled, HandlerError> {
    let body: StepBody = serde_json::from_value(cmd.body.clone())
        .map_err(|e| HandlerError::Other(format!("step body: {e}")))?;
    let step = Step::parse(&body.step)
        .ok_or_else(|| HandlerError::Other(format!("unknown step {:?}", body.step)))?;
    let Some(saga) = store::sagas::get(pool, body.saga_id).await? else {
        return Err(HandlerError::Other(format!(
            "saga {} does not exist",
            body.saga_id
        )));
    };
    if saga.step != step.as_str() {
        // Already past this step: a redelivered or replayed copy.
        tracing::info!(saga_id = %saga.saga_id, at = %saga.step, requested = step.as_str(), "saga already moved on");
        return Ok(Handled::Duplicate);
    }
    let (client, admin) = load(pool, &saga).await?;
    match step {
        Step::Xendit => xendit_step::run(pool, services, cmd, &saga, &client, &admin).await,
        Step::WelcomeEmail => email_step::run(pool, services, cmd, &saga, &client, &admin).await,
        Step::Complete => complete::run(pool, cmd, &saga).await,
        Step::Done => Ok(Handled::Duplicate),
    }
}

async fn load(pool: &PgPool, saga: &Saga) -> Result<(Client, AdminUser), HandlerError> {
    let mut conn = pool.acquire().await?;
    let client = store::clients::get_client(&mut conn, saga.client_id)
        .await?
        .ok_or_else(|| {
            HandlerError::Other(format!(
                "client {} of saga {} is gone",
                saga.client_id, saga.saga_id
            ))
        })?;
    let admin = store::clients::get_admin_user(&mut conn, saga.admin_user_id)
        .await?
        .ok_or_else(|| {
            HandlerError::Other(format!(
                "admin user {} of saga {} is gone",
                saga.admin_user_id, saga.saga_id
            ))
        })?;
    Ok((client, admin))
}

/// Opens the step's final transaction with the saga locked; `None` when another delivery
/// moved it past `step` meanwhile (nothing to do).
async fn lock_at(
    pool: &PgPool,
    saga_id: Uuid,
    step: Step,
) -> Result<Option<(store::Tx, Saga)>, HandlerError> {
    let mut tx = pool.begin().await?;
    match store::sagas::lock(&mut tx, saga_id).await? {
        Some(saga) if saga.step == step.as_str() => Ok(Some((tx, saga))),
        _ => {
            tx.rollback().await?;
            Ok(None)
        }
    }
}
