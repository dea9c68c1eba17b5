//! Related people of corporate clients (DESIGN.md, "Relations, imports and webhooks"): added
//! on `client.create` or by `client.relation.add` (one or up to ten), patched, removed, listed
//! and read by id. Every refusal is checked as an upstream service sees it (reply, event,
//! inbox code) with the tables, `client_relations` included, left as they were.

use serde_json::{Value, json};

use crate::arrange;
use crate::profile::{ask, create, create_body, events_of, refused};
use crate::support::*;

const FAILED: &str = "client.command_failed";

fn person(i: usize) -> Value {
    json!({
        "relation": "director",
        "identity": {"type": "individual", "given_name": format!("Person{i}"),
                     "family_name": "Doe", "birth_date": "1980-01-01", "country": "gb"},
        "profile": {"residential_address": {"country": "GB", "region": "England", "city": "London",
                                            "street": "Baker Street", "house_number": "221B"},
                    "phone": "+441234567890", "email": format!("person{i}@example.com")}
    })
}

/// Adds relations; checks the 201 reply against the event and returns the stored relations.
async fn add(app: &mut TestApp, body: Value) -> Vec<Value> {
    let (id, reply) = ask(app, "client.relation.add", body.clone()).await;
    assert_eq!(
        arrange::status(&reply),
        Some(201),
        "{body}: {:?}",
        reply.body
    );
    let event = app
        .wait_for_event("client.relations_added", Some(&id))
        .await;
    assert_eq!(event.body["data"]["relations"], reply.body["relations"]);
    assert_eq!(event.body["data"]["client_id"], body["client_id"]);
    reply.body["relations"].as_array().unwrap().clone()
}

fn names(relations: &[Value]) -> Vec<String> {
    relations
        .iter()
        .map(|r| r["identity"]["given_name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn relations_are_added_one_or_ten_at_a_time_and_refused_with_the_contract_texts() {
    let mut app = spawn_app().await;
    let corp = create(&mut app, create_body("corp@example.com", "SG", json!({}))).await;
    let corp_id = corp["client_id"].clone();

    // One, stored as given and normalised, with its own id and full name.
    let one = add(
        &mut app,
        json!({"client_id": corp_id, "relation": person(0)}),
    )
    .await;
    assert_eq!(one.len(), 1);
    let first = &one[0];
    assert!(uuid::Uuid::parse_str(first["id"].as_str().unwrap()).is_ok());
    assert_eq!(first["client_id"], corp_id);
    assert_eq!(first["relation"], json!("director"));
    assert_eq!(first["full_name"], json!("Person0 Doe"));
    assert_eq!(first["identity"]["country"], json!("GB"));
    assert_eq!(
        first["profile"]["residential_address"]["street"],
        json!("Baker Street")
    );

    // Ten in one call, kept in the order given.
    let ten: Vec<Value> = (1..=10).map(person).collect();
    let added = add(&mut app, json!({"client_id": corp_id, "relations": ten})).await;
    assert_eq!(
        names(&added),
        (1..=10).map(|i| format!("Person{i}")).collect::<Vec<_>>()
    );

    // Eleven, both keys, an individual client, a deleted client, a person without a family
    // name, a region the country does not have: refused, nothing stored.
    let eleven: Vec<Value> = (0..11).map(person).collect();
    refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": corp_id, "relations": eleven}),
        (
            FAILED,
            "TOO_MANY_RELATIONS",
            400,
            "At most 10 relations can be added at once.",
        ),
    )
    .await;
    refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": corp_id, "relation": person(1), "relations": [person(2)]}),
        (
            FAILED,
            "RELATIONS_AMBIGUOUS",
            400,
            "Send either relation or relations, not both.",
        ),
    )
    .await;
    let individual = create(
        &mut app,
        create_body(
            "solo@example.com",
            "SG",
            json!({"identity": {"type": "individual", "given_name": "Solo", "family_name": "Tan"}}),
        ),
    )
    .await;
    let data = refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": individual["client_id"], "relation": person(1)}),
        (
            FAILED,
            "RELATIONS_CORPORATE_ONLY",
            409,
            "Only corporate clients can have relations.",
        ),
    )
    .await;
    assert_eq!(data["client_id"], individual["client_id"]);
    let mut incomplete = person(1);
    incomplete["identity"]["family_name"] = Value::Null;
    refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": corp_id, "relation": incomplete}),
        (
            FAILED,
            "IDENTITY_INCOMPLETE",
            400,
            "An individual identity needs both given_name and family_name.",
        ),
    )
    .await;
    let mut bad_region = person(1);
    bad_region["profile"]["residential_address"] = json!({"country": "US", "region": "California"});
    let (_, reply) = ask(
        &app,
        "client.relation.add",
        json!({"client_id": corp_id, "relation": bad_region}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(400), "{:?}", reply.body);

    // Pages of the eleven, in order, disjoint, with the total.
    let mut seen = Vec::new();
    for skip in [0, 4, 8] {
        let (_, page) = ask(
            &app,
            "client.relation.list",
            json!({"client_id": corp_id, "take": 4, "skip": skip}),
        )
        .await;
        assert_eq!(arrange::status(&page), Some(200));
        assert_eq!(page.body["total"], json!(11));
        seen.extend(names(page.body["relations"].as_array().unwrap()));
    }
    assert_eq!(
        seen,
        (0..=10).map(|i| format!("Person{i}")).collect::<Vec<_>>()
    );

    // A deleted client has no relations to add to or to list.
    let (_, reply) = ask(&app, "client.delete", json!({"client_id": corp_id})).await;
    assert_eq!(arrange::status(&reply), Some(200));
    refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": corp_id, "relation": person(20)}),
        (FAILED, "CLIENT_NOT_FOUND", 404, "Client not found"),
    )
    .await;
    let (_, reply) = ask(&app, "client.relation.list", json!({"client_id": corp_id})).await;
    assert_eq!(arrange::status(&reply), Some(404));
    assert_eq!(reply.body, json!({"error": "Client not found"}));
}

