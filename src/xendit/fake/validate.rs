//! What the fake refuses as Xendit does (400 `API_VALIDATION_ERROR`), and the customer it
//! stores for a valid request.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// `business_detail.business_type`'s values (Xendit's API reference and SDK models).
pub(super) const BUSINESS_TYPES: [&str; 7] = [
    "CORPORATION",
    "SOLE_PROPRIETOR",
    "PARTNERSHIP",
    "COOPERATIVE",
    "TRUST",
    "NON_PROFIT",
    "GOVERNMENT",
];

/// E.164: `+`, a first digit that is not 0, 8 to 15 digits in all.
pub(super) fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// Xendit's required fields, formats and length limits for `POST /customers`, as far as the
/// saga uses them.
pub(super) fn validate(request: &Value) -> Result<(), String> {
    if let Some(number) = request.get("mobile_number").filter(|v| !v.is_null())
        && !number.as_str().is_some_and(is_e164)
    {
        return Err("mobile_number must be in E.164 format".to_owned());
    }
    if let Some(kind) = request["business_detail"]
        .get("business_type")
        .filter(|v| !v.is_null())
        && !kind.as_str().is_some_and(|k| BUSINESS_TYPES.contains(&k))
    {
        return Err(format!(
            "business_detail.business_type must be one of {}",
            BUSINESS_TYPES.join(", ")
        ));
    }
    if let Some(names) = request["individual_detail"]["given_names"].as_str()
        && !names.chars().all(|c| c.is_alphanumeric() || c == ' ')
    {
        return Err(
            "individual_detail.given_names must contain only letters, digits and spaces".to_owned(),
        );
    }
    required(request)
}

pub(super) fn required(request: &Value) -> Result<(), String> {
    let text = |value: &Value| value.as_str().map(|s| s.chars().count());
    match text(&request["reference_id"]) {
        None | Some(0) => return Err("reference_id is required".to_owned()),
        Some(n) if n > 255 => return Err("reference_id must be at most 255 characters".to_owned()),
        Some(_) => {}
    }
    let (detail, name_field) = match request["type"].as_str() {
        None => return Err("type is required".to_owned()),
        Some("INDIVIDUAL") => ("individual_detail", "given_names"),
        Some("BUSINESS") => ("business_detail", "business_name"),
        Some(_) => return Err("type must be one of INDIVIDUAL, BUSINESS".to_owned()),
    };
    match text(&request[detail][name_field]) {
        None | Some(0) => Err(format!("{detail}.{name_field} is required")),
        Some(n) if n > 50 => Err(format!(
            "{detail}.{name_field} must be at most 50 characters"
        )),
        Some(_) => Ok(()),
    }
}

/// The customer Xendit would return for a valid request: every documented field present,
/// `null` or empty where the request said nothing.
pub(super) fn customer_from(request: &Value, id: &str) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let field = |name: &str| request.get(name).cloned().unwrap_or(Value::Null);
    let detail = |name: &str, defaults: Value| match (request.get(name), defaults) {
        (Some(Value::Object(given)), Value::Object(mut all)) => {
            all.extend(given.clone());
            Value::Object(all)
        }
        _ => Value::Null,
    };
    json!({
        "id": id,
        "reference_id": field("reference_id"),
        "type": field("type"),
        "individual_detail": detail("individual_detail", json!({
            "given_names": null, "surname": null, "nationality": null, "place_of_birth": null,
            "date_of_birth": null, "gender": null, "employment": null
        })),
        "business_detail": detail("business_detail", json!({
            "business_name": null, "trading_name": null, "business_type": null,
            "nature_of_business": null, "business_domicile": null, "date_of_registration": null
        })),
        "email": field("email"),
        "mobile_number": field("mobile_number"),
        "phone_number": field("phone_number"),
        "hashed_phone_number": null,
        "addresses": request.get("addresses").cloned().unwrap_or_else(|| json!([])),
        "identity_accounts": [],
        "kyc_documents": [],
        "description": field("description"),
        "metadata": request.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "created": now,
        "updated": now
    })
}
