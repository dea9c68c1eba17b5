//! The client profile beyond the seed's create body (DESIGN.md, "The client profile"): who the
//! client is (identity), where (address), free metadata, the upstream system's id and the
//! partner it hangs under. Plain functions over JSON values, so the rules are tested without a
//! database: normalising what a command gives, applying a patch, checking the limits.
//!
//! The JSON Schemas check shapes (types, key lengths, date formats); what a schema cannot say
//! is said here: metadata's total size, an individual's names, a region's ISO 3166-2 code.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::refusal::Refusal;

/// At most this many metadata keys.
pub const METADATA_MAX_KEYS: usize = 50;
/// At most this many bytes of metadata, as compact JSON.
pub const METADATA_MAX_BYTES: usize = 8 * 1024;
/// At most this many characters in an external id.
pub const EXTERNAL_ID_MAX_CHARS: usize = 128;

/// A partner as client answers name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRef {
    pub id: i32,
    pub name: String,
}

/// How a command names a partner: by id, by name, or both (which must agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSelector {
    pub id: Option<i32>,
    pub name: Option<String>,
}

impl PartnerSelector {
    /// `{id}`, `{name}` (trimmed; blank is no name) or both; `None` when neither is given.
    pub fn new(id: Option<i32>, name: Option<&str>) -> Option<PartnerSelector> {
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        (id.is_some() || name.is_some()).then_some(PartnerSelector { id, name })
    }

    /// Whether `partner` is the one selected (both parts, when both are given).
    pub fn matches(&self, partner: &PartnerRef) -> bool {
        self.id.is_none_or(|id| id == partner.id)
            && self
                .name
                .as_deref()
                .is_none_or(|n| n.to_lowercase() == partner.name.to_lowercase())
    }
}

/// Checks metadata against its limits (the schema checks each key and value).
pub fn check_metadata(metadata: &Map<String, Value>) -> Result<(), Refusal> {
    let bytes = serde_json::to_vec(metadata)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if metadata.len() > METADATA_MAX_KEYS || bytes > METADATA_MAX_BYTES {
        return Err(Refusal::metadata_too_large());
    }
    Ok(())
}

/// RFC 7396 JSON merge patch of `patch` onto `target`: `null` removes a key, an object merges
/// into an object, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(patch) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (key, value) in patch {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let merged = merge_patch(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The keys of each identity type, in the order answers show them.
const CORPORATE_KEYS: [&str; 6] = [
    "type",
    "legal_name",
    "incorporation_date",
    "corporation_type",
    "country",
    "identifications",
];
const INDIVIDUAL_KEYS: [&str; 6] = [
    "type",
    "given_name",
    "family_name",
    "birth_date",
    "country",
    "identifications",
];