#[tokio::test]
async fn a_relation_is_patched_read_and_removed_by_id_and_only_through_its_client() {
    let mut app = spawn_app().await;
    let a = create(&mut app, create_body("a@example.com", "SG", json!({}))).await;
    let b = create(&mut app, create_body("b@example.com", "SG", json!({}))).await;
    let (a_id, b_id) = (a["client_id"].clone(), b["client_id"].clone());
    let added = add(
        &mut app,
        json!({"client_id": a_id, "relations": [person(1), person(2)]}),
    )
    .await;
    let rel = added[0]["id"].clone();

    // A patch: the kind replaced, the profile merged (phone removed, email changed).
    let (msg, reply) = ask(
        &app,
        "client.relation.update",
        json!({"client_id": a_id, "relation_id": rel, "relation": "director-and-shareholder",
               "profile": {"phone": null, "email": "new@example.com"}}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200), "{:?}", reply.body);
    let updated = reply.body["relation"].clone();
    assert_eq!(updated["relation"], json!("director-and-shareholder"));
    assert_eq!(updated["profile"]["phone"], Value::Null);
    assert_eq!(updated["profile"]["email"], json!("new@example.com"));
    assert_eq!(
        updated["profile"]["residential_address"],
        added[0]["profile"]["residential_address"]
    );
    assert_eq!(updated["identity"], added[0]["identity"]);
    let event = app
        .wait_for_event("client.relation_updated", Some(&msg))
        .await;
    assert_event_schema(&event.body);
    assert_eq!(event.body["data"]["relation"], updated);
    assert_eq!(
        event.body["data"]["changes"]["relation"],
        json!({"from": "director", "to": "director-and-shareholder"})
    );
    assert!(event.body["data"]["changes"].get("identity").is_none());

    // The same patch again changes nothing: 200, no event.
    let (msg, reply) = ask(
        &app,
        "client.relation.update",
        json!({"client_id": a_id, "relation_id": rel, "relation": "director-and-shareholder"}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["relation"], updated);
    assert_eq!(events_of(&app, &msg).await, 0);

    // Read back by id; another client's id does not reach it, nor does a made-up id.
    let (_, got) = ask(
        &app,
        "client.relation.get",
        json!({"client_id": a_id, "relation_id": rel}),
    )
    .await;
    assert_eq!(arrange::status(&got), Some(200));
    assert_eq!(got.body["relation"], updated);
    let missing = uuid::Uuid::new_v4().to_string();
    for (client, relation) in [
        (&b_id, rel.clone()),
        (&a_id, json!(missing)),
        (&a_id, json!("not-a-uuid")),
    ] {
        let (_, got) = ask(
            &app,
            "client.relation.get",
            json!({"client_id": client, "relation_id": relation}),
        )
        .await;
        assert_eq!(arrange::status(&got), Some(404));
        assert_eq!(got.body, json!({"error": "Relation not found"}));
        for command in ["client.relation.update", "client.relation.remove"] {
            refused(
                &mut app,
                command,
                json!({"client_id": client, "relation_id": relation}),
                (FAILED, "RELATION_NOT_FOUND", 404, "Relation not found"),
            )
            .await;
        }
    }

    // Removed: announced with what it was, gone from reads, the other one stays.
    let (msg, reply) = ask(
        &app,
        "client.relation.remove",
        json!({"client_id": a_id, "relation_id": rel}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(
        reply.body["message"],
        json!("Relation removed successfully")
    );
    let event = app
        .wait_for_event("client.relation_removed", Some(&msg))
        .await;
    assert_event_schema(&event.body);
    assert_eq!(event.body["data"]["relation_id"], rel);
    assert_eq!(event.body["data"]["relation"], updated);
    let (_, list) = ask(&app, "client.relation.list", json!({"client_id": a_id})).await;
    assert_eq!(list.body["total"], json!(1));
    assert_eq!(list.body["relations"][0]["id"], added[1]["id"]);
    refused(
        &mut app,
        "client.relation.remove",
        json!({"client_id": a_id, "relation_id": rel}),
        (FAILED, "RELATION_NOT_FOUND", 404, "Relation not found"),
    )
    .await;
}

#[tokio::test]
async fn a_corporate_client_is_created_with_its_relations_and_an_individual_one_is_refused_them() {
    let mut app = spawn_app().await;
    let id = app
        .create_client(&create_body(
            "withrel@example.com",
            "SG",
            json!({"relations": [person(1), person(2)]}),
        ))
        .await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    let relations = created.body["data"]["relations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(names(&relations), ["Person1", "Person2"]);
    let client_id = created.body["data"]["client"]["client_id"].clone();
    let (_, list) = ask(
        &app,
        "client.relation.list",
        json!({"client_id": client_id}),
    )
    .await;
    assert_eq!(list.body["relations"], json!(relations));
    assert_eq!(list.body["total"], json!(2));

    let failed = "client.creation_failed";
    refused(
        &mut app,
        "client.create",
        create_body(
            "solo@example.com",
            "SG",
            json!({"identity": {"type": "individual", "given_name": "Solo", "family_name": "Tan"},
                   "relations": [person(1)]}),
        ),
        (
            failed,
            "RELATIONS_CORPORATE_ONLY",
            409,
            "Only corporate clients can have relations.",
        ),
    )
    .await;
    let eleven: Vec<Value> = (0..11).map(person).collect();
    refused(
        &mut app,
        "client.create",
        create_body("eleven@example.com", "SG", json!({"relations": eleven})),
        (
            failed,
            "TOO_MANY_RELATIONS",
            400,
            "At most 10 relations can be added at once.",
        ),
    )
    .await;
}

#[test]
fn the_new_event_schemas_accept_their_own_examples() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/events");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for example in schema["examples"].as_array().unwrap() {
            assert_event_schema(example);
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked}");
}

#[tokio::test]
async fn the_identity_decides_who_has_relations_not_the_client_type_label() {
    let mut app = spawn_app().await;
    // Labelled INDIVIDUAL, but a corporate identity: relations taken.
    let labelled = create(
        &mut app,
        create_body(
            "label@example.com",
            "SG",
            json!({"client_type": "INDIVIDUAL",
                   "identity": {"type": "corporate", "legal_name": "Label Pte Ltd"},
                   "relations": [person(1)]}),
        ),
    )
    .await;
    let added = add(
        &mut app,
        json!({"client_id": labelled["client_id"], "relation": person(2)}),
    )
    .await;
    assert_eq!(names(&added), ["Person2"]);

    // Labelled CORPORATE, but an individual identity: refused, on create and on add.
    refused(
        &mut app,
        "client.create",
        create_body(
            "person@example.com",
            "SG",
            json!({"client_type": "CORPORATE",
                   "identity": {"type": "individual", "given_name": "Ann", "family_name": "Lee"},
                   "relations": [person(1)]}),
        ),
        (
            "client.creation_failed",
            "RELATIONS_CORPORATE_ONLY",
            409,
            "Only corporate clients can have relations.",
        ),
    )
    .await;
    let person_client = create(
        &mut app,
        create_body(
            "person2@example.com",
            "SG",
            json!({"client_type": "CORPORATE",
                   "identity": {"type": "individual", "given_name": "Ann", "family_name": "Lee"}}),
        ),
    )
    .await;
    refused(
        &mut app,
        "client.relation.add",
        json!({"client_id": person_client["client_id"], "relation": person(3)}),
        (
            FAILED,
            "RELATIONS_CORPORATE_ONLY",
            409,
            "Only corporate clients can have relations.",
        ),
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn a_rejected_or_exited_client_is_view_only_but_can_still_be_erased() {
    let mut app = spawn_app().await;
    for (n, state) in ["REJECTED", "EXITED"].into_iter().enumerate() {
        let client = create(
            &mut app,
            create_body(
                &format!("viewonly{n}@example.com"),
                "SG",
                json!({"relations": [person(1)]}),
            ),
        )
        .await;
        let id = client["client_id"].clone();
        let (_, list) = ask(&app, "client.relation.list", json!({"client_id": id})).await;
        let relation_id = list.body["relations"][0]["id"].clone();
        arrange::set_state(&app, id.as_i64().unwrap() as i32, state, "PENDING").await;
        let text = format!("Client can no longer be changed in state {state}.");
        for (key, body) in [
            (
                "client.update",
                json!({"client_id": id, "phone": "+6533333333"}),
            ),
            (
                "client.relation.add",
                json!({"client_id": id, "relation": person(2)}),
            ),
            (
                "client.relation.update",
                json!({"client_id": id, "relation_id": relation_id, "relation": "shareholder"}),
            ),
            (
                "client.relation.remove",
                json!({"client_id": id, "relation_id": relation_id}),
            ),
            (
                "client.kyc.update",
                json!({"client_id": id, "ekyc_status": "APPROVED"}),
            ),
            ("client.deactivate", json!({"client_id": id})),
            ("client.reactivate", json!({"client_id": id})),
        ] {
            let event = match key {
                "client.kyc.update" => "client.kyc_update_failed",
                _ => FAILED,
            };
            let data = refused(&mut app, key, body, (event, "CLIENT_READ_ONLY", 409, &text)).await;
            assert_eq!(data["client_status"], json!(state), "{key}");
        }
        // Reads still answer.
        let (_, got) = ask(&app, "client.get", json!({"client_id": id})).await;
        assert_eq!(got.body["client"]["client_status"], json!(state));
        let (_, list) = ask(&app, "client.relation.list", json!({"client_id": id})).await;
        assert_eq!(list.body["total"], json!(1));
        // Erasure is still taken.
        let (msg, reply) = ask(&app, "client.delete", json!({"client_id": id})).await;
        assert_eq!(arrange::status(&reply), Some(200), "{}", reply.body);
        app.wait_for_event("client.deleted", Some(&msg)).await;
    }
    app.finish().await;
}
