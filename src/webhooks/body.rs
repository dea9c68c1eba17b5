//! The body POSTed for an event, in seed 004's container:
//!
//! ```json
//! {"webhook": {"module": "clients", "type": "created"},
//!  "data": {"client": {"id", "clientNumber", "fullName", "status", "identity", "profile", "relations"}},
//!  "connect": {},
//!  "metadata": {}}
//! ```
//!
//! `client.created` (type `created`) and `client.connection_created` (type
//! `connection-created`, `connect` = `{"connection": {"id", "serviceProvider"}}`) carry the
//! client as seed 004 shows it, with the seed's camelCase keys. Every other event type uses the
//! same container with its module (`clients`, `instances`, `partners`, `commands`, `webhooks`)
//! and its type hyphenated (`client.relation_updated` is `clients` / `relation-updated`), and
//! carries the event's own data (snake_case, as on the events exchange: schemas/events/).
//! `metadata` is the seed's, empty; the event's id is the `webhook-id` header, its type and
//! correlation id the `onboard-event-type` and `onboard-correlation-id` headers.

use serde_json::{Map, Value, json};

/// `(module, type)` of an event type: `client.connection_created` is
/// `("clients", "connection-created")`.
pub fn webhook_of(event_type: &str) -> (String, String) {
    let (module, rest) = event_type.split_once('.').unwrap_or((event_type, ""));
    (format!("{module}s"), rest.replace(['_', '.'], "-"))
}

/// The body for an event (its whole envelope); `None` for one without a type.
pub fn body_of(event: &Value) -> Option<Value> {
    let event_type = event.get("type")?.as_str()?;
    let (module, kind) = webhook_of(event_type);
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let (data, connect) = match event_type {
        "client.created" => (
            json!({ "client": seed_client(&data["client"], data.get("relations")) }),
            json!({}),
        ),
        "client.connection_created" => {
            let connection = &data["connect"]["connection"];
            (
                json!({ "client": seed_client(&data["client"], None) }),
                json!({ "connection": {
                    "id": connection["id"],
                    "serviceProvider": connection["service_provider"],
                }}),
            )
        }
        _ => (data, json!({})),
    };
    Some(json!({
        "webhook": { "module": module, "type": kind },
        "data": data,
        "connect": connect,
        "metadata": {},
    }))
}

/// A client as seed 004 shows it, from the client object of our events.
fn seed_client(client: &Value, relations: Option<&Value>) -> Value {
    let identity = client.get("identity").filter(|i| i.is_object());
    let kind = identity
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("corporate");
    let address_key = if kind == "individual" {
        "residentialAddress"
    } else {
        "registrationAddress"
    };
    let mut profile = Map::new();
    profile.insert("identityType".into(), json!(kind));
    profile.insert(address_key.into(), camel(&client["address"]));
    profile.insert("phone".into(), client["phone"].clone());
    profile.insert("email".into(), client["email"].clone());
    let relations: Vec<Value> = relations
        .and_then(Value::as_array)
        .map(|rs| rs.iter().map(seed_relation).collect())
        .unwrap_or_default();
    json!({
        "id": client["client_id"],
        "clientNumber": client["client_code"],
        "fullName": client["full_name"],
        // Seed 004 writes statuses in lower case ("active").
        "status": client["client_status"].as_str().map(str::to_lowercase),
        "identity": identity.map_or(Value::Null, camel),
        "profile": profile,
        "relations": relations,
    })
}

/// A related person as seed 004 shows one.
fn seed_relation(relation: &Value) -> Value {
    let profile = &relation["profile"];
    json!({
        "id": relation["id"],
        "relation": relation["relation"],
        "identity": camel(&relation["identity"]),
        "profile": {
            "identityType": "individual",
            "residentialAddress": camel(&profile["residential_address"]),
            "phone": profile["phone"],
            "email": profile["email"],
        },
    })
}

/// `value` with every object key in camelCase (`house_number` → `houseNumber`).
fn camel(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (camel_key(k), camel(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(camel).collect()),
        other => other.clone(),
    }
}

