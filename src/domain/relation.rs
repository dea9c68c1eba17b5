//! Related people of a corporate client: directors, shareholders and the like (DESIGN.md,
//! "Relations, imports and webhooks"; seed 004). Only corporate clients have them, and only
//! individuals can be related. A relation is its kind, the person's identity (the client
//! profile's individual identity) and a profile: residential address, phone, email.

use serde_json::{Map, Value};

use super::profile::{merge_patch, normalize_address, normalize_identity, trimmed};
use super::refusal::Refusal;

/// What a person can be to the client.
pub const KINDS: [&str; 4] = [
    "director",
    "shareholder",
    "director-and-shareholder",
    "authorized-person",
];

/// Relations one command may add (on `client.create` and `client.relation.add`).
pub const MAX_PER_CALL: usize = 10;

/// A relation as it will be stored: every key present, `null` where unset.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelation {
    pub relation: String,
    pub identity: Value,
    pub profile: Value,
}

/// The relations a command gives: `relation` (one) or `relations` (several), never both, at
/// most [`MAX_PER_CALL`]. Neither is an empty list.
pub fn given<'a>(
    one: Option<&'a Value>,
    many: Option<&'a [Value]>,
) -> Result<Vec<&'a Value>, Refusal> {
    let one = one.filter(|v| !v.is_null());
    match (one, many) {
        (Some(_), Some(_)) => Err(Refusal::relations_ambiguous()),
        (Some(one), None) => Ok(vec![one]),
        (None, Some(many)) if many.len() > MAX_PER_CALL => Err(Refusal::too_many_relations()),
        (None, Some(many)) => Ok(many.iter().collect()),
        (None, None) => Ok(Vec::new()),
    }
}

/// Normalises every relation a command gives (see [`given`]); the first refusal wins.
pub fn parse_all(one: Option<&Value>, many: Option<&[Value]>) -> Result<Vec<NewRelation>, Refusal> {
    given(one, many)?.into_iter().map(normalize).collect()
}

/// Whether a client may have relations: its identity is corporate (seed 004), whatever its
/// `client_type` label says. A client without an identity (created before the profile
/// existed) counts as corporate, as an absent identity does at creation.
pub fn is_corporate(identity: Option<&Value>) -> bool {
    identity.and_then(|i| i.get("type")).and_then(Value::as_str) != Some("individual")
}

fn kind(value: Option<&Value>) -> Result<String, Refusal> {
    let kind = trimmed(value)
        .map(|k| k.to_lowercase())
        .ok_or_else(Refusal::relation_invalid)?;
    if KINDS.contains(&kind.as_str()) {
        Ok(kind)
    } else {
        Err(Refusal::relation_invalid())
    }
}

/// An individual identity: the type is forced, as there is no other.
fn individual(identity: &Value) -> Result<Value, Refusal> {
    let mut identity = match identity {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    identity.insert("type".into(), Value::String("individual".into()));
    normalize_identity(Some(&Value::Object(identity)), "")
}

/// The profile as stored: `residential_address` (normalised like a client's address),
/// `phone` and `email`, each `null` where unset.
pub fn normalize_profile(given: Option<&Value>) -> Result<Value, Refusal> {
    let given = given.filter(|v| v.is_object());
    let address = match given.and_then(|g| g.get("residential_address")) {
        Some(a) => normalize_address(a)?,
        None => None,
    };
    let mut out = Map::new();
    out.insert("residential_address".into(), address.unwrap_or(Value::Null));
    for key in ["phone", "email"] {
        let value = match trimmed(given.and_then(|g| g.get(key))) {
            Some(phone) if key == "phone" => {
                Value::String(crate::domain::phone::normalize("profile.phone", &phone)?)
            }
            Some(v) => Value::String(v),
            None => Value::Null,
        };
        out.insert(key.into(), value);
    }
    Ok(Value::Object(out))
}

/// One relation as a command gives it, normalised.
pub fn normalize(given: &Value) -> Result<NewRelation, Refusal> {
    Ok(NewRelation {
        relation: kind(given.get("relation"))?,
        identity: individual(given.get("identity").unwrap_or(&Value::Null))?,
        profile: normalize_profile(given.get("profile"))?,
    })
}

/// What `client.relation.update` changes: each part optional (absent or `null` keeps it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RelationPatch<'a> {
    /// The new kind.
    pub relation: Option<&'a Value>,
    /// Merged into the identity (RFC 7396).
    pub identity: Option<&'a Value>,
    /// Merged into the profile (RFC 7396).
    pub profile: Option<&'a Value>,
}

