//! Instances: an admin creates, renames and deletes the instances of their own client; every
//! refusal carries the seed's text and status and changes nothing.

use onboard::worker::Disposition;
use serde_json::{Value, json};

use crate::arrange::{self, Made};
use crate::support::*;

/// An instance of `owner`, made through the worker.
async fn instance(app: &mut TestApp, owner: Made, name: &str) -> i64 {
    let id = arrange::send(
        app,
        "instance.create",
        json!({"actor_user_id": owner.admin_id, "instance_name": name}),
        None,
    )
    .await;
    let created = app.wait_for_event("instance.created", Some(&id)).await;
    created.body["data"]["instance"]["instance_id"]
        .as_i64()
        .unwrap()
}

/// Publishes an instance command that must be refused, and checks what a user observes: the
/// `{"error": text}` reply with its status, the `instance.command_failed` event with the
/// code, the inbox's code, the ack — and that no instance changed.
async fn assert_refused(
    app: &mut TestApp,
    routing_key: &str,
    body: Value,
    code: &str,
    status: i64,
    text: &str,
) {
    let before = arrange::snapshot(app, "instances", "instance_id").await;
    let replies = app.reply_queue().await;
    let id = arrange::send(app, routing_key, body.clone(), Some(&replies)).await;
    let reply = app.take_from(&replies).await;
    assert_eq!(
        arrange::status(&reply),
        Some(status),
        "{routing_key} {body}"
    );
    assert_eq!(reply.body, json!({ "error": text }), "{routing_key} {body}");
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));

    let failed = app
        .wait_for_event("instance.command_failed", Some(&id))
        .await;
    assert_eq!(failed.body["data"]["code"], json!(code));
    assert_eq!(failed.body["data"]["status"], json!(status));
    assert_eq!(failed.body["data"]["message"], json!(text));
    assert_eq!(failed.body["data"]["command_type"], json!(routing_key));

    arrange::handled(app, &id).await;
    assert_eq!(app.settled.for_message(&id), vec![Disposition::Handled]);
    assert_eq!(arrange::inbox_code(app, &id).await.as_deref(), Some(code));
    assert_eq!(
        arrange::snapshot(app, "instances", "instance_id").await,
        before,
        "a refused {routing_key} changed instances"
    );
}

#[tokio::test]
async fn an_admin_creates_an_instance_and_gets_the_seeds_201_body() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let replies = app.reply_queue().await;
    let id = arrange::send(
        &app,
        "instance.create",
        json!({"actor_user_id": owner.admin_id, "instance_name": "  Development API "}),
        Some(&replies),
    )
    .await;

    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(201));
    assert_eq!(
        reply.body["message"],
        json!("Instance created successfully")
    );
    let instance = &reply.body["instance"];
    assert_eq!(instance["client_id"], json!(owner.client_id));
    assert_eq!(instance["instance_name"], json!("Development API"));
    assert_eq!(instance["client_alias"], Value::Null);
    assert_eq!(instance["instance_status"], json!("ACTIVE"));
    for ts in ["created_at", "updated_at"] {
        let t = instance[ts].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{ts}: {t}");
    }

    let created = app.wait_for_event("instance.created", Some(&id)).await;
    assert_eq!(created.body["data"]["instance"], *instance);
    assert_eq!(created.body["data"]["actor_user_id"], json!(owner.admin_id));
    let row: (i32, String, Option<String>) = sqlx::query_as(
        "SELECT client_id, instance_name, instance_status FROM instances WHERE instance_id = $1",
    )
    .bind(instance["instance_id"].as_i64().unwrap() as i32)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            owner.client_id,
            "Development API".into(),
            Some("ACTIVE".into())
        )
    );
    app.finish().await;
}

#[tokio::test]
async fn a_missing_null_or_blank_instance_name_is_refused_with_400() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    for name in [None, Some(Value::Null), Some(json!("")), Some(json!("   "))] {
        let mut body = json!({"actor_user_id": owner.admin_id});
        if let Some(name) = name {
            body["instance_name"] = name;
        }
        assert_refused(
            &mut app,
            "instance.create",
            body,
            "INSTANCE_NAME_REQUIRED",
            400,
            "Instance name is required",
        )
        .await;
    }
    assert_eq!(app.count("SELECT count(*) FROM instances").await, 0);
    app.finish().await;
}

