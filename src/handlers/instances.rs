//! `instance.create`, `instance.update_alias`, `instance.delete`, `instance.deactivate`,
//! `instance.activate`: an admin manages the instances of their own client (seed: Create
//! Instance, Update Instance Alias, Delete Instance, and "Status Tracking: Active/inactive"). Who may do what is `domain::instance`; this file runs it against the rows.
//!
//! Refusals, each with the seed's text and nothing changed, announced as
//! `instance.command_failed`:
//!
//! | refusal                | when                                                         |
//! | ---------------------- | ------------------------------------------------------------ |
//! | INSTANCE_NAME_REQUIRED | create without a name (missing, null or blank)               |
//! | ALIAS_REQUIRED         | rename without an alias or without an instance id            |
//! | CLIENT_ID_NOT_FOUND    | create or delete by a user linked to no client               |
//! | CLIENT_NOT_FOUND       | rename or (de)activation by a user linked to no client       |
//! | ACCESS_DENIED          | a non-admin; a rename or (de)activation of another's instance|
//! | INSTANCE_NOT_FOUND     | no such instance; a delete of another client's instance      |
//! | INSTANCE_NAME_TAKEN    | create with a name the client already uses (409)             |
//! | CLIENT_READ_ONLY       | any change while the client is REJECTED or EXITED (409)      |
//! | CLIENT_INACTIVE        | any change while the client is deactivated (409)             |

use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{id, opt_id, text};
use super::handler::{Cmd, Command, Cx, DecideOne, Decision, HandlerError, Outcome, Target};
use crate::domain::instance::{
    self, ALIAS_UPDATED_MESSAGE, INSTANCE_CREATED_MESSAGE, INSTANCE_DELETED_MESSAGE, Instance,
    InstanceAction, authorize, owned,
};
use crate::messages::{CommandMeta, CommandType, OutgoingMessage, Refusal};
use crate::store;

pub const CREATED: &str = "instance.created";
pub const ALIAS_UPDATED: &str = "instance.alias_updated";
pub const DELETED: &str = "instance.deleted";
pub const DEACTIVATED: &str = "instance.deactivated";
pub const ACTIVATED: &str = "instance.activated";
pub const FAILED: &str = "instance.command_failed";

/// `instance.create {actor_user_id, instance_name}`.
#[derive(Debug, Deserialize)]
pub struct InstanceCreate {
    #[serde(deserialize_with = "id")]
    pub actor_user_id: i32,
    #[serde(default)]
    pub instance_name: Option<String>,
}

/// `instance.update_alias {actor_user_id, instance_id, alias}`. The seed answers a missing
/// instance id like a missing alias, so the schema lets both through to the handler.
#[derive(Debug, Deserialize)]
pub struct InstanceUpdateAlias {
    #[serde(deserialize_with = "id")]
    pub actor_user_id: i32,
    #[serde(default, deserialize_with = "opt_id")]
    pub instance_id: Option<i32>,
    #[serde(default)]
    pub alias: Option<String>,
}

/// `instance.delete {actor_user_id, instance_id}`.
#[derive(Debug, Deserialize)]
pub struct InstanceDelete {
    #[serde(deserialize_with = "id")]
    pub actor_user_id: i32,
    #[serde(deserialize_with = "id")]
    pub instance_id: i32,
}

macro_rules! instance_status_command {
    ($(#[$doc:meta])* $name:ident, $type:literal, $active:expr) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            #[serde(deserialize_with = "id")]
            pub actor_user_id: i32,
            #[serde(deserialize_with = "id")]
            pub instance_id: i32,
            #[serde(default)]
            pub reason: Option<String>,
        }

        impl Command for $name {
            const TYPE: CommandType = CommandType::new($type);
            const SCHEMA: &'static str = crate::schema!($type);
            const REFUSAL_EVENT: &'static str = FAILED;

            fn target(&self) -> Target {
                Target::ClientOf(self.actor_user_id)
            }
        }

        impl DecideOne for $name {
            async fn decide(
                cx: &mut Cx<'_>,
                cmd: Cmd<'_, Self>,
            ) -> Result<Decision, HandlerError> {
                let (actor, instance, reason) =
                    (cmd.body.actor_user_id, cmd.body.instance_id, cmd.body.reason.as_deref());
                set_status(cx, cmd.meta, actor, instance, text(reason), $active).await
            }
        }
    };
}

