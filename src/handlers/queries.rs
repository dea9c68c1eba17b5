//! The queries `client.get`, `client.list` and `instance.list`: read, and say what was read.
//! They change nothing, so they take no inbox row, write no outbox row and announce no event:
//! [`answer`] returns the reply and the worker publishes it straight to `reply_to`
//! (`worker::query`). Running one twice is harmless, and the reply's message_id is derived
//! from the query's, so a gateway can drop a repeat.
//!
//! Bodies:
//! - `client.get`: 200 `{"client": {...}}`, the seed's client object with `created` and
//!   `updated`; or 404 `{"error": "Client not found"}`.
//! - `client.list`: 200 `{"clients": [...], "page", "page_size", "total", "next_cursor"}`:
//!   the array of "Get All Clients", newest first, one page of it, with the number of clients
//!   matching the filters and the cursor of the next page (`null` on the last page). See
//!   `domain::paging` for why the cursor and not `page` is the way to walk every page.
//! - `instance.list`: 200 `{"instances": [...]}` as in "Get My Instances".

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::{HandlerError, text_field};
use crate::domain::ClientListItem;
use crate::domain::instance::{InstanceAction, authorize};
use crate::domain::paging::{self, Cursor};
use crate::domain::profile::PartnerSelector;
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::store::{self, clients::ClientFilter, clients::ClientKey, clients::PageStart};

/// A query's answer before it becomes a reply.
pub enum Answer {
    Found(Value),
    Refused(Refusal),
}

/// Reads what one query asks for, inside a read-only snapshot.
pub type Read = for<'x, 'y> fn(
    &'x mut PgConnection,
    &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>>;

/// Runs a query and returns its reply (the pipeline has made sure there is a `reply_to`).
pub async fn answer(
    pool: &PgPool,
    cmd: &Command,
    read: Read,
) -> Result<OutgoingMessage, HandlerError> {
    // One read-only snapshot: a page and its total agree with each other.
    let mut tx = store::read_only(pool).await?;
    let answer = read(&mut tx, cmd).await?;
    tx.commit().await?;
    let query = cmd.meta.command_type.as_str();
    let (outcome, status, body) = match answer {
        Answer::Found(body) => (format!("{query}.answered"), 200, body),
        Answer::Refused(r) => (format!("{query}.refused"), r.status, r.error_body()),
    };
    OutgoingMessage::reply(&cmd.meta, &outcome, status, body)
        .ok_or_else(|| HandlerError::Permanent(format!("{query} has no reply_to to answer to")))
}

fn id(cmd: &Command, field: &str) -> Result<i32, HandlerError> {
    super::read_id(cmd, field).map_err(HandlerError::Permanent)
}

pub fn client_get_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(client_get(conn, cmd))
}

pub fn client_list_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(client_list(conn, cmd))
}

pub fn instance_list_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(instance_list(conn, cmd))
}

async fn client_get(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let body = &cmd.body;
    // The schema asks for exactly one of the three.
    let key = if body.get("client_id").is_some_and(|v| !v.is_null()) {
        ClientKey::Id(id(cmd, "client_id")?)
    } else if let Some(code) = text_field(body, "client_code") {
        ClientKey::Code(code)
    } else if let Some(external) = text_field(body, "external_id") {
        ClientKey::ExternalId(external)
    } else {
        return Err(HandlerError::Permanent(
            "client.get names no client although its schema requires one".into(),
        ));
    };
    let include_deleted = body
        .get("include_deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(
        match store::clients::find_client(conn, &key, include_deleted).await? {
            Some(client) => Answer::Found(json!({ "client": ClientListItem::from(&client) })),
            None => Answer::Refused(Refusal::client_not_found()),
        },
    )
}

