//! The lifecycle commands (`client.approve`, `client.reject`, `client.blacklist`,
//! `client.unblacklist`, `client.exit`, `client.record_first_transaction`): lock the client,
//! let `domain::lifecycle::decide` say where it goes, store it with a history row and the
//! action's event — or refuse with `client.transition_rejected`, changing nothing.
//!
//! The row lock (`SELECT ... FOR UPDATE`) is what makes two commands for one client behave
//! as if they came one after the other: the second waits for the first to commit and then
//! decides from the status the first left.

use serde::Deserialize;
use serde_json::json;

use super::body::{id, text};
use super::handler::{Cmd, Cx, DecideOne, Decision, HandlerError, Outcome};
use crate::configuration::Settings;
use crate::domain::{LifecycleAction, decide};
use crate::messages::{CommandMeta, OutgoingMessage, Refusal};
use crate::store::{self, history::StatusChange};

pub const REJECTED: &str = "client.transition_rejected";

/// The lifecycle commands: one type each, the same body shape, one decision.
macro_rules! transition {
    ($(#[$doc:meta])* $name:ident, $type:literal, $action:expr, $note:ident) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            #[serde(deserialize_with = "id")]
            pub client_id: i32,
            #[serde(default)]
            pub $note: Option<String>,
        }

        client_command!($name, $type, REJECTED);

        impl DecideOne for $name {
            async fn decide(
                cx: &mut Cx<'_>,
                cmd: Cmd<'_, Self>,
            ) -> Result<Decision, HandlerError> {
                let change = Change {
                    action: $action,
                    client_id: cmd.body.client_id,
                    reason: transition!(@reason $note, cmd.body),
                    transaction_id: transition!(@transaction $note, cmd.body),
                };
                handle(cx, cmd.meta, change).await
            }
        }
    };
    (@reason reason, $body:expr) => { text($body.reason.as_deref()) };
    (@reason transaction_id, $body:expr) => { None };
    (@transaction reason, $body:expr) => { None };
    (@transaction transaction_id, $body:expr) => { text($body.transaction_id.as_deref()) };
}

transition!(
    /// `client.approve {client_id, reason?}`: PENDING to APPROVED.
    ClientApprove, "client.approve", LifecycleAction::Approve, reason
);
transition!(
    /// `client.reject {client_id, reason?}`: PENDING to REJECTED.
    ClientReject, "client.reject", LifecycleAction::Reject, reason
);
transition!(
    /// `client.blacklist {client_id, reason?}`: APPROVED or ACTIVE to BLACKLISTED.
    ClientBlacklist, "client.blacklist", LifecycleAction::Blacklist, reason
);
transition!(
    /// `client.unblacklist {client_id, reason?}`: BLACKLISTED to PENDING.
    ClientUnblacklist, "client.unblacklist", LifecycleAction::Unblacklist, reason
);
transition!(
    /// `client.exit {client_id, reason?}`: APPROVED, ACTIVE or BLACKLISTED to EXITED.
    ClientExit, "client.exit", LifecycleAction::Exit, reason
);
transition!(
    /// `client.record_first_transaction {client_id, transaction_id?}`: APPROVED to ACTIVE.
    ClientRecordFirstTransaction,
    "client.record_first_transaction",
    LifecycleAction::RecordFirstTransaction,
    transaction_id
);

/// What a lifecycle command asks for.
struct Change {
    action: LifecycleAction,
    client_id: i32,
    reason: Option<String>,
    transaction_id: Option<String>,
}

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

async fn handle(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    change: Change,
) -> Result<Decision, HandlerError> {
    let Change {
        action,
        client_id,
        reason,
        transaction_id,
    } = change;
    let client = match lock_live_client(cx, meta, REJECTED, client_id).await? {
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
                "action": meta.command_type.as_str(),
            });
            return Ok(Decision::Done(Outcome::refused_with(
                meta,
                REJECTED,
                Refusal::from(refusal),
                context,
            )));
        }
    };

    let updated = store::clients::set_status(cx.conn, client_id, next).await?;
    let details = match &transaction_id {
        Some(id) => json!({ "transaction_id": id }),
        None => json!({}),
    };
    store::history::record_status(
        cx.conn,
        meta,
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
        "action": meta.command_type.as_str(),
        "reason": reason,
        "details": details,
        "client": updated,
    });
    let messages = OutgoingMessage::event_and_reply(
        meta,
        event_type,
        data,
        200,
        json!({ "message": success_message(action), "client": updated }),
    );
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

/// The client a command is about, locked until the transaction ends; or how the command
/// ends when there is none: a client not there (yet) waits in the delay queues
/// ([`client_not_found`]), a deleted one is CLIENT_NOT_FOUND at once.
pub(super) async fn lock_live_client(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    failed_event: &str,
    client_id: i32,
) -> Result<Result<crate::domain::Client, Decision>, HandlerError> {
    Ok(
        match store::clients::lock_client(cx.conn, client_id).await? {
            None => Err(client_not_found(meta, cx.settings, failed_event, client_id)),
            Some(c) if c.deleted_at.is_some() => Err(deleted(meta, failed_event, client_id)),
            Some(c) => Ok(c),
        },
    )
}

/// [`lock_live_client`] for a command that changes the client or what hangs off it
/// (profile, relations, eKYC, activity): a client in a final state (REJECTED, EXITED) is view
/// only (seed 001), refused CLIENT_READ_ONLY. `client.delete` does not go through here: an
/// erasure request is honoured whatever the state.
pub(super) async fn lock_changeable_client(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    failed_event: &str,
    client_id: i32,
) -> Result<Result<crate::domain::Client, Decision>, HandlerError> {
    let client = match lock_live_client(cx, meta, failed_event, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(Err(decision)),
    };
    if client.client_status.is_final() {
        return Ok(Err(Decision::Done(Outcome::refused_with(
            meta,
            failed_event,
            Refusal::client_read_only(client.client_status.as_str()),
            json!({ "client_id": client_id, "client_status": client.client_status }),
        ))));
    }
    Ok(Ok(client))
}

/// A command about a deleted client: CLIENT_NOT_FOUND at once (it will not come back).
fn deleted(meta: &CommandMeta, failed_event: &str, client_id: i32) -> Decision {
    Decision::Done(Outcome::refused_with(
        meta,
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
    meta: &CommandMeta,
    settings: &Settings,
    failed_event: &str,
    client_id: i32,
) -> Decision {
    let budget = settings
        .lifecycle
        .not_found_retries
        .min(settings.retry.max_attempts);
    if meta.attempt < budget {
        return Decision::RetryLater(format!(
            "client {client_id} does not exist (yet); delayed retry {} of {budget}",
            meta.attempt.saturating_add(1)
        ));
    }
    Decision::Done(Outcome::refused_with(
        meta,
        failed_event,
        Refusal::client_not_found(),
        json!({ "client_id": client_id }),
    ))
}
