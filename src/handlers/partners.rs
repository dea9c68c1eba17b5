//! `partner.create {name, parent_partner_id?}`: a partner, at the root of a new tree or under
//! a parent (a sub-partner). Names are unique whatever their case (the unique index decides,
//! so two racing creates cannot both have one name).

use serde::Deserialize;
use serde_json::json;

use super::body::{opt_id, text};
use super::handler::{Cmd, Command, Cx, DecideOne, Decision, HandlerError, Outcome};
use crate::messages::{CommandType, OutgoingMessage, Refusal};
use crate::store;

pub const CREATED: &str = "partner.created";
pub const FAILED: &str = "partner.command_failed";

/// `partner.create {name, parent_partner_id?}`.
#[derive(Debug, Deserialize)]
pub struct PartnerCreate {
    pub name: String,
    #[serde(default, deserialize_with = "opt_id")]
    pub parent_partner_id: Option<i32>,
}

impl Command for PartnerCreate {
    const TYPE: CommandType = CommandType::new("partner.create");
    const SCHEMA: &'static str = crate::schema!("partner.create");
    const REFUSAL_EVENT: &'static str = FAILED;
}

fn refused(cmd: Cmd<'_, PartnerCreate>, refusal: Refusal) -> Result<Decision, HandlerError> {
    let context = json!({
        "name": cmd.body.name,
        "parent_partner_id": cmd.body.parent_partner_id,
    });
    Ok(Decision::Done(Outcome::refused_with(
        cmd.meta, FAILED, refusal, context,
    )))
}

impl DecideOne for PartnerCreate {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let Some(name) = text(Some(&cmd.body.name)) else {
            // The schema requires a name of one character at least; blank is not a name.
            return Ok(Decision::Failed(
                "partner.create with a blank name passed its schema".into(),
            ));
        };
        let parent = match cmd.body.parent_partner_id {
            None => None,
            Some(id) => match store::partners::get(cx.conn, id).await? {
                Some(p) => Some(p),
                None => return refused(cmd, Refusal::partner_not_found()),
            },
        };
        let Some(partner) = store::partners::insert(cx.conn, &name, parent.as_ref()).await? else {
            return refused(cmd, Refusal::partner_name_taken());
        };
        let data = json!({ "partner": partner });
        let messages = OutgoingMessage::event_and_reply(
            cmd.meta,
            CREATED,
            data,
            201,
            json!({ "message": "Partner created successfully", "partner": partner }),
        );
        Ok(Decision::Done(Outcome::succeeded(messages)))
    }
}
