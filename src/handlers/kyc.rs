//! `client.kyc.update`: the outcome of the client's eKYC check. The client and its admin
//! users take the new status (the seed keeps it on both), a history row records the change,
//! and `client.kyc_updated` announces it. The client row is locked like a lifecycle command's,
//! so an approval decides on the eKYC status of the latest update, never a stale one.

use serde::Deserialize;
use serde_json::json;

use super::body::{id, parsed};
use super::handler::{Cmd, Cx, DecideOne, Decision, HandlerError, Outcome};
use super::lifecycle::lock_changeable_client;
use crate::domain::EkycStatus;
use crate::messages::OutgoingMessage;
use crate::store;

pub const UPDATED: &str = "client.kyc_updated";
pub const FAILED: &str = "client.kyc_update_failed";

/// `client.kyc.update {client_id, ekyc_status}`.
#[derive(Debug, Deserialize)]
pub struct ClientKycUpdate {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    #[serde(deserialize_with = "parsed")]
    pub ekyc_status: EkycStatus,
}

client_command!(ClientKycUpdate, "client.kyc.update", FAILED);

impl DecideOne for ClientKycUpdate {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        let client_id = cmd.body.client_id;
        let to = cmd.body.ekyc_status;
        let client = match lock_changeable_client(cx, cmd.meta, FAILED, client_id).await? {
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
                cmd.meta,
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
        let messages = OutgoingMessage::event_and_reply(
            cmd.meta,
            UPDATED,
            data,
            200,
            json!({
                "message": "eKYC status updated successfully",
                "client": updated,
                "ekyc_status": to,
            }),
        );
        Ok(Decision::Done(Outcome::succeeded(messages)))
    }
}
