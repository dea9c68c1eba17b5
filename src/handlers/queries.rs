//! The queries `client.get`, `client.list` and `instance.list`: read, and say what was read.
//! They change nothing, so they take no inbox row, write no outbox row and announce no event:
//! [`answer`] returns the reply and the worker publishes it straight to `reply_to`
//! (`worker::query`). Running one twice is harmless, and the reply's message_id is derived
//! from the query's, so a gateway can drop a repeat.
//!
//! Bodies:
//! - `client.get`: 200 `{"client": {...}}`, the seed's client object with `created` and
//!   `updated`; or 404 `{"error": "Client not found"}`.
//! - `client.list`: 200 `{"clients": [...], "page", "page_size", "total", "total_pages",
//!   "next_cursor"}` (or `take`/`skip` paging: `take`, `skip`, `total`, `page`, `total_pages`):
//!   the array of "Get All Clients", newest first, one page of it, with the number of clients
//!   matching the filters and the cursor of the next page (`null` on the last page). See
//!   `domain::paging` for why the cursor and not `page` is the way to walk every page.
//! - `instance.list`: 200 `{"instances": [...]}` as in "Get My Instances".

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use super::body::{id, opt_count, opt_id, text};
use super::handler::{Answer, Body, HandlerError, Query, RunQuery};
use crate::domain::ClientListItem;
use crate::domain::instance::{InstanceAction, authorize};
use crate::domain::paging::{self, Cursor, KeyValue, Order, Sort, SortKey};
use crate::domain::profile::PartnerSelector;
use crate::messages::{CommandMeta, CommandType, OutgoingMessage, Refusal};
use crate::store::{self, clients::ClientFilter, clients::ClientKey, clients::PageStart};

/// Runs a query and returns its reply (the pipeline has made sure there is a `reply_to`).
pub async fn answer(
    pool: &PgPool,
    meta: &CommandMeta,
    body: &Body,
    read: RunQuery,
) -> Result<OutgoingMessage, HandlerError> {
    // One read-only snapshot: a page and its total agree with each other.
    let mut tx = store::read_only(pool).await?;
    let answer = read(&mut tx, body).await?;
    tx.commit().await?;
    let query = meta.command_type.as_str();
    let (outcome, status, body) = match answer {
        Answer::Found(body) => (format!("{query}.answered"), 200, body),
        Answer::Refused(r) => (format!("{query}.refused"), r.status, r.error_body()),
    };
    OutgoingMessage::reply(meta, &outcome, status, body)
        .ok_or_else(|| HandlerError::Permanent(format!("{query} has no reply_to to answer to")))
}

/// `client.get {client_id | client_code | external_id, include_deleted?}` (the schema asks
/// for exactly one of the three).
#[derive(Debug, Deserialize)]
pub struct ClientGet {
    #[serde(default, deserialize_with = "opt_id")]
    pub client_id: Option<i32>,
    #[serde(default)]
    pub client_code: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub include_deleted: Option<bool>,
}

impl Query for ClientGet {
    const TYPE: CommandType = CommandType::new("client.get");
    const SCHEMA: &'static str = crate::schema!("client.get");

    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        let key = if let Some(id) = query.client_id {
            ClientKey::Id(id)
        } else if let Some(code) = text(query.client_code.as_deref()) {
            ClientKey::Code(code)
        } else if let Some(external) = text(query.external_id.as_deref()) {
            ClientKey::ExternalId(external)
        } else {
            return Err(HandlerError::Permanent(
                "client.get names no client although its schema requires one".into(),
            ));
        };
        let include_deleted = query.include_deleted.unwrap_or(false);
        Ok(
            match store::clients::find_client(conn, &key, include_deleted).await? {
                Some(client) => Answer::Found(json!({ "client": ClientListItem::from(&client) })),
                None => Answer::Refused(Refusal::client_not_found()),
            },
        )
    }
}

/// How `client.list` names a partner: its id, or its name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PartnerKey {
    Id(#[serde(deserialize_with = "id")] i32),
    Name(String),
}

/// `client.list` (filters, and `page`/`cursor` or `take`/`skip` paging).
#[derive(Debug, Deserialize)]
pub struct ClientList {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub country_code: Option<String>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default, deserialize_with = "opt_count")]
    pub page: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub page_size: Option<u64>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub partner: Option<PartnerKey>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub include_deleted: Option<bool>,
    #[serde(default, deserialize_with = "opt_count")]
    pub take: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub skip: Option<u64>,
    /// Matched case-insensitively anywhere in alias, legal or person's name, email, client
    /// code and external id.
    #[serde(default)]
    pub q: Option<String>,
    /// A date (`YYYY-MM-DD`, that day's start in UTC) or an RFC 3339 instant; inclusive.
    #[serde(default, deserialize_with = "opt_instant")]
    pub created_from: Option<Instant>,
    /// A date (through that whole day) or an RFC 3339 instant; inclusive.
    #[serde(default, deserialize_with = "opt_instant")]
    pub created_to: Option<Instant>,
    #[serde(default, deserialize_with = "opt_instant")]
    pub updated_since: Option<Instant>,
    #[serde(default)]
    pub sort: Option<SortKey>,
    #[serde(default)]
    pub order: Option<Order>,
}

/// A bound of a date filter: a whole day, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instant {
    Day(chrono::NaiveDate),
    At(DateTime<Utc>),
}

