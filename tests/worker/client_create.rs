//! `client.create`, saga step 1: what upstream clients and subscribers observe.

use serde_json::{Value, json};

use crate::arrange;
use crate::support::*;

#[tokio::test]
async fn seed_examples_get_their_psp_and_consecutive_codes() {
    let mut app = spawn_app().await;
    let prefix = app.code_prefix().await;

    let id = app.create_client(&seed_id_client()).await;
    let created_id = app.wait_for_event("client.created", Some(&id)).await;
    let sg = app.create_client(&seed_sg_client()).await;
    let created_sg = app.wait_for_event("client.created", Some(&sg)).await;

    let c = &created_id.body["data"]["client"];
    assert_eq!(c["psp_id"], json!(11));
    assert_eq!(c["client_code"], json!(format!("{prefix}0001")));
    assert_eq!(c["country_code"], json!("ID"));
    assert_eq!(c["client_status"], json!("PENDING"));
    assert_eq!(c["ekyc_status"], json!("PENDING"));
    assert_eq!(created_id.body["data"]["psp"]["psp_name"], json!("XENDIT"));
    assert_eq!(
        created_id.body["data"]["saga"]["next_step"],
        json!("xendit")
    );

    let c = &created_sg.body["data"]["client"];
    assert_eq!(c["psp_id"], json!(2));
    assert_eq!(c["client_code"], json!(format!("{prefix}0002")));
    assert_eq!(
        created_sg.body["data"]["saga"]["next_step"],
        json!("welcome_email")
    );

    // The admin user as the seed's response shows it.
    let admin = &created_sg.body["data"]["admin_user"];
    assert_eq!(admin["username"], json!("Singapore Tech Ltd"));
    assert_eq!(admin["email"], json!("admin@sgcompany.com"));
    assert_eq!(admin["phone"], json!("+6591234567"));
    assert_eq!(admin["role"], json!("admin"));
    assert_eq!(admin["user_status"], json!("ACTIVE"));
    assert_eq!(admin["ekyc_status"], json!("PENDING"));
    assert_eq!(admin["client_id"], c["client_id"]);
    assert!(admin["user_id"].as_i64().is_some_and(|id| id > 0));

    // The envelope: ids subscribers dedupe and correlate on.
    assert_eq!(created_sg.body["type"], json!("client.created"));
    assert_eq!(created_sg.body["causation_id"], json!(sg));
    assert_eq!(created_sg.correlation_id.as_deref(), Some(sg.as_str()));
    assert_eq!(
        created_sg.message_id.as_deref(),
        created_sg.body["event_id"].as_str()
    );

    assert_eq!(app.count("SELECT count(*) FROM clients").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE role = 'admin'")
            .await,
        2
    );
    assert_eq!(app.count("SELECT count(*) FROM onboarding_sagas").await, 2);
    app.finish().await;
}

