//! Dead letters for operators (`onboard dlq`): inspecting without moving, grouping by cause,
//! replaying exactly once after a fix, purging with confirmation, auditing, and a replay
//! killed half-way that loses nothing. Through the library and through the binary.

use std::collections::HashSet;
use std::time::Duration;

use onboard::ops::dlq::{Dlq, MoveRequest, Selector};
use onboard::store;
use onboard::worker::{Disposition, Settled};
use serde_json::{Value, json};

use crate::support::*;

/// Makes every client insert fail, as a broken deploy or a bad migration would: a technical
/// failure the worker retries, then dead-letters. The message varies per client, as real
/// errors do, so grouping has something to normalize.
pub(crate) async fn poison(app: &TestApp) {
    sqlx::raw_sql(
        "CREATE FUNCTION block_clients() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'client % blocked by rule 17', NEW.client_code;
         END $$;
         CREATE TRIGGER block_clients BEFORE INSERT ON clients
             FOR EACH ROW EXECUTE FUNCTION block_clients();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

pub(crate) async fn cure(app: &TestApp) {
    sqlx::raw_sql("DROP TRIGGER block_clients ON clients")
        .execute(&app.pool)
        .await
        .unwrap();
}

pub(crate) async fn wait_dead_lettered(app: &TestApp, n: usize) {
    app.settled
        .wait_until(&format!("{n} dead-lettered"), |log| {
            log.iter()
                .filter(|s| s.disposition == Disposition::DeadLettered)
                .count()
                >= n
        })
        .await;
}

/// Whether `id` was handled exactly once (duplicates recognised by the inbox aside).
pub(crate) fn handled_once(log: &[Settled], id: &str) -> bool {
    log.iter()
        .filter(|s| s.message_id.as_deref() == Some(id) && s.disposition == Disposition::Handled)
        .count()
        == 1
}

#[tokio::test]
async fn a_poisoned_command_is_listed_and_grouped_without_moving_and_replayed_once_after_the_fix() {
    let mut app = spawn_app().await;
    let dead = app.names().dead_queue;
    poison(&app).await;
    let mut poisoned = Vec::new();
    for i in 0..3 {
        poisoned.push(
            app.create_client(&client_with_email(&format!("p{i}@example.com")))
                .await,
        );
    }
    // And one malformed command, carrying a secret that `show` must not print.
    let mut bad = seed_sg_client();
    bad["password"] = json!("hunter2");
    bad["phone"] = json!(628123);
    let malformed = app.publish(Msg::json("client.create", &bad)).await.unwrap();
    wait_dead_lettered(&app, 4).await;
    depth_settles(&app, &dead, 4).await;

    let dlq = Dlq::connect(&app.settings).await.unwrap();
    let listing = dlq.list(&Selector::default(), 100).await.unwrap();
    assert_eq!(listing.depth, 4);
    assert_eq!(listing.letters.len(), 4);
    let first = listing
        .letters
        .iter()
        .find(|d| d.message_id.as_deref() == Some(poisoned[0].as_str()))
        .expect("the poisoned command is listed");
    assert_eq!(first.command_type, "client.create");
    assert_eq!(first.failure, "retries_exhausted");
    assert_eq!(first.attempts, 3);
    assert!(
        first.reason.contains("blocked by rule 17"),
        "{}",
        first.reason
    );
    assert!(first.first_failed_at.unwrap() <= first.last_failed_at.unwrap());
    // Inspecting moved nothing, and a second look sees the same queue in the same order.
    depth_settles(&app, &dead, 4).await;
    let again = dlq.list(&Selector::default(), 100).await.unwrap();
    let ids = |l: &onboard::ops::dlq::Listing| -> Vec<Option<String>> {
        l.letters.iter().map(|d| d.message_id.clone()).collect()
    };
    assert_eq!(ids(&again), ids(&listing));
    // Filters.
    let by_reason = Selector {
        reason: Some("RULE 17".into()),
        ..Default::default()
    };
    assert_eq!(dlq.list(&by_reason, 100).await.unwrap().letters.len(), 3);
    let old = Selector {
        older_than: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    assert_eq!(dlq.list(&old, 100).await.unwrap().letters.len(), 0);

    // One line per root cause.
    let groups = dlq.groups(&Selector::default(), 100).await.unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0].count, 3);
    assert!(
        groups[0]
            .reason
            .contains("client CL-<n>-<n> blocked by rule <n>")
    );
    assert_eq!(groups[1].count, 1);
    depth_settles(&app, &dead, 4).await;

    // show: secrets masked, the rest kept, history present.
    let shown = dlq.show(&malformed, 100).await.unwrap();
    assert_eq!(shown.len(), 1);
    let body = shown[0].masked_body();
    assert_eq!(body["password"], json!("***"));
    assert_eq!(body["email"], json!("admin@sgcompany.com"));
    assert!(!format!("{body}{}", shown[0].masked_headers()).contains("hunter2"));
    assert_eq!(shown[0].failure, "rejected");
    assert_eq!(
        shown[0].masked_headers()["x-onboard-routing-key"],
        json!("client.create"),
        "a routing key is not a secret"
    );
    assert!(!shown[0].history().is_empty());

    // The cause is fixed; the group is replayed: each command processed exactly once.
    cure(&app).await;
    let mut req = MoveRequest::new(Selector {
        group: Some(groups[0].fingerprint.clone()),
        ..Default::default()
    });
    req.actor = Some("alice".into());
    req.note = Some("INC-42: trigger dropped".into());
    let dry = dlq
        .replay(
            &app.pool,
            &MoveRequest {
                dry_run: true,
                ..req.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.selected.len(), 3);
    assert!(dry.done.is_empty());
    depth_settles(&app, &dead, 4).await;

    let report = dlq.replay(&app.pool, &req).await.unwrap();
    assert_eq!(report.done.len(), 3, "{report:?}");
    assert!(report.failed.is_empty());
    for id in &poisoned {
        let created = app.wait_for_event("client.created", Some(id)).await;
        assert_eq!(created.body["causation_id"], json!(id));
    }
    app.settled
        .wait_until("each replayed command handled", |log| {
            poisoned.iter().all(|id| handled_once(log, id))
        })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 3);
    depth_settles(&app, &dead, 1).await;

    let audit = store::dlq::recent(&app.pool, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "a dry run is not audited");
    assert_eq!(audit[0].action, "replay");
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].note.as_deref(), Some("INC-42: trigger dropped"));
    assert_eq!(audit[0].selected, 3);
    assert_eq!(audit[0].outcome.as_deref(), Some("completed"));
    let mut done = audit[0].done_ids.clone();
    done.sort();
    let mut expected = poisoned.clone();
    expected.sort();
    assert_eq!(done, expected);
    assert_eq!(audit[0].selector["group"], json!(groups[0].fingerprint));

    // Replaying the still-malformed one does not lose it: its inbox 'rejected' row is
    // cleared, the copy is checked afresh and comes back, counted as replayed once.
    let report = dlq
        .replay(
            &app.pool,
            &MoveRequest::new(Selector {
                ids: vec![malformed.clone()],
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(report.done, vec![malformed.clone()]);
    app.settled
        .wait_until("the malformed copy dead-lettered again", |log| {
            log.iter()
                .filter(|s| {
                    s.message_id.as_deref() == Some(malformed.as_str())
                        && s.disposition == Disposition::DeadLettered
                })
                .count()
                == 2
        })
        .await;
    let back = dlq.show(&malformed, 100).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].replays, 1);
    assert_eq!(back[0].failure, "rejected");

    // Purge asks first; refused, nothing goes. Agreed, it goes, and is audited.
    let purge = MoveRequest::new(Selector {
        ids: vec![malformed.clone()],
        ..Default::default()
    });
    let refused = dlq.purge(&app.pool, &purge, &mut |_| false).await;
    assert!(refused.is_err());
    depth_settles(&app, &dead, 1).await;
    let mut asked = 0;
    let report = dlq
        .purge(&app.pool, &purge, &mut |plan| {
            asked = plan.selected.len();
            true
        })
        .await
        .unwrap();
    assert_eq!(asked, 1);
    assert_eq!(report.done, vec![malformed.clone()]);
    depth_settles(&app, &dead, 0).await;
    let audit = store::dlq::recent(&app.pool, 1).await.unwrap();
    assert_eq!(audit[0].action, "purge");
    assert_eq!(audit[0].outcome.as_deref(), Some("completed"));

    // Replay and purge refuse to guess: no selector, nothing happens.
    assert!(
        dlq.replay(&app.pool, &MoveRequest::new(Selector::default()))
            .await
            .is_err()
    );
    dlq.close().await;
    app.finish().await;
}

