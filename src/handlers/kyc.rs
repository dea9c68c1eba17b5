//! `client.kyc.update`: the outcome of the client's eKYC check. The client and its admin
//! users take the new status (the seed keeps it on both), a history row records the change,
//! and `client.kyc_updated` announces it. The client row is locked like a lifecycle command's,
//! so an approval decides on the eKYC status of the latest update, never a stale one.

use serde_json::json;
use sqlx::PgConnection;

use super::lifecycle::client_not_found;
use super::{HandlerError, Outcome, required_id};
use crate::configuration::Settings;
use crate::domain::EkycStatus;
use crate::messages::{Command, OutgoingMessage};
use crate::store;

pub const UPDATED: &str = "client.kyc_updated";
pub const FAILED: &str = "client.kyc_update_failed";

pub async fn handle(
    conn: &mut PgConnection,
    settings: &Settings,
    cmd: &Command,
) -> Result<Outcome, HandlerError> {
    let client_id = required_id(cmd, "client_id")?;
    let to: EkycStatus = cmd
        .body
        .get("ekyc_status")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .parse()
        .map_err(|e| HandlerError::Other(format!("ekyc_status passed its schema but: {e}")))?;
    let Some(client) = store::clients::lock_client(conn, client_id).await? else {
        return client_not_found(cmd, settings, FAILED, client_id);
    };
    let from = client.ekyc_status;
    // Admin users follow even when the client's status stays: they may have drifted.
    let (updated, admin_users) = store::clients::set_ekyc(conn, client_id, to.as_str()).await?;
    let changed = from != to.as_str();
    if changed {
        store::history::record_ekyc(conn, &cmd.meta, client_id, &from, to.as_str(), admin_users)
            .await?;
    }
    let data = json!({
        "client_id": client_id,
        "client_code": updated.client_code,
        "from_status": from,
        "to_status": to,
        "changed": changed,
        "admin_users_updated": admin_users,
        "client": updated,
    });
    let mut messages = vec![OutgoingMessage::event(&cmd.meta, UPDATED, data)];
    messages.extend(OutgoingMessage::reply(
        &cmd.meta,
        UPDATED,
        200,
        json!({
            "message": "eKYC status updated successfully",
            "client": updated,
            "ekyc_status": to,
        }),
    ));
    Ok(Outcome::succeeded(messages))
}
