//! `client.deactivate`, `client.reactivate` and `client.delete {client_id, reason?}`: whether
//! a client may act (`is_active`; clients are never hard-deleted) and whether it exists at
//! all for upstream (`deleted_at`, a soft delete). Each locks the client, so it is decided
//! after any other command about the client that committed first.
//!
//! Asking for the state a client already has is answered 200 with no event: a retried or
//! duplicated upstream request changes nothing and tells subscribers nothing new.

use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{id, text};
use super::client_update::FAILED;
use super::handler::{Cmd, Cx, DecideOne, Decision, HandlerError, Outcome, with};
use super::lifecycle::{lock_changeable_client, lock_live_client};
use crate::messages::{CommandMeta, OutgoingMessage};
use crate::store;

pub const DEACTIVATED: &str = "client.deactivated";
pub const REACTIVATED: &str = "client.reactivated";
pub const DELETED: &str = "client.deleted";

/// What a client-state command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Active(bool),
    Deleted,
}

macro_rules! state_command {
    ($(#[$doc:meta])* $name:ident, $type:literal, $wanted:expr) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            #[serde(deserialize_with = "id")]
            pub client_id: i32,
            #[serde(default)]
            pub reason: Option<String>,
        }

        client_command!($name, $type, FAILED);

        impl DecideOne for $name {
            async fn decide(
                cx: &mut Cx<'_>,
                cmd: Cmd<'_, Self>,
            ) -> Result<Decision, HandlerError> {
                let reason = text(cmd.body.reason.as_deref());
                handle(cx, cmd.meta, cmd.body.client_id, reason, $wanted).await
            }
        }
    };
}

state_command!(
    /// `client.deactivate {client_id, reason?}`: its admins may no longer change instances.
    ClientDeactivate, "client.deactivate", Wanted::Active(false)
);
state_command!(
    /// `client.reactivate {client_id, reason?}`.
    ClientReactivate, "client.reactivate", Wanted::Active(true)
);
state_command!(
    /// `client.delete {client_id, reason?}`: a soft delete.
    ClientDelete, "client.delete", Wanted::Deleted
);

async fn handle(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    client_id: i32,
    reason: Option<String>,
    wanted: Wanted,
) -> Result<Decision, HandlerError> {
    // Erasure is honoured in any state; (de)activation is a change, refused in a final one.
    let locked = match wanted {
        Wanted::Deleted => lock_live_client(cx, meta, FAILED, client_id).await?,
        Wanted::Active(_) => lock_changeable_client(cx, meta, FAILED, client_id).await?,
    };
    let client = match locked {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let (event_type, message, updated, extra) = match wanted {
        Wanted::Active(active) => {
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
                    meta,
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
        Wanted::Deleted => {
            let (updated, users) = store::clients::soft_delete(cx.conn, client_id).await?;
            let extra = json!({ "users_deactivated": users });
            (DELETED, "Client deleted successfully", updated, extra)
        }
    };
    let event = json!({
        "client_id": client_id,
        "client_code": updated.client_code,
        "reason": reason,
        "version": updated.version,
        "client": updated,
    });
    let messages = OutgoingMessage::event_and_reply(
        meta,
        event_type,
        with(event, extra),
        200,
        json!({ "message": message, "client": updated }),
    );
    Ok(Decision::Done(Outcome::succeeded(messages)))
}
