//! The client profile (DESIGN.md, "The client profile"): what `client.create` takes beyond the
//! seed's five fields, partners and their tree, `client.update` with versions and merge
//! patches, deactivation and soft delete, and the queries that find clients by all of it.
//! Every refusal is checked as an upstream service sees it: the `{"error"}` reply with its
//! status, the failure event with code and text, and nothing changed in the tables.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::arrange::{self, Made};
use crate::support::*;

/// Sends a command or query with a private reply queue; returns its message_id and reply.
pub(crate) async fn ask(app: &TestApp, routing_key: &str, body: Value) -> (String, Received) {
    let replies = app.reply_queue().await;
    let id = arrange::send(app, routing_key, body, Some(&replies)).await;
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));
    (id, reply)
}

/// The tables a refusal must leave as they were.
async fn state(app: &TestApp) -> Value {
    json!([
        arrange::snapshot(app, "clients", "client_id").await,
        arrange::snapshot(app, "users", "user_id").await,
        arrange::snapshot(app, "partners", "partner_id").await,
        arrange::snapshot(app, "client_relations", "position").await,
    ])
}

/// Publishes a command that must be refused and checks the reply, the event and that
/// nothing changed; returns the event's data.
pub(crate) async fn refused(
    app: &mut TestApp,
    routing_key: &str,
    body: Value,
    (event, code, status, text): (&str, &str, i64, &str),
) -> Value {
    let before = state(app).await;
    let (id, reply) = ask(app, routing_key, body.clone()).await;
    assert_eq!(
        arrange::status(&reply),
        Some(status),
        "{body}: {:?}",
        reply.body
    );
    assert_eq!(reply.body, json!({ "error": text }), "{body}");
    let failed = app.wait_for_event(event, Some(&id)).await;
    let data = failed.body["data"].clone();
    assert_eq!(data["code"], json!(code), "{body}");
    assert_eq!(data["message"], json!(text), "{body}");
    assert_eq!(data["status"], json!(status));
    assert_eq!(arrange::inbox_code(app, &id).await.as_deref(), Some(code));
    assert_eq!(
        state(app).await,
        before,
        "{routing_key} {body} changed something"
    );
    data
}

/// A `client.create` body with the seed's five fields and `extra` on top.
pub(crate) fn create_body(email: &str, country: &str, extra: Value) -> Value {
    let mut body = client_with_email(email);
    body["country_code"] = json!(country);
    if let (Value::Object(b), Value::Object(extra)) = (&mut body, extra) {
        b.extend(extra);
    }
    body
}

/// Creates a client and returns the `client` of its `client.created` event.
pub(crate) async fn create(app: &mut TestApp, body: Value) -> Value {
    let id = app.create_client(&body).await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    created.body["data"]["client"].clone()
}

