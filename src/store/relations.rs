//! Related people of corporate clients (`client_relations`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::relation::NewRelation;

/// A relation as stored and answered (seed 004's client relation, snake_case).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Relation {
    #[serde(rename = "id")]
    pub relation_id: Uuid,
    pub client_id: i32,
    pub relation: String,
    pub identity: Value,
    pub profile: Value,
    /// Given and family name.
    pub full_name: String,
    #[serde(serialize_with = "crate::messages::event::serialize_timestamp")]
    pub created: DateTime<Utc>,
    #[serde(serialize_with = "crate::messages::event::serialize_timestamp")]
    pub updated: DateTime<Utc>,
}

impl Relation {
    /// What a patch works on.
    pub fn as_new(&self) -> NewRelation {
        NewRelation {
            relation: self.relation.clone(),
            identity: self.identity.clone(),
            profile: self.profile.clone(),
        }
    }
}

const COLUMNS: &str = "relation_id, client_id, relation, identity, profile, \
     concat_ws(' ', identity->>'given_name', identity->>'family_name') AS full_name, \
     created, updated";

/// Inserts relations of one or more clients in one statement; returns them in the order given.
pub async fn insert_many(
    conn: &mut PgConnection,
    rows: &[(i32, &NewRelation)],
) -> Result<Vec<Relation>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::new_v4()).collect();
    let clients: Vec<i32> = rows.iter().map(|(c, _)| *c).collect();
    let kinds: Vec<&str> = rows.iter().map(|(_, r)| r.relation.as_str()).collect();
    let identities: Vec<Value> = rows.iter().map(|(_, r)| r.identity.clone()).collect();
    let profiles: Vec<Value> = rows.iter().map(|(_, r)| r.profile.clone()).collect();
    let sql = format!(
        "INSERT INTO client_relations (relation_id, client_id, relation, identity, profile)
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[])
         RETURNING {COLUMNS}"
    );
    let inserted: Vec<Relation> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&ids)
        .bind(&clients)
        .bind(&kinds)
        .bind(&identities)
        .bind(&profiles)
        .fetch_all(conn)
        .await?;
    // RETURNING promises no order: put them back in the order given.
    let mut by_id: std::collections::HashMap<Uuid, Relation> =
        inserted.into_iter().map(|r| (r.relation_id, r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// One relation of a client, locked for the rest of the transaction when `lock`.
pub async fn get(
    conn: &mut PgConnection,
    client_id: i32,
    relation_id: Uuid,
    lock: bool,
) -> Result<Option<Relation>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM client_relations WHERE client_id = $1 AND relation_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(relation_id)
        .fetch_optional(conn)
        .await
}

pub async fn update(
    conn: &mut PgConnection,
    relation_id: Uuid,
    to: &NewRelation,
) -> Result<Relation, sqlx::Error> {
    let sql = format!(
        "UPDATE client_relations SET relation = $2, identity = $3, profile = $4, updated = now()
         WHERE relation_id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(relation_id)
        .bind(&to.relation)
        .bind(&to.identity)
        .bind(&to.profile)
        .fetch_one(conn)
        .await
}

/// Deletes a relation of a client; returns what it was, or `None` when it has no such one.
pub async fn delete(
    conn: &mut PgConnection,
    client_id: i32,
    relation_id: Uuid,
) -> Result<Option<Relation>, sqlx::Error> {
    let sql = format!(
        "DELETE FROM client_relations WHERE client_id = $1 AND relation_id = $2
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(relation_id)
        .fetch_optional(conn)
        .await
}

/// A page of a client's relations in the order they were added, and how many it has.
pub async fn list(
    conn: &mut PgConnection,
    client_id: i32,
    take: i64,
    skip: i64,
) -> Result<(Vec<Relation>, i64), sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM client_relations WHERE client_id = $1
         ORDER BY position LIMIT $2 OFFSET $3"
    );
    let page = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(take)
        .bind(skip)
        .fetch_all(&mut *conn)
        .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM client_relations WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(conn)
            .await?;
    Ok((page, total))
}
