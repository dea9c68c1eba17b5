//! The client lifecycle and eKYC through the real worker: every (state, action) pair, the
//! eKYC gate on approval, concurrent commands on one client, and commands that arrive
//! before their client exists.

use std::collections::HashMap;

use onboard::worker::{Disposition, Hooks};
use serde_json::{Value, json};

use crate::arrange;
use crate::support::*;

const STATES: [&str; 6] = [
    "PENDING",
    "APPROVED",
    "ACTIVE",
    "REJECTED",
    "BLACKLISTED",
    "EXITED",
];

/// (routing key, success event, how the refusal names the action).
const ACTIONS: [(&str, &str, &str); 6] = [
    ("client.approve", "client.approved", "approve"),
    ("client.reject", "client.rejected", "reject"),
    (
        "client.record_first_transaction",
        "client.activated",
        "record a first transaction for",
    ),
    ("client.blacklist", "client.blacklisted", "blacklist"),
    ("client.unblacklist", "client.unblacklisted", "unblacklist"),
    ("client.exit", "client.exited", "exit"),
];

/// DESIGN.md's lifecycle table, written out again here so the worker is checked against
/// the design and not against its own rules.
fn allowed(from: &str, action: &str) -> Option<&'static str> {
    match (from, action) {
        ("PENDING", "client.approve") => Some("APPROVED"),
        ("PENDING", "client.reject") => Some("REJECTED"),
        ("APPROVED", "client.record_first_transaction") => Some("ACTIVE"),
        ("APPROVED" | "ACTIVE", "client.blacklist") => Some("BLACKLISTED"),
        ("BLACKLISTED", "client.unblacklist") => Some("PENDING"),
        ("APPROVED" | "ACTIVE" | "BLACKLISTED", "client.exit") => Some("EXITED"),
        _ => None,
    }
}

const OUTCOMES: [&str; 7] = [
    "client.approved",
    "client.rejected",
    "client.activated",
    "client.blacklisted",
    "client.unblacklisted",
    "client.exited",
    "client.transition_rejected",
];

