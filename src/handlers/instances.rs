//! `instance.create`, `instance.update_alias`, `instance.delete`: an admin manages the
//! instances of their own client (seed: Create Instance, Update Instance Alias, Delete
//! Instance). Who may do what is `domain::instance`; this file runs it against the rows.
//!
//! Refusals, each with the seed's text and nothing changed, announced as
//! `instance.command_failed`:
//!
//! | refusal                | when                                                         |
//! | ---------------------- | ------------------------------------------------------------ |
//! | INSTANCE_NAME_REQUIRED | create without a name (missing, null or blank)               |
//! | ALIAS_REQUIRED         | rename without an alias                                      |
//! | CLIENT_ID_NOT_FOUND    | create or delete by a user linked to no client               |
//! | CLIENT_NOT_FOUND       | rename by a user linked to no client                         |
//! | ACCESS_DENIED          | a non-admin; a rename of another client's instance           |
//! | INSTANCE_NOT_FOUND     | no such instance; a delete of another client's instance      |
//! | INSTANCE_NAME_TAKEN    | create with a name the client already uses (409)             |

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Cx, Decision, HandlerError, Outcome, required_id, text_field};
use crate::domain::instance::{
    ALIAS_UPDATED_MESSAGE, INSTANCE_CREATED_MESSAGE, INSTANCE_DELETED_MESSAGE, Instance,
    InstanceAction, authorize, owned,
};
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::store;

pub const CREATED: &str = "instance.created";
pub const ALIAS_UPDATED: &str = "instance.alias_updated";
pub const DELETED: &str = "instance.deleted";
pub const FAILED: &str = "instance.command_failed";

fn refused(cmd: &Command, refusal: Refusal) -> Result<Decision, HandlerError> {
    let mut context = json!({ "actor_user_id": cmd.body.get("actor_user_id") });
    if let Some(id) = cmd.body.get("instance_id") {
        context["instance_id"] = id.clone();
    }
    Ok(Decision::Done(Outcome::refused_with(
        cmd, FAILED, refusal, context,
    )))
}

/// The event with the instance, and the reply with the seed's body.
fn succeeded(
    cmd: &Command,
    event_type: &str,
    instance: &Instance,
    status: u16,
    reply: Value,
) -> Decision {
    let data = json!({
        "actor_user_id": cmd.body.get("actor_user_id"),
        "instance": instance,
    });
    let mut messages = vec![OutgoingMessage::event(&cmd.meta, event_type, data)];
    messages.extend(OutgoingMessage::reply(&cmd.meta, event_type, status, reply));
    Decision::Done(Outcome::succeeded(messages))
}

pub fn create_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(create(cx, cmd))
}

pub fn update_alias_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(update_alias(cx, cmd))
}

pub fn delete_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(delete(cx, cmd))
}

async fn create(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    // The seed checks the name first, before it looks at who asks.
    let Some(name) = text_field(&cmd.body, "instance_name") else {
        return refused(cmd, Refusal::instance_name_required());
    };
    let actor = store::instances::actor(cx.conn, required_id!(cmd, "actor_user_id")).await?;
    let actor = match authorize(InstanceAction::Create, actor) {
        Ok(actor) => actor,
        Err(refusal) => return refused(cmd, refusal),
    };
    let Some(instance) = store::instances::insert(cx.conn, actor.client_id, &name).await? else {
        return refused(cmd, Refusal::instance_name_taken());
    };
    let reply = json!({ "message": INSTANCE_CREATED_MESSAGE, "instance": instance });
    Ok(succeeded(cmd, CREATED, &instance, 201, reply))
}

async fn update_alias(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let Some(alias) = text_field(&cmd.body, "alias") else {
        return refused(cmd, Refusal::alias_required());
    };
    let actor = store::instances::actor(cx.conn, required_id!(cmd, "actor_user_id")).await?;
    let actor = match authorize(InstanceAction::UpdateAlias, actor) {
        Ok(actor) => actor,
        Err(refusal) => return refused(cmd, refusal),
    };
    let found = store::instances::lock(cx.conn, required_id!(cmd, "instance_id")).await?;
    let instance = match owned(InstanceAction::UpdateAlias, &actor, found) {
        Ok(instance) => instance,
        Err(refusal) => return refused(cmd, refusal),
    };
    let updated = store::instances::update_alias(cx.conn, instance.instance_id, &alias).await?;
    let reply = json!({ "message": ALIAS_UPDATED_MESSAGE });
    Ok(succeeded(cmd, ALIAS_UPDATED, &updated, 200, reply))
}

async fn delete(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let actor = store::instances::actor(cx.conn, required_id!(cmd, "actor_user_id")).await?;
    let actor = match authorize(InstanceAction::Delete, actor) {
        Ok(actor) => actor,
        Err(refusal) => return refused(cmd, refusal),
    };
    let found = store::instances::lock(cx.conn, required_id!(cmd, "instance_id")).await?;
    let instance = match owned(InstanceAction::Delete, &actor, found) {
        Ok(instance) => instance,
        Err(refusal) => return refused(cmd, refusal),
    };
    store::instances::delete(cx.conn, instance.instance_id).await?;
    // The event carries the instance as it was, so subscribers know what went.
    let reply = json!({ "message": INSTANCE_DELETED_MESSAGE });
    Ok(succeeded(cmd, DELETED, &instance, 200, reply))
}
