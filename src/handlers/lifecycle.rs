//! The lifecycle commands (`client.approve`, `client.reject`, `client.blacklist`,
//! `client.unblacklist`, `client.exit`, `client.record_first_transaction`): lock the client,
//! let `domain::lifecycle::decide` say where it goes, store it with a history row and the
//! action's event — or refuse with `client.transition_rejected`, changing nothing.
//!
//! The row lock (`SELECT ... FOR UPDATE`) is what makes two commands for one client behave
//! as if they came one after the other: the second waits for the first to commit and then
//! decides from the status the first left.

use futures::future::BoxFuture;
use serde_json::json;

use super::{Cx, Decision, HandlerError, Outcome, required_id, text_field};
use crate::configuration::Settings;
use crate::domain::{LifecycleAction, decide};
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::store::{self, history::StatusChange};

pub const REJECTED: &str = "client.transition_rejected";

/// What the reply says when the action succeeded.
fn success_message(action: LifecycleAction) -> &'static str {
    match action {
        LifecycleAction::Approve => "Client approved successfully",
        LifecycleAction::Reject => "Client rejected successfully",
        LifecycleAction::RecordFirstTransaction => {
            "First transaction recorded; the client is now ACTIVE"
        }
        LifecycleAction::Blacklist => "Client blacklisted successfully",
        LifecycleAction::Unblacklist => "Client removed from the blacklist; it is PENDING again",
        LifecycleAction::Exit => "Client exited successfully",
    }
}

pub fn decide_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(handle(cx, cmd))
}

async fn handle(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let Some(action) = LifecycleAction::from_command_type(cmd.meta.command_type.as_str()) else {
        return Ok(Decision::Failed(format!(
            "{} is not a lifecycle command",
            cmd.meta.command_type
        )));
    };
    let client_id = required_id!(cmd, "client_id");
    let client = match lock_live_client(cx, cmd, REJECTED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let current = client.client_status;
    let ekyc = client.ekyc_status;
    let policy = cx.settings.lifecycle.approval_policy();
    let next = match decide(current, ekyc, action, &policy) {
        Ok(next) => next,
        Err(refusal) => {
            let context = json!({
                "client_id": client_id,
                "client_status": current,
                "ekyc_status": ekyc,
                "action": action.command_type(),
            });
            return Ok(Decision::Done(Outcome::refused_with(
                cmd,
                REJECTED,
                Refusal::from(refusal),
                context,
            )));
        }
    };

    let updated = store::clients::set_status(cx.conn, client_id, next).await?;
    let reason = text_field(&cmd.body, "reason");
    let transaction_id = text_field(&cmd.body, "transaction_id");
    let details = match &transaction_id {
        Some(id) => json!({ "transaction_id": id }),
        None => json!({}),
    };
    store::history::record_status(
        cx.conn,
        &cmd.meta,
        &StatusChange {
            client_id,
            from: current.as_str(),
            to: next.as_str(),
            reason: reason.as_deref(),
            details: details.clone(),
        },
    )
    .await?;

    let event_type = action.event_type();
    let data = json!({
        "client_id": client_id,
        "client_code": updated.client_code,
        "from_status": current,
        "to_status": next,
        "action": action.command_type(),
        "reason": reason,
        "details": details,
        "client": updated,
    });
    let mut messages = vec![OutgoingMessage::event(&cmd.meta, event_type, data)];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        event_type,
        200,
        json!({ "message": success_message(action), "client": updated }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

/// The client a command is about, locked until the transaction ends; or how the command
/// ends when there is none: a client not there (yet) waits in the delay queues
/// ([`client_not_found`]), a deleted one is CLIENT_NOT_FOUND at once.
pub(super) async fn lock_live_client(
    cx: &mut Cx<'_>,
    cmd: &Command,
    failed_event: &str,
    client_id: i32,
) -> Result<Result<crate::domain::Client, Decision>, HandlerError> {
    Ok(
        match store::clients::lock_client(cx.conn, client_id).await? {
            None => Err(client_not_found(cmd, cx.settings, failed_event, client_id)),
            Some(c) if c.deleted_at.is_some() => Err(deleted(cmd, failed_event, client_id)),
            Some(c) => Ok(c),
        },
    )
}

/// A command about a deleted client: CLIENT_NOT_FOUND at once (it will not come back).
fn deleted(cmd: &Command, failed_event: &str, client_id: i32) -> Decision {
    Decision::Done(Outcome::refused_with(
        cmd,
        failed_event,
        Refusal::client_not_found(),
        json!({ "client_id": client_id }),
    ))
}

/// A command about a client that is not there. Right after its `client.create` was
/// published it may simply not be committed yet, so the command waits in the delay queues
/// (at most `lifecycle.not_found_retries` times, never beyond `retry.max_attempts`) before
/// it is answered with CLIENT_NOT_FOUND.
fn client_not_found(
    cmd: &Command,
    settings: &Settings,
    failed_event: &str,
    client_id: i32,
) -> Decision {
    let budget = settings
        .lifecycle
        .not_found_retries
        .min(settings.retry.max_attempts);
    if cmd.meta.attempt < budget {
        return Decision::RetryLater(format!(
            "client {client_id} does not exist (yet); delayed retry {} of {budget}",
            cmd.meta.attempt.saturating_add(1)
        ));
    }
    Decision::Done(Outcome::refused_with(
        cmd,
        failed_event,
        Refusal::client_not_found(),
        json!({ "client_id": client_id }),
    ))
}