#[tokio::test]
async fn an_actor_linked_to_no_client_gets_each_endpoints_refusal() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let existing = instance(&mut app, owner, "API").await;
    let nobody = 999_999;
    assert_refused(
        &mut app,
        "instance.create",
        json!({"actor_user_id": nobody, "instance_name": "API 2"}),
        "CLIENT_ID_NOT_FOUND",
        403,
        "Client ID not found",
    )
    .await;
    assert_refused(
        &mut app,
        "instance.update_alias",
        json!({"actor_user_id": nobody, "instance_id": existing, "alias": "x"}),
        "CLIENT_NOT_FOUND",
        404,
        "Client not found",
    )
    .await;
    assert_refused(
        &mut app,
        "instance.delete",
        json!({"actor_user_id": nobody, "instance_id": existing}),
        "CLIENT_ID_NOT_FOUND",
        403,
        "User not found or not linked to any client",
    )
    .await;
    assert_refused(
        &mut app,
        "instance.deactivate",
        json!({"actor_user_id": nobody, "instance_id": existing}),
        "CLIENT_NOT_FOUND",
        404,
        "Client not found",
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn admin_of_client_a_cannot_rename_or_delete_an_instance_of_client_b() {
    let mut app = spawn_app().await;
    let a = arrange::client(&mut app, "a@example.com").await;
    let b = arrange::client(&mut app, "b@example.com").await;
    let bs = instance(&mut app, b, "B's API").await;
    assert_refused(
        &mut app,
        "instance.update_alias",
        json!({"actor_user_id": a.admin_id, "instance_id": bs, "alias": "Mine now"}),
        "ACCESS_DENIED",
        403,
        "Access denied. The instance is not yours.",
    )
    .await;
    assert_refused(
        &mut app,
        "instance.delete",
        json!({"actor_user_id": a.admin_id, "instance_id": bs}),
        "INSTANCE_NOT_FOUND",
        404,
        "Instance not found or does not belong to your client",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM instances WHERE client_alias IS NULL")
            .await,
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn a_user_who_is_not_an_admin_cannot_change_instances_of_their_own_client() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let api = instance(&mut app, owner, "API").await;
    let member = arrange::user(&app, owner.client_id, "member").await;
    let denied = |routing_key: &'static str, body: Value| (routing_key, body);
    for (routing_key, body) in [
        denied(
            "instance.create",
            json!({"actor_user_id": member, "instance_name": "Other"}),
        ),
        denied(
            "instance.update_alias",
            json!({"actor_user_id": member, "instance_id": api, "alias": "x"}),
        ),
        denied(
            "instance.delete",
            json!({"actor_user_id": member, "instance_id": api}),
        ),
    ] {
        assert_refused(
            &mut app,
            routing_key,
            body,
            "ACCESS_DENIED",
            403,
            "Access denied. The instance is not yours.",
        )
        .await;
    }
    app.finish().await;
}

#[tokio::test]
async fn an_unknown_instance_is_not_found_for_rename_and_delete() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    instance(&mut app, owner, "API").await;
    for (routing_key, body) in [
        (
            "instance.update_alias",
            json!({"actor_user_id": owner.admin_id, "instance_id": 424_242, "alias": "x"}),
        ),
        (
            "instance.delete",
            json!({"actor_user_id": owner.admin_id, "instance_id": 424_242}),
        ),
    ] {
        assert_refused(
            &mut app,
            routing_key,
            body,
            "INSTANCE_NOT_FOUND",
            404,
            "Instance not found or does not belong to your client",
        )
        .await;
    }
    app.finish().await;
}

#[tokio::test]
async fn a_rename_without_an_alias_or_an_instance_id_is_refused_with_the_seeds_text() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let api = instance(&mut app, owner, "API").await;
    let mut bodies = Vec::new();
    for alias in [None, Some(Value::Null), Some(json!("")), Some(json!("  "))] {
        let mut body = json!({"actor_user_id": owner.admin_id, "instance_id": api});
        if let Some(alias) = alias {
            body["alias"] = alias;
        }
        bodies.push(body);
    }
    // Without the instance id too (the seed's text names both; the schema lets it through).
    bodies.push(json!({"actor_user_id": owner.admin_id, "alias": "Prod"}));
    for body in bodies {
        assert_refused(
            &mut app,
            "instance.update_alias",
            body,
            "ALIAS_REQUIRED",
            400,
            "Alias and Instance ID are required.",
        )
        .await;
    }
    app.finish().await;
}