instance_status_command!(
    /// `instance.deactivate {actor_user_id, instance_id, reason?}`: the instance is kept,
    /// INACTIVE.
    InstanceDeactivate, "instance.deactivate", false
);
instance_status_command!(
    /// `instance.activate {actor_user_id, instance_id, reason?}`: ACTIVE again.
    InstanceActivate, "instance.activate", true
);

impl Command for InstanceCreate {
    const TYPE: CommandType = CommandType::new("instance.create");
    const SCHEMA: &'static str = crate::schema!("instance.create");
    const REFUSAL_EVENT: &'static str = FAILED;

    fn target(&self) -> Target {
        Target::ClientOf(self.actor_user_id)
    }
}

impl Command for InstanceUpdateAlias {
    const TYPE: CommandType = CommandType::new("instance.update_alias");
    const SCHEMA: &'static str = crate::schema!("instance.update_alias");
    const REFUSAL_EVENT: &'static str = FAILED;

    fn target(&self) -> Target {
        Target::ClientOf(self.actor_user_id)
    }
}

impl Command for InstanceDelete {
    const TYPE: CommandType = CommandType::new("instance.delete");
    const SCHEMA: &'static str = crate::schema!("instance.delete");
    const REFUSAL_EVENT: &'static str = FAILED;

    fn target(&self) -> Target {
        Target::ClientOf(self.actor_user_id)
    }
}

fn refused(
    meta: &CommandMeta,
    actor_user_id: i32,
    instance_id: Option<i32>,
    refusal: Refusal,
) -> Result<Decision, HandlerError> {
    let mut context = json!({ "actor_user_id": actor_user_id });
    if let Some(id) = instance_id {
        context["instance_id"] = json!(id);
    }
    Ok(Decision::Done(Outcome::refused_with(
        meta, FAILED, refusal, context,
    )))
}

/// The event with the instance, and the reply with the seed's body.
fn succeeded(
    meta: &CommandMeta,
    actor_user_id: i32,
    event_type: &str,
    instance: &Instance,
    status: u16,
    reply: Value,
) -> Decision {
    let data = json!({
        "actor_user_id": actor_user_id,
        "instance": instance,
    });
    let messages = OutgoingMessage::event_and_reply(meta, event_type, data, status, reply);
    Decision::Done(Outcome::succeeded(messages))
}

impl DecideOne for InstanceCreate {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let actor_id = cmd.body.actor_user_id;
        // The seed checks the name first, before it looks at who asks.
        let Some(name) = text(cmd.body.instance_name.as_deref()) else {
            return refused(cmd.meta, actor_id, None, Refusal::instance_name_required());
        };
        let actor = store::instances::actor(cx.conn, actor_id).await?;
        let actor = match authorize(InstanceAction::Create, actor) {
            Ok(actor) => actor,
            Err(refusal) => return refused(cmd.meta, actor_id, None, refusal),
        };
        let Some(instance) = store::instances::insert(cx.conn, actor.client_id, &name).await?
        else {
            return refused(cmd.meta, actor_id, None, Refusal::instance_name_taken());
        };
        let reply = json!({ "message": INSTANCE_CREATED_MESSAGE, "instance": instance });
        Ok(succeeded(
            cmd.meta, actor_id, CREATED, &instance, 201, reply,
        ))
    }
}