fn camel_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Value {
        json!({
            "client_id": 7, "client_code": "CL-202612-0007", "client_status": "PENDING",
            "email": "ops@acme.example", "phone": "+441234567890", "full_name": "ACME INC.",
            "identity": {"type": "corporate", "legal_name": "ACME INC.", "incorporation_date": "2000-01-01",
                         "corporation_type": "ltd", "country": "GB",
                         "identifications": [{"type": "registration-number", "identification_number": "1",
                                              "issuing_country": "GB"}]},
            "address": {"country": "GB", "region": "England", "city": "London", "street": "Baker Street",
                        "house_number": "221B", "postal_code": "XYZ ABC", "refinement": null}
        })
    }

    #[test]
    fn client_created_has_seed_004s_body() {
        let event = json!({"type": "client.created", "event_id": "e", "data": {"client": client(),
            "relations": [{"id": "r1", "relation": "director",
                           "identity": {"type": "individual", "given_name": "John", "family_name": "Doe"},
                           "profile": {"residential_address": null, "phone": null, "email": "j@x.example"}}]}});
        let body = body_of(&event).unwrap();
        assert_eq!(
            body,
            json!({
                "webhook": {"module": "clients", "type": "created"},
                "data": {"client": {
                    "id": 7, "clientNumber": "CL-202612-0007", "fullName": "ACME INC.", "status": "pending",
                    "identity": {"type": "corporate", "legalName": "ACME INC.", "incorporationDate": "2000-01-01",
                                 "corporationType": "ltd", "country": "GB",
                                 "identifications": [{"type": "registration-number", "identificationNumber": "1",
                                                      "issuingCountry": "GB"}]},
                    "profile": {"identityType": "corporate",
                                "registrationAddress": {"country": "GB", "region": "England", "city": "London",
                                                        "street": "Baker Street", "houseNumber": "221B",
                                                        "postalCode": "XYZ ABC", "refinement": null},
                                "phone": "+441234567890", "email": "ops@acme.example"},
                    "relations": [{"id": "r1", "relation": "director",
                                   "identity": {"type": "individual", "givenName": "John", "familyName": "Doe"},
                                   "profile": {"identityType": "individual", "residentialAddress": null,
                                               "phone": null, "email": "j@x.example"}}]
                }},
                "connect": {},
                "metadata": {}
            })
        );
    }

    #[test]
    fn an_import_names_its_connection_and_an_individual_has_a_residential_address() {
        let mut c = client();
        c["identity"] = json!({"type": "individual", "given_name": "Jane", "family_name": "Roe"});
        let event = json!({"type": "client.connection_created", "data": {"client": c,
            "connect": {"connection": {"id": "k1", "service_provider": "railsbank"}},
            "source": "railsbank", "source_id": "x"}});
        let body = body_of(&event).unwrap();
        assert_eq!(
            body["webhook"],
            json!({"module": "clients", "type": "connection-created"})
        );
        assert_eq!(
            body["connect"],
            json!({"connection": {"id": "k1", "serviceProvider": "railsbank"}})
        );
        let profile = &body["data"]["client"]["profile"];
        assert_eq!(profile["identityType"], json!("individual"));
        assert!(profile.get("residentialAddress").is_some());
        assert_eq!(body["metadata"], json!({}));
    }

    #[test]
    fn other_events_keep_their_data_in_the_same_container() {
        let event = json!({"type": "client.relation_updated", "data": {"client_id": 1}});
        assert_eq!(
            body_of(&event).unwrap(),
            json!({"webhook": {"module": "clients", "type": "relation-updated"},
                   "data": {"client_id": 1}, "connect": {}, "metadata": {}})
        );
        assert_eq!(
            webhook_of("webhook.endpoint_disabled"),
            ("webhooks".into(), "endpoint-disabled".into())
        );
        assert_eq!(
            webhook_of("command.rejected"),
            ("commands".into(), "rejected".into())
        );
    }
}