async fn partner(app: &mut TestApp, name: &str, parent: Option<i64>) -> i64 {
    let (id, reply) = ask(
        app,
        "partner.create",
        json!({"name": name, "parent_partner_id": parent}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(201), "{:?}", reply.body);
    assert_eq!(reply.body["message"], json!("Partner created successfully"));
    let created = app.wait_for_event("partner.created", Some(&id)).await;
    assert_eq!(created.body["data"]["partner"], reply.body["partner"]);
    reply.body["partner"]["id"].as_i64().unwrap()
}

/// A successful `client.update`: the reply's client and the event's data.
async fn update(app: &mut TestApp, body: Value) -> (Value, Value) {
    let (id, reply) = ask(app, "client.update", body.clone()).await;
    assert_eq!(
        arrange::status(&reply),
        Some(200),
        "{body}: {:?}",
        reply.body
    );
    assert_eq!(reply.body["message"], json!("Client updated successfully"));
    let event = app.wait_for_event("client.updated", Some(&id)).await;
    let data = event.body["data"].clone();
    assert_eq!(data["client"], reply.body["client"]);
    assert_eq!(data["version"], reply.body["client"]["version"]);
    (reply.body["client"].clone(), data)
}

/// Events of `message_id` written to the outbox (they are committed before the reply leaves).
pub(crate) async fn events_of(app: &TestApp, message_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE correlation_id = $1 AND kind = 'event'")
        .bind(message_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

const PROFILE_FIELDS: [&str; 10] = [
    "external_id",
    "metadata",
    "identity",
    "address",
    "partner",
    "direct_partner",
    "is_active",
    "version",
    "deleted_at",
    "client_code",
];

#[tokio::test]
async fn a_client_created_with_a_profile_carries_it_everywhere_and_is_found_by_external_id() {
    let mut app = spawn_app().await;
    let root = partner(&mut app, "Northwind", None).await;
    let sub = partner(&mut app, "Northwind East", Some(root)).await;
    let client = create(
        &mut app,
        create_body(
            "jane@example.com",
            "SG",
            json!({
                "external_id": "crm-1",
                "metadata": {"segment": "smb", "seats": 3, "vip": false, "note": null},
                "identity": {"type": "individual", "given_name": "Jane", "family_name": "Tan",
                             "birth_date": "1990-02-28", "country": "sg",
                             "identifications": [{"type": "passport", "identification_number": "E1234567"}]},
                "address": {"country": "ca", "region": "on", "city": "Toronto"},
                "direct_partner": {"name": "northwind east"},
            }),
        ),
    )
    .await;
    assert_eq!(client["external_id"], json!("crm-1"));
    assert_eq!(
        client["metadata"],
        json!({"segment": "smb", "seats": 3, "vip": false, "note": null})
    );
    assert_eq!(
        client["identity"],
        json!({"type": "individual", "given_name": "Jane", "family_name": "Tan",
               "birth_date": "1990-02-28", "country": "SG",
               "identifications": [{"type": "passport", "identification_number": "E1234567"}]})
    );
    assert_eq!(
        client["address"],
        json!({"country": "CA", "region": "ON", "city": "Toronto", "street": null,
               "house_number": null, "postal_code": null, "refinement": null})
    );
    assert_eq!(
        client["direct_partner"],
        json!({"id": sub, "name": "Northwind East"})
    );
    assert_eq!(client["partner"], json!({"id": root, "name": "Northwind"}));
    assert_eq!(client["is_active"], json!(true));
    assert_eq!(client["version"], json!(0));
    assert_eq!(client["deleted_at"], Value::Null);

    // The same client, whichever key finds it.
    for key in [
        json!({"client_id": client["client_id"]}),
        json!({"client_code": client["client_code"]}),
        json!({"external_id": "crm-1"}),
    ] {
        let (_, reply) = ask(&app, "client.get", key.clone()).await;
        assert_eq!(arrange::status(&reply), Some(200), "{key}");
        for field in PROFILE_FIELDS {
            assert_eq!(reply.body["client"][field], client[field], "{key} {field}");
        }
    }

    // No profile given: a corporate identity named after the alias, the rest null.
    let plain = create(&mut app, create_body("plain@example.com", "SG", json!({}))).await;
    assert_eq!(
        plain["identity"],
        json!({"type": "corporate", "legal_name": "Singapore Tech Ltd", "incorporation_date": null,
               "corporation_type": null, "country": null, "identifications": []})
    );
    for field in [
        "external_id",
        "metadata",
        "address",
        "partner",
        "direct_partner",
    ] {
        assert_eq!(plain[field], Value::Null, "{field}");
    }
    app.finish().await;
}

#[tokio::test]
async fn create_refusals_have_the_contracts_codes_and_texts_and_change_nothing() {
    let mut app = spawn_app().await;
    let first = create(
        &mut app,
        create_body("first@example.com", "SG", json!({"external_id": "erp-7"})),
    )
    .await;
    let failed = "client.creation_failed";

    // A second client with the first one's external id: refused, naming the first.
    let data = refused(
        &mut app,
        "client.create",
        create_body("second@example.com", "SG", json!({"external_id": "erp-7"})),
        (
            failed,
            "EXTERNAL_ID_IN_USE",
            409,
            "A client with this external_id already exists.",
        ),
    )
    .await;
    assert_eq!(data["client_id"], first["client_id"]);
    assert_eq!(data["client_code"], first["client_code"]);

    let region = "Region must be an ISO 3166-2 subdivision code for US, CA and MX addresses.";
    for address in [
        json!({"country": "US", "region": "California"}),
        json!({"country": "MX", "region": "ON"}),
        json!({"country": "CA", "region": "CA-ON"}),
    ] {
        refused(
            &mut app,
            "client.create",
            create_body("region@example.com", "SG", json!({ "address": address })),
            (failed, "INVALID_REGION", 400, region),
        )
        .await;
    }
    for identity in [
        json!({"type": "individual", "given_name": "Jane"}),
        json!({"type": "individual", "given_name": "Jane", "family_name": " "}),
    ] {
        refused(
            &mut app,
            "client.create",
            create_body("who@example.com", "SG", json!({ "identity": identity })),
            (
                failed,
                "IDENTITY_INCOMPLETE",
                400,
                "An individual identity needs both given_name and family_name.",
            ),
        )
        .await;
    }
    let too_many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    let too_big: Map<String, Value> = (0..20)
        .map(|i| (format!("k{i}"), json!("x".repeat(460))))
        .collect();
    for metadata in [Value::Object(too_many), Value::Object(too_big)] {
        refused(
            &mut app,
            "client.create",
            create_body("meta@example.com", "SG", json!({ "metadata": metadata })),
            (
                failed,
                "METADATA_TOO_LARGE",
                400,
                "metadata must hold at most 50 keys and 8 KiB of JSON.",
            ),
        )
        .await;
    }
    refused(
        &mut app,
        "client.create",
        create_body(
            "partnerless@example.com",
            "SG",
            json!({"direct_partner": {"name": "Nobody"}}),
        ),
        (failed, "PARTNER_NOT_FOUND", 404, "Partner not found"),
    )
    .await;

    // What the rules accept: a US state's code, and free text outside US, CA and MX.
    let us = create(
        &mut app,
        create_body(
            "us@example.com",
            "SG",
            json!({"address": {"country": "US", "region": "CA"}}),
        ),
    )
    .await;
    assert_eq!(us["address"]["region"], json!("CA"));
    let gb = create(
        &mut app,
        create_body(
            "gb@example.com",
            "SG",
            json!({"address": {"country": "GB", "region": "England", "city": "Leeds"}}),
        ),
    )
    .await;
    assert_eq!(gb["address"]["region"], json!("England"));
    let fifty: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
    let meta = create(
        &mut app,
        create_body("fifty@example.com", "SG", json!({ "metadata": fifty })),
    )
    .await;
    assert_eq!(meta["metadata"].as_object().unwrap().len(), 50);
    app.finish().await;
}

#[tokio::test]
async fn partners_are_named_once_and_need_an_existing_parent() {
    let mut app = spawn_app().await;
    let root = partner(&mut app, "Contoso", None).await;
    let failed = "partner.command_failed";
    refused(
        &mut app,
        "partner.create",
        json!({"name": "CONTOSO"}),
        (
            failed,
            "PARTNER_NAME_TAKEN",
            409,
            "A partner with this name already exists.",
        ),
    )
    .await;
    refused(
        &mut app,
        "partner.create",
        json!({"name": "Orphan", "parent_partner_id": root + 1000}),
        (failed, "PARTNER_NOT_FOUND", 404, "Partner not found"),
    )
    .await;
    let sub = partner(&mut app, "Contoso West", Some(root)).await;
    let (_, reply) = ask(&app, "partner.list", json!({"under": root})).await;
    let partners = reply.body["partners"].as_array().unwrap();
    assert_eq!(reply.body["total"], json!(2));
    assert_eq!(partners[1]["id"], json!(sub));
    assert_eq!(partners[1]["parent_partner_id"], json!(root));
    assert_eq!(partners[1]["root_partner_id"], json!(root));
    app.finish().await;
}

#[tokio::test]
async fn clients_of_sub_partners_are_listed_under_the_root_in_disjoint_pages() {
    let mut app = spawn_app().await;
    let root = partner(&mut app, "Fabrikam", None).await;
    let sub = partner(&mut app, "Fabrikam Asia", Some(root)).await;
    let subsub = partner(&mut app, "Fabrikam Java", Some(sub)).await;
    let other = partner(&mut app, "Tailspin", None).await;
    let mut expected: HashSet<i64> = HashSet::new();
    let mut under_sub = HashSet::new();
    for (i, p) in [
        root, root, root, sub, sub, sub, sub, subsub, subsub, subsub, subsub, subsub,
    ]
    .into_iter()
    .enumerate()
    {
        let c = create(
            &mut app,
            create_body(
                &format!("tree{i}@example.com"),
                "SG",
                json!({"direct_partner": {"id": p}, "external_id": format!("tree-{i}")}),
            ),
        )
        .await;
        assert_eq!(c["partner"]["id"], json!(root));
        let id = c["client_id"].as_i64().unwrap();
        expected.insert(id);
        if p != root {
            under_sub.insert(id);
        }
    }
    for i in 0..2 {
        create(
            &mut app,
            create_body(
                &format!("tail{i}@example.com"),
                "SG",
                json!({"direct_partner": {"id": other}}),
            ),
        )
        .await;
    }
    create(
        &mut app,
        create_body("nopartner@example.com", "SG", json!({})),
    )
    .await;

    let mut seen = HashSet::new();
    for skip in [0, 5, 10] {
        let (_, page) = ask(
            &app,
            "client.list",
            json!({"partner": root, "take": 5, "skip": skip}),
        )
        .await;
        assert_eq!(page.body["total"], json!(12));
        assert_eq!(page.body["take"], json!(5));
        assert_eq!(page.body["skip"], json!(skip));
        for c in page.body["clients"].as_array().unwrap() {
            assert!(
                seen.insert(c["client_id"].as_i64().unwrap()),
                "pages overlap"
            );
        }
    }
    assert_eq!(seen, expected);

    // By name, whatever its case: the sub-partner's own clients and its sub-partner's.
    let (_, page) = ask(
        &app,
        "client.list",
        json!({"partner": "FABRIKAM ASIA", "take": 100}),
    )
    .await;
    let listed: HashSet<i64> = page.body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, under_sub);
    assert_eq!(page.body["total"], json!(9));

    let (_, page) = ask(&app, "client.list", json!({"external_id": "tree-3"})).await;
    assert_eq!(page.body["total"], json!(1));
    assert_eq!(page.body["clients"][0]["external_id"], json!("tree-3"));
    let (_, reply) = ask(&app, "client.list", json!({"partner": "Nobody"})).await;
    assert_eq!(arrange::status(&reply), Some(404));
    assert_eq!(reply.body, json!({"error": "Partner not found"}));

    let (_, partners) = ask(&app, "partner.list", json!({"take": 3, "skip": 2})).await;
    assert_eq!(partners.body["total"], json!(4));
    let names: Vec<&str> = partners.body["partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Fabrikam Java", "Tailspin"]);
    app.finish().await;
}

#[tokio::test]
async fn updates_patch_metadata_bump_the_version_and_list_their_changes() {
    let mut app = spawn_app().await;
    let client = create(
        &mut app,
        create_body(
            "patch@example.com",
            "SG",
            json!({"metadata": {"tier": "gold", "seats": 3}}),
        ),
    )
    .await;
    let id = client["client_id"].clone();

    // Set a key, change one, remove one, with the current version.
    let (after, data) = update(
        &mut app,
        json!({"client_id": id, "version": 0,
               "metadata": {"region": "apac", "tier": "silver", "seats": null}}),
    )
    .await;
    assert_eq!(
        after["metadata"],
        json!({"tier": "silver", "region": "apac"})
    );
    assert_eq!(after["version"], json!(1));
    assert_eq!(
        data["changes"],
        json!({"metadata": {"from": {"tier": "gold", "seats": 3},
                            "to": {"tier": "silver", "region": "apac"}}})
    );

    // Contact fields and the profile's parts, each only when present.
    let (after, data) = update(
        &mut app,
        json!({"client_id": id, "phone": "+6598765432", "client_type": "startup",
               "address": {"country": "US", "region": "ny", "city": "New York"},
               "identity": {"legal_name": "Patch Pte Ltd"}, "external_id": "late-1"}),
    )
    .await;
    assert_eq!(after["version"], json!(2));
    assert_eq!(after["client_alias"], client["client_alias"]);
    assert_eq!(after["client_type"], json!("STARTUP"));
    assert_eq!(after["address"]["region"], json!("NY"));
    assert_eq!(after["identity"]["legal_name"], json!("Patch Pte Ltd"));
    assert_eq!(after["external_id"], json!("late-1"));
    let mut changed: Vec<&String> = data["changes"].as_object().unwrap().keys().collect();
    changed.sort();
    assert_eq!(
        changed,
        ["address", "client_type", "external_id", "identity", "phone"]
    );
    assert_eq!(
        data["changes"]["phone"],
        json!({"from": client["phone"], "to": "+6598765432"})
    );

    // The same values again: answered, nothing announced, the version stays.
    let (msg, reply) = ask(
        &app,
        "client.update",
        json!({"client_id": id, "phone": "+6598765432", "metadata": {"tier": "silver"}}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["client"]["version"], json!(2));
    assert_eq!(events_of(&app, &msg).await, 0, "no event for no change");

    // Removing the address and every metadata key leaves null.
    let (after, _) = update(
        &mut app,
        json!({"client_id": id, "address": null, "metadata": {"tier": null, "region": null}}),
    )
    .await;
    assert_eq!(after["address"], Value::Null);
    assert_eq!(after["metadata"], Value::Null);
    let (_, got) = ask(&app, "client.get", json!({"client_id": id})).await;
    assert_eq!(got.body["client"]["version"], json!(3));
    app.finish().await;
}

#[tokio::test]
async fn update_refusals_have_the_contracts_codes_and_texts_and_change_nothing() {
    let mut app = spawn_app().await;
    let client = create(
        &mut app,
        create_body("target@example.com", "SG", json!({"external_id": "t-1"})),
    )
    .await;
    let other = create(
        &mut app,
        create_body("other@example.com", "SG", json!({"external_id": "o-1"})),
    )
    .await;
    let bare = create(&mut app, create_body("bare@example.com", "SG", json!({}))).await;
    let id = client["client_id"].clone();
    update(&mut app, json!({"client_id": id, "phone": "+6511111111"})).await;
    let failed = "client.command_failed";

    let data = refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "version": 0, "phone": "+6522222222"}),
        (
            failed,
            "VERSION_CONFLICT",
            409,
            "The client was changed: version 0 is not the current version 1.",
        ),
    )
    .await;
    assert_eq!(data["current_version"], json!(1));
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "email": "OTHER@example.com"}),
        (
            failed,
            "EMAIL_IN_USE",
            409,
            "Email is already in use by another client.",
        ),
    )
    .await;
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "external_id": "t-2"}),
        (
            failed,
            "EXTERNAL_ID_IMMUTABLE",
            409,
            "external_id cannot be changed once set.",
        ),
    )
    .await;
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "external_id": null}),
        (
            failed,
            "EXTERNAL_ID_IMMUTABLE",
            409,
            "external_id cannot be changed once set.",
        ),
    )
    .await;
    let data = refused(
        &mut app,
        "client.update",
        json!({"client_id": bare["client_id"], "external_id": "o-1"}),
        (
            failed,
            "EXTERNAL_ID_IN_USE",
            409,
            "A client with this external_id already exists.",
        ),
    )
    .await;
    assert_eq!(data["client_id"], other["client_id"]);
    assert_eq!(data["client_code"], other["client_code"]);
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "address": {"country": "MX", "region": "Jalisco"}}),
        (
            failed,
            "INVALID_REGION",
            400,
            "Region must be an ISO 3166-2 subdivision code for US, CA and MX addresses.",
        ),
    )
    .await;
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "direct_partner": {"id": 999}}),
        (failed, "PARTNER_NOT_FOUND", 404, "Partner not found"),
    )
    .await;
    refused(
        &mut app,
        "client.update",
        json!({"client_id": id, "identity": {"type": "individual", "given_name": "Ann"}}),
        (
            failed,
            "IDENTITY_INCOMPLETE",
            400,
            "An individual identity needs both given_name and family_name.",
        ),
    )
    .await;
    let too_many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(true))).collect();
    let nine_kib: Map<String, Value> = (0..19)
        .map(|i| (format!("k{i}"), json!("y".repeat(490))))
        .collect();
    for metadata in [Value::Object(too_many), Value::Object(nine_kib)] {
        refused(
            &mut app,
            "client.update",
            json!({"client_id": id, "metadata": metadata}),
            (
                failed,
                "METADATA_TOO_LARGE",
                400,
                "metadata must hold at most 50 keys and 8 KiB of JSON.",
            ),
        )
        .await;
    }
    for state in ["REJECTED", "EXITED"] {
        arrange::set_state(
            &app,
            other["client_id"].as_i64().unwrap() as i32,
            state,
            "PENDING",
        )
        .await;
        refused(
            &mut app,
            "client.update",
            json!({"client_id": other["client_id"], "phone": "+6533333333"}),
            (
                failed,
                "CLIENT_READ_ONLY",
                409,
                &format!("Client can no longer be changed in state {state}."),
            ),
        )
        .await;
    }
    // Unknown after its delayed retries; deleted at once.
    refused(
        &mut app,
        "client.update",
        json!({"client_id": 999_999, "phone": "+6544444444"}),
        (failed, "CLIENT_NOT_FOUND", 404, "Client not found"),
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn of_two_updates_racing_with_one_version_exactly_one_wins() {
    let mut app = spawn_app().await;
    for round in 0..4 {
        let client = create(
            &mut app,
            create_body(&format!("race{round}@example.com"), "SG", json!({})),
        )
        .await;
        let id = client["client_id"].clone();
        let replies = app.reply_queue().await;
        let a = arrange::send(
            &app,
            "client.update",
            json!({"client_id": id, "version": 0, "metadata": {"winner": "a"}}),
            Some(&replies),
        );
        let b = arrange::send(
            &app,
            "client.update",
            json!({"client_id": id, "version": 0, "metadata": {"winner": "b"}}),
            Some(&replies),
        );
        let (a, b) = tokio::join!(a, b);
        let first = app.take_from(&replies).await;
        let second = app.take_from(&replies).await;
        let mut statuses = vec![arrange::status(&first), arrange::status(&second)];
        statuses.sort();
        assert_eq!(statuses, [Some(200), Some(409)], "round {round}");
        let codes = [
            arrange::inbox_code(&app, &a).await,
            arrange::inbox_code(&app, &b).await,
        ];
        assert!(
            codes.contains(&None) && codes.contains(&Some("VERSION_CONFLICT".into())),
            "{codes:?}"
        );
        let (_, got) = ask(&app, "client.get", json!({"client_id": id})).await;
        assert_eq!(got.body["client"]["version"], json!(1));
        let winner = if codes[0].is_none() { "a" } else { "b" };
        assert_eq!(got.body["client"]["metadata"], json!({ "winner": winner }));
    }

    // Without a version, racing updates are serialised: neither change is lost.
    let client = create(&mut app, create_body("serial@example.com", "SG", json!({}))).await;
    let id = client["client_id"].clone();
    let sends: Vec<_> = (0..6)
        .map(|i| {
            arrange::send(
                &app,
                "client.update",
                json!({"client_id": id, "metadata": { format!("k{i}"): i }}),
                None,
            )
        })
        .collect();
    for message_id in futures::future::join_all(sends).await {
        app.wait_for_event("client.updated", Some(&message_id))
            .await;
    }
    let (_, got) = ask(&app, "client.get", json!({"client_id": id})).await;
    assert_eq!(got.body["client"]["version"], json!(6));
    assert_eq!(
        got.body["client"]["metadata"].as_object().unwrap().len(),
        6,
        "{}",
        got.body["client"]["metadata"]
    );
    app.finish().await;
}

async fn instance_create(app: &TestApp, admin: i32, name: &str) -> Received {
    ask(
        app,
        "instance.create",
        json!({"actor_user_id": admin, "instance_name": name}),
    )
    .await
    .1
}

#[tokio::test]
async fn an_inactive_clients_admin_is_refused_instance_changes_until_reactivated() {
    let mut app = spawn_app().await;
    let made: Made = arrange::client(&mut app, "sleepy@example.com").await;
    let id = made.client_id;

    let (msg, reply) = ask(
        &app,
        "client.deactivate",
        json!({"client_id": id, "reason": "audit"}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(
        reply.body["message"],
        json!("Client deactivated successfully")
    );
    assert_eq!(reply.body["client"]["is_active"], json!(false));
    let event = app.wait_for_event("client.deactivated", Some(&msg)).await;
    assert_eq!(event.body["data"]["reason"], json!("audit"));
    assert_eq!(event.body["data"]["version"], json!(1));

    // Asking again: 200, no event, no new version.
    let (msg, reply) = ask(&app, "client.deactivate", json!({"client_id": id})).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["client"]["version"], json!(1));
    assert_eq!(events_of(&app, &msg).await, 0);

    let before = arrange::snapshot(&app, "instances", "instance_id").await;
    let reply = instance_create(&app, made.admin_id, "Blocked").await;
    assert_eq!(arrange::status(&reply), Some(409));
    assert_eq!(reply.body, json!({"error": "Client is inactive"}));
    assert_eq!(
        arrange::snapshot(&app, "instances", "instance_id").await,
        before
    );
    let (_, list) = ask(&app, "client.list", json!({"is_active": false, "take": 10})).await;
    assert_eq!(list.body["total"], json!(1));

    let (msg, reply) = ask(&app, "client.reactivate", json!({"client_id": id})).await;
    assert_eq!(
        reply.body["message"],
        json!("Client reactivated successfully")
    );
    app.wait_for_event("client.reactivated", Some(&msg)).await;
    let reply = instance_create(&app, made.admin_id, "Allowed").await;
    assert_eq!(arrange::status(&reply), Some(201), "{:?}", reply.body);
    app.finish().await;
}

#[tokio::test]
async fn a_deleted_client_is_hidden_and_frees_its_email_and_external_id() {
    let mut app = spawn_app().await;
    let first = create(
        &mut app,
        create_body(
            "reuse@example.com",
            "SG",
            json!({"external_id": "crm-reuse"}),
        ),
    )
    .await;
    let id = first["client_id"].clone();
    let (msg, reply) = ask(
        &app,
        "client.delete",
        json!({"client_id": id, "reason": "gdpr"}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["message"], json!("Client deleted successfully"));
    assert!(reply.body["client"]["deleted_at"].is_string());
    let event = app.wait_for_event("client.deleted", Some(&msg)).await;
    assert_eq!(event.body["data"]["users_deactivated"], json!(1));
    let inactive: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE client_id = $1 AND user_status = 'INACTIVE'",
    )
    .bind(id.as_i64().unwrap() as i32)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(inactive, 1);

    // Gone for queries unless asked for, and for every later command.
    let (_, reply) = ask(&app, "client.get", json!({"external_id": "crm-reuse"})).await;
    assert_eq!(arrange::status(&reply), Some(404));
    let (_, reply) = ask(
        &app,
        "client.get",
        json!({"client_id": id, "include_deleted": true}),
    )
    .await;
    assert_eq!(
        reply.body["client"]["deleted_at"],
        event.body["data"]["client"]["deleted_at"]
    );
    let (_, list) = ask(&app, "client.list", json!({"take": 10})).await;
    assert_eq!(list.body["total"], json!(0));
    let (_, list) = ask(
        &app,
        "client.list",
        json!({"take": 10, "include_deleted": true}),
    )
    .await;
    assert_eq!(list.body["total"], json!(1));
    for (routing_key, failed) in [
        ("client.update", "client.command_failed"),
        ("client.delete", "client.command_failed"),
        ("client.deactivate", "client.command_failed"),
        ("client.approve", "client.transition_rejected"),
    ] {
        refused(
            &mut app,
            routing_key,
            json!({"client_id": id}),
            (failed, "CLIENT_NOT_FOUND", 404, "Client not found"),
        )
        .await;
    }

    // The same email and external id make a new client.
    let second = create(
        &mut app,
        create_body(
            "REUSE@example.com",
            "SG",
            json!({"external_id": "crm-reuse"}),
        ),
    )
    .await;
    assert_ne!(second["client_id"], id);
    let (_, reply) = ask(&app, "client.get", json!({"external_id": "crm-reuse"})).await;
    assert_eq!(reply.body["client"]["client_id"], second["client_id"]);
    app.finish().await;
}