async fn run_json(app: &TestApp, args: &[&str]) -> Value {
    let out = onboard_bin(&app.settings)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "onboard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "onboard {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Message ids that have a client (processed) and those still in the dead-letter queue.
async fn processed_ids(app: &TestApp) -> HashSet<String> {
    sqlx::query_scalar::<_, String>("SELECT message_id FROM inbox WHERE outcome = 'succeeded' AND command_type = 'client.create'")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn the_binary_lists_and_replays_and_a_replay_killed_half_way_loses_nothing() {
    let mut app = spawn_app().await;
    let dead = app.names().dead_queue;
    poison(&app).await;
    let mut ids = HashSet::new();
    for i in 0..12 {
        ids.insert(
            app.create_client(&client_with_email(&format!("k{i}@example.com")))
                .await,
        );
    }
    wait_dead_lettered(&app, 12).await;

    let listed = run_json(&app, &["dlq", "list", "--json"]).await;
    assert_eq!(listed["letters"].as_array().unwrap().len(), 12);
    assert_eq!(listed["letters"][0]["failure"], json!("retries_exhausted"));
    let groups = run_json(&app, &["dlq", "groups", "--json"]).await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["count"], json!(12));
    let one = ids.iter().next().unwrap().clone();
    let shown = run_json(&app, &["dlq", "show", &one, "--json"]).await;
    assert_eq!(
        shown["dead_letters"][0]["summary"]["message_id"],
        json!(one)
    );
    depth_settles(&app, &dead, 12).await;

    // Fixed; a slow replay is killed half-way (SIGKILL: no chance to clean up).
    cure(&app).await;
    let mut replay = onboard_bin(&app.settings)
        .args(["dlq", "replay", "--all", "--rate", "4", "--actor", "bob"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has moved a couple (its audit row counts them as they go).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done: Option<i32> =
            sqlx::query_scalar("SELECT done FROM dlq_audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if done.is_some_and(|d| d >= 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replay.kill().await.unwrap();

    // Nothing lost: every command is processed or still a dead letter (or both, briefly).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let processed = processed_ids(&app).await;
        let listing = Dlq::connect(&app.settings)
            .await
            .unwrap()
            .list(&Selector::default(), 100)
            .await
            .unwrap();
        let waiting: HashSet<String> = listing
            .letters
            .iter()
            .filter_map(|d| d.message_id.clone())
            .collect();
        let seen: HashSet<String> = processed.union(&waiting).cloned().collect();
        if seen == ids && !processed.is_empty() && !waiting.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lost: {:?} (processed {}, waiting {})",
            ids.difference(&seen).collect::<Vec<_>>(),
            processed.len(),
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = store::dlq::recent(&app.pool, 1).await.unwrap();
    assert_eq!(killed[0].actor, "bob");
    assert_eq!(killed[0].outcome, None, "a killed run is never finished");
    assert!(killed[0].done > 0 && killed[0].done < 12, "{killed:?}");

    // Run again to the end: every command processed exactly once in effect.
    let out = onboard_bin(&app.settings)
        .args(["dlq", "replay", "--all"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed"));
    app.settled
        .wait_until("all twelve handled", |log| {
            ids.iter().all(|id| handled_once(log, id))
        })
        .await;
    assert_eq!(processed_ids(&app).await, ids);
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 12);
    depth_settles(&app, &dead, 0).await;
    let events = app.settled_events().await;
    let created: HashSet<_> = events
        .iter()
        .filter(|e| e.routing_key == "client.created")
        .map(|e| e.message_id.clone())
        .collect();
    assert_eq!(created.len(), 12, "one client.created per command");
    let audit = store::dlq::recent(&app.pool, 1).await.unwrap();
    assert_eq!(audit[0].outcome.as_deref(), Some("completed"));
    app.finish().await;
}

#[tokio::test]
async fn purge_through_the_binary_refuses_without_a_terminal_unless_told_yes() {
    let app = spawn_app().await;
    let dead = app.names().dead_queue;
    let not_json = Msg {
        routing_key: "client.create".into(),
        body: b"{oops".to_vec(),
        message_id: Some("purge-me".into()),
        ..Default::default()
    };
    app.publish(not_json).await;
    wait_dead_lettered(&app, 1).await;

    let out = onboard_bin(&app.settings)
        .args(["dlq", "purge", "purge-me"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    depth_settles(&app, &dead, 1).await;

    let out = onboard_bin(&app.settings)
        .args(["dlq", "purge", "purge-me", "--yes", "--note", "junk"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    depth_settles(&app, &dead, 0).await;
    let audit = run_json(&app, &["dlq", "audit", "--json"]).await;
    assert_eq!(audit[0]["action"], json!("purge"));
    assert_eq!(audit[0]["done_ids"], json!(["purge-me"]));
    assert_eq!(audit[0]["note"], json!("junk"));
    app.finish().await;
}

/// The dead-letter queue comes to hold `n` messages. Letters a look borrowed are given back
/// by closing its channel, and the broker requeues them just after the close is confirmed:
/// a single read right after a look can still miss them.
async fn depth_settles(app: &TestApp, queue: &str, n: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let depth = app.queue_depth(queue).await;
        if depth == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {depth}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_subcommand_refuses_a_setting_that_does_not_exist_and_names_the_nearest() {
    let app = spawn_app().await;
    // A lease set under a wrong name would run on the default without a word.
    for args in [
        &["migrate"][..],
        &["saga", "stuck"][..],
        &["dlq", "list"][..],
        &["worker"][..],
    ] {
        let out = onboard_bin(&app.settings)
            .env("ONBOARD__SAGA__LEASE_SECOND", "30")
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "onboard {args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("unknown setting `saga.lease_second`")
                && stderr.contains("ONBOARD__SAGA__LEASE_SECOND")
                && stderr.contains("did you mean `saga.lease_seconds`?"),
            "onboard {args:?}: {stderr}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn the_ceiling_benchmark_refuses_a_database_that_is_not_its_own_scratch_database() {
    let mut app = spawn_app().await;
    let id = app.create_client(&seed_sg_client()).await;
    app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    let out = lab_bin(&app.settings)
        .args(["bench-ceiling", "-n", "10"])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "bench-ceiling ran in the worker's database"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("empty scratch database") && stderr.contains("_sqlx_migrations"),
        "{stderr}"
    );
    // Nothing created, nothing emptied.
    assert_eq!(
        app.count("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ceiling%'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    app.finish().await;
}

/// `onboard dlq edit`, the CLI's door to the console's edit-and-retry (one `edit_problems`,
/// one replay): a body its command's schema refuses is not sent and the letter stays; the
/// fixed body, read from standard input, goes out under the same message id and is handled
/// once; the audit names who, why, and keeps the original body.
#[tokio::test]
async fn a_broken_body_is_fixed_from_the_cli_checked_first_and_replayed_once() {
    use tokio::io::AsyncWriteExt;
    let mut app = spawn_app().await;
    let dead = app.names().dead_queue;
    poison(&app).await;
    let id = app.create_client(&client_with_email("typo@example")).await;
    wait_dead_lettered(&app, 1).await;
    cure(&app).await;

    let refused = std::env::temp_dir().join(format!("onboard-edit-{id}.json"));
    std::fs::write(&refused, r#"{"email": 42}"#).unwrap();
    let out = onboard_bin(&app.settings)
        .args(["dlq", "edit", &id, "--body", refused.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("was not sent") && stderr.contains("/email: fails type"),
        "{stderr}"
    );
    depth_settles(&app, &dead, 1).await;
    let _ = std::fs::remove_file(&refused);

    let mut fixed = client_with_email("typo@example.com");
    fixed["client_alias"] = json!("Fixed Ltd");
    let mut edit = onboard_bin(&app.settings)
        .args(["dlq", "edit", &id, "--body", "-", "--actor", "bob"])
        .args(["--note", "TICKET-7", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = edit.stdin.take().unwrap();
    stdin.write_all(fixed.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = edit.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["done"], json!([id]));

    let created = app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(
        created.body["data"]["client"]["client_alias"],
        json!("Fixed Ltd")
    );
    depth_settles(&app, &dead, 0).await;
    app.settled
        .wait_until("the edited command handled", |log| handled_once(log, &id))
        .await;
    let audit = run_json(&app, &["dlq", "audit", "--json"]).await;
    assert_eq!(audit[0]["action"], json!("replay"));
    assert_eq!(audit[0]["actor"], json!("bob"));
    assert_eq!(audit[0]["note"], json!("TICKET-7; edited and retried"));
    assert_eq!(
        audit[0]["messages"][0]["original_body"]["email"],
        json!("typo@example")
    );
    app.finish().await;
}
