//! A client and its admin user as stored, serialised in the exact shape of the seed's REST
//! bodies (field names and order), because replies and events carry them unchanged.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use super::lifecycle::{ClientStatus, EkycStatus};
use super::profile::PartnerRef;

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Client {
    pub client_id: i32,
    pub client_code: String,
    pub email: String,
    pub client_alias: String,
    pub client_type: String,
    pub client_status: ClientStatus,
    pub ekyc_status: EkycStatus,
    pub country_code: String,
    pub psp_id: Option<i32>,
    pub phone: String,
    // The profile (DESIGN.md, "The client profile"), after the seed's fields: answers keep
    // every field they had and add these, `null` where unset.
    /// The upstream system's own id.
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// Normalised (every key of its type present); `null` only for clients created before
    /// the profile existed.
    pub identity: Option<serde_json::Value>,
    pub address: Option<serde_json::Value>,
    /// Seed 004's `fullName`, derived by the database from the identity (legal name, or given
    /// and family name); `null` for clients created before the profile existed.
    pub full_name: Option<String>,
    /// Seed 003's free text.
    pub description: Option<String>,
    /// Seed 002's contact person: `{name, email, phone}`.
    pub contact: Option<serde_json::Value>,
    /// The root of the direct partner's tree.
    #[sqlx(json(nullable))]
    pub partner: Option<PartnerRef>,
    #[sqlx(json(nullable))]
    pub direct_partner: Option<PartnerRef>,
    pub is_active: bool,
    /// +1 on every change by client.update, deactivate, reactivate or delete.
    pub version: i32,
    #[serde(serialize_with = "optional_timestamp")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Not part of the create response; the list body adds them (see `ClientListItem`).
    #[serde(skip)]
    pub created: DateTime<Utc>,
    #[serde(skip)]
    pub updated: DateTime<Utc>,
}

fn optional_timestamp<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AdminUser {
    pub user_id: i32,
    pub client_id: i32,
    pub username: String,
    pub email: String,
    pub phone: String,
    pub role: String,
    pub user_status: String,
    pub ekyc_status: EkycStatus,
}

/// A client as "Get All Clients" lists it: the client object plus `created` and `updated`.
#[derive(Debug, Clone, Serialize)]
pub struct ClientListItem<'a> {
    #[serde(flatten)]
    pub client: &'a Client,
    pub created: String,
    pub updated: String,
}

impl<'a> From<&'a Client> for ClientListItem<'a> {
    fn from(client: &'a Client) -> Self {
        ClientListItem {
            client,
            created: client.created.to_rfc3339_opts(SecondsFormat::Secs, true),
            updated: client.updated.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// The seed's success text for client creation.
pub const CLIENT_CREATED_MESSAGE: &str = "Client & Admin successfully created! Admin must complete KYC before being able to use the account.";

/// The seed's 201 body of "Create Client with Admin": the success text, the client, its admin
/// and the eKYC status; once the onboarding completed, `xendit_integration` too when the saga
/// learnt one. Typed, so events and replies serialise it straight to their text.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CreatedBody<'a> {
    pub message: &'static str,
    pub client: &'a Client,
    pub admin_user: &'a AdminUser,
    pub ekyc_status: EkycStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xendit_integration: Option<&'a Value>,
}

impl<'a> CreatedBody<'a> {
    /// The body as the client was created (no Xendit part yet).
    pub fn new(client: &'a Client, admin_user: &'a AdminUser) -> CreatedBody<'a> {
        CreatedBody {
            message: CLIENT_CREATED_MESSAGE,
            client,
            admin_user,
            ekyc_status: client.ekyc_status,
            xendit_integration: None,
        }
    }

    /// The body once the onboarding completed: with `xendit_integration` when the saga's
    /// data has one.
    pub fn completed(
        client: &'a Client,
        admin_user: &'a AdminUser,
        saga_data: &'a Value,
    ) -> CreatedBody<'a> {
        CreatedBody {
            xendit_integration: saga_data.get("xendit_integration"),
            ..CreatedBody::new(client, admin_user)
        }
    }
}
