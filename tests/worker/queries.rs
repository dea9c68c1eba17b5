//! Queries answered on `reply_to`: `client.get`, `client.list` (filters, paging, newest
//! first) and `instance.list`; they change nothing, and one without `reply_to` is
//! dead-lettered with its reason.

use std::collections::HashSet;

use onboard::broker::headers;
use onboard::worker::Disposition;
use serde_json::{Value, json};

use crate::arrange;
use crate::support::*;

/// Inserts `n` clients directly (queries only read, so the saga is not needed), all with the
/// same `created`, so the order between them is the client_id tiebreak's.
async fn seed_clients(
    app: &TestApp,
    tag: &str,
    n: i32,
    (status, country, client_type): (&str, &str, &str),
    hours_ago: i32,
) -> Vec<i32> {
    sqlx::query_scalar(
        "INSERT INTO clients (client_code, email, client_alias, client_type, client_status,
                              country_code, psp_id, phone, created, updated)
         SELECT 'T-' || $1 || '-' || g, $1 || g || '@example.com', 'Client ' || $1 || g, $4, $2,
                $3, NULL, '+6591234567', now() - make_interval(hours => $6), now()
         FROM generate_series(1, $5) g
         RETURNING client_id",
    )
    .bind(tag)
    .bind(status)
    .bind(country)
    .bind(client_type)
    .bind(n)
    .bind(hours_ago)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Asks a query and returns its reply.
async fn ask(app: &TestApp, routing_key: &str, body: Value) -> Received {
    let replies = app.reply_queue().await;
    let id = arrange::send(app, routing_key, body, Some(&replies)).await;
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));
    reply
}

fn ids(page: &Received) -> Vec<i64> {
    page.body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_i64().unwrap())
        .collect()
}

