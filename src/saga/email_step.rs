//! Step 3 (and 4): the admin's first-access secret and the welcome email, then completion.
//!
//! The secret is made here and only its hash is stored, before sending, so the secret in any
//! email that goes out works. Sending is guarded by a lease on the saga row, so two copies of
//! this step never mail at once. Each attempt's outcome is logged in `client_email_logs`;
//! transient SMTP failures go back through the delay queues until the step's budget is spent,
//! then FAILED is final, `client.welcome_email_failed` says why, and the saga completes anyway.

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;

use super::{Services, complete, lock_at, origin};
use crate::domain::{AdminUser, Client};
use crate::email::{AccessMode, FirstAccess, WelcomeEmail};
use crate::handlers::{self, Handled, HandlerError, Outcome};
use crate::messages::{Command, OutgoingMessage};
use crate::store::{self, email_logs::EmailLog, sagas::Saga, sagas::Step};

pub const SENT: &str = "client.welcome_email_sent";
pub const FAILED: &str = "client.welcome_email_failed";

pub async fn run(
    pool: &PgPool,
    services: &Services,
    cmd: &Command,
    saga: &Saga,
    client: &Client,
    admin: &AdminUser,
) -> Result<Handled, HandlerError> {
    let settings = services.email.clone();
    let issued = match settings.access {
        // argon2 costs tens of milliseconds of CPU: off the async threads.
        AccessMode::TemporaryPassword => {
            tokio::task::spawn_blocking(move || FirstAccess::issue(&settings, Utc::now()))
                .await
                .map_err(|e| HandlerError::Other(format!("secret generation panicked: {e}")))?
        }
        AccessMode::ActivationLink => FirstAccess::issue(&settings, Utc::now()),
    };
    let (access, stored) = issued.map_err(|e| HandlerError::Other(e.to_string()))?;

    // How long this send may hold the step (saga.email_lease_seconds).
    let lease = services.settings.email_lease_seconds as f64;
    let mut tx = pool.begin().await?;
    if !store::sagas::take_lease(&mut tx, saga.saga_id, Step::WelcomeEmail, lease).await? {
        tx.rollback().await?;
        return match store::sagas::get(pool, saga.saga_id).await? {
            Some(s) if s.step == Step::WelcomeEmail.as_str() => Err(HandlerError::RetryLater(
                "another delivery of this step is sending the welcome email".into(),
            )),
            _ => Ok(Handled::Duplicate),
        };
    }
    store::clients::store_first_access(&mut tx, admin.user_id, &stored).await?;
    tx.commit().await?;

    let attempt = cmd.meta.attempt + 1;
    let subject = services.email.subject.as_str();
    let sent = match (WelcomeEmail {
        admin_name: &admin.username,
        admin_email: &admin.email,
        client_code: &client.client_code,
        client_alias: &client.client_alias,
        access: &access,
        frontend_url: &services.email.frontend_url,
    })
    .message(&services.email.from, subject)
    {
        Ok(message) => services
            .mailer
            .send(message)
            .await
            .map_err(|e| (e.is_transient(), e.to_string())),
        Err(e) => Err((e.is_transient(), e.to_string())),
    };
    drop(access);

    let budget = services
        .settings
        .email_max_attempts
        .min(services.max_delayed_attempts);
    let log = |status, error| EmailLog {
        client_id: client.client_id,
        email: &admin.email,
        subject,
        status,
        attempt: attempt as i32,
        error,
    };
    if let Err((true, error)) = &sent
        && attempt < budget
    {
        tracing::warn!(attempt, error = %error, "welcome email not sent; retrying later");
        let mut conn = pool.acquire().await?;
        store::email_logs::insert(&mut conn, &log("FAILED", Some(error))).await?;
        drop(conn);
        let _ = store::sagas::record_failure(pool, saga.saga_id, error).await;
        let _ = store::sagas::release_lease(pool, saga.saga_id).await;
        return Err(HandlerError::RetryLater(format!("SMTP: {error}")));
    }

    let Some((mut tx, saga)) = lock_at(pool, saga.saga_id, Step::WelcomeEmail).await? else {
        return Ok(Handled::Duplicate);
    };
    let origin = origin(&saga, cmd.meta.traceparent.as_deref());
    let (outcome_event, email) = match &sent {
        Ok(()) => {
            store::email_logs::insert(&mut tx, &log("SENT", None)).await?;
            let email = json!({ "status": "SENT", "attempts": attempt });
            let data = json!({ "client_id": client.client_id, "user_id": admin.user_id, "subject": subject, "attempts": attempt });
            (OutgoingMessage::event(&origin, SENT, data), email)
        }
        Err((_, error)) => {
            tracing::error!(attempt, error = %error, "welcome email failed for good; completing without it");
            store::email_logs::insert(&mut tx, &log("FAILED", Some(error))).await?;
            let email = json!({ "status": "FAILED", "attempts": attempt, "error": error });
            let data = json!({ "client_id": client.client_id, "user_id": admin.user_id, "subject": subject, "attempts": attempt, "reason": error });
            (OutgoingMessage::event(&origin, FAILED, data), email)
        }
    };
    let learnt = json!({ "welcome_email": email });
    store::sagas::complete(&mut tx, saga.saga_id, &learnt).await?;
    let mut data = saga.data.clone();
    data["welcome_email"] = email;
    // The client and user as they are now (a lifecycle command may have moved them meanwhile).
    let client = store::clients::get_client(&mut tx, client.client_id)
        .await?
        .unwrap_or_else(|| client.clone());
    let admin = store::clients::get_admin_user(&mut tx, admin.user_id)
        .await?
        .unwrap_or_else(|| admin.clone());
    let mut messages = vec![outcome_event];
    messages.extend(complete::messages(cmd, &saga, &client, &admin, &data));
    handlers::finish(tx, cmd, Outcome::succeeded(messages)).await
}