/// A stored relation after a patch: the kind replaced, identity and profile merged (RFC 7396)
/// and normalised again.
pub fn patch(current: &NewRelation, given: RelationPatch<'_>) -> Result<NewRelation, Refusal> {
    let relation = match given.relation.filter(|v| !v.is_null()) {
        Some(k) => kind(Some(k))?,
        None => current.relation.clone(),
    };
    let identity = match given.identity.filter(|v| !v.is_null()) {
        Some(p) => individual(&merge_patch(&current.identity, p))?,
        None => current.identity.clone(),
    };
    let profile = match given.profile.filter(|v| !v.is_null()) {
        Some(p) => normalize_profile(Some(&merge_patch(&current.profile, p)))?,
        None => current.profile.clone(),
    };
    Ok(NewRelation {
        relation,
        identity,
        profile,
    })
}

/// What a patch changed, as `{field: {from, to}}` (empty when nothing did).
pub fn changes(before: &NewRelation, after: &NewRelation) -> Map<String, Value> {
    let mut out = Map::new();
    let mut note = |field: &str, from: Value, to: Value| {
        if from != to {
            out.insert(field.into(), serde_json::json!({ "from": from, "to": to }));
        }
    };
    note(
        "relation",
        Value::String(before.relation.clone()),
        Value::String(after.relation.clone()),
    );
    note("identity", before.identity.clone(), after.identity.clone());
    note("profile", before.profile.clone(), after.profile.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn director() -> Value {
        json!({
            "relation": "director",
            "identity": {"given_name": " John ", "family_name": "Doe", "country": "gb"},
            "profile": {"residential_address": {"country": "us", "region": "ca"}, "phone": "+441234567890"}
        })
    }

    fn given_by(body: &Value) -> Result<Vec<&Value>, Refusal> {
        given(
            body.get("relation"),
            body.get("relations")
                .and_then(Value::as_array)
                .map(Vec::as_slice),
        )
    }

    fn patch_by(current: &NewRelation, body: &Value) -> Result<NewRelation, Refusal> {
        patch(
            current,
            RelationPatch {
                relation: body.get("relation"),
                identity: body.get("identity"),
                profile: body.get("profile"),
            },
        )
    }

    #[test]
    fn one_or_several_never_both_and_at_most_ten() {
        assert_eq!(given_by(&json!({"relation": director()})).unwrap().len(), 1);
        let ten: Vec<Value> = (0..10).map(|_| director()).collect();
        assert_eq!(given_by(&json!({"relations": ten})).unwrap().len(), 10);
        let eleven: Vec<Value> = (0..11).map(|_| director()).collect();
        assert_eq!(
            given_by(&json!({"relations": eleven})).unwrap_err().code,
            "TOO_MANY_RELATIONS"
        );
        assert_eq!(
            given_by(&json!({"relation": director(), "relations": [director()]}))
                .unwrap_err()
                .code,
            "RELATIONS_AMBIGUOUS"
        );
        assert!(given_by(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn a_relation_is_an_individual_with_both_names_and_a_checked_address() {
        let r = normalize(&director()).unwrap();
        assert_eq!(r.relation, "director");
        assert_eq!(r.identity["type"], "individual");
        assert_eq!(r.identity["given_name"], "John");
        assert_eq!(r.identity["country"], "GB");
        assert_eq!(r.profile["residential_address"]["region"], "CA");
        assert_eq!(r.profile["email"], Value::Null);
        let mut no_family = director();
        no_family["identity"]["family_name"] = Value::Null;
        assert_eq!(
            normalize(&no_family).unwrap_err().code,
            "IDENTITY_INCOMPLETE"
        );
        let mut bad_region = director();
        bad_region["profile"]["residential_address"]["region"] = json!("California");
        assert_eq!(normalize(&bad_region).unwrap_err().code, "INVALID_REGION");
        let mut bad_kind = director();
        bad_kind["relation"] = json!("uncle");
        assert_eq!(normalize(&bad_kind).unwrap_err().code, "RELATION_INVALID");
    }

    #[test]
    fn a_patch_replaces_the_kind_and_merges_the_rest() {
        let before = normalize(&director()).unwrap();
        let after = patch_by(
            &before,
            &json!({"relation": "director-and-shareholder", "profile": {"phone": null, "email": "j@example.com"}}),
        )
        .unwrap();
        assert_eq!(after.relation, "director-and-shareholder");
        assert_eq!(after.identity, before.identity);
        assert_eq!(after.profile["phone"], Value::Null);
        assert_eq!(after.profile["email"], "j@example.com");
        assert_eq!(after.profile["residential_address"]["region"], "CA");
        let changed = changes(&before, &after);
        let mut fields: Vec<_> = changed.keys().collect();
        fields.sort();
        assert_eq!(fields, ["profile", "relation"]);
        assert!(changes(&before, &patch_by(&before, &json!({})).unwrap()).is_empty());
        assert_eq!(
            patch_by(&before, &json!({"identity": {"given_name": null}}))
                .unwrap_err()
                .code,
            "IDENTITY_INCOMPLETE"
        );
    }

    #[test]
    fn the_identity_decides_not_the_client_type_label() {
        assert!(is_corporate(None));
        assert!(is_corporate(Some(&json!({"type": "corporate"}))));
        assert!(!is_corporate(Some(&json!({"type": "individual"}))));
    }
}
