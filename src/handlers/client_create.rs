//! `client.create`, saga step 1 (persist): required fields, PSP by country, email uniqueness,
//! client code, client and admin user rows, the saga row, and `client.created` — or one of
//! the contract's refusals, with nothing changed.

use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection};

use super::{HandlerError, Outcome};
use crate::domain::client::CLIENT_CREATED_MESSAGE;
use crate::domain::{AdminUser, Client, NewClient, choose_psp};
use crate::messages::event::derived_id;
use crate::messages::{Command, OutgoingMessage, Refusal};
use crate::saga;
use crate::store::{self, sagas::Step};

pub const CREATED: &str = "client.created";
pub const FAILED: &str = "client.creation_failed";

pub async fn handle(conn: &mut PgConnection, cmd: &Command) -> Result<Outcome, HandlerError> {
    let new = match NewClient::parse(&cmd.body) {
        Ok(new) => new,
        Err(refusal) => return Ok(Outcome::refused(cmd, FAILED, refusal)),
    };
    let candidates = store::clients::psp_candidates(conn, &new.country_code).await?;
    let psp = match choose_psp(&candidates) {
        Ok(psp) => psp.clone(),
        Err(refusal) => return Ok(Outcome::refused(cmd, FAILED, refusal)),
    };

    // The code, the client and the user are taken under a savepoint: if the email turns out
    // to be taken, rolling back to it also gives the month's counter its number back.
    let mut savepoint = conn.begin().await?;
    let code = store::clients::next_client_code(&mut savepoint).await?;
    let Some(client) =
        store::clients::insert_client(&mut savepoint, &new, &code, psp.psp_id).await?
    else {
        savepoint.rollback().await?;
        return Ok(Outcome::refused(cmd, FAILED, Refusal::email_in_use()));
    };
    let Some(admin) = store::clients::insert_admin_user(&mut savepoint, &client).await? else {
        savepoint.rollback().await?;
        return Ok(Outcome::refused(cmd, FAILED, Refusal::email_in_use()));
    };
    savepoint.commit().await?;

    // What happens next is recorded, not assumed: Xendit customers for Xendit clients, then
    // the welcome email, then completion.
    let saga_id = derived_id(&cmd.meta.message_id, "saga");
    let next = if psp.is_xendit() {
        Step::Xendit
    } else {
        Step::WelcomeEmail
    };
    let saga_data = json!({ "psp": { "psp_id": psp.psp_id, "psp_name": psp.psp_name } });
    store::sagas::insert(
        conn,
        saga_id,
        client.client_id,
        admin.user_id,
        &cmd.meta,
        next,
        &saga_data,
    )
    .await?;

    let mut data = created_body(&client, &admin);
    data["psp"] = json!({ "psp_id": psp.psp_id, "psp_name": psp.psp_name });
    data["saga"] = json!({ "saga_id": saga_id, "next_step": next.as_str() });
    // The reply to `reply_to` waits for completion, when the whole REST body is known.
    let messages = vec![
        OutgoingMessage::event(&cmd.meta, CREATED, data),
        saga::step_message(
            saga_id,
            next,
            &cmd.meta.correlation_id,
            cmd.meta.traceparent.as_deref(),
        ),
    ];
    Ok(Outcome::succeeded(messages))
}

/// The seed's 201 body, without the Xendit part (completion adds it for Xendit clients).
pub fn created_body(client: &Client, admin: &AdminUser) -> Value {
    json!({
        "message": CLIENT_CREATED_MESSAGE,
        "client": client,
        "admin_user": admin,
        "ekyc_status": client.ekyc_status,
    })
}
