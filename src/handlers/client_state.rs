//! `client.deactivate`, `client.reactivate` and `client.delete {client_id, reason?}`: whether
//! a client may act (`is_active`; clients are never hard-deleted) and whether it exists at
//! all for upstream (`deleted_at`, a soft delete). Each locks the client, so it is decided
//! after any other command about the client that committed first.
//!
//! Asking for the state a client already has is answered 200 with no event: a retried or
//! duplicated upstream request changes nothing and tells subscribers nothing new.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::client_update::FAILED;
use super::lifecycle::lock_live_client;
use super::{Cx, Decision, HandlerError, Outcome, required_id, text_field, with};
use crate::messages::{Command, CommandType, OutgoingMessage};
use crate::store;

pub const DEACTIVATED: &str = "client.deactivated";
pub const REACTIVATED: &str = "client.reactivated";
pub const DELETED: &str = "client.deleted";

pub fn decide_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(handle(cx, cmd))
}

async fn handle(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let client_id = required_id!(cmd, "client_id");
    let client = match lock_live_client(cx, cmd, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let reason = text_field(&cmd.body, "reason");
    let (event_type, message, updated, extra) = match cmd.meta.command_type {
        CommandType::ClientDeactivate | CommandType::ClientReactivate => {
            let active = cmd.meta.command_type == CommandType::ClientReactivate;
            let (event_type, message, already) = if active {
                (
                    REACTIVATED,
                    "Client reactivated successfully",
                    "Client is already active",
                )
            } else {
                (
                    DEACTIVATED,
                    "Client deactivated successfully",
                    "Client is already inactive",
                )
            };
            if client.is_active == active {
                let reply = OutgoingMessage::reply(
                    &cmd.meta,
                    event_type,
                    200,
                    json!({ "message": already, "client": client }),
                );
                return Ok(Decision::Done(Outcome::succeeded(
                    reply.into_iter().collect(),
                )));
            }
            let updated = store::clients::set_active(cx.conn, client_id, active).await?;
            (event_type, message, updated, Value::Null)
        }
        CommandType::ClientDelete => {
            let (updated, users) = store::clients::soft_delete(cx.conn, client_id).await?;
            let extra = json!({ "users_deactivated": users });
            (DELETED, "Client deleted successfully", updated, extra)
        }
        other => {
            return Ok(Decision::Failed(format!(
                "{other} is not a client state command"
            )));
        }
    };
    let event = json!({
        "client_id": client_id,
        "client_code": updated.client_code,
        "reason": reason,
        "version": updated.version,
        "client": updated,
    });
    let mut messages = vec![OutgoingMessage::event(
        &cmd.meta,
        event_type,
        with(event, extra),
    )];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        event_type,
        200,
        json!({ "message": message, "client": updated }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}
