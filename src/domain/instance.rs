//! Instances of a client and who may manage them: plain data and one access rule, so the
//! handlers cannot drift from the seed's texts or from each other.
//!
//! The seed's rules ("Instance Management"): an instance belongs to the client of the admin
//! who created it; its name is unique within that client; only an admin of the owning client
//! may rename or delete it. The upstream gateway authenticates the actor; the worker decides
//! what the actor may do.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::refusal::Refusal;
use crate::domain::ClientStatus;

/// The role of a client's administrators (`users.role`).
pub const ADMIN_ROLE: &str = "admin";

/// The seed's success texts.
pub const INSTANCE_CREATED_MESSAGE: &str = "Instance created successfully";
pub const ALIAS_UPDATED_MESSAGE: &str = "✅ The alias was updated successfully";
pub const INSTANCE_DELETED_MESSAGE: &str = "Instance deleted successfully";
/// Ours: seed 000 names the statuses (ACTIVE, inactive) but documents no endpoint for them.
pub const INSTANCE_DEACTIVATED_MESSAGE: &str = "Instance deactivated successfully";
pub const INSTANCE_ACTIVATED_MESSAGE: &str = "Instance activated successfully";
pub const INSTANCE_ALREADY_INACTIVE_MESSAGE: &str = "Instance is already inactive";
pub const INSTANCE_ALREADY_ACTIVE_MESSAGE: &str = "Instance is already active";

/// `instances.instance_status` values.
pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";

/// The user a command names as its actor, as the worker knows them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Actor {
    pub user_id: i32,
    pub client_id: i32,
    pub role: String,
    /// Whether the actor's client is active (`client.deactivate` turns it off).
    pub client_active: bool,
    /// The lifecycle state of the actor's client: a final one (REJECTED, EXITED) is view only.
    pub client_status: ClientStatus,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.role == ADMIN_ROLE
    }
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// An instance as stored, serialised like the seed's "Create Instance" body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Instance {
    pub instance_id: i32,
    pub client_id: i32,
    pub instance_name: String,
    /// The instance's display alias (the seed's column name, not the client's alias).
    pub client_alias: Option<String>,
    pub instance_status: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// One entry of the seed's "Get My Instances" body: the instance with its client's code,
/// country and eKYC status joined in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InstanceListItem {
    pub instance_id: i32,
    pub client_id: i32,
    pub instance_name: String,
    pub client_alias: Option<String>,
    pub instance_status: Option<String>,
    pub ekyc_status: String,
    pub client_code: String,
    pub country_code: String,
}

/// What an actor wants to do with instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Create,
    UpdateAlias,
    Delete,
    /// `instance.deactivate` / `instance.activate`.
    SetStatus,
    List,
}

impl InstanceAction {
    /// The answer to an actor linked to no client, each seed endpoint's own text: create
    /// "Client ID not found" (403), delete "User not found or not linked to any client" (the
    /// same code and status), rename "Client not found" (404), the list "Client not found for
    /// this user." (the same code and status). (De)activation, which the seed does not
    /// document, answers as rename does.
    fn unknown_actor(self) -> Refusal {
        match self {
            InstanceAction::Create => Refusal::client_id_not_found(),
            InstanceAction::Delete => Refusal::user_not_linked(),
            InstanceAction::UpdateAlias | InstanceAction::SetStatus => Refusal::client_not_found(),
            InstanceAction::List => Refusal::client_not_found_for_user(),
        }
    }

    /// Listing only reads; everything else changes the client's instances.
    fn needs_admin(self) -> bool {
        !matches!(self, InstanceAction::List)
    }
}

/// Who may do `action`: an actor linked to a (live) client, and for changes an admin of an
/// active client that is not in a final state (seed 001: REJECTED and EXITED are view only).
/// Checked before the instance is looked at, so a non-admin learns nothing about instances.
/// (The store finds no actor for the users of a deleted client.)
pub fn authorize(action: InstanceAction, actor: Option<Actor>) -> Result<Actor, Refusal> {
    let actor = actor.ok_or_else(|| action.unknown_actor())?;
    if action.needs_admin() && !actor.is_admin() {
        return Err(Refusal::access_denied());
    }
    if action.needs_admin() && actor.client_status.is_final() {
        return Err(Refusal::client_read_only(actor.client_status.as_str()));
    }
    if action.needs_admin() && !actor.client_active {
        return Err(Refusal::client_inactive());
    }
    Ok(actor)
}

