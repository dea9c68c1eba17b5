//! Partners: the tree clients hang under.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::domain::profile::{PartnerRef, PartnerSelector};

/// A partner as stored and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Partner {
    #[serde(rename = "id")]
    pub partner_id: i32,
    pub name: String,
    pub parent_partner_id: Option<i32>,
    /// The root of its tree (itself for a partner without parent).
    pub root_partner_id: i32,
    #[serde(serialize_with = "crate::messages::event::serialize_timestamp")]
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "partner_id, name, parent_partner_id, root_partner_id, created_at";

/// Inserts a partner under `parent` (its tree's root computed here); `None` when a partner
/// has the name already, whatever its case (the unique index decides).
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    parent: Option<&Partner>,
) -> Result<Option<Partner>, sqlx::Error> {
    let sql = format!(
        "WITH id AS (SELECT nextval(pg_get_serial_sequence('partners', 'partner_id'))::int AS v)
         INSERT INTO partners (partner_id, name, parent_partner_id, root_partner_id)
         SELECT v, $1, $2, COALESCE($3, v) FROM id
         ON CONFLICT DO NOTHING
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(parent.map(|p| p.partner_id))
        .bind(parent.map(|p| p.root_partner_id))
        .fetch_optional(conn)
        .await
}

pub async fn get(conn: &mut PgConnection, partner_id: i32) -> Result<Option<Partner>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM partners WHERE partner_id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(partner_id)
        .fetch_optional(conn)
        .await
}

/// A partner with its root, as client answers show them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub direct: PartnerRef,
    pub root: PartnerRef,
}

/// The partners the selectors name (by id or by case-insensitive name), with their roots, in
/// one query; a selector naming no partner, or an id and a name of two different partners,
/// resolves to `None`.
pub async fn resolve(
    conn: &mut PgConnection,
    selectors: &[&PartnerSelector],
) -> Result<Vec<Option<Resolved>>, sqlx::Error> {
    if selectors.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i32> = selectors.iter().filter_map(|s| s.id).collect();
    let names: Vec<String> = selectors
        .iter()
        .filter_map(|s| s.name.as_ref().map(|n| n.to_lowercase()))
        .collect();
    let rows: Vec<(i32, String, i32, String)> = sqlx::query_as(
        "SELECT p.partner_id, p.name, r.partner_id, r.name
         FROM partners p JOIN partners r ON r.partner_id = p.root_partner_id
         WHERE p.partner_id = ANY($1) OR lower(p.name) = ANY($2)",
    )
    .bind(&ids)
    .bind(&names)
    .fetch_all(conn)
    .await?;
    Ok(selectors
        .iter()
        .map(|selector| {
            rows.iter()
                .map(|(id, name, root_id, root_name)| Resolved {
                    direct: PartnerRef {
                        id: *id,
                        name: name.clone(),
                    },
                    root: PartnerRef {
                        id: *root_id,
                        name: root_name.clone(),
                    },
                })
                .find(|r| selector.matches(&r.direct))
        })
        .collect())
}

/// One page of partners, oldest first, and how many there are; `under` keeps the partners of
/// one tree (that partner and every partner below it: `partner_subtree`, migration 0017).
pub async fn list(
    conn: &mut PgConnection,
    under: Option<i32>,
    take: i64,
    skip: i64,
) -> Result<(Vec<Partner>, i64), sqlx::Error> {
    const IN_TREE: &str = "$1::int IS NULL OR partner_id IN (SELECT partner_subtree($1))";
    let sql = format!(
        "SELECT {COLUMNS} FROM partners WHERE {IN_TREE} ORDER BY partner_id LIMIT $2 OFFSET $3"
    );
    let page: Vec<Partner> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(under)
        .bind(take)
        .bind(skip)
        .fetch_all(&mut *conn)
        .await?;
    let sql = format!("SELECT count(*) FROM partners WHERE {IN_TREE}");
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(under)
        .fetch_one(conn)
        .await?;
    Ok((page, total))
}
