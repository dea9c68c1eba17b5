//! `partner.create {name, parent_partner_id?}`: a partner, at the root of a new tree or under
//! a parent (a sub-partner). Names are unique whatever their case (the unique index decides,
//! so two racing creates cannot both have one name).

use futures::future::BoxFuture;
use serde_json::json;

use super::{Cx, Decision, HandlerError, Outcome, text_field};
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::store;

pub const CREATED: &str = "partner.created";
pub const FAILED: &str = "partner.command_failed";

pub fn create_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(create(cx, cmd))
}

fn refused(cmd: &Command, refusal: Refusal) -> Result<Decision, HandlerError> {
    let context = json!({
        "name": cmd.body.get("name"),
        "parent_partner_id": cmd.body.get("parent_partner_id"),
    });
    Ok(Decision::Done(Outcome::refused_with(
        cmd, FAILED, refusal, context,
    )))
}

async fn create(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let Some(name) = text_field(&cmd.body, "name") else {
        // The schema requires a name of one character at least; blank is not a name.
        return Ok(Decision::Failed(
            "partner.create with a blank name passed its schema".into(),
        ));
    };
    let parent = match cmd.body.get("parent_partner_id").and_then(|v| v.as_i64()) {
        None => None,
        Some(id) => {
            let id = i32::try_from(id).unwrap_or(-1);
            match store::partners::get(cx.conn, id).await? {
                Some(p) => Some(p),
                None => return refused(cmd, Refusal::partner_not_found()),
            }
        }
    };
    let Some(partner) = store::partners::insert(cx.conn, &name, parent.as_ref()).await? else {
        return refused(cmd, Refusal::partner_name_taken());
    };
    let data = json!({ "partner": partner });
    let mut messages = vec![OutgoingMessage::event(&cmd.meta, CREATED, data)];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        CREATED,
        201,
        json!({ "message": "Partner created successfully", "partner": partner }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}
