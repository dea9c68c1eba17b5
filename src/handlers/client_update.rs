//! `client.update`: a partial update of a client's contact fields and profile (DESIGN.md, "The
//! client profile"). Only the fields present change; `metadata`, `identity` and `address` are
//! JSON merge patches (RFC 7396) of what is stored. `version`, when given, must be the
//! client's current one: with the row locked for the decision, of two updates racing with
//! the same version exactly one wins and the other is told `VERSION_CONFLICT`.
//!
//! Uniqueness (email, external_id) is checked before the write, and the live unique indexes
//! settle a race with an update or create of another client: the write runs under a
//! savepoint, and a unique violation there becomes the refusal the check would have given.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{PartnerGiven, Patch, id, opt_i64, text};
use super::handler::{
    Cmd, Cx, DecideOne, Decision, HandlerError, Outcome, external_id_in_use, with,
};
use super::lifecycle::lock_live_client;
use crate::domain::new_client::COLUMN_WIDTHS;
use crate::domain::profile::{self, PartnerRef};
use crate::domain::{Client, Email};
use crate::messages::{CommandMeta, OutgoingMessage, Refusal};
use crate::store::{self, clients::ProfileUpdate};

pub const UPDATED: &str = "client.updated";
/// Where refusals of `client.update`, `client.deactivate`, `client.reactivate` and
/// `client.delete` are announced.
pub const FAILED: &str = "client.command_failed";

/// `client.update {client_id, version?, ...}`: a patch. Contact fields given as `null` are
/// left as they are (the seed requires them); `metadata`, `address` and `direct_partner`
/// given as `null` are removed; `identity` and `address` are merge patches.
#[derive(Debug, Default, Deserialize)]
pub struct ClientUpdate {
    #[serde(deserialize_with = "id")]
    pub client_id: i32,
    #[serde(default, deserialize_with = "opt_i64")]
    pub version: Option<i64>,
    #[serde(default)]
    pub client_alias: Option<String>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: Patch<Map<String, Value>>,
    /// A merge patch of the identity (RFC 7396).
    #[serde(default)]
    pub identity: Option<Value>,
    /// A merge patch of the address (RFC 7396); `null` removes it.
    #[serde(default)]
    pub address: Patch<Value>,
    #[serde(default)]
    pub direct_partner: Patch<PartnerGiven>,
    #[serde(default)]
    pub external_id: Patch<String>,
    /// Seed 003's description; `null` removes it.
    #[serde(default)]
    pub description: Patch<String>,
    /// Seed 002's contact person, replaced whole; `null` removes it.
    #[serde(default)]
    pub contact: Patch<Value>,
}

client_command!(ClientUpdate, "client.update", FAILED);

impl DecideOne for ClientUpdate {
    async fn decide(cx: &mut Cx<'_>, cmd: Cmd<'_, Self>) -> Result<Decision, HandlerError> {
        handle(cx, cmd.meta, cmd.body).await
    }
}

/// A refusal about `client_id`, changing nothing.
pub(super) fn refused(
    meta: &CommandMeta,
    client_id: i32,
    refusal: Refusal,
    extra: Value,
) -> Decision {
    let context = with(json!({ "client_id": client_id }), extra);
    Decision::Done(Outcome::refused_with(meta, FAILED, refusal, context))
}

/// The client as it will be once the patch is applied.
struct Patched {
    client_alias: String,
    client_type: String,
    phone: String,
    email: String,
    metadata: Option<Value>,
    identity: Option<Value>,
    address: Option<Value>,
    direct_partner: Option<PartnerRef>,
    external_id: Option<String>,
    description: Option<String>,
    contact: Option<Value>,
}

impl Patched {
    fn of(client: &Client) -> Patched {
        Patched {
            client_alias: client.client_alias.clone(),
            client_type: client.client_type.clone(),
            phone: client.phone.clone(),
            email: client.email.clone(),
            metadata: client.metadata.clone(),
            identity: client.identity.clone(),
            address: client.address.clone(),
            direct_partner: client.direct_partner.clone(),
            external_id: client.external_id.clone(),
            description: client.description.clone(),
            contact: client.contact.clone(),
        }
    }