async fn client_list(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let body = &cmd.body;
    let partner_id = match body.get("partner").filter(|v| !v.is_null()) {
        None => None,
        Some(partner) => {
            let selector = match partner {
                Value::String(name) => PartnerSelector {
                    id: None,
                    name: Some(name.trim().to_string()),
                },
                other => PartnerSelector {
                    id: other.as_i64().and_then(|n| i32::try_from(n).ok()),
                    name: None,
                },
            };
            match store::partners::resolve(conn, &[&selector])
                .await?
                .pop()
                .flatten()
            {
                Some(r) => Some(r.direct.id),
                None => return Ok(Answer::Refused(Refusal::partner_not_found())),
            }
        }
    };
    let filter = ClientFilter {
        status: text_field(body, "status"),
        country_code: text_field(body, "country_code"),
        client_type: text_field(body, "client_type"),
        partner_id,
        external_id: text_field(body, "external_id"),
        is_active: body.get("is_active").and_then(Value::as_bool),
        include_deleted: body
            .get("include_deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    // take/skip (seed 002) beside page and cursor.
    let given = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    if given("take") || given("skip") {
        let (take, skip) = paging::take_skip(body);
        let clients =
            store::clients::list_clients(conn, &filter, PageStart::Offset(skip), take as i64)
                .await?;
        let total = store::clients::count_clients(conn, &filter).await?;
        let items: Vec<ClientListItem> = clients.iter().map(ClientListItem::from).collect();
        return Ok(Answer::Found(json!({
            "clients": items,
            "take": take,
            "skip": skip,
            "total": total,
        })));
    }
    let page_size = paging::page_size(body.get("page_size").and_then(Value::as_u64));
    let (start, page) = match text_field(body, "cursor") {
        Some(token) => match Cursor::decode(&token) {
            Some(c) => (PageStart::After(c.created, c.client_id), c.page),
            None => return Ok(Answer::Refused(Refusal::invalid_cursor())),
        },
        None => {
            let page = body.get("page").and_then(Value::as_u64).unwrap_or(1).max(1);
            let page = u32::try_from(page).unwrap_or(u32::MAX);
            let skip = u64::from(page - 1) * u64::from(page_size);
            (PageStart::Offset(skip), page)
        }
    };
    // One more than the page holds says whether there is a next page.
    let mut clients =
        store::clients::list_clients(conn, &filter, start, i64::from(page_size) + 1).await?;
    let has_more = clients.len() > page_size as usize;
    clients.truncate(page_size as usize);
    let total = store::clients::count_clients(conn, &filter).await?;
    let next_cursor = match clients.last() {
        Some(last) if has_more => Some(
            Cursor {
                page: page.saturating_add(1),
                created: last.created,
                client_id: last.client_id,
            }
            .encode(),
        ),
        _ => None,
    };
    let items: Vec<ClientListItem> = clients.iter().map(ClientListItem::from).collect();
    Ok(Answer::Found(json!({
        "clients": items,
        "page": page,
        "page_size": page_size,
        "total": total,
        "next_cursor": next_cursor,
    })))
}

pub fn partner_list_read<'x>(
    conn: &'x mut PgConnection,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Answer, HandlerError>> {
    Box::pin(partner_list(conn, cmd))
}

/// `partner.list {under?, take?, skip?}`: `{partners, take, skip, total}`, oldest first.
async fn partner_list(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let body = &cmd.body;
    let under = match body.get("under").and_then(Value::as_i64) {
        Some(n) => match store::partners::get(conn, i32::try_from(n).unwrap_or(-1)).await? {
            Some(p) => Some(p.partner_id),
            None => return Ok(Answer::Refused(Refusal::partner_not_found())),
        },
        None => None,
    };
    let (take, skip) = paging::take_skip(body);
    let (partners, total) = store::partners::list(
        conn,
        under,
        take as i64,
        i64::try_from(skip).unwrap_or(i64::MAX),
    )
    .await?;
    Ok(Answer::Found(json!({
        "partners": partners,
        "take": take,
        "skip": skip,
        "total": total,
    })))
}

async fn instance_list(conn: &mut PgConnection, cmd: &Command) -> Result<Answer, HandlerError> {
    let actor = store::instances::actor(conn, id(cmd, "actor_user_id")?).await?;
    let actor = match authorize(InstanceAction::List, actor) {
        Ok(actor) => actor,
        Err(refusal) => return Ok(Answer::Refused(refusal)),
    };
    let instances = store::instances::list_for_client(conn, actor.client_id).await?;
    Ok(Answer::Found(json!({ "instances": instances })))
}