async fn status_of(app: &TestApp, client_id: i32) -> String {
    sqlx::query_scalar("SELECT client_status FROM clients WHERE client_id = $1")
        .bind(client_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// (from, to, action, reason, message_id) of a client's history, in order.
type HistoryRow = (String, String, String, Option<String>, String);

async fn history(app: &TestApp, client_id: i32) -> Vec<HistoryRow> {
    sqlx::query_as(
        "SELECT from_status, to_status, action, reason, message_id
         FROM client_status_history WHERE client_id = $1 ORDER BY id",
    )
    .bind(client_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The operator's reason; the first transaction carries its transaction id instead.
fn reason(from: &str, routing_key: &str) -> Option<String> {
    (routing_key != "client.record_first_transaction").then(|| format!("{from} then {routing_key}"))
}

fn body(client_id: i32, from: &str, routing_key: &str) -> Value {
    match reason(from, routing_key) {
        Some(reason) => json!({"client_id": client_id, "reason": reason}),
        None => json!({"client_id": client_id, "transaction_id": "txn-1"}),
    }
}

#[tokio::test]
async fn every_state_and_action_pair_moves_and_announces_or_refuses_and_changes_nothing() {
    let mut app = spawn_app().await;
    let made = arrange::clients(&mut app, "pair", STATES.len() * ACTIONS.len()).await;
    let mut cases = Vec::new();
    for (i, m) in made.iter().enumerate() {
        let from = STATES[i / ACTIONS.len()];
        let action = ACTIONS[i % ACTIONS.len()];
        // eKYC approved: this test is about the table; the eKYC gate has its own.
        arrange::set_state(&app, m.client_id, from, "APPROVED").await;
        cases.push((m.client_id, from, action));
    }
    // All 36 at once: the worker handles them concurrently.
    let mut sent = Vec::new();
    for (client_id, from, (routing_key, _, _)) in &cases {
        sent.push(
            arrange::send(&app, routing_key, body(*client_id, from, routing_key), None).await,
        );
    }

    let mut moved = 0;
    for ((client_id, from, (routing_key, success, phrase)), id) in cases.iter().zip(&sent) {
        let e = app.wait_for_any(&OUTCOMES, id).await;
        let data = &e.body["data"];
        let reason = reason(from, routing_key);
        match allowed(from, routing_key) {
            Some(to) => {
                moved += 1;
                assert_eq!(&e.routing_key, success, "{from} + {routing_key}");
                assert_eq!(data["from_status"], json!(from));
                assert_eq!(data["to_status"], json!(to));
                assert_eq!(data["client_id"], json!(client_id));
                assert_eq!(data["reason"], json!(reason));
                if *routing_key == "client.record_first_transaction" {
                    assert_eq!(data["details"]["transaction_id"], json!("txn-1"));
                }
                assert_eq!(data["client"]["client_status"], json!(to));
                assert_eq!(status_of(&app, *client_id).await, to);
                assert_eq!(
                    history(&app, *client_id).await,
                    vec![(
                        from.to_string(),
                        to.to_string(),
                        routing_key.to_string(),
                        reason,
                        id.clone()
                    )]
                );
                assert_eq!(arrange::inbox_code(&app, id).await, None);
            }
            None => {
                assert_eq!(
                    e.routing_key, "client.transition_rejected",
                    "{from} + {routing_key} must be refused"
                );
                assert_eq!(data["code"], json!("INVALID_TRANSITION"));
                assert_eq!(data["status"], json!(409));
                assert_eq!(
                    data["message"],
                    json!(format!("Cannot {phrase} a client that is {from}."))
                );
                assert_eq!(data["client_status"], json!(from));
                assert_eq!(status_of(&app, *client_id).await, *from, "changed");
                assert!(history(&app, *client_id).await.is_empty());
                assert_eq!(
                    arrange::inbox_code(&app, id).await.as_deref(),
                    Some("INVALID_TRANSITION")
                );
            }
        }
    }
    assert_eq!(moved, 9, "DESIGN.md allows nine moves");
    assert_eq!(
        app.count("SELECT count(*) FROM client_status_history")
            .await,
        9
    );
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn lifecycle_replies_carry_the_client_or_the_error_with_its_status() {
    let mut app = spawn_app().await;
    let m = arrange::client(&mut app, "reply@example.com").await;
    arrange::set_state(&app, m.client_id, "APPROVED", "APPROVED").await;
    let replies = app.reply_queue().await;

    let id = arrange::send(
        &app,
        "client.record_first_transaction",
        json!({"client_id": m.client_id, "transaction_id": "txn_5f9a1c2b"}),
        Some(&replies),
    )
    .await;
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));
    assert_eq!(reply.body["client"]["client_status"], json!("ACTIVE"));
    assert_eq!(reply.body["client"]["client_id"], json!(m.client_id));
    let activated = app.wait_for_event("client.activated", Some(&id)).await;
    assert_eq!(
        activated.body["data"]["details"]["transaction_id"],
        json!("txn_5f9a1c2b")
    );
    let details: Value =
        sqlx::query_scalar("SELECT details FROM client_status_history WHERE message_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(details, json!({"transaction_id": "txn_5f9a1c2b"}));

    arrange::send(
        &app,
        "client.approve",
        json!({"client_id": m.client_id}),
        Some(&replies),
    )
    .await;
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(409));
    assert_eq!(
        reply.body,
        json!({"error": "Cannot approve a client that is ACTIVE."})
    );
    app.finish().await;
}

#[tokio::test]
async fn approval_is_refused_until_ekyc_is_approved_then_succeeds() {
    let mut app = spawn_app().await;
    let m = arrange::client(&mut app, "kyc@example.com").await;
    for ekyc in ["PENDING", "REJECTED"] {
        arrange::set_state(&app, m.client_id, "PENDING", ekyc).await;
        let id = arrange::send(
            &app,
            "client.approve",
            json!({"client_id": m.client_id}),
            None,
        )
        .await;
        let e = app
            .wait_for_event("client.transition_rejected", Some(&id))
            .await;
        assert_eq!(e.body["data"]["code"], json!("EKYC_NOT_APPROVED"));
        assert_eq!(e.body["data"]["status"], json!(409));
        assert_eq!(
            e.body["data"]["message"],
            json!(format!(
                "Client eKYC must be APPROVED before approval; it is {ekyc}."
            ))
        );
        assert_eq!(status_of(&app, m.client_id).await, "PENDING");
        assert!(history(&app, m.client_id).await.is_empty());
    }

    let kyc = arrange::send(
        &app,
        "client.kyc.update",
        json!({"client_id": m.client_id, "ekyc_status": "APPROVED"}),
        None,
    )
    .await;
    app.wait_for_event("client.kyc_updated", Some(&kyc)).await;
    let id = arrange::send(
        &app,
        "client.approve",
        json!({"client_id": m.client_id}),
        None,
    )
    .await;
    app.wait_for_event("client.approved", Some(&id)).await;
    assert_eq!(status_of(&app, m.client_id).await, "APPROVED");
    app.finish().await;
}

#[tokio::test]
async fn approval_ignores_ekyc_when_configured_not_to_require_it() {
    let (mut settings, database) = test_settings().await;
    settings.lifecycle.require_ekyc_for_approval = false;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let m = arrange::client(&mut app, "nokyc@example.com").await;
    let id = arrange::send(
        &app,
        "client.approve",
        json!({"client_id": m.client_id}),
        None,
    )
    .await;
    let e = app.wait_for_event("client.approved", Some(&id)).await;
    assert_eq!(e.body["data"]["client"]["ekyc_status"], json!("PENDING"));
    assert_eq!(status_of(&app, m.client_id).await, "APPROVED");
    app.finish().await;
}

#[tokio::test]
async fn kyc_update_sets_the_client_and_its_admin_users_and_records_the_change() {
    let mut app = spawn_app().await;
    let m = arrange::client(&mut app, "kyc@example.com").await;
    let member = arrange::user(&app, m.client_id, "member").await;
    let replies = app.reply_queue().await;
    let id = arrange::send(
        &app,
        "client.kyc.update",
        json!({"client_id": m.client_id, "ekyc_status": "APPROVED"}),
        Some(&replies),
    )
    .await;
    let e = app.wait_for_event("client.kyc_updated", Some(&id)).await;
    assert_eq!(e.body["data"]["from_status"], json!("PENDING"));
    assert_eq!(e.body["data"]["to_status"], json!("APPROVED"));
    assert_eq!(e.body["data"]["changed"], json!(true));
    assert_eq!(e.body["data"]["admin_users_updated"], json!(1));
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(200));
    assert_eq!(reply.body["ekyc_status"], json!("APPROVED"));
    assert_eq!(reply.body["client"]["ekyc_status"], json!("APPROVED"));

    let ekyc = |user_id: i32| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT ekyc_status FROM users WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(ekyc(m.admin_id).await, "APPROVED");
    assert_eq!(ekyc(member).await, "PENDING", "only admin users follow");
    let client_ekyc: String =
        sqlx::query_scalar("SELECT ekyc_status FROM clients WHERE client_id = $1")
            .bind(m.client_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(client_ekyc, "APPROVED");
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT from_status, to_status, message_id FROM client_ekyc_history WHERE client_id = $1",
    )
    .bind(m.client_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("PENDING".into(), "APPROVED".into(), id.clone())]
    );

    // The same status again changes nothing and records nothing, but still answers.
    let again = arrange::send(
        &app,
        "client.kyc.update",
        json!({"client_id": m.client_id, "ekyc_status": "APPROVED"}),
        None,
    )
    .await;
    let e = app.wait_for_event("client.kyc_updated", Some(&again)).await;
    assert_eq!(e.body["data"]["changed"], json!(false));
    assert_eq!(
        app.count("SELECT count(*) FROM client_ekyc_history").await,
        1
    );
    // eKYC is not a lifecycle move.
    assert!(history(&app, m.client_id).await.is_empty());
    app.finish().await;
}

/// Checks a client's history is one unbroken chain from PENDING to its current status, and
/// that there is one success event per history row.
async fn assert_consistent(app: &TestApp, client_id: i32, successes: usize) -> Vec<HistoryRow> {
    let rows = history(app, client_id).await;
    let mut at = "PENDING".to_string();
    for (from, to, action, _, _) in &rows {
        assert_eq!(
            from, &at,
            "client {client_id}: {action} moved from a stale status"
        );
        assert_eq!(allowed(from, action), Some(to.as_str()));
        at = to.clone();
    }
    assert_eq!(status_of(app, client_id).await, at, "client {client_id}");
    assert_eq!(
        rows.len(),
        successes,
        "client {client_id}: events vs history"
    );
    rows
}

/// Publishes `a` and `b` for each client at once, and returns how many of each pair
/// succeeded (by the events).
async fn race(app: &mut TestApp, clients: &[i32], a: &str, b: &str) -> Vec<usize> {
    let mut sent = Vec::new();
    for client_id in clients {
        let x = arrange::send(app, a, json!({"client_id": client_id}), None).await;
        let y = arrange::send(app, b, json!({"client_id": client_id}), None).await;
        sent.push((x, y));
    }
    let mut successes = Vec::new();
    for (x, y) in &sent {
        let mut n = 0;
        for id in [x, y] {
            let e = app.wait_for_any(&OUTCOMES, id).await;
            if e.routing_key == "client.transition_rejected" {
                assert_eq!(e.body["data"]["code"], json!("INVALID_TRANSITION"));
            } else {
                n += 1;
            }
        }
        successes.push(n);
    }
    successes
}

#[tokio::test]
async fn approve_racing_blacklist_on_one_client_ends_in_one_consistent_state() {
    let mut app = spawn_app().await;
    let made = arrange::clients(&mut app, "race", 30).await;
    let ids: Vec<i32> = made.iter().map(|m| m.client_id).collect();
    for id in &ids {
        arrange::set_state(&app, *id, "PENDING", "APPROVED").await;
    }
    let successes = race(&mut app, &ids, "client.approve", "client.blacklist").await;
    let mut finals = HashMap::new();
    for (id, n) in ids.iter().zip(successes) {
        let rows = assert_consistent(&app, *id, n).await;
        // Approve always wins (blacklisting needs APPROVED first); blacklist wins only
        // when it came second.
        assert_eq!(rows[0].2, "client.approve");
        *finals.entry(status_of(&app, *id).await).or_insert(0) += 1;
    }
    assert!(
        finals.keys().all(|s| s == "APPROVED" || s == "BLACKLISTED"),
        "{finals:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn two_moves_allowed_from_the_same_state_never_both_win_against_a_stale_read() {
    // Approve and reject are both allowed from PENDING; blacklist and exit both from
    // APPROVED. Without the row lock both would read the old status and both would move.
    let mut app = spawn_app().await;
    let made = arrange::clients(&mut app, "stale", 40).await;
    let (pending, approved) = made.split_at(20);
    let pending: Vec<i32> = pending.iter().map(|m| m.client_id).collect();
    let approved: Vec<i32> = approved.iter().map(|m| m.client_id).collect();
    for id in &pending {
        arrange::set_state(&app, *id, "PENDING", "APPROVED").await;
    }
    for id in &approved {
        arrange::set_state(&app, *id, "APPROVED", "APPROVED").await;
        // The chain check starts at PENDING: record how it got to APPROVED.
        sqlx::query(
            "INSERT INTO client_status_history (client_id, from_status, to_status, action, message_id)
             VALUES ($1, 'PENDING', 'APPROVED', 'client.approve', gen_random_uuid()::text)",
        )
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    let successes = race(&mut app, &pending, "client.approve", "client.reject").await;
    for (id, n) in pending.iter().zip(successes) {
        assert_eq!(n, 1, "client {id}: approve and reject both won");
        assert_consistent(&app, *id, 1).await;
    }
    let successes = race(&mut app, &approved, "client.blacklist", "client.exit").await;
    for (id, n) in approved.iter().zip(successes) {
        assert_consistent(&app, *id, n + 1).await;
        assert_eq!(status_of(&app, *id).await, "EXITED");
    }
    app.finish().await;
}

#[tokio::test]
async fn an_approve_published_before_its_client_create_commits_still_succeeds() {
    let (mut settings, database) = test_settings().await;
    settings.lifecycle.require_ekyc_for_approval = false;
    settings.lifecycle.not_found_retries = 10;
    settings.retry.max_attempts = 10;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;

    // A fresh database: the first client will be number 1.
    let approve = arrange::send(&app, "client.approve", json!({"client_id": 1}), None).await;
    app.settled
        .wait_until("the approve to wait in a delay queue", |log| {
            log.iter().any(|s| {
                s.message_id.as_deref() == Some(approve.as_str())
                    && s.disposition == Disposition::RetryScheduled
            })
        })
        .await;
    let m = arrange::client(&mut app, "late@example.com").await;
    assert_eq!(m.client_id, 1);

    let e = app.wait_for_event("client.approved", Some(&approve)).await;
    assert_eq!(e.body["data"]["from_status"], json!("PENDING"));
    assert_eq!(status_of(&app, 1).await, "APPROVED");
    assert_eq!(history(&app, 1).await.len(), 1);
    let log = app.settled.for_message(&approve);
    assert_eq!(log.last(), Some(&Disposition::Handled));
    assert!(
        log[..log.len() - 1]
            .iter()
            .all(|d| *d == Disposition::RetryScheduled)
    );
    app.finish().await;
}

#[tokio::test]
async fn a_command_for_a_client_that_never_comes_is_refused_404_after_its_retries() {
    let mut app = spawn_app().await;
    let retries = app.settings.lifecycle.not_found_retries as usize;
    assert!(retries <= app.settings.retry.max_attempts as usize);
    for (routing_key, body, failed) in [
        (
            "client.exit",
            json!({"client_id": 4242}),
            "client.transition_rejected",
        ),
        (
            "client.kyc.update",
            json!({"client_id": 4242, "ekyc_status": "APPROVED"}),
            "client.kyc_update_failed",
        ),
    ] {
        let replies = app.reply_queue().await;
        let id = arrange::send(&app, routing_key, body, Some(&replies)).await;
        let e = app.wait_for_event(failed, Some(&id)).await;
        assert_eq!(e.body["data"]["code"], json!("CLIENT_NOT_FOUND"));
        assert_eq!(e.body["data"]["status"], json!(404));
        assert_eq!(e.body["data"]["message"], json!("Client not found"));
        let reply = app.take_from(&replies).await;
        assert_eq!(arrange::status(&reply), Some(404));
        assert_eq!(reply.body, json!({"error": "Client not found"}));
        arrange::handled(&app, &id).await;
        let mut expected = vec![Disposition::RetryScheduled; retries];
        expected.push(Disposition::Handled);
        assert_eq!(app.settled.for_message(&id), expected, "{routing_key}");
        assert_eq!(
            arrange::inbox_code(&app, &id).await.as_deref(),
            Some("CLIENT_NOT_FOUND")
        );
    }
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

/// A true race on one client, with a barrier: `client.approve`'s transaction is held open
/// (it has locked the client) while `client.blacklist` runs in another batch and waits on
/// that lock; released, the approval commits and the blacklist decides from APPROVED, not
/// from the PENDING it would have read without the lock.
#[tokio::test]
async fn a_command_waits_for_the_lock_of_a_racing_one_and_decides_from_its_result() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Notify;

    let mut app = spawn_app().await;
    let made = arrange::client(&mut app, "barrier@example.com").await;
    arrange::set_state(&app, made.client_id, "PENDING", "APPROVED").await;
    app.stop_worker().await;

    let armed = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (a, h, r) = (armed.clone(), holding.clone(), release.clone());
    let hooks = Hooks {
        before_batch_commit: Some(Arc::new(move |_| {
            let hold = a.swap(false, Ordering::SeqCst);
            let (h, r) = (h.clone(), r.clone());
            Box::pin(async move {
                if hold {
                    h.notify_one();
                    r.notified().await;
                }
            })
        })),
        ..Default::default()
    };
    app.start_worker(Some(hooks)).await;

    armed.store(true, Ordering::SeqCst);
    let approve = arrange::send(
        &app,
        "client.approve",
        json!({"client_id": made.client_id}),
        None,
    )
    .await;
    holding.notified().await;
    let blacklist = arrange::send(
        &app,
        "client.blacklist",
        json!({"client_id": made.client_id}),
        None,
    )
    .await;
    // The blacklist's batch is blocked on the client's row lock.
    app.wait_for_a_lock_wait("the blacklist").await;
    release.notify_one();

    let approved = app.wait_for_any(&OUTCOMES, &approve).await;
    assert_eq!(approved.routing_key, "client.approved");
    assert_eq!(approved.body["data"]["from_status"], json!("PENDING"));
    let blacklisted = app.wait_for_any(&OUTCOMES, &blacklist).await;
    assert_eq!(blacklisted.routing_key, "client.blacklisted");
    assert_eq!(blacklisted.body["data"]["from_status"], json!("APPROVED"));
    let status: String =
        sqlx::query_scalar("SELECT client_status FROM clients WHERE client_id = $1")
            .bind(made.client_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "BLACKLISTED");
    app.finish().await;
}