/// Client ids matching `filter` (SQL), newest first with the id breaking ties.
async fn expected_order(app: &TestApp, filter: &'static str) -> Vec<i64> {
    let sql = format!(
        "SELECT client_id::int8 FROM clients WHERE {filter} ORDER BY created DESC, client_id DESC"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn client_get_answers_the_seeds_client_object_or_404() {
    let mut app = spawn_app().await;
    let m = arrange::client(&mut app, "get@example.com").await;
    let reply = ask(&app, "client.get", json!({"client_id": m.client_id})).await;
    assert_eq!(arrange::status(&reply), Some(200));
    let c = &reply.body["client"];
    for (k, v) in [
        ("client_id", json!(m.client_id)),
        ("email", json!("get@example.com")),
        ("client_alias", json!("Singapore Tech Ltd")),
        ("client_type", json!("CORPORATE")),
        ("client_status", json!("PENDING")),
        ("ekyc_status", json!("PENDING")),
        ("country_code", json!("SG")),
        ("psp_id", json!(2)),
        ("phone", json!("+6591234567")),
    ] {
        assert_eq!(c[k], v, "client.{k}");
    }
    assert!(c["client_code"].as_str().unwrap().starts_with("CL-"));
    for ts in ["created", "updated"] {
        let t = c[ts].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{ts}: {t}");
    }

    let reply = ask(&app, "client.get", json!({"client_id": 777})).await;
    assert_eq!(arrange::status(&reply), Some(404));
    assert_eq!(reply.body, json!({"error": "Client not found"}));
    app.finish().await;
}

#[tokio::test]
async fn client_list_filters_by_status_country_and_type_newest_first_with_the_total() {
    let app = spawn_app().await;
    seed_clients(&app, "sg", 5, ("PENDING", "SG", "CORPORATE"), 3).await;
    seed_clients(&app, "us", 4, ("ACTIVE", "US", "STARTUP"), 2).await;
    seed_clients(&app, "id", 3, ("ACTIVE", "ID", "CORPORATE"), 1).await;

    let all = ask(&app, "client.list", json!({})).await;
    assert_eq!(arrange::status(&all), Some(200));
    assert_eq!(all.body["total"], json!(12));
    assert_eq!(all.body["page"], json!(1));
    assert_eq!(all.body["page_size"], json!(20));
    assert_eq!(all.body["next_cursor"], Value::Null);
    assert_eq!(ids(&all), expected_order(&app, "true").await);
    let first = &all.body["clients"][0];
    assert_eq!(first["country_code"], json!("ID"), "newest first");
    assert!(first["created"].is_string() && first["updated"].is_string());

    for (filter, sql, total) in [
        (json!({"status": "ACTIVE"}), "client_status = 'ACTIVE'", 7),
        (json!({"country_code": "SG"}), "country_code = 'SG'", 5),
        (
            json!({"client_type": "STARTUP"}),
            "client_type = 'STARTUP'",
            4,
        ),
        (
            json!({"status": "ACTIVE", "client_type": "CORPORATE", "country_code": "ID"}),
            "client_status = 'ACTIVE' AND client_type = 'CORPORATE' AND country_code = 'ID'",
            3,
        ),
        (
            json!({"status": "EXITED", "country_code": null}),
            "client_status = 'EXITED'",
            0,
        ),
    ] {
        let page = ask(&app, "client.list", filter.clone()).await;
        assert_eq!(page.body["total"], json!(total), "{filter}");
        assert_eq!(ids(&page), expected_order(&app, sql).await, "{filter}");
    }
    app.finish().await;
}

#[tokio::test]
async fn client_list_pages_default_to_20_and_are_capped_at_100() {
    let app = spawn_app().await;
    seed_clients(&app, "many", 130, ("PENDING", "SG", "CORPORATE"), 1).await;

    let page = ask(&app, "client.list", json!({})).await;
    assert_eq!(ids(&page).len(), 20);
    assert_eq!(page.body["total"], json!(130));
    assert!(page.body["next_cursor"].is_string());

    let page = ask(&app, "client.list", json!({"page_size": 100})).await;
    assert_eq!(ids(&page).len(), 100);
    let page = ask(&app, "client.list", json!({"page_size": 100, "page": 2})).await;
    assert_eq!(ids(&page).len(), 30);
    assert_eq!(page.body["page"], json!(2));
    assert_eq!(page.body["next_cursor"], Value::Null);

    // Beyond the cap the query is malformed: dead-lettered, answered 400.
    let reply = ask(&app, "client.list", json!({"page_size": 101})).await;
    assert_eq!(arrange::status(&reply), Some(400));
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("schemas/client.list.json"),
        "{}",
        reply.body
    );
    app.finish().await;
}

/// Walks every page of `client.list` with `page_size`, creating clients through the worker
/// between pages (committed, so they are certainly there) and while each page is being read
/// (in flight). Returns the ids served, in order, and how many clients were created.
async fn walk_while_creating(app: &mut TestApp, by_cursor: bool) -> (Vec<i64>, usize) {
    let mut served = Vec::new();
    let mut cursor: Option<String> = None;
    let mut created = 0;
    for page_no in 1.. {
        // In flight while the page is read.
        for i in 0..2 {
            app.create_client(&client_with_email(&format!(
                "during{page_no}-{i}@example.com"
            )))
            .await;
            created += 1;
        }
        let body = match (&cursor, by_cursor) {
            (Some(c), true) => json!({"page_size": 7, "cursor": c}),
            _ => json!({"page_size": 7, "page": page_no}),
        };
        let page = ask(app, "client.list", body).await;
        assert_eq!(arrange::status(&page), Some(200), "{}", page.body);
        let got = ids(&page);
        served.extend(&got);
        // Committed between this page and the next.
        arrange::clients(app, &format!("between{page_no}-"), 3).await;
        created += 3;
        cursor = page.body["next_cursor"].as_str().map(str::to_string);
        if got.is_empty() || (by_cursor && cursor.is_none()) || page_no > 60 {
            break;
        }
    }
    (served, created)
}

#[tokio::test]
async fn client_list_cursor_paging_serves_every_client_exactly_once_while_clients_are_created() {
    let mut app = spawn_app().await;
    // Three batches sharing a timestamp each: the order inside a batch is the id tiebreak.
    let mut existing: Vec<i32> = Vec::new();
    for (hours, tag) in [(3, "a"), (2, "b"), (1, "c")] {
        existing.extend(seed_clients(&app, tag, 17, ("PENDING", "SG", "CORPORATE"), hours).await);
    }

    let (served, created) = walk_while_creating(&mut app, true).await;
    let mut seen = HashSet::new();
    for id in &served {
        assert!(seen.insert(*id), "client {id} served twice: {served:?}");
    }
    for id in &existing {
        assert!(seen.contains(&i64::from(*id)), "client {id} never served");
    }
    // The pages were newest first from start to end, across pages too.
    let order = expected_order(&app, "true").await;
    let positions: Vec<usize> = served
        .iter()
        .map(|id| order.iter().position(|o| o == id).unwrap())
        .collect();
    let sorted = {
        let mut p = positions.clone();
        p.sort();
        p
    };
    assert_eq!(positions, sorted, "pages out of order");
    assert!(
        created >= 30,
        "clients were created while paging ({created})"
    );
    // The last creations published during the walk may still be in flight: wait for them.
    let expected = (existing.len() + created) as i64;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut count = app.count("SELECT count(*) FROM clients").await;
    while count < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        count = app.count("SELECT count(*) FROM clients").await;
    }
    assert_eq!(count, expected);
    app.finish().await;
}