    /// The fields as answers show them, in the contract's order, for the change list.
    fn fields(&self) -> [(&'static str, Value); 11] {
        [
            ("client_alias", json!(self.client_alias)),
            ("client_type", json!(self.client_type)),
            ("phone", json!(self.phone)),
            ("email", json!(self.email)),
            ("external_id", json!(self.external_id)),
            ("metadata", json!(self.metadata)),
            ("identity", json!(self.identity)),
            ("address", json!(self.address)),
            ("direct_partner", json!(self.direct_partner)),
            ("description", json!(self.description)),
            ("contact", json!(self.contact)),
        ]
    }
}

/// `{field: {from, to}}` for every field that differs.
fn changes(before: &Patched, after: &Patched) -> Map<String, Value> {
    before
        .fields()
        .into_iter()
        .zip(after.fields())
        .filter(|((_, from), (_, to))| from != to)
        .map(|((field, from), (_, to))| (field.to_string(), json!({ "from": from, "to": to })))
        .collect()
}

/// A contact field of the patch: `None` when absent, the trimmed value when present, and a
/// refusal when blank (the seed's rule: these fields are required) or wider than its column.
fn contact_field(given: Option<&str>, field: &str) -> Result<Option<String>, Refusal> {
    let Some(given) = given else {
        return Ok(None);
    };
    let Some(mut value) = text(Some(given)) else {
        return Err(Refusal::validation_failed());
    };
    if field == "client_type" {
        value = value.to_uppercase();
    }
    if field == "phone" {
        value = crate::domain::phone::normalize("phone", &value)?;
    }
    if field == "email" {
        value = Email::parse(&value)
            .ok_or_else(Refusal::validation_failed)?
            .as_str()
            .to_string();
    }
    let width = COLUMN_WIDTHS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(usize::MAX, |(_, w)| *w);
    if value.chars().count() > width {
        return Err(Refusal::value_too_long(field, width));
    }
    Ok(Some(value))
}

/// Applies the parts of the patch that need no database: contact fields and profile.
fn apply(body: &ClientUpdate, next: &mut Patched) -> Result<(), Refusal> {
    if let Some(v) = contact_field(body.client_alias.as_deref(), "client_alias")? {
        next.client_alias = v;
    }
    if let Some(v) = contact_field(body.client_type.as_deref(), "client_type")? {
        next.client_type = v;
    }
    if let Some(v) = contact_field(body.phone.as_deref(), "phone")? {
        next.phone = v;
    }
    if let Some(v) = contact_field(body.email.as_deref(), "email")? {
        next.email = v;
    }
    match &body.metadata {
        Patch::Absent => {}
        Patch::Null => next.metadata = None,
        Patch::Value(patch) => {
            let patch = Value::Object(patch.clone());
            let merged =
                profile::merge_patch(next.metadata.as_ref().unwrap_or(&Value::Null), &patch);
            let Value::Object(map) = &merged else {
                unreachable!("the merge of an object patch is an object");
            };
            profile::check_metadata(map)?;
            next.metadata = (!map.is_empty()).then_some(merged);
        }
    }
    if let Some(patch) = &body.identity {
        next.identity = Some(profile::patch_identity(
            next.identity.as_ref(),
            patch,
            &next.client_alias,
        )?);
    }
    match &body.description {
        Patch::Absent => {}
        Patch::Null => next.description = None,
        Patch::Value(d) => next.description = text(Some(d.as_str())),
    }
    match &body.contact {
        Patch::Absent => {}
        Patch::Null => next.contact = None,
        Patch::Value(c) => next.contact = profile::normalize_contact(Some(c))?,
    }
    match &body.address {
        Patch::Absent => {}
        Patch::Null => next.address = profile::patch_address(next.address.as_ref(), &Value::Null)?,
        Patch::Value(patch) => {
            next.address = profile::patch_address(next.address.as_ref(), patch)?;
        }
    }
    Ok(())
}

async fn handle(
    cx: &mut Cx<'_>,
    meta: &CommandMeta,
    body: &ClientUpdate,
) -> Result<Decision, HandlerError> {
    let client_id = body.client_id;
    let client = match lock_live_client(cx, meta, FAILED, client_id).await? {
        Ok(client) => client,
        Err(decision) => return Ok(decision),
    };
    if let Some(given) = body.version
        && given != i64::from(client.version)
    {
        let refusal = Refusal::version_conflict(given, client.version);
        let extra = json!({ "version": given, "current_version": client.version });
        return Ok(refused(meta, client_id, refusal, extra));
    }
    if client.client_status.is_final() {
        let refusal = Refusal::client_read_only(client.client_status.as_str());
        let extra = json!({ "client_status": client.client_status });
        return Ok(refused(meta, client_id, refusal, extra));
    }

    let before = Patched::of(&client);
    let mut next = Patched::of(&client);
    if let Err(refusal) = apply(body, &mut next) {
        return Ok(refused(meta, client_id, refusal, Value::Null));
    }
    match &body.direct_partner {
        Patch::Absent => {}
        Patch::Null => next.direct_partner = None,
        Patch::Value(given) => {
            let Some(selector) = given.selector() else {
                return Ok(refused(
                    meta,
                    client_id,
                    Refusal::partner_not_found(),
                    Value::Null,
                ));
            };
            match store::partners::resolve(cx.conn, &[&selector])
                .await?
                .pop()
                .flatten()
            {
                Some(r) => next.direct_partner = Some(r.direct),
                None => {
                    return Ok(refused(
                        meta,
                        client_id,
                        Refusal::partner_not_found(),
                        Value::Null,
                    ));
                }
            }
        }
    }
    if !body.external_id.is_absent() {
        let given = match &body.external_id {
            Patch::Value(e) => text(Some(e)),
            Patch::Null | Patch::Absent => None,
        };
        match (&before.external_id, given) {
            (Some(current), Some(given)) if *current == given => {}
            (None, None) => {}
            (Some(_), _) => {
                return Ok(refused(
                    meta,
                    client_id,
                    Refusal::external_id_immutable(),
                    Value::Null,
                ));
            }
            (None, Some(given)) => {
                let holder = store::clients::external_ids_taken(cx.conn, &[given.as_str()])
                    .await?
                    .pop()
                    .flatten();
                if let Some((id, code)) = holder {
                    return Ok(taken_by(meta, client_id, id, &code));
                }
                next.external_id = Some(given);
            }
        }
    }
    if next.email.to_lowercase() != before.email.to_lowercase()
        && store::clients::email_taken_by_other(cx.conn, &next.email, client_id).await?
    {
        return Ok(refused(
            meta,
            client_id,
            Refusal::email_in_use(),
            Value::Null,
        ));
    }

    let changes = changes(&before, &next);
    if changes.is_empty() {
        // Nothing to change: the answer says so, and nobody else needs to hear of it.
        let reply = OutgoingMessage::reply(
            meta,
            UPDATED,
            200,
            json!({ "message": "Client updated successfully", "client": client }),
        );
        return Ok(Decision::Done(Outcome::succeeded(
            reply.into_iter().collect(),
        )));
    }

    let update = ProfileUpdate {
        client_alias: &next.client_alias,
        client_type: &next.client_type,
        phone: &next.phone,
        email: &next.email,
        metadata: next.metadata.as_ref(),
        identity: next.identity.as_ref(),
        address: next.address.as_ref(),
        direct_partner_id: next.direct_partner.as_ref().map(|p| p.id),
        external_id: next.external_id.as_deref(),
        description: next.description.as_deref(),
        contact: next.contact.as_ref(),
    };
    // Another client may have taken the email or external id since the check.
    let updated = match store::clients::update_profile(cx.conn, client_id, &update).await {
        Ok(updated) => updated,
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            return Ok(match db.constraint() {
                Some("clients_external_id_key") => {
                    let external = next.external_id.as_deref().unwrap_or_default();
                    match store::clients::external_ids_taken(cx.conn, &[external])
                        .await?
                        .pop()
                        .flatten()
                    {
                        Some((id, code)) => taken_by(meta, client_id, id, &code),
                        None => {
                            refused(meta, client_id, Refusal::external_id_in_use(), Value::Null)
                        }
                    }
                }
                _ => refused(meta, client_id, Refusal::email_in_use(), Value::Null),
            });
        }
        Err(e) => return Err(e.into()),
    };