/// The instance an authorised actor names, if it is theirs to change. A rename of another
/// client's instance is ACCESS_DENIED (seed: Update Instance Alias); a delete is
/// INSTANCE_NOT_FOUND, whose seed text covers both "missing" and "not yours".
pub fn owned(
    action: InstanceAction,
    actor: &Actor,
    instance: Option<Instance>,
) -> Result<Instance, Refusal> {
    let instance = instance.ok_or_else(Refusal::instance_not_found)?;
    if instance.client_id != actor.client_id {
        return Err(match action {
            InstanceAction::Delete => Refusal::instance_not_found(),
            _ => Refusal::access_denied(),
        });
    }
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actor(client_id: i32, role: &str) -> Actor {
        Actor {
            user_id: 7,
            client_id,
            role: role.into(),
            client_active: true,
            client_status: ClientStatus::Active,
        }
    }

    #[test]
    fn an_inactive_clients_admin_may_list_but_not_change_instances() {
        let mut admin = actor(1, ADMIN_ROLE);
        admin.client_active = false;
        for action in [
            InstanceAction::Create,
            InstanceAction::UpdateAlias,
            InstanceAction::Delete,
        ] {
            assert_eq!(
                authorize(action, Some(admin.clone())).unwrap_err().code,
                "CLIENT_INACTIVE"
            );
        }
        assert!(authorize(InstanceAction::List, Some(admin)).is_ok());
    }

    fn instance(client_id: i32) -> Instance {
        let t = DateTime::parse_from_rfc3339("2024-01-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Instance {
            instance_id: 4,
            client_id,
            instance_name: "Development API".into(),
            client_alias: None,
            instance_status: Some("ACTIVE".into()),
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn an_unknown_actor_gets_the_text_of_each_endpoint() {
        use InstanceAction::*;
        assert_eq!(
            authorize(Create, None).unwrap_err(),
            Refusal::client_id_not_found()
        );
        assert_eq!(
            authorize(Delete, None).unwrap_err().message,
            "User not found or not linked to any client"
        );
        assert_eq!(
            authorize(UpdateAlias, None).unwrap_err(),
            Refusal::client_not_found()
        );
        assert_eq!(
            authorize(List, None).unwrap_err().message,
            "Client not found for this user."
        );
    }

    #[test]
    fn only_admins_change_instances_and_any_user_of_the_client_lists_them() {
        use InstanceAction::*;
        for action in [Create, UpdateAlias, Delete, SetStatus] {
            assert_eq!(
                authorize(action, Some(actor(1, "member"))).unwrap_err(),
                Refusal::access_denied()
            );
            assert!(authorize(action, Some(actor(1, "admin"))).is_ok());
        }
        assert!(authorize(List, Some(actor(1, "member"))).is_ok());
    }

    #[test]
    fn another_clients_instance_is_denied_on_rename_and_not_found_on_delete() {
        let a = actor(1, "admin");
        assert_eq!(
            owned(InstanceAction::UpdateAlias, &a, Some(instance(2))).unwrap_err(),
            Refusal::access_denied()
        );
        assert_eq!(
            owned(InstanceAction::Delete, &a, Some(instance(2))).unwrap_err(),
            Refusal::instance_not_found()
        );
        assert_eq!(
            owned(InstanceAction::SetStatus, &a, Some(instance(2))).unwrap_err(),
            Refusal::access_denied()
        );
        for action in [InstanceAction::UpdateAlias, InstanceAction::Delete] {
            assert_eq!(
                owned(action, &a, None).unwrap_err(),
                Refusal::instance_not_found()
            );
            assert!(owned(action, &a, Some(instance(1))).is_ok());
        }
    }

    #[test]
    fn an_instance_serialises_like_the_seed() {
        assert_eq!(
            serde_json::to_value(instance(1)).unwrap(),
            json!({
                "instance_id": 4,
                "client_id": 1,
                "instance_name": "Development API",
                "client_alias": null,
                "instance_status": "ACTIVE",
                "created_at": "2024-01-15T12:00:00Z",
                "updated_at": "2024-01-15T12:00:00Z"
            })
        );
    }
}
