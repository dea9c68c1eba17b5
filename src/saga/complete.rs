//! Step 4: `client.onboarding_completed`, carrying what the seed's REST response carried, and
//! the reply to the original `client.create`, when it asked for one.

use serde_json::{Value, json};
use sqlx::PgPool;

use super::origin;
use crate::domain::{AdminUser, Client};
use crate::handlers::client_create::created_body;
use crate::handlers::{self, Handled, HandlerError, Outcome};
use crate::messages::{Command, OutgoingMessage};
use crate::store::{self, sagas::Saga, sagas::Step};

pub const COMPLETED: &str = "client.onboarding_completed";

/// The seed's 201 body: message, client, admin_user, ekyc_status, and `xendit_integration`
/// when the client's PSP is Xendit.
pub fn completion_body(client: &Client, admin: &AdminUser, saga_data: &Value) -> Value {
    let mut body = created_body(client, admin);
    if let Some(x) = saga_data.get("xendit_integration") {
        body["xendit_integration"] = x.clone();
    }
    body
}

/// The completion's messages: the event (with the email outcome and saga id added) and the
/// reply (the REST body exactly).
pub fn messages(
    cmd: &Command,
    saga: &Saga,
    client: &Client,
    admin: &AdminUser,
    data: &Value,
) -> Vec<OutgoingMessage> {
    let origin = origin(saga, cmd.meta.traceparent.as_deref());
    let body = completion_body(client, admin, data);
    let mut event_data = body.clone();
    event_data["saga_id"] = json!(saga.saga_id);
    if let Some(email) = data.get("welcome_email") {
        event_data["welcome_email"] = email.clone();
    }
    let mut out = vec![OutgoingMessage::event(&origin, COMPLETED, event_data)];
    out.extend(OutgoingMessage::reply(&origin, COMPLETED, 201, body));
    out
}

/// Completion on its own, for a saga found waiting at `complete` (e.g. replayed by an operator).
pub async fn run(pool: &PgPool, cmd: &Command, saga: &Saga) -> Result<Handled, HandlerError> {
    let Some((mut tx, saga)) = super::lock_at(pool, saga.saga_id, Step::Complete).await? else {
        return Ok(Handled::Duplicate);
    };
    let client = store::clients::get_client(&mut tx, saga.client_id).await?;
    let admin = store::clients::get_admin_user(&mut tx, saga.admin_user_id).await?;
    let (Some(client), Some(admin)) = (client, admin) else {
        return Err(HandlerError::Other(format!(
            "client or admin of saga {} is gone",
            saga.saga_id
        )));
    };
    store::sagas::complete(&mut tx, saga.saga_id, &json!({})).await?;
    let messages = messages(cmd, &saga, &client, &admin, &saga.data);
    handlers::finish(tx, cmd, Outcome::succeeded(messages)).await
}