/// The code is numbered by the client insert itself (issue 24: the counter taken in the same
/// statement), written in SQL as `domain::client_code` writes it: four digits, zero-padded,
/// then as many as the number needs, and the counter ends where the last code does.
#[tokio::test]
async fn codes_past_the_ten_thousandth_of_a_month_grow_a_digit_as_the_domain_writes_them() {
    let mut app = spawn_app().await;
    let ym: String = sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO client_code_counters (year_month, last_value) VALUES ($1, 9998)
         ON CONFLICT (year_month) DO UPDATE SET last_value = 9998",
    )
    .bind(&ym)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut codes = Vec::new();
    for n in 0..3 {
        let id = app
            .create_client(&client_with_email(&format!("code-{n}@sgcompany.com")))
            .await;
        let created = app.wait_for_event("client.created", Some(&id)).await;
        codes.push(
            created.body["data"]["client"]["client_code"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    codes.sort_by_key(|c| (c.len(), c.clone()));
    let expected: Vec<String> = (9999..=10001)
        .map(|n| onboard::domain::client_code(&ym, n))
        .collect();
    assert_eq!(codes, expected);
    assert_eq!(expected[1], format!("CL-{ym}-10000"));
    assert_eq!(
        app.count("SELECT max(last_value)::bigint FROM client_code_counters")
            .await,
        10001
    );
    app.finish().await;
}

/// Each refusal: its event carries the contract's code, status and text; nothing changed;
/// the command was acked (settled as handled, nothing left in the queue or dead-lettered).
async fn assert_refused(app: &mut TestApp, body: Value, code: &str, status: u16, message: &str) {
    let before_clients = app.count("SELECT count(*) FROM clients").await;
    let before_users = app.count("SELECT count(*) FROM users").await;
    let before_counter = app
        .count("SELECT COALESCE(sum(last_value), 0)::bigint FROM client_code_counters")
        .await;
    let id = app.create_client(&body).await;
    let failed = app
        .wait_for_event("client.creation_failed", Some(&id))
        .await;
    assert_eq!(failed.body["data"]["code"], json!(code), "{body}");
    assert_eq!(failed.body["data"]["status"], json!(status), "{body}");
    assert_eq!(failed.body["data"]["message"], json!(message), "{body}");
    app.settled
        .wait_until("the refused command to be acked", |log| {
            log.iter()
                .any(|s| s.message_id.as_deref() == Some(id.as_str()))
        })
        .await;
    assert_eq!(
        app.settled.for_message(&id),
        vec![onboard::worker::Disposition::Handled]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM clients").await,
        before_clients
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, before_users);
    assert_eq!(
        app.count("SELECT COALESCE(sum(last_value), 0)::bigint FROM client_code_counters")
            .await,
        before_counter,
        "a refusal must not use up a client code"
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome_code FROM inbox WHERE message_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(outcome, code);
}

#[tokio::test]
async fn each_missing_field_is_validation_failed_and_changes_nothing() {
    let mut app = spawn_app().await;
    for field in [
        "email",
        "client_alias",
        "client_type",
        "country_code",
        "phone",
    ] {
        for absent in [None, Some(Value::Null), Some(json!(""))] {
            let mut body = seed_sg_client();
            match absent {
                None => {
                    body.as_object_mut().unwrap().remove(field);
                }
                Some(v) => body[field] = v,
            }
            assert_refused(
                &mut app,
                body,
                "VALIDATION_FAILED",
                400,
                "Email, Name, Type, Country and Mobile Number are required!",
            )
            .await;
        }
    }
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn duplicate_email_is_refused_with_409() {
    let mut app = spawn_app().await;
    let first = app.create_client(&seed_sg_client()).await;
    app.wait_for_event("client.created", Some(&first)).await;
    // Same mailbox, other spelling: still the same email.
    let body = client_with_email("ADMIN@sgcompany.com");
    assert_refused(
        &mut app,
        body,
        "EMAIL_IN_USE",
        409,
        "Email is already in use by another client.",
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn a_country_without_psp_or_without_fiat_psp_is_refused_with_its_own_text() {
    let mut app = spawn_app().await;
    let mut body = seed_sg_client();
    body["country_code"] = json!("FR");
    assert_refused(
        &mut app,
        body,
        "NO_PSP_FOR_COUNTRY",
        400,
        "No PSP available for the selected country.",
    )
    .await;

    sqlx::query("INSERT INTO psp_providers (psp_name, country_code, psp_type, priority) VALUES ('CryptoOnly', 'AQ', 'CRYPTO_PSP', 1)")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut body = client_with_email("zz@example.com");
    body["country_code"] = json!("AQ");
    assert_refused(
        &mut app,
        body,
        "NO_FIAT_PSP_FOR_COUNTRY",
        400,
        "There is no FIAT_PSP PSP available for that country.",
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn fifty_concurrent_creates_get_fifty_distinct_gap_free_codes() {
    let mut app = spawn_app().await;
    let prefix = app.code_prefix().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            app.create_client(&client_with_email(&format!("c{i}@example.com")))
                .await,
        );
    }
    let mut codes = Vec::new();
    for id in &ids {
        let e = app.wait_for_event("client.created", Some(id)).await;
        codes.push(
            e.body["data"]["client"]["client_code"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    codes.sort();
    let expected: Vec<String> = (1..=50).map(|n| format!("{prefix}{n:04}")).collect();
    assert_eq!(codes, expected);
    app.finish().await;
}

#[tokio::test]
async fn ten_concurrent_creates_with_one_email_make_one_client_and_nine_409s() {
    let mut app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            app.create_client(&client_with_email("same@example.com"))
                .await,
        );
    }
    let mut outcomes = Vec::new();
    for id in &ids {
        let e = app
            .wait_for_any(&["client.created", "client.creation_failed"], id)
            .await;
        if e.routing_key == "client.creation_failed" {
            assert_eq!(e.body["data"]["code"], json!("EMAIL_IN_USE"));
        }
        outcomes.push(e.routing_key);
    }
    let t = tally(outcomes.iter().map(String::as_str));
    assert_eq!(t.get("client.created"), Some(&1), "{t:?}");
    assert_eq!(t.get("client.creation_failed"), Some(&9), "{t:?}");
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    // The nine refusals gave their codes back: the counter says one.
    assert_eq!(
        app.count("SELECT COALESCE(sum(last_value), 0)::bigint FROM client_code_counters")
            .await,
        1
    );
    app.finish().await;
}

/// The unique indexes, not the check before them, decide an email. Another transaction (here
/// one changing a client's email, then one adding a user, each held open by the test) takes
/// the email after the create batch checked it; the batch's insert waits for that transaction
/// and, once it commits, finds the email taken: the batch is tried again at once and refused
/// EMAIL_IN_USE, its code given back. Nothing is dead-lettered.
#[tokio::test]
async fn an_email_taken_while_the_create_inserts_it_is_refused_with_409_at_once() {
    let mut app = spawn_app().await;
    let prefix = app.code_prefix().await;
    let made = arrange::client(&mut app, "first@example.com").await;
    let takers = [
        (
            "UPDATE clients SET email = $1 WHERE client_id = $2",
            "taken-by-a-client@example.com",
        ),
        (
            "INSERT INTO users (client_id, username, email, phone) VALUES ($2, 'Other', $1, '+6500')",
            "taken-by-a-user@example.com",
        ),
    ];
    for (sql, email) in takers {
        let mut taker = app.pool.begin().await.unwrap();
        sqlx::query(sql)
            .bind(email)
            .bind(made.client_id)
            .execute(&mut *taker)
            .await
            .unwrap();
        let id = app.create_client(&client_with_email(email)).await;
        app.wait_for_a_lock_wait("the create's insert").await;
        taker.commit().await.unwrap();
        let outcome = app
            .wait_for_any(&["client.created", "client.creation_failed"], &id)
            .await;
        assert_eq!(outcome.routing_key, "client.creation_failed", "{email}");
        assert_eq!(
            outcome.body["data"]["code"],
            json!("EMAIL_IN_USE"),
            "{email}"
        );
    }
    let id = app
        .create_client(&client_with_email("next@example.com"))
        .await;
    let created = app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(
        created.body["data"]["client"]["client_code"],
        json!(format!("{prefix}0002")),
        "the refused creates gave their codes back"
    );
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 2);
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn reply_to_gets_the_201_body_or_the_error_body_with_its_status() {
    let app = spawn_app().await;
    let replies = app.reply_queue().await;

    let mut msg = Msg::json("client.create", &seed_sg_client());
    msg.reply_to = Some(replies.clone());
    let id = app.publish(msg).await.unwrap();
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.headers.get("status"), Some(&json!(201)));
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        reply.body["message"],
        json!(
            "Client & Admin successfully created! Admin must complete KYC before being able to use the account."
        )
    );
    let keys: Vec<&str> = reply.body["client"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "client_id",
        "client_code",
        "email",
        "client_alias",
        "client_type",
        "client_status",
        "ekyc_status",
        "country_code",
        "psp_id",
        "phone",
    ] {
        assert!(keys.contains(&k), "client.{k} missing in {}", reply.body);
    }
    assert_eq!(reply.body["admin_user"]["role"], json!("admin"));
    assert_eq!(reply.body["ekyc_status"], json!("PENDING"));

    let mut msg = Msg::json("client.create", &seed_sg_client());
    msg.reply_to = Some(replies.clone());
    app.publish(msg).await;
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.headers.get("status"), Some(&json!(409)));
    assert_eq!(
        reply.body,
        json!({"error": "Email is already in use by another client."})
    );
    app.finish().await;
}

/// Issue 24: on a fresh database (tables never analysed), the email check's plan made while
/// the tables were empty must still probe the unique indexes once the tables fill: written as
/// EXISTS in the select list, its generic plan hashed every client for each batch.
#[tokio::test]
async fn the_email_check_probes_its_indexes_whatever_the_tables_were_like_when_planned() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    for table in ["clients", "users"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        )))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let emails = [
        "one@example.com",
        "two@example.com",
        "taken-7@prefill.example",
    ];
    onboard::store::clients::emails_taken(&mut conn, &emails)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO clients (client_code, email, client_alias, client_type, country_code,
                              psp_id, phone)
         SELECT 'PF-' || g, 'taken-' || g || '@prefill.example', 'Prefill ' || g, 'CORPORATE',
                'SG', 2, '+65' || lpad(g::text, 8, '0')
         FROM generate_series(1, 5000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let before = rows_read(&mut conn, "clients").await;
    let taken = onboard::store::clients::emails_taken(&mut conn, &emails)
        .await
        .unwrap();
    let rows_read = rows_read(&mut conn, "clients").await - before;
    assert_eq!(
        taken.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert!(
        rows_read <= 10,
        "checking 3 emails read {rows_read} rows of clients"
    );
    drop(conn);
    app.finish().await;
}

/// Issue 24: under a steady load a create batch holds a few commands, and the email check's
/// custom plan for so few emails looked cheaper than its generic plan, so PostgreSQL planned it
/// again on every call. Its plan is kept once PostgreSQL has compared them (after five custom
/// plans), however few the emails.
#[tokio::test]
async fn the_email_check_keeps_its_plan_for_the_few_emails_of_a_small_batch() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let mut conn = app.pool.acquire().await.unwrap();
    let emails = ["one@example.com", "two@example.com", "three@example.com"];
    for _ in 0..12 {
        onboard::store::clients::emails_taken(&mut conn, &emails)
            .await
            .unwrap();
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements
         WHERE statement LIKE '%FROM users%lower(email) = lower(x.e)%'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(
        custom <= 5 && generic >= 7,
        "12 checks of 3 emails: {custom} custom plans, {generic} generic ones"
    );
    drop(conn);
    app.finish().await;
}