    let data = json!({
        "client_id": client_id,
        "client_code": updated.client_code,
        "changes": changes,
        "version": updated.version,
        "client": updated,
    });
    let messages = OutgoingMessage::event_and_reply(
        meta,
        UPDATED,
        data,
        200,
        json!({ "message": "Client updated successfully", "client": updated }),
    );
    Ok(Decision::Done(Outcome::succeeded(messages)))
}

/// `EXTERNAL_ID_IN_USE`, naming the client that has it; the client the update was about is
/// `target_client_id`.
fn taken_by(meta: &CommandMeta, client_id: i32, holder_id: i32, holder_code: &str) -> Decision {
    let extra = json!({ "target_client_id": client_id });
    Decision::Done(external_id_in_use(
        meta,
        FAILED,
        holder_id,
        holder_code,
        extra,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `client.update` body as JSON (its client_id added).
    fn body(mut v: Value) -> ClientUpdate {
        v["client_id"] = json!(1);
        serde_json::from_value(v).unwrap()
    }

    fn client() -> Patched {
        Patched {
            client_alias: "Acme".into(),
            client_type: "CORPORATE".into(),
            phone: "+10000000".into(),
            email: "a@acme.test".into(),
            metadata: Some(json!({"tier": "gold", "seats": 3})),
            identity: None,
            address: None,
            direct_partner: None,
            external_id: None,
            description: None,
            contact: None,
        }
    }

    #[test]
    fn only_the_fields_present_change_and_metadata_is_merged() {
        let mut next = client();
        apply(&body(json!({"phone": " +62 812-3456-7890 ", "metadata": {"tier": "silver", "seats": null, "new": true}})),
            &mut next,
        )
        .unwrap();
        let diff = changes(&client(), &next);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert_eq!(
            diff["phone"],
            json!({"from": "+10000000", "to": "+6281234567890"})
        );
        assert_eq!(
            diff["metadata"]["to"],
            json!({"tier": "silver", "new": true})
        );
        assert_eq!(next.client_alias, "Acme");
    }

    #[test]
    fn removing_every_metadata_key_leaves_none() {
        let mut next = client();
        apply(
            &body(json!({"metadata": {"tier": null, "seats": null}})),
            &mut next,
        )
        .unwrap();
        assert_eq!(next.metadata, None);
        let mut next = client();
        apply(&body(json!({"metadata": null})), &mut next).unwrap();
        assert_eq!(next.metadata, None);
    }

    #[test]
    fn blank_or_malformed_contact_fields_are_refused() {
        for given in [
            json!({"client_alias": " "}),
            json!({"email": "no-at-sign"}),
            json!({"phone": ""}),
        ] {
            let refusal = apply(&body(given.clone()), &mut client()).unwrap_err();
            assert_eq!(refusal.code, "VALIDATION_FAILED", "{given}");
        }
        let refusal =
            apply(&body(json!({"client_type": "x".repeat(51)})), &mut client()).unwrap_err();
        assert_eq!(refusal.code, "VALUE_TOO_LONG");
        let refusal = apply(&body(json!({"phone": "12-34"})), &mut client()).unwrap_err();
        assert_eq!(refusal.code, "INVALID_PHONE");
    }

    #[test]
    fn the_same_values_again_are_no_change() {
        let mut next = client();
        apply(&body(json!({"client_alias": "Acme", "metadata": {"tier": "gold"}, "client_type": "corporate"})),
            &mut next,
        )
        .unwrap();
        assert!(changes(&client(), &next).is_empty());
    }

    #[test]
    fn metadata_past_its_limits_once_merged_is_refused() {
        let mut next = client();
        let many: Map<String, Value> = (0..49).map(|i| (format!("k{i}"), json!(i))).collect();
        let refusal = apply(&body(json!({ "metadata": many })), &mut next).unwrap_err();
        assert_eq!(
            refusal.code, "METADATA_TOO_LARGE",
            "2 kept + 49 new = 51 keys"
        );
    }
}