#[tokio::test]
async fn a_name_the_client_already_uses_is_refused_with_409_but_other_clients_may_use_it() {
    let mut app = spawn_app().await;
    let a = arrange::client(&mut app, "a@example.com").await;
    let b = arrange::client(&mut app, "b@example.com").await;
    instance(&mut app, a, "Production API").await;
    assert_refused(
        &mut app,
        "instance.create",
        json!({"actor_user_id": a.admin_id, "instance_name": "Production API"}),
        "INSTANCE_NAME_TAKEN",
        409,
        "Instance name is already in use by your client",
    )
    .await;
    // Unique within the client, not across clients.
    instance(&mut app, b, "Production API").await;
    assert_eq!(app.count("SELECT count(*) FROM instances").await, 2);
    app.finish().await;
}

#[tokio::test]
async fn ten_concurrent_creates_of_one_name_make_one_instance_and_nine_409s() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            arrange::send(
                &app,
                "instance.create",
                json!({"actor_user_id": owner.admin_id, "instance_name": "Same"}),
                None,
            )
            .await,
        );
    }
    let mut outcomes = Vec::new();
    for id in &ids {
        let e = app
            .wait_for_any(&["instance.created", "instance.command_failed"], id)
            .await;
        if e.routing_key == "instance.command_failed" {
            assert_eq!(e.body["data"]["code"], json!("INSTANCE_NAME_TAKEN"));
        }
        outcomes.push(e.routing_key);
    }
    let t = tally(outcomes.iter().map(String::as_str));
    assert_eq!(t.get("instance.created"), Some(&1), "{t:?}");
    assert_eq!(t.get("instance.command_failed"), Some(&9), "{t:?}");
    assert_eq!(app.count("SELECT count(*) FROM instances").await, 1);
    app.finish().await;
}

#[tokio::test]
async fn the_owning_admin_renames_then_deletes_an_instance() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let api = instance(&mut app, owner, "API").await;
    let replies = app.reply_queue().await;

    let id = arrange::send(
        &app,
        "instance.update_alias",
        json!({"actor_user_id": owner.admin_id, "instance_id": api, "alias": " Production Environment v2 "}),
        Some(&replies),
    )
    .await;
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(
        reply.body,
        json!({"message": "✅ The alias was updated successfully"})
    );
    let updated = app
        .wait_for_event("instance.alias_updated", Some(&id))
        .await;
    assert_eq!(
        updated.body["data"]["instance"]["client_alias"],
        json!("Production Environment v2")
    );
    let alias: Option<String> =
        sqlx::query_scalar("SELECT client_alias FROM instances WHERE instance_id = $1")
            .bind(api as i32)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(alias.as_deref(), Some("Production Environment v2"));

    let id = arrange::send(
        &app,
        "instance.delete",
        json!({"actor_user_id": owner.admin_id, "instance_id": api}),
        Some(&replies),
    )
    .await;
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(
        reply.body,
        json!({"message": "Instance deleted successfully"})
    );
    let deleted = app.wait_for_event("instance.deleted", Some(&id)).await;
    assert_eq!(deleted.body["data"]["instance"]["instance_id"], json!(api));
    assert_eq!(app.count("SELECT count(*) FROM instances").await, 0);

    // Gone for good: a second delete finds nothing.
    assert_refused(
        &mut app,
        "instance.delete",
        json!({"actor_user_id": owner.admin_id, "instance_id": api}),
        "INSTANCE_NOT_FOUND",
        404,
        "Instance not found or does not belong to your client",
    )
    .await;
    app.finish().await;
}