impl Instant {
    /// The first instant it covers.
    fn start(self) -> DateTime<Utc> {
        match self {
            Instant::Day(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
            Instant::At(t) => t,
        }
    }

    /// The first instant after it (a day's end; an instant's next microsecond).
    fn end(self) -> DateTime<Utc> {
        match self {
            Instant::Day(d) => d.succ_opt().map_or(DateTime::<Utc>::MAX_UTC, |next| {
                next.and_time(chrono::NaiveTime::MIN).and_utc()
            }),
            Instant::At(t) => t + chrono::Duration::microseconds(1),
        }
    }
}

fn opt_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
    let Some(raw) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let raw = raw.trim();
    if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Some(Instant::Day(day)));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| Some(Instant::At(t.with_timezone(&Utc))))
        .map_err(|_| serde::de::Error::custom("not a date (YYYY-MM-DD) or an RFC 3339 instant"))
}

impl Query for ClientList {
    const TYPE: CommandType = CommandType::new("client.list");
    const SCHEMA: &'static str = crate::schema!("client.list");

    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        client_list(conn, query).await
    }
}

async fn client_list(conn: &mut PgConnection, query: &ClientList) -> Result<Answer, HandlerError> {
    let partner_id = match &query.partner {
        None => None,
        Some(partner) => {
            let selector = match partner {
                PartnerKey::Name(name) => PartnerSelector {
                    id: None,
                    name: Some(name.trim().to_string()),
                },
                PartnerKey::Id(id) => PartnerSelector {
                    id: Some(*id),
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
        status: text(query.status.as_deref()),
        country_code: text(query.country_code.as_deref()),
        client_type: text(query.client_type.as_deref()),
        partner_id,
        external_id: text(query.external_id.as_deref()),
        is_active: query.is_active,
        include_deleted: query.include_deleted.unwrap_or(false),
        q: text(query.q.as_deref()),
        created_from: query.created_from.map(Instant::start),
        created_before: query.created_to.map(Instant::end),
        updated_since: query.updated_since.map(Instant::start),
    };
    let sort = Sort::new(query.sort, query.order);
    // take/skip (seed 002) beside page and cursor.
    if query.take.is_some() || query.skip.is_some() {
        let page = paging::Offset::asked(query.take, query.skip);
        let start = PageStart::Offset(page.skip);
        let clients =
            store::clients::list_clients(conn, &filter, sort, start, page.limit()).await?;
        let total = store::clients::count_clients(conn, &filter).await?;
        let items: Vec<ClientListItem> = clients.iter().map(ClientListItem::from).collect();
        return Ok(Answer::Found(page.answer("clients", items, total)));
    }
    let page_size = paging::page_size(query.page_size);
    let (start, page) = match text(query.cursor.as_deref()) {
        // A cursor of another order would start the page in the wrong place.
        Some(token) => match Cursor::decode(&token) {
            Some(c) if c.sort == sort => (PageStart::After(c.key, c.client_id), c.page),
            _ => return Ok(Answer::Refused(Refusal::invalid_cursor())),
        },
        None => {
            let page = query.page.unwrap_or(1).max(1);
            let page = u32::try_from(page).unwrap_or(u32::MAX);
            let skip = u64::from(page - 1) * u64::from(page_size);
            (PageStart::Offset(skip), page)
        }
    };
    // One more than the page holds says whether there is a next page.
    let mut clients =
        store::clients::list_clients(conn, &filter, sort, start, i64::from(page_size) + 1).await?;
    let has_more = clients.len() > page_size as usize;
    clients.truncate(page_size as usize);
    let total = store::clients::count_clients(conn, &filter).await?;
    let next_cursor = match clients.last() {
        Some(last) if has_more => Some(
            Cursor {
                page: page.saturating_add(1),
                sort,
                key: match sort.key {
                    SortKey::Created => KeyValue::Time(last.created),
                    SortKey::Updated => KeyValue::Time(last.updated),
                    SortKey::Alias => KeyValue::Text(last.client_alias.clone()),
                },
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
        "total_pages": paging::total_pages(total, u64::from(page_size)),
        "next_cursor": next_cursor,
    })))
}

/// `partner.list {under?, take?, skip?}`: `{partners, take, skip, total}`, oldest first.
#[derive(Debug, Deserialize)]
pub struct PartnerList {
    #[serde(default, deserialize_with = "opt_id")]
    pub under: Option<i32>,
    #[serde(default, deserialize_with = "opt_count")]
    pub take: Option<u64>,
    #[serde(default, deserialize_with = "opt_count")]
    pub skip: Option<u64>,
}

impl Query for PartnerList {
    const TYPE: CommandType = CommandType::new("partner.list");
    const SCHEMA: &'static str = crate::schema!("partner.list");

    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        let under = match query.under {
            Some(n) => match store::partners::get(conn, n).await? {
                Some(p) => Some(p.partner_id),
                None => return Ok(Answer::Refused(Refusal::partner_not_found())),
            },
            None => None,
        };
        let page = paging::Offset::asked(query.take, query.skip);
        let (partners, total) =
            store::partners::list(conn, under, page.limit(), page.offset()).await?;
        Ok(Answer::Found(page.answer("partners", partners, total)))
    }
}

/// `instance.list {actor_user_id}`: the instances of the actor's client.
#[derive(Debug, Deserialize)]
pub struct InstanceList {
    #[serde(deserialize_with = "id")]
    pub actor_user_id: i32,
}

impl Query for InstanceList {
    const TYPE: CommandType = CommandType::new("instance.list");
    const SCHEMA: &'static str = crate::schema!("instance.list");

    async fn read(conn: &mut PgConnection, query: &Self) -> Result<Answer, HandlerError> {
        let actor = store::instances::actor(conn, query.actor_user_id).await?;
        let actor = match authorize(InstanceAction::List, actor) {
            Ok(actor) => actor,
            Err(refusal) => return Ok(Answer::Refused(refusal)),
        };
        let instances = store::instances::list_for_client(conn, actor.client_id).await?;
        Ok(Answer::Found(json!({ "instances": instances })))
    }
}