/// A string value, trimmed; missing, null, not a string and blank are all `None`.
pub fn trimmed(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn text(value: &Value, key: &str) -> Option<String> {
    trimmed(value.get(key))
}

/// The identity as stored: every key of its type present (`null` where unset), nothing else.
/// Absent: a corporate identity with the client's alias as legal name. A corporate identity
/// without a legal name takes the alias; an individual one needs both names.
pub fn normalize_identity(given: Option<&Value>, client_alias: &str) -> Result<Value, Refusal> {
    let given = given.filter(|v| !v.is_null());
    let kind = given
        .and_then(|v| text(v, "type"))
        .unwrap_or_else(|| "corporate".into());
    let keys: &[&str] = if kind == "individual" {
        &INDIVIDUAL_KEYS
    } else {
        &CORPORATE_KEYS
    };
    let mut out = Map::new();
    for key in keys {
        let value = match (*key, given) {
            ("type", _) => Value::String(kind.clone()),
            ("identifications", Some(v)) => v
                .get("identifications")
                .filter(|i| i.is_array())
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
            ("identifications", None) => Value::Array(Vec::new()),
            (key, Some(v)) => text(v, key).map(Value::String).unwrap_or(Value::Null),
            (_, None) => Value::Null,
        };
        out.insert((*key).to_string(), value);
    }
    if kind == "corporate" && out["legal_name"].is_null() {
        out.insert("legal_name".into(), Value::String(client_alias.to_string()));
    }
    if kind == "individual" && (out["given_name"].is_null() || out["family_name"].is_null()) {
        return Err(Refusal::identity_incomplete());
    }
    if let Some(country) = out.get_mut("country")
        && let Value::String(c) = country
    {
        *c = c.to_uppercase();
    }
    Ok(Value::Object(out))
}

/// The contact person of a client (seed 002's `contact`): `{name, email, phone}`, each trimmed
/// and `null` where unset, the phone in its canonical form (`domain::phone`); `None` when
/// nothing is given.
pub fn normalize_contact(given: Option<&Value>) -> Result<Option<Value>, Refusal> {
    let Some(given) = given.filter(|v| v.is_object()) else {
        return Ok(None);
    };
    let mut out = Map::new();
    for key in ["name", "email", "phone"] {
        let value = match text(given, key) {
            Some(phone) if key == "phone" => {
                Value::String(crate::domain::phone::normalize("contact.phone", &phone)?)
            }
            Some(v) => Value::String(v),
            None => Value::Null,
        };
        out.insert(key.into(), value);
    }
    Ok(out
        .values()
        .any(|v| !v.is_null())
        .then_some(Value::Object(out)))
}

/// The client's full name (seed 004's `fullName`), as the database derives it too
/// (`clients.full_name`): the legal name, or given and family name.
pub fn full_name(identity: &Value) -> Option<String> {
    if identity.get("type").and_then(Value::as_str) == Some("individual") {
        let names: Vec<&str> = ["given_name", "family_name"]
            .iter()
            .filter_map(|k| identity.get(*k).and_then(Value::as_str))
            .collect();
        let joined = names.join(" ");
        (!joined.trim().is_empty()).then(|| joined.trim().to_string())
    } else {
        identity
            .get("legal_name")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// An identity after a patch: merged (RFC 7396), then normalised for the type it ends with.
pub fn patch_identity(
    current: Option<&Value>,
    patch: &Value,
    client_alias: &str,
) -> Result<Value, Refusal> {
    let merged = merge_patch(current.unwrap_or(&Value::Null), patch);
    normalize_identity(Some(&merged), client_alias)
}

const ADDRESS_KEYS: [&str; 7] = [
    "country",
    "region",
    "city",
    "street",
    "house_number",
    "postal_code",
    "refinement",
];

/// Countries whose address region must be an ISO 3166-2 subdivision code.
const CODED_REGIONS: [&str; 3] = ["US", "CA", "MX"];

/// Whether `region` is one of `country`'s ISO 3166-2 subdivision codes, without the prefix
/// (`CA` for `US-CA`), in the ISO 3166-2 data of the `rust_iso3166` crate.
pub fn is_subdivision(country: &str, region: &str) -> bool {
    rust_iso3166::iso3166_2::from_code(&format!("{country}-{region}"))
        .is_some_and(|s| s.code.eq_ignore_ascii_case(&format!("{country}-{region}")))
}

/// The address as stored (every key present, `null` where unset), or `None` for no address.
/// The country is upper-cased; for US, CA and MX the region must be an ISO 3166-2 subdivision
/// code of that country (upper-cased here), elsewhere it is free text.
pub fn normalize_address(given: &Value) -> Result<Option<Value>, Refusal> {
    if given.is_null() {
        return Ok(None);
    }
    let mut out = Map::new();
    for key in ADDRESS_KEYS {
        let value = text(given, key).map(Value::String).unwrap_or(Value::Null);
        out.insert(key.to_string(), value);
    }
    if let Value::String(country) = &out["country"] {
        let country = country.to_uppercase();
        if CODED_REGIONS.contains(&country.as_str())
            && let Value::String(region) = &out["region"]
        {
            let region = region.to_uppercase();
            if !is_subdivision(&country, &region) {
                return Err(Refusal::invalid_region());
            }
            out.insert("region".into(), Value::String(region));
        }
        out.insert("country".into(), Value::String(country));
    }
    Ok(Some(Value::Object(out)))
}

/// An address after a patch: `null` removes it, an object is merged into it (RFC 7396).
pub fn patch_address(current: Option<&Value>, patch: &Value) -> Result<Option<Value>, Refusal> {
    if patch.is_null() {
        return Ok(None);
    }
    normalize_address(&merge_patch(current.unwrap_or(&Value::Null), patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_changes_and_removes_keys_as_rfc_7396_says() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        let patch = json!({"a": "z", "c": {"f": null}, "x": 1});
        assert_eq!(
            merge_patch(&target, &patch),
            json!({"a": "z", "c": {"d": "e"}, "x": 1})
        );
        assert_eq!(
            merge_patch(&json!({"a": 1}), &json!({"a": null})),
            json!({})
        );
        assert_eq!(
            merge_patch(&Value::Null, &json!({"k": "v"})),
            json!({"k": "v"})
        );
        assert_eq!(merge_patch(&json!({"a": 1}), &json!([1])), json!([1]));
    }

    #[test]
    fn metadata_over_fifty_keys_or_eight_kib_is_too_large() {
        let fifty: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(check_metadata(&fifty).is_ok());
        let mut fifty_one = fifty.clone();
        fifty_one.insert("one-more".into(), json!(true));
        assert_eq!(
            check_metadata(&fifty_one).unwrap_err().code,
            "METADATA_TOO_LARGE"
        );
        let big: Map<String, Value> = (0..20)
            .map(|i| (format!("k{i}"), json!("x".repeat(460))))
            .collect();
        assert!(serde_json::to_vec(&big).unwrap().len() > METADATA_MAX_BYTES);
        assert_eq!(check_metadata(&big).unwrap_err().code, "METADATA_TOO_LARGE");
    }

    #[test]
    fn an_absent_identity_is_corporate_under_the_alias_and_an_individual_needs_both_names() {
        let absent = normalize_identity(None, "Acme Ltd").unwrap();
        assert_eq!(
            absent,
            json!({"type": "corporate", "legal_name": "Acme Ltd", "incorporation_date": null,
                   "corporation_type": null, "country": null, "identifications": []})
        );
        let named = normalize_identity(
            Some(&json!({"type": "corporate", "legal_name": "Acme Holdings", "country": "gb"})),
            "Acme Ltd",
        )
        .unwrap();
        assert_eq!(named["legal_name"], json!("Acme Holdings"));
        assert_eq!(named["country"], json!("GB"));
        for half in [
            json!({"type": "individual", "given_name": "Jane"}),
            json!({"type": "individual", "family_name": "Doe"}),
            json!({"type": "individual", "given_name": " ", "family_name": "Doe"}),
        ] {
            assert_eq!(
                normalize_identity(Some(&half), "x").unwrap_err().code,
                "IDENTITY_INCOMPLETE",
                "{half}"
            );
        }
        let jane = normalize_identity(
            Some(&json!({"type": "individual", "given_name": "Jane", "family_name": "Doe", "legal_name": "ignored"})),
            "x",
        )
        .unwrap();
        assert!(jane.get("legal_name").is_none(), "{jane}");
        assert_eq!(jane["identifications"], json!([]));
    }

    #[test]
    fn an_identity_patch_keeps_what_it_does_not_name() {
        let current = normalize_identity(
            Some(&json!({"type": "individual", "given_name": "Jane", "family_name": "Doe"})),
            "x",
        )
        .unwrap();
        let patched =
            patch_identity(Some(&current), &json!({"birth_date": "1990-01-02"}), "x").unwrap();
        assert_eq!(patched["given_name"], json!("Jane"));
        assert_eq!(patched["birth_date"], json!("1990-01-02"));
        let removed = patch_identity(Some(&current), &json!({"family_name": null}), "x");
        assert_eq!(removed.unwrap_err().code, "IDENTITY_INCOMPLETE");
    }

    #[test]
    fn regions_of_us_ca_and_mx_must_be_subdivision_codes_and_elsewhere_are_free() {
        let us = |region: &str| normalize_address(&json!({"country": "US", "region": region}));
        assert_eq!(us("California").unwrap_err().code, "INVALID_REGION");
        assert_eq!(us("US-CA").unwrap_err().code, "INVALID_REGION");
        assert_eq!(us("CA").unwrap().unwrap()["region"], json!("CA"));
        assert_eq!(us("ny").unwrap().unwrap()["region"], json!("NY"));
        let ca = normalize_address(&json!({"country": "ca", "region": "ON"}))
            .unwrap()
            .unwrap();
        assert_eq!(ca["country"], json!("CA"));
        assert!(normalize_address(&json!({"country": "MX", "region": "JAL"})).is_ok());
        assert_eq!(
            normalize_address(&json!({"country": "MX", "region": "CA"}))
                .unwrap_err()
                .code,
            "INVALID_REGION"
        );
        let gb =
            normalize_address(&json!({"country": "GB", "region": "England", "city": "London"}))
                .unwrap()
                .unwrap();
        assert_eq!(gb["region"], json!("England"));
        assert_eq!(gb["street"], Value::Null);
        assert_eq!(normalize_address(&Value::Null).unwrap(), None);
    }

    #[test]
    fn an_address_patch_merges_and_null_removes_it() {
        let current = json!({"country": "US", "region": "CA", "city": "Los Angeles"});
        let moved = patch_address(Some(&current), &json!({"city": "San Francisco"}))
            .unwrap()
            .unwrap();
        assert_eq!(moved["city"], json!("San Francisco"));
        assert_eq!(moved["region"], json!("CA"));
        assert_eq!(patch_address(Some(&current), &Value::Null).unwrap(), None);
        assert_eq!(
            patch_address(Some(&current), &json!({"region": "Texas"}))
                .unwrap_err()
                .code,
            "INVALID_REGION"
        );
    }

    #[test]
    fn a_partner_selector_needs_an_id_or_a_name_and_both_must_agree() {
        assert_eq!(PartnerSelector::new(None, None), None);
        assert_eq!(PartnerSelector::new(None, Some("  ")), None);
        let both = PartnerSelector::new(Some(7), Some(" Acme ")).unwrap();
        assert_eq!(both.name.as_deref(), Some("Acme"));
        assert!(both.matches(&PartnerRef {
            id: 7,
            name: "ACME".into()
        }));
        assert!(!both.matches(&PartnerRef {
            id: 8,
            name: "Acme".into()
        }));
        assert!(!both.matches(&PartnerRef {
            id: 7,
            name: "Other".into()
        }));
    }
}