#[tokio::test]
async fn page_numbers_alone_repeat_clients_created_meanwhile_which_is_why_cursors_exist() {
    // The hazard the cursor test guards against, shown with the same walk by page number.
    let mut app = spawn_app().await;
    for (hours, tag) in [(3, "a"), (2, "b"), (1, "c")] {
        seed_clients(&app, tag, 17, ("PENDING", "SG", "CORPORATE"), hours).await;
    }
    let (served, _) = walk_while_creating(&mut app, false).await;
    let distinct: HashSet<_> = served.iter().collect();
    assert!(
        distinct.len() < served.len(),
        "offset paging served no client twice; the walk does not exercise the hazard"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_cursor_the_worker_did_not_write_is_answered_400() {
    let app = spawn_app().await;
    let reply = ask(&app, "client.list", json!({"cursor": "bm90LWEtY3Vyc29y"})).await;
    assert_eq!(arrange::status(&reply), Some(400));
    assert_eq!(
        reply.body,
        json!({"error": "Invalid cursor: use the next_cursor of the previous page"})
    );
    app.finish().await;
}

#[tokio::test]
async fn instance_list_answers_the_actors_client_instances_with_client_facts() {
    let mut app = spawn_app().await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let other = arrange::client(&mut app, "other@example.com").await;
    for (who, name) in [
        (owner, "Production API"),
        (owner, "Staging API"),
        (other, "Not yours"),
    ] {
        let id = arrange::send(
            &app,
            "instance.create",
            json!({"actor_user_id": who.admin_id, "instance_name": name}),
            None,
        )
        .await;
        app.wait_for_event("instance.created", Some(&id)).await;
    }
    arrange::set_state(&app, owner.client_id, "ACTIVE", "APPROVED").await;
    let member = arrange::user(&app, owner.client_id, "member").await;

    for actor in [owner.admin_id, member] {
        let reply = ask(&app, "instance.list", json!({"actor_user_id": actor})).await;
        assert_eq!(arrange::status(&reply), Some(200));
        let list = reply.body["instances"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{}", reply.body);
        let code: String =
            sqlx::query_scalar("SELECT client_code FROM clients WHERE client_id = $1")
                .bind(owner.client_id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        for (item, name) in list.iter().zip(["Production API", "Staging API"]) {
            let keys: HashSet<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                HashSet::from([
                    "instance_id",
                    "client_id",
                    "instance_name",
                    "client_alias",
                    "instance_status",
                    "ekyc_status",
                    "client_code",
                    "country_code"
                ])
            );
            assert_eq!(item["instance_name"], json!(name));
            assert_eq!(item["client_id"], json!(owner.client_id));
            assert_eq!(item["client_alias"], Value::Null);
            assert_eq!(item["instance_status"], json!("ACTIVE"));
            assert_eq!(item["ekyc_status"], json!("APPROVED"));
            assert_eq!(item["client_code"], json!(code));
            assert_eq!(item["country_code"], json!("SG"));
        }
    }

    let reply = ask(&app, "instance.list", json!({"actor_user_id": 999_999})).await;
    assert_eq!(arrange::status(&reply), Some(404));
    assert_eq!(
        reply.body,
        json!({"error": "Client not found for this user."})
    );
    app.finish().await;
}

#[tokio::test]
async fn queries_change_nothing_and_leave_no_inbox_or_outbox_rows() {
    let app = spawn_app().await;
    // Arranged in SQL: a client made by client.create would go on writing inbox and outbox
    // rows through its saga while the queries run.
    let client_id = seed_clients(&app, "quiet", 1, ("PENDING", "SG", "CORPORATE"), 1).await[0];
    let admin_id = arrange::user(&app, client_id, "admin").await;
    let inbox = app.count("SELECT count(*) FROM inbox").await;
    let outbox = app.count("SELECT count(*) FROM outbox").await;
    let clients = arrange::snapshot(&app, "clients", "client_id").await;
    ask(&app, "client.get", json!({"client_id": client_id})).await;
    ask(&app, "client.get", json!({"client_id": 999})).await;
    ask(&app, "client.list", json!({})).await;
    ask(&app, "instance.list", json!({"actor_user_id": admin_id})).await;
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, inbox);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, outbox);
    assert_eq!(
        arrange::snapshot(&app, "clients", "client_id").await,
        clients
    );
    app.finish().await;
}

#[tokio::test]
async fn a_query_without_reply_to_is_dead_lettered_with_its_reason() {
    let mut app = spawn_app().await;
    for (routing_key, body) in [
        ("client.get", json!({"client_id": 1})),
        ("client.list", json!({})),
        ("instance.list", json!({"actor_user_id": 1})),
    ] {
        let id = arrange::send(&app, routing_key, body, None).await;
        let dead = app.take_from(&app.names().dead_queue).await;
        assert_eq!(dead.message_id.as_deref(), Some(id.as_str()));
        assert_eq!(dead.header_str(headers::FAILURE), Some("rejected"));
        let reason = dead.header_str(headers::REASON).unwrap();
        assert!(
            reason.contains(routing_key) && reason.contains("has no reply_to"),
            "{reason}"
        );
        let rejected = app.wait_for_event("command.rejected", Some(&id)).await;
        assert_eq!(rejected.body["data"]["reason"], json!(reason));
        app.settled
            .wait_until("the query to be dead-lettered", |log| {
                log.iter().any(|s| {
                    s.message_id.as_deref() == Some(id.as_str())
                        && s.disposition == Disposition::DeadLettered
                })
            })
            .await;
    }
    app.finish().await;
}

#[tokio::test]
async fn a_cursor_with_a_page_number_is_malformed_and_dead_lettered() {
    let app = spawn_app().await;
    let reply = ask(
        &app,
        "client.list",
        json!({"cursor": "djE6MjoxNzA1MzE1NDAwMDAwMDAwOjQy", "page": 2}),
    )
    .await;
    assert_eq!(arrange::status(&reply), Some(400));
    let dead = app.take_from(&app.names().dead_queue).await;
    assert_eq!(dead.header_str(headers::FAILURE), Some("rejected"));
    app.finish().await;
}

/// Item 6 of issue 20: the consume loop never waits outside its `select!`, and queries have
/// connections of their own. With more queries than there are query slots and query
/// connections, every one of them stuck (each reads a table the test holds locked), a command
/// is still taken, decided and announced, and the worker still stops when asked.
#[tokio::test]
async fn with_every_query_stuck_commands_still_go_through_and_the_worker_still_stops() {
    let (mut settings, database) = test_settings().await;
    settings.worker.concurrency = 4;
    let mut app = spawn_app_with(settings, database, onboard::worker::Hooks::default()).await;
    let owner = arrange::client(&mut app, "owner@example.com").await;
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let replies = app.reply_queue().await;
    // Twice the query slots, and more than the worker's whole database pool (10 here).
    for _ in 0..12 {
        let mut ask = Msg::json("instance.list", &json!({"actor_user_id": owner.admin_id}));
        ask.reply_to = Some(replies.clone());
        app.publish(ask).await.unwrap();
    }
    app.wait_for_a_lock_wait("an instance.list query").await;

    let id = app.create_client(&seed_sg_client()).await;
    app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(
        app.queue_depth(&replies).await,
        0,
        "a query was answered through the lock"
    );

    // Shutdown is seen too: the stuck queries are given back to the broker.
    tokio::time::timeout(std::time::Duration::from_secs(20), app.stop_worker())
        .await
        .expect("the worker stops while its query slots are stuck");
    holder.rollback().await.unwrap();
    app.finish().await;
}
