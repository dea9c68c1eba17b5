//! Seed 004's `client` object (camelCase, as another system holds it) onto a `client.create`
//! body: alias = legal name or full name, type CORPORATE or INDIVIDUAL, email and phone from
//! the profile, the registration (corporate) or residential (individual) address, the country
//! from the address, else the identity; relations carried over. What the record lacks is left
//! out, and `client.create`'s own checks refuse it as they would any create.

use serde_json::{Map, Value, json};

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Copies `from[camel]` to `to[snake]` when it is a non-blank string.
fn copy(to: &mut Map<String, Value>, from: &Value, camel: &str, snake: &str) {
    if let Some(s) = text(from, camel) {
        to.insert(snake.into(), Value::String(s.to_string()));
    }
}

fn identifications(identity: &Value) -> Value {
    let Some(list) = identity.get("identifications").and_then(Value::as_array) else {
        return Value::Array(Vec::new());
    };
    list.iter()
        .filter(|i| text(i, "type").is_some() && text(i, "identificationNumber").is_some())
        .map(|i| {
            let mut out = Map::new();
            copy(&mut out, i, "type", "type");
            copy(&mut out, i, "identificationNumber", "identification_number");
            copy(&mut out, i, "issuingCountry", "issuing_country");
            copy(&mut out, i, "issueDate", "issue_date");
            copy(&mut out, i, "expirationDate", "expiration_date");
            Value::Object(out)
        })
        .collect()
}

fn identity(source: &Value) -> Value {
    let kind = text(source, "type").unwrap_or("corporate").to_lowercase();
    let mut out = Map::new();
    out.insert("type".into(), Value::String(kind.clone()));
    if kind == "individual" {
        copy(&mut out, source, "givenName", "given_name");
        copy(&mut out, source, "familyName", "family_name");
        copy(&mut out, source, "birthDate", "birth_date");
    } else {
        copy(&mut out, source, "legalName", "legal_name");
        copy(&mut out, source, "incorporationDate", "incorporation_date");
    }
    copy(&mut out, source, "country", "country");
    out.insert("identifications".into(), identifications(source));
    Value::Object(out)
}

fn address(source: &Value) -> Value {
    let mut out = Map::new();
    for (camel, snake) in [
        ("country", "country"),
        ("region", "region"),
        ("city", "city"),
        ("street", "street"),
        ("houseNumber", "house_number"),
        ("postalCode", "postal_code"),
        ("refinement", "refinement"),
    ] {
        copy(&mut out, source, camel, snake);
    }
    Value::Object(out)
}

fn relation(source: &Value) -> Value {
    let profile = source.get("profile").cloned().unwrap_or(Value::Null);
    let mut p = Map::new();
    if let Some(a) = profile.get("residentialAddress").filter(|a| a.is_object()) {
        p.insert("residential_address".into(), address(a));
    }
    copy(&mut p, &profile, "phone", "phone");
    copy(&mut p, &profile, "email", "email");
    json!({
        "relation": text(source, "relation").unwrap_or_default(),
        "identity": identity(source.get("identity").unwrap_or(&Value::Null)),
        "profile": Value::Object(p),
    })
}

/// The `client.create` body for a record (`{"client": {...}}` or the object itself).
pub fn map_record(record: &Value) -> Value {
    let client = record.get("client").unwrap_or(record);
    let source_identity = client.get("identity").unwrap_or(&Value::Null);
    let identity = identity(source_identity);
    let individual = identity["type"] == "individual";
    let profile = client.get("profile").unwrap_or(&Value::Null);
    let address_key = if individual {
        "residentialAddress"
    } else {
        "registrationAddress"
    };
    let address = profile
        .get(address_key)
        .filter(|a| a.is_object())
        .map(address);
    let alias = if individual {
        match (
            text(&identity, "given_name"),
            text(&identity, "family_name"),
        ) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            _ => text(client, "fullName").map(str::to_string),
        }
    } else {
        text(&identity, "legal_name")
            .or_else(|| text(client, "fullName"))
            .map(str::to_string)
    };
    let country = address
        .as_ref()
        .and_then(|a| text(a, "country"))
        .or_else(|| text(&identity, "country"))
        .map(str::to_uppercase);
    let mut body = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            body.insert(k.into(), Value::String(v));
        }
    };
    put("email", text(profile, "email").map(str::to_string));
    put("phone", text(profile, "phone").map(str::to_string));
    put("client_alias", alias);
    put(
        "client_type",
        Some(
            if individual {
                "INDIVIDUAL"
            } else {
                "CORPORATE"
            }
            .to_string(),
        ),
    );
    put("country_code", country);
    body.insert("identity".into(), identity);
    if let Some(a) = address {
        body.insert("address".into(), a);
    }
    if let Some(relations) = client.get("relations").and_then(Value::as_array)
        && !relations.is_empty()
        && !individual
    {
        body.insert("relations".into(), relations.iter().map(relation).collect());
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corporate_record_becomes_a_corporate_create() {
        let record = json!({"client": {
            "id": "c0a8", "fullName": "ACME INC.",
            "identity": {"type": "corporate", "legalName": "ACME INC.", "incorporationDate": "2000-01-01",
                         "country": "GB", "identifications": [{"type": "registration-number", "identificationNumber": "123"}]},
            "profile": {"identityType": "corporate", "phone": "+441234567890", "email": "ops@acme.example",
                        "registrationAddress": {"country": "sg", "city": "Singapore", "houseNumber": "1", "postalCode": "018989"}},
            "relations": [{"relation": "director",
                           "identity": {"type": "individual", "givenName": "John", "familyName": "Doe"},
                           "profile": {"residentialAddress": {"country": "GB", "region": "England"}, "email": "j@acme.example"}}]
        }});
        let body = map_record(&record);
        assert_eq!(body["client_alias"], "ACME INC.");
        assert_eq!(body["client_type"], "CORPORATE");
        assert_eq!(body["country_code"], "SG", "the address decides");
        assert_eq!(body["email"], "ops@acme.example");
        assert_eq!(body["phone"], "+441234567890");
        assert_eq!(body["identity"]["legal_name"], "ACME INC.");
        assert_eq!(body["identity"]["incorporation_date"], "2000-01-01");
        assert_eq!(
            body["identity"]["identifications"],
            json!([{"type": "registration-number", "identification_number": "123"}])
        );
        assert_eq!(body["address"]["house_number"], "1");
        assert_eq!(body["address"]["postal_code"], "018989");
        assert_eq!(body["relations"][0]["identity"]["given_name"], "John");
        assert_eq!(
            body["relations"][0]["profile"]["residential_address"]["region"],
            "England"
        );
    }

    #[test]
    fn an_individual_record_is_named_after_the_person_and_takes_the_identity_country() {
        let body = map_record(&json!({
            "identity": {"type": "individual", "givenName": "Jane", "familyName": "Tan", "country": "sg"},
            "profile": {"identityType": "individual", "email": "jane@example.com", "phone": "+6591234567"}
        }));
        assert_eq!(body["client_alias"], "Jane Tan");
        assert_eq!(body["client_type"], "INDIVIDUAL");
        assert_eq!(body["country_code"], "SG");
        assert!(body.get("address").is_none());
        assert!(body.get("relations").is_none());
    }

    #[test]
    fn what_the_record_lacks_is_left_out_for_the_create_checks_to_refuse() {
        let body = map_record(&json!({"identity": {"type": "corporate"}}));
        assert!(body.get("email").is_none());
        assert!(body.get("client_alias").is_none());
        assert!(body.get("country_code").is_none());
    }
}
