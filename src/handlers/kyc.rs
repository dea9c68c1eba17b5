//! `client.kyc.update`: the outcome of the client's eKYC check. The client and its admin
//! users take the new status (the seed keeps it on both), a history row records the change,
//! and `client.kyc_updated` announces it. The client row is locked like a lifecycle command's,
//! so an approval decides on the eKYC status of the latest update, never a stale one.

use futures::future::BoxFuture;
use serde_json::json;

use super::lifecycle::lock_live_client;
use super::{Cx, Decision, HandlerError, Outcome, required_id};
use crate::domain::EkycStatus;
use crate::messages::{Command, OutgoingMessage};
use crate::store;

pub const UPDATED: &str = "client.kyc_updated";
pub const FAILED: &str = "client.kyc_update_failed";

pub fn decide_one<'x>(
    cx: &'x mut Cx<'_>,
    cmd: &'x Command,
) -> BoxFuture<'x, Result<Decision, HandlerError>> {
    Box::pin(handle(cx, cmd))
}

async fn handle(cx: &mut Cx<'_>, cmd: &Command) -> Result<Decision, HandlerError> {
    let client_id = required_id!(cmd, "client_id");
    let to: EkycStatus = match cmd
        .body
        .get("ekyc_status")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .parse()
    {
        Ok(to) => to,
        Err(e) => {
            return Ok(Decision::Failed(format!(
                "ekyc_status passed its schema but: {e}"
            )));
        }
    };
    let client = match lock_live_client(cx, cmd, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    let from = client.ekyc_status;
    // Admin users follow even when the client's status stays: they may have drifted.
    let (updated, admin_users) = store::clients::set_ekyc(cx.conn, client_id, to).await?;
    let changed = from != to;
    if changed {
        store::history::record_ekyc(
            cx.conn,
            &cmd.meta,
            client_id,
            from.as_str(),
            to.as_str(),
            admin_users,
        )
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
    Ok(Decision::Done(Outcome::succeeded(messages)))
}