/// Sends an instance command with a reply queue; returns its id and its reply.
async fn ask(app: &mut TestApp, routing_key: &str, body: Value) -> (String, Received) {
    let replies = app.reply_queue().await;
    let id = arrange::send(app, routing_key, body, Some(&replies)).await;
    (id, app.take_from(&replies).await)
}

#[tokio::test]
async fn the_owning_admin_deactivates_and_activates_an_instance_with_events() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let other = arrange::client(&mut app, "other@example.com").await;
    let api = instance(&mut app, owner, "API").await;
    let body = json!({"actor_user_id": owner.admin_id, "instance_id": api, "reason": "paused"});

    let (id, reply) = ask(&mut app, "instance.deactivate", body.clone()).await;
    assert_eq!(arrange::status(&reply), Some(200), "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        json!("Instance deactivated successfully")
    );
    assert_eq!(reply.body["instance"]["instance_status"], json!("INACTIVE"));
    let event = app.wait_for_event("instance.deactivated", Some(&id)).await;
    assert_eq!(
        event.body["data"]["instance"]["instance_status"],
        json!("INACTIVE")
    );
    assert_eq!(event.body["data"]["reason"], json!("paused"));
    assert_eq!(event.body["data"]["actor_user_id"], json!(owner.admin_id));

    // The list shows it inactive.
    let (_, listed) = ask(
        &mut app,
        "instance.list",
        json!({"actor_user_id": owner.admin_id}),
    )
    .await;
    assert_eq!(
        listed.body["instances"][0]["instance_status"],
        json!("INACTIVE")
    );

    // Again: 200, the same state, no event.
    let (id, reply) = ask(&mut app, "instance.deactivate", body.clone()).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["message"], json!("Instance is already inactive"));
    arrange::handled(&app, &id).await;
    assert_eq!(
        crate::profile::events_of(&app, &id).await,
        0,
        "no event for no change"
    );

    // Another client's admin may not.
    assert_refused(
        &mut app,
        "instance.activate",
        json!({"actor_user_id": other.admin_id, "instance_id": api}),
        "ACCESS_DENIED",
        403,
        "Access denied. The instance is not yours.",
    )
    .await;

    let (id, reply) = ask(
        &mut app,
        "instance.activate",
        json!({"actor_user_id": owner.admin_id, "instance_id": api}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(
        reply.body["message"],
        json!("Instance activated successfully")
    );
    let event = app.wait_for_event("instance.activated", Some(&id)).await;
    assert_eq!(
        event.body["data"]["instance"]["instance_status"],
        json!("ACTIVE")
    );
    let status: Option<String> =
        sqlx::query_scalar("SELECT instance_status FROM instances WHERE instance_id = $1")
            .bind(api as i32)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status.as_deref(), Some("ACTIVE"));
    app.finish().await;
}

#[tokio::test]
async fn a_rejected_or_exited_clients_instances_are_view_only() {
    let mut app = spawn_app().await;
    for (n, state) in ["REJECTED", "EXITED"].into_iter().enumerate() {
        let owner = arrange::client(&mut app, &format!("final{n}@example.com")).await;
        let api = instance(&mut app, owner, "API").await;
        arrange::set_state(&app, owner.client_id, state, "APPROVED").await;
        let text = format!("Client can no longer be changed in state {state}.");
        let admin = owner.admin_id;
        for (key, body) in [
            (
                "instance.create",
                json!({"actor_user_id": admin, "instance_name": "New"}),
            ),
            (
                "instance.update_alias",
                json!({"actor_user_id": admin, "instance_id": api, "alias": "x"}),
            ),
            (
                "instance.delete",
                json!({"actor_user_id": admin, "instance_id": api}),
            ),
            (
                "instance.deactivate",
                json!({"actor_user_id": admin, "instance_id": api}),
            ),
            (
                "instance.activate",
                json!({"actor_user_id": admin, "instance_id": api}),
            ),
        ] {
            assert_refused(&mut app, key, body, "CLIENT_READ_ONLY", 409, &text).await;
        }
        // Reads still answer.
        let (_, listed) = ask(&mut app, "instance.list", json!({"actor_user_id": admin})).await;
        assert_eq!(arrange::status(&listed), Some(200));
        assert_eq!(listed.body["instances"][0]["instance_id"], json!(api));
    }
    app.finish().await;
}
