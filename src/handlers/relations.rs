//! Related people of a corporate client (DESIGN.md, "Relations, imports and webhooks"):
//! `client.relation.add {client_id, relation | relations}`, `client.relation.update`
//! (a patch), `client.relation.remove`, and the queries `client.relation.list` and
//! `client.relation.get`. Each command locks the client first, so it is decided after any
//! other command about the client that committed before it (a delete, say). Refusals are
//! announced as `client.command_failed`, like the client profile's.

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::body::{id, opt_count};
use super::client_update::FAILED;
use super::handler::Answer;
use super::handler::{Cmd, Cx, DecideOne, Decision, HandlerError, Outcome, Query};
use super::lifecycle::lock_changeable_client;
use crate::domain::paging;
use crate::domain::relation::{self, NewRelation, RelationPatch};
use crate::messages::{CommandMeta, CommandType, OutgoingMessage, Refusal};
use crate::store::{self, relations::Relation};

pub const ADDED: &str = "client.relations_added";
pub const UPDATED: &str = "client.relation_updated";
pub const REMOVED: &str = "client.relation_removed";

/// `client.relation.add {client_id, relation | relations}`.
#[derive(Debug, Deserialize)]
pub struct ClientRelationAdd {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    /// One person (an object the domain normalises: see `domain::relation`).
    #[serde(default)]
    pub relation: Option<Value>,
    #[serde(default)]
    pub relations: Option<Vec<Value>>,
}

/// `client.relation.update {client_id, relation_id, relation?, identity?, profile?}`.
#[derive(Debug, Deserialize)]
pub struct ClientRelationUpdate {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    pub relation_id: String,
    #[serde(default)]
    pub relation: Option<Value>,
    /// A merge patch of the person's identity.
    #[serde(default)]
    pub identity: Option<Value>,
    /// A merge patch of the person's profile.
    #[serde(default)]
    pub profile: Option<Value>,
}

/// `client.relation.remove {client_id, relation_id}`.
#[derive(Debug, Deserialize)]
pub struct ClientRelationRemove {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    pub relation_id: String,
}

/// `client.relation.list {client_id, take?, skip?}` (a query).
#[derive(Debug, Deserialize)]
pub struct ClientRelationList {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    #[serde(default, deserialize_with = "opt_count")]
    pub take: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub skip: Option<u64>,
}

/// `client.relation.get {client_id, relation_id}` (a query).
#[derive(Debug, Deserialize)]
pub struct ClientRelationGet {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    pub relation_id: String,
}

client_command!(ClientRelationAdd, "client.relation.add", FAILED);
client_command!(ClientRelationUpdate, "client.relation.update", FAILED);
client_command!(ClientRelationRemove, "client.relation.remove", FAILED);

/// A relation id; one that is not a UUID names no relation.
fn relation_id(given: &str) -> Option<Uuid> {
    Uuid::parse_str(given.trim()).ok()
}

fn refused(meta: &CommandMeta, refusal: Refusal, client_id: i32) -> Decision {
    Decision::Done(Outcome::refused_with(
        meta,
        FAILED,
        refusal,
        json!({ "client_id": client_id }),
    ))
}

impl DecideOne for ClientRelationAdd {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let client_id = cmd.body.client_id;
        // What the body alone decides comes first: it needs no client.
        let given =
            match relation::parse_all(cmd.body.relation.as_ref(), cmd.body.relations.as_deref()) {
                Ok(given) if given.is_empty() => {
                    return Ok(Decision::Failed(
                        "neither relation nor relations although schemas/client.relation.add.json \
                     requires one"
                            .into(),
                    ));
                }
                Ok(given) => given,
                Err(refusal) => return Ok(refused(cmd.meta, refusal, client_id)),
            };
        let client = match lock_changeable_client(cx, cmd.meta, FAILED, client_id).await? {
            Ok(client) => client,
            Err(decision) => return Ok(decision),
        };
        if !relation::is_corporate(client.identity.as_ref()) {
            return Ok(refused(
                cmd.meta,
                Refusal::relations_corporate_only(),
                client_id,
            ));
        }
        let rows: Vec<(i32, &NewRelation)> = given.iter().map(|r| (client_id, r)).collect();
        let added = store::relations::insert_many(cx.conn, &rows).await?;
        let messages = OutgoingMessage::event_and_reply(
            cmd.meta,
            ADDED,
            json!({
                "client_id": client_id,
                "client_code": client.client_code,
                "relations": added,
            }),
            201,
            json!({ "relations": added }),
        );
        Ok(Decision::Done(Outcome::succeeded(messages)))
    }
}

