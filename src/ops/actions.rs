//! Operator actions that are one row's change (dead-letter moves are `ops::dlq`'s): the one
//! implementation the console and the CLI both call, each recorded in `operator_actions` with
//! who, from where and through which door.

use serde_json::json;
use sqlx::PgPool;

use crate::store;

/// Who acts, and through which door.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    /// `console` or `cli`.
    pub source: &'static str,
    pub address: Option<String>,
}

impl Actor {
    /// The OS user running the CLI.
    pub fn cli() -> Actor {
        Actor {
            name: crate::ops::dlq::os_user(),
            source: "cli",
            address: None,
        }
    }

    async fn record(
        &self,
        pool: &PgPool,
        action: &str,
        subject: serde_json::Value,
        done: bool,
    ) -> Result<(), sqlx::Error> {
        store::audit::record(
            pool,
            &self.name,
            self.source,
            self.address.as_deref(),
            action,
            &subject,
            done,
        )
        .await
    }
}

/// Enables or disables a webhook endpoint; whether there was one.
pub async fn set_webhook_enabled(
    pool: &PgPool,
    actor: &Actor,
    endpoint_id: i64,
    enabled: bool,
) -> Result<bool, sqlx::Error> {
    let reason = (!enabled).then(|| format!("disabled by {}", actor.name));
    let done = store::webhooks::set_enabled(pool, endpoint_id, enabled, reason.as_deref()).await?;
    let action = if enabled {
        "webhook_endpoint.enable"
    } else {
        "webhook_endpoint.disable"
    };
    actor
        .record(pool, action, json!({ "endpoint_id": endpoint_id }), done)
        .await?;
    Ok(done)
}

/// Sends a webhook delivery again with a whole new budget; whether there was one.
pub async fn redeliver_webhook(
    pool: &PgPool,
    actor: &Actor,
    delivery_id: i64,
) -> Result<bool, sqlx::Error> {
    let done = store::webhooks::redeliver(pool, delivery_id).await?;
    actor
        .record(
            pool,
            "webhook_delivery.redeliver",
            json!({ "delivery_id": delivery_id }),
            done,
        )
        .await?;
    Ok(done)
}

/// Makes a client's saga due now; whether it could (not completed, not held by a worker).
pub async fn retry_saga(pool: &PgPool, actor: &Actor, client_id: i32) -> Result<bool, sqlx::Error> {
    let done = store::sagas::retry_now(pool, client_id).await?;
    actor
        .record(pool, "saga.retry", json!({ "client_id": client_id }), done)
        .await?;
    Ok(done)
}
