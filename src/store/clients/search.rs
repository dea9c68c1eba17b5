//! `client.list` and `client.get`: filters, sorts, both pagings, and look-ups by key.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::columns::select_from;
use crate::domain::Client;
use crate::domain::paging::{KeyValue, Order, Sort, SortKey};

/// The filters of `client.list`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    pub status: Option<String>,
    pub country_code: Option<String>,
    pub client_type: Option<String>,
    /// Clients of this partner and of every partner below it.
    pub partner_id: Option<i32>,
    pub external_id: Option<String>,
    pub is_active: Option<bool>,
    /// Deleted clients are left out unless this is set.
    pub include_deleted: bool,
    /// Lower-cased; matched anywhere in `clients.search_text` (alias, names, email, client
    /// code, external id), through its trigram index.
    pub q: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
    pub updated_since: Option<DateTime<Utc>>,
}

impl ClientFilter {
    pub(super) fn push_where(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        if !self.include_deleted {
            q.push(" AND c.deleted_at IS NULL");
        }
        if let Some(s) = &self.status {
            q.push(" AND c.client_status = ").push_bind(s.clone());
        }
        if let Some(c) = &self.country_code {
            q.push(" AND c.country_code = ").push_bind(c.clone());
        }
        if let Some(t) = &self.client_type {
            q.push(" AND c.client_type = ").push_bind(t.clone());
        }
        if let Some(p) = self.partner_id {
            q.push(" AND c.direct_partner_id IN (SELECT partner_subtree(")
                .push_bind(p)
                .push("))");
        }
        if let Some(e) = &self.external_id {
            q.push(" AND c.external_id = ").push_bind(e.clone());
        }
        if let Some(a) = self.is_active {
            q.push(" AND c.is_active = ").push_bind(a);
        }
        if let Some(text) = &self.q {
            q.push(" AND c.search_text LIKE ")
                .push_bind(format!("%{}%", like_escaped(&text.to_lowercase())));
        }
        if let Some(t) = self.created_from {
            q.push(" AND c.created >= ").push_bind(t);
        }
        if let Some(t) = self.created_before {
            q.push(" AND c.created < ").push_bind(t);
        }
        if let Some(t) = self.updated_since {
            q.push(" AND c.updated >= ").push_bind(t);
        }
    }
}

/// `text` as a literal inside a LIKE pattern (`\` is LIKE's default escape).
pub(super) fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where a page of `client.list` starts.
#[derive(Debug, Clone)]
pub enum PageStart {
    /// Skip this many clients (offset paging).
    Offset(u64),
    /// Strictly after this client's `(sort key, client_id)` (keyset paging).
    After(KeyValue, i32),
}

/// One page of clients in `sort`'s order, the id breaking ties in the same direction
/// (indexes `clients_created`, `clients_updated`, `clients_alias` and the filtered ones of
/// 0002).
pub async fn list_clients(
    conn: &mut PgConnection,
    filter: &ClientFilter,
    sort: Sort,
    start: PageStart,
    limit: i64,
) -> Result<Vec<Client>, sqlx::Error> {
    let column = match sort.key {
        SortKey::Created => "c.created",
        SortKey::Updated => "c.updated",
        SortKey::Alias => "c.client_alias",
    };
    let (after, direction) = match sort.order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    let mut q = QueryBuilder::new(select_from("clients"));
    filter.push_where(&mut q);
    if let PageStart::After(key, client_id) = &start {
        q.push(format!(" AND ({column}, c.client_id) {after} ("));
        match key {
            KeyValue::Time(t) => q.push_bind(*t),
            KeyValue::Text(s) => q.push_bind(s.clone()),
        };
        q.push(", ").push_bind(*client_id).push(")");
    }
    q.push(format!(
        " ORDER BY {column} {direction}, c.client_id {direction} LIMIT "
    ))
    .push_bind(limit);
    if let PageStart::Offset(n) = start {
        q.push(" OFFSET ")
            .push_bind(i64::try_from(n).unwrap_or(i64::MAX));
    }
    q.build_query_as().fetch_all(conn).await
}

/// How many clients match the filters.
pub async fn count_clients(
    conn: &mut PgConnection,
    filter: &ClientFilter,
) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM clients c");
    filter.push_where(&mut q);
    q.build_query_scalar().fetch_one(conn).await
}

/// How a query names a client.
#[derive(Debug, Clone)]
pub enum ClientKey {
    Id(i32),
    Code(String),
    ExternalId(String),
}

/// A client by id, code or external id; deleted ones only when `include_deleted` (the live
/// one first when an external id was reused after a delete).
pub async fn find_client(
    conn: &mut PgConnection,
    key: &ClientKey,
    include_deleted: bool,
) -> Result<Option<Client>, sqlx::Error> {
    let (column, text_key, id_key) = match key {
        ClientKey::Id(id) => ("c.client_id = $2", None, Some(*id)),
        ClientKey::Code(code) => ("c.client_code = $1", Some(code.as_str()), None),
        ClientKey::ExternalId(e) => ("c.external_id = $1", Some(e.as_str()), None),
    };
    let sql = format!(
        "{} WHERE {column} AND ($3 OR c.deleted_at IS NULL)
         ORDER BY c.deleted_at NULLS FIRST, c.client_id DESC LIMIT 1",
        select_from("clients")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(text_key)
        .bind(id_key)
        .bind(include_deleted)
        .fetch_optional(conn)
        .await
}