impl DecideOne for ClientRelationUpdate {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let client_id = cmd.body.client_id;
        let client = match lock_changeable_client(cx, cmd.meta, FAILED, client_id).await? {
            Ok(client) => client,
            Err(decision) => return Ok(decision),
        };
        let current = match relation_id(&cmd.body.relation_id) {
            Some(id) => store::relations::get(cx.conn, client_id, id, true).await?,
            None => None,
        };
        let Some(current) = current else {
            return Ok(refused(cmd.meta, Refusal::relation_not_found(), client_id));
        };
        let before = current.as_new();
        let given = RelationPatch {
            relation: cmd.body.relation.as_ref(),
            identity: cmd.body.identity.as_ref(),
            profile: cmd.body.profile.as_ref(),
        };
        let after = match relation::patch(&before, given) {
            Ok(after) => after,
            Err(refusal) => return Ok(refused(cmd.meta, refusal, client_id)),
        };
        let changes = relation::changes(&before, &after);
        if changes.is_empty() {
            let reply =
                OutgoingMessage::reply(cmd.meta, UPDATED, 200, json!({ "relation": current }));
            return Ok(Decision::Done(Outcome::succeeded(
                reply.into_iter().collect(),
            )));
        }
        let updated = store::relations::update(cx.conn, current.relation_id, &after).await?;
        let messages = OutgoingMessage::event_and_reply(
            cmd.meta,
            UPDATED,
            json!({
                "client_id": client_id,
                "client_code": client.client_code,
                "relation": updated,
                "changes": changes,
            }),
            200,
            json!({ "relation": updated }),
        );
        Ok(Decision::Done(Outcome::succeeded(messages)))
    }
}

impl DecideOne for ClientRelationRemove {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let client_id = cmd.body.client_id;
        let client = match lock_changeable_client(cx, cmd.meta, FAILED, client_id).await? {
            Ok(client) => client,
            Err(decision) => return Ok(decision),
        };
        let removed = match relation_id(&cmd.body.relation_id) {
            Some(id) => store::relations::delete(cx.conn, client_id, id).await?,
            None => None,
        };
        let Some(removed) = removed else {
            return Ok(refused(cmd.meta, Refusal::relation_not_found(), client_id));
        };
        let messages = OutgoingMessage::event_and_reply(
            cmd.meta,
            REMOVED,
            json!({
                "client_id": client_id,
                "client_code": client.client_code,
                "relation_id": removed.relation_id,
                "relation": removed,
            }),
            200,
            json!({ "message": "Relation removed successfully", "relation": removed }),
        );
        Ok(Decision::Done(Outcome::succeeded(messages)))
    }
}

/// The client of a query, when it exists and is not deleted.
async fn live_client(conn: &mut PgConnection, client_id: i32) -> Result<Option<i32>, HandlerError> {
    let client = store::clients::get_client(conn, client_id).await?;
    Ok(client
        .filter(|c| c.deleted_at.is_none())
        .map(|c| c.client_id))
}

impl Query for ClientRelationList {
    const TYPE: CommandType = CommandType::new("client.relation.list");
    const SCHEMA: &'static str = crate::schema!("client.relation.list");

    /// `{relations, take, skip, total}`.
    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        let Some(client_id) = live_client(conn, query.client_id).await? else {
            return Ok(Answer::Refused(Refusal::client_not_found()));
        };
        let page = paging::Offset::asked(query.take, query.skip);
        let (relations, total) =
            store::relations::list(conn, client_id, page.limit(), page.offset()).await?;
        Ok(Answer::Found(page.answer("relations", relations, total)))
    }
}

impl Query for ClientRelationGet {
    const TYPE: CommandType = CommandType::new("client.relation.get");
    const SCHEMA: &'static str = crate::schema!("client.relation.get");

    /// `{relation}`.
    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        let Some(client_id) = live_client(conn, query.client_id).await? else {
            return Ok(Answer::Refused(Refusal::client_not_found()));
        };
        let found: Option<Relation> = match relation_id(&query.relation_id) {
            Some(id) => store::relations::get(conn, client_id, id, false).await?,
            None => None,
        };
        Ok(match found {
            Some(relation) => Answer::Found(json!({ "relation": relation })),
            None => Answer::Refused(Refusal::relation_not_found()),
        })
    }
}