impl DecideOne for InstanceUpdateAlias {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let (actor_id, instance_id) = (cmd.body.actor_user_id, cmd.body.instance_id);
        let (Some(alias), Some(instance_id)) = (text(cmd.body.alias.as_deref()), instance_id)
        else {
            return refused(cmd.meta, actor_id, instance_id, Refusal::alias_required());
        };
        let actor = store::instances::actor(cx.conn, actor_id).await?;
        let actor = match authorize(InstanceAction::UpdateAlias, actor) {
            Ok(actor) => actor,
            Err(refusal) => return refused(cmd.meta, actor_id, Some(instance_id), refusal),
        };
        let found = store::instances::lock(cx.conn, instance_id).await?;
        let instance = match owned(InstanceAction::UpdateAlias, &actor, found) {
            Ok(instance) => instance,
            Err(refusal) => return refused(cmd.meta, actor_id, Some(instance_id), refusal),
        };
        let updated = store::instances::update_alias(cx.conn, instance.instance_id, &alias).await?;
        let reply = json!({ "message": ALIAS_UPDATED_MESSAGE });
        Ok(succeeded(
            cmd.meta,
            actor_id,
            ALIAS_UPDATED,
            &updated,
            200,
            reply,
        ))
    }
}

impl DecideOne for InstanceDelete {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let (actor_id, instance_id) = (cmd.body.actor_user_id, cmd.body.instance_id);
        let actor = store::instances::actor(cx.conn, actor_id).await?;
        let actor = match authorize(InstanceAction::Delete, actor) {
            Ok(actor) => actor,
            Err(refusal) => return refused(cmd.meta, actor_id, Some(instance_id), refusal),
        };
        let found = store::instances::lock(cx.conn, instance_id).await?;
        let instance = match owned(InstanceAction::Delete, &actor, found) {
            Ok(instance) => instance,
            Err(refusal) => return refused(cmd.meta, actor_id, Some(instance_id), refusal),
        };
        store::instances::delete(cx.conn, instance.instance_id).await?;
        // The event carries the instance as it was, so subscribers know what went.
        let reply = json!({ "message": INSTANCE_DELETED_MESSAGE });
        Ok(succeeded(
            cmd.meta, actor_id, DELETED, &instance, 200, reply,
        ))
    }
}

/// `instance.deactivate` / `instance.activate`: asking for the status the instance already
/// has is answered 200 with no event, like `client.deactivate`.
async fn set_status(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    actor_id: i32,
    instance_id: i32,
    reason: Option<String>,
    active: bool,
) -> Result<Decision, HandlerError> {
    let actor = store::instances::actor(cx.conn, actor_id).await?;
    let actor = match authorize(InstanceAction::SetStatus, actor) {
        Ok(actor) => actor,
        Err(refusal) => return refused(meta, actor_id, Some(instance_id), refusal),
    };
    let found = store::instances::lock(cx.conn, instance_id).await?;
    let instance = match owned(InstanceAction::SetStatus, &actor, found) {
        Ok(instance) => instance,
        Err(refusal) => return refused(meta, actor_id, Some(instance_id), refusal),
    };
    let (status, event_type, message, already) = if active {
        let m = instance::INSTANCE_ACTIVATED_MESSAGE;
        (
            instance::ACTIVE,
            ACTIVATED,
            m,
            instance::INSTANCE_ALREADY_ACTIVE_MESSAGE,
        )
    } else {
        let m = instance::INSTANCE_DEACTIVATED_MESSAGE;
        (
            instance::INACTIVE,
            DEACTIVATED,
            m,
            instance::INSTANCE_ALREADY_INACTIVE_MESSAGE,
        )
    };
    if instance.instance_status.as_deref() == Some(status) {
        let reply = json!({ "message": already, "instance": instance });
        let reply = OutgoingMessage::reply(meta, event_type, 200, reply);
        return Ok(Decision::Done(Outcome::succeeded(
            reply.into_iter().collect(),
        )));
    }
    let updated = store::instances::set_status(cx.conn, instance.instance_id, status).await?;
    let data = json!({ "actor_user_id": actor_id, "instance": updated, "reason": reason });
    let mut messages = vec![OutgoingMessage::event(meta, event_type, data)];
    let reply = json!({ "message": message, "instance": updated });
    messages.extend(OutgoingMessage::reply(meta, event_type, 200, reply));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}
