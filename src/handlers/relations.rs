//! Related people of a corporate client (DESIGN.md, "Relations, imports and webhooks"):
//! `client.relation.add {client_id, relation | relations}`, `client.relation.update`
//! (a patch), `client.relation.remove`, and the queries `client.relation.list` and
//! `client.relation.get`. Each command locks the client first, so it is decided after any
//! other command about the client that committed before it (a delete, say). Refusals are
//! announced as `client.command_failed`, like the client profile's.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::client_update::FAILED;
use super::lifecycle::lock_live_client;
use super::queries::Answer;
use super::{Cx, Decision, HandlerError, Outcome, required_id};
use crate::domain::paging;
use crate::domain::relation::{self, NewRelation};
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::store::{self, relations::Relation};

pub const ADDED: &str = "client.relations_added";
pub const UPDATED: &str = "client.relation_updated";
pub const REMOVED: &str = "client.relation_removed";

/// The relation id of a body; one that is not a UUID names no relation.
fn relation_id(body: &Value) -> Option<Uuid> {
    body.get("relation_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
}

fn refused(cmd: &Command, refusal: Refusal, client_id: i32) -> Decision {
    Decision::Done(Outcome::refused_with(
        cmd,
        FAILED,
        refusal,
        json!({ "client_id": client_id }),
    ))
}

pub fn add_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(add(cx, cmd))
}

async fn add(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let client_id = required_id!(cmd, "client_id");
    // What the body alone decides comes first: it needs no client.
    let given = match relation::parse_all(&cmd.body) {
        Ok(given) if given.is_empty() => {
            return Ok(Decision::Failed(
                "neither relation nor relations although schemas/client.relation.add.json \
                 requires one"
                    .into(),
            ));
        }
        Ok(given) => given,
        Err(refusal) => return Ok(refused(cmd, refusal, client_id)),
    };
    let client = match lock_live_client(cx, cmd, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    if !relation::is_corporate(&client.client_type, client.identity.as_ref()) {
        return Ok(refused(cmd, Refusal::relations_corporate_only(), client_id));
    }
    let rows: Vec<(i32, &NewRelation)> = given.iter().map(|r| (client_id, r)).collect();
    let added = store::relations::insert_many(cx.conn, &rows).await?;
    let mut messages = vec![OutgoingMessage::event(
        &cmd.meta,
        ADDED,
        json!({
            "client_id": client_id,
            "client_code": client.client_code,
            "relations": added,
        }),
    )];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        ADDED,
        201,
        json!({ "relations": added }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

pub fn update_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(update(cx, cmd))
}

async fn update(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let client_id = required_id!(cmd, "client_id");
    let client = match lock_live_client(cx, cmd, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let current = match relation_id(&cmd.body) {
        Some(id) => store::relations::get(cx.conn, client_id, id, true).await?,
        None => None,
    };
    let Some(current) = current else {
        return Ok(refused(cmd, Refusal::relation_not_found(), client_id));
    };
    let before = current.as_new();
    let after = match relation::patch(&before, &cmd.body) {
        Ok(after) => after,
        Err(refusal) => return Ok(refused(cmd, refusal, client_id)),
    };
    let changes = relation::changes(&before, &after);
    if changes.is_empty() {
        let reply = OutgoingMessage::reply(&cmd.meta, UPDATED, 200, json!({ "relation": current }));
        return Ok(Decision::Done(Outcome::succeeded(
            reply.into_iter().collect(),
        )));
    }
    let updated = store::relations::update(cx.conn, current.relation_id, &after).await?;
    let mut messages = vec![OutgoingMessage::event(
        &cmd.meta,
        UPDATED,
        json!({
            "client_id": client_id,
            "client_code": client.client_code,
            "relation": updated,
            "changes": changes,
        }),
    )];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        UPDATED,
        200,
        json!({ "relation": updated }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

pub fn remove_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(remove(cx, cmd))
}

async fn remove(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let client_id = required_id!(cmd, "client_id");
    let client = match lock_live_client(cx, cmd, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let removed = match relation_id(&cmd.body) {
        Some(id) => store::relations::delete(cx.conn, client_id, id).await?,
        None => None,
    };
    let Some(removed) = removed else {
        return Ok(refused(cmd, Refusal::relation_not_found(), client_id));
    };
    let mut messages = vec![OutgoingMessage::event(
        &cmd.meta,
        REMOVED,
        json!({
            "client_id": client_id,
            "client_code": client.client_code,
            "relation_id": removed.relation_id,
            "relation": removed,
        }),
    )];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        REMOVED,
        200,
        json!({ "message": "Relation removed successfully", "relation": removed }),
    ));
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

/// The client of a query, when it exists and is not deleted.
async fn live_client(conn: &mut PgConnection, cmd: &Command) -> Result<Option<i32>, HandlerError> {
    let client_id = super::read_id(cmd, "client_id").map_err(HandlerError::Permanent)?;
    let client = store::clients::get_client(conn, client_id).await?;
    Ok(client
        .filter(|c| c.deleted_at.is_none())
        .map(|c| c.client_id))
}

pub fn list_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(list(conn, cmd))
}

/// `client.relation.list {client_id, take?, skip?}`: `{relations, take, skip, total}`.
async fn list(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let Some(client_id) = live_client(conn, cmd).await? else {
        return Ok(Answer::Refused(Refusal::client_not_found()));
    };
    let (take, skip) = paging::take_skip(&cmd.body);
    let (relations, total) = store::relations::list(
        conn,
        client_id,
        take as i64,
        i64::try_from(skip).unwrap_or(i64::MAX),
    )
    .await?;
    Ok(Answer::Found(json!({
        "relations": relations,
        "take": take,
        "skip": skip,
        "total": total,
    })))
}

pub fn get_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(get(conn, cmd))
}

/// `client.relation.get {client_id, relation_id}`: `{relation}`.
async fn get(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let Some(client_id) = live_client(conn, cmd).await? else {
        return Ok(Answer::Refused(Refusal::client_not_found()));
    };
    let found: Option<Relation> = match relation_id(&cmd.body) {
        Some(id) => store::relations::get(conn, client_id, id, false).await?,
        None => None,
    };
    Ok(match found {
        Some(relation) => Answer::Found(json!({ "relation": relation })),
        None => Answer::Refused(Refusal::relation_not_found()),
    })
}
