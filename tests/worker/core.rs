//! The core (issue 9): the inbox comes first, only transient failures are retried, a batch's
//! commands do not share each other's fate, and sagas survive a worker killed between steps
//! or mid-batch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use onboard::saga::Step;
use onboard::worker::{Disposition, Hooks};
use serde_json::json;
use tokio::sync::Notify;

use crate::arrange;
use crate::support::*;

/// What "within seconds" means in the issue.
const PROMPTLY: Duration = Duration::from_secs(10);

async fn promptly<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {PROMPTLY:?}"))
}

#[tokio::test]
async fn a_message_id_reused_with_another_email_is_refused_at_once_and_changes_nothing() {
    let mut app = spawn_app().await;
    let first = Msg::json("client.create", &client_with_email("first@example.com"));
    let id = app.publish(first.clone()).await.unwrap();
    app.wait_for_event("client.created", Some(&id)).await;

    let replies = app.reply_queue().await;
    let mut again = Msg::json("client.create", &client_with_email("second@example.com"));
    again.message_id = Some(id.clone());
    again.reply_to = Some(replies.clone());
    app.publish(again).await;
    let refused = promptly(
        "the refusal",
        app.wait_for_any(&["client.creation_failed"], &id),
    )
    .await;
    let data = &refused.body["data"];
    assert_eq!(data["code"], json!("IDEMPOTENCY_KEY_REUSED"));
    assert_eq!(data["status"], json!(422));
    assert_eq!(
        data["message"],
        json!("message_id was already used for a different command.")
    );
    assert_eq!(refused.body["causation_id"], json!(id));
    let reply = promptly("the reply", app.take_from(&replies)).await;
    assert_eq!(arrange::status(&reply), Some(422));
    assert_eq!(
        reply.body,
        json!({"error": "message_id was already used for a different command."})
    );

    // Nothing changed: one client, the first one, and its inbox row says so.
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    let email: String = sqlx::query_scalar("SELECT email FROM clients")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(email, "first@example.com");
    assert_eq!(arrange::inbox_code(&app, &id).await, None);
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_value_that_grows_past_its_column_when_upper_cased_is_refused_not_retried() {
    let mut app = spawn_app().await;
    let replies = app.reply_queue().await;
    let mut body = seed_sg_client();
    // 50 characters pass the schema's maxLength; upper-cased they are 150.
    body["client_type"] = json!("\u{fb03}".repeat(50));
    let mut msg = Msg::json("client.create", &body);
    msg.reply_to = Some(replies.clone());
    let id = app.publish(msg).await.unwrap();
    let refused = promptly(
        "the refusal",
        app.wait_for_any(&["client.creation_failed"], &id),
    )
    .await;
    assert_eq!(refused.body["data"]["code"], json!("VALUE_TOO_LONG"));
    assert_eq!(
        refused.body["data"]["message"],
        json!("client_type must be at most 50 characters.")
    );
    let reply = promptly("the reply", app.take_from(&replies)).await;
    assert_eq!(arrange::status(&reply), Some(400));
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 0);
    arrange::handled(&app, &id).await;
    assert_eq!(app.settled.for_message(&id), vec![Disposition::Handled]);
    app.finish().await;
}

#[tokio::test]
async fn a_saga_step_sent_from_outside_is_dead_lettered_as_unknown_at_once() {
    let mut app = spawn_app().await;
    let forged = Msg::json(
        "saga.onboarding.step",
        &json!({"saga_id": "not-a-uuid", "step": "welcome_email"}),
    );
    let id = app.publish(forged).await.unwrap();
    let letter = promptly("the dead letter", app.take_from(&app.names().dead_queue)).await;
    assert_eq!(letter.message_id.as_deref(), Some(id.as_str()));
    assert!(
        letter
            .header_str("x-onboard-reason")
            .unwrap_or_default()
            .contains("unknown command type"),
        "{:?}",
        letter.headers
    );
    let event = promptly(
        "command.rejected",
        app.wait_for_any(&["command.rejected"], &id),
    )
    .await;
    assert_eq!(
        event.body["data"]["command_type"],
        json!("saga.onboarding.step")
    );
    app.settled
        .wait_until("the forged step to be settled", |log| {
            log.iter()
                .any(|s| s.message_id.as_deref() == Some(id.as_str()))
        })
        .await;
    assert_eq!(
        app.settled.for_message(&id),
        vec![Disposition::DeadLettered]
    );
    app.finish().await;
}

#[tokio::test]
async fn ten_copies_of_one_command_on_two_workers_make_one_client_and_another_body_is_refused() {
    let (mut settings, database) = test_settings().await;
    // Small batches, so the copies spread over several transactions and both workers.
    settings.worker.batch_size = 2;
    let mut app = spawn_app_with(settings.clone(), database, Hooks::default()).await;
    let second = onboard::worker::Worker::start(settings, app_hooks(&app))
        .await
        .unwrap();
    let msg = Msg::json("client.create", &client_with_email("once@example.com"));
    let id = msg.message_id.clone().unwrap();
    let publishes = (0..10).map(|_| app.publish(msg.clone()));
    futures::future::join_all(publishes).await;
    app.settled
        .wait_until("ten copies settled", |log| {
            log.iter()
                .filter(|s| s.message_id.as_deref() == Some(id.as_str()))
                .count()
                == 10
        })
        .await;
    let mut ends = app.settled.for_message(&id);
    ends.sort_by_key(|d| format!("{d:?}"));
    let mut expected = vec![Disposition::Duplicate; 9];
    expected.push(Disposition::Handled);
    assert_eq!(ends, expected);
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM onboarding_sagas").await, 1);
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE message_type = 'client.created'")
            .await,
        1
    );

    let mut other = Msg::json("client.create", &client_with_email("other@example.com"));
    other.message_id = Some(id.clone());
    app.publish(other).await;
    let refused = app.wait_for_any(&["client.creation_failed"], &id).await;
    assert_eq!(
        refused.body["data"]["code"],
        json!("IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    second.stop().await.unwrap();
    app.finish().await;
}

/// The settled log of `app` for a second worker to report into.
fn app_hooks(app: &TestApp) -> Hooks {
    let log = app.settled.clone();
    Hooks {
        on_settled: Some(Arc::new(move |s| {
            log.entries.lock().unwrap().push(s);
            log.bell.notify_waiters();
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_refused_and_a_failing_command_leave_the_rest_of_their_batch_committed_with_gap_free_codes()
 {
    let (mut settings, database) = test_settings().await;
    // Everything published while the worker was away arrives in one batch.
    settings.worker.batch_linger_ms = 500;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let existing = arrange::client(&mut app, "taken@example.com").await;
    app.stop_worker().await;
    // A value PostgreSQL refuses for one client only (as a CHECK would): SQLSTATE 23514.
    arrange::refuse_poison_emails(&app).await;

    let mut good = Vec::new();
    for i in 0..6 {
        good.push(
            app.create_client(&client_with_email(&format!("good{i}@example.com")))
                .await,
        );
    }
    let refused = app
        .create_client(&client_with_email("taken@example.com"))
        .await;
    let replies = app.reply_queue().await;
    let mut poison = Msg::json("client.create", &client_with_email("poison@example.com"));
    poison.reply_to = Some(replies.clone());
    let poisoned = app.publish(poison).await.unwrap();

    // Watch the batch: committed transactions and their sizes.
    let commits: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = commits.clone();
    let hooks = Hooks {
        before_batch_commit: Some(Arc::new(move |n| {
            seen.lock().unwrap().push(n);
            Box::pin(async {})
        })),
        ..Default::default()
    };
    app.start_worker(Some(hooks)).await;

    let failed = app.wait_for_any(&["command.failed"], &poisoned).await;
    assert_eq!(failed.body["data"]["code"], json!("INTERNAL_ERROR"));
    assert_eq!(failed.body["data"]["status"], json!(500));
    let reason = failed.body["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("SQLSTATE 23514"), "{reason}");
    assert!(!failed.body.to_string().contains("poison@"), "no PII in it");
    let reply = app.take_from(&replies).await;
    assert_eq!(arrange::status(&reply), Some(500));
    let letter = app.take_from(&app.names().dead_queue).await;
    assert_eq!(letter.message_id.as_deref(), Some(poisoned.as_str()));
    assert_eq!(letter.header_str("x-onboard-failure"), Some("failed"));

    let email_in_use = app
        .wait_for_any(&["client.creation_failed"], &refused)
        .await;
    assert_eq!(email_in_use.body["data"]["code"], json!("EMAIL_IN_USE"));
    for id in &good {
        app.wait_for_event("client.created", Some(id)).await;
    }
    // One transaction for the batch of eight: the poison was split off inside it (its
    // savepoint rolled back), the seven others committed with it, none of them run again.
    assert_eq!(*commits.lock().unwrap(), vec![8]);

    // Gap-free: the existing client and the six new ones hold 1..=7, the counter says 7.
    let prefix = app.code_prefix().await;
    let codes: Vec<String> = sqlx::query_scalar("SELECT client_code FROM clients ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let expected: Vec<String> = (1..=7).map(|n| format!("{prefix}{n:04}")).collect();
    assert_eq!(codes, expected);
    assert_eq!(
        app.count("SELECT max(last_value)::bigint FROM client_code_counters")
            .await,
        7
    );
    assert!(existing.client_id > 0);
    // The failed command left no claim behind: once fixed, a replay runs it.
    assert_eq!(
        app.count("SELECT count(*) FROM inbox WHERE outcome = 'succeeded'")
            .await,
        7
    );
    assert_eq!(
        arrange::inbox_code(&app, &refused).await.as_deref(),
        Some("EMAIL_IN_USE")
    );
    assert!(
        !onboard::store::inbox::contains(&app.pool, &poisoned)
            .await
            .unwrap()
    );
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    app.finish().await;
}

/// A hook that freezes the worker the first time `step` is about to run, and rings `frozen`.
fn freeze_before(step: Step, frozen: Arc<Notify>) -> Hooks {
    Hooks {
        before_step: Some(Arc::new(move |s| {
            let frozen = frozen.clone();
            Box::pin(async move {
                if s == step {
                    frozen.notify_one();
                    std::future::pending::<()>().await;
                }
            })
        })),
        ..Default::default()
    }
}

/// Every saga completed once: one client, user, saga and completion per command, and two
/// Xendit customers each (here and at Xendit).
async fn each_completed_once(app: &mut TestApp, ids: &[String], xendit: &XenditResponder) {
    let mut completions = Vec::new();
    for id in ids {
        let done = app
            .wait_for_event("client.onboarding_completed", Some(id))
            .await;
        completions.push(done.message_id.clone());
    }
    // Every delivery counts: a second copy under the same id too.
    let rest = app.settled_events().await;
    for r in rest
        .iter()
        .filter(|r| r.routing_key == "client.onboarding_completed")
    {
        completions.push(r.message_id.clone());
    }
    assert_eq!(completions.len(), ids.len(), "one completion per saga");
    let n = ids.len() as i64;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, n);
    assert_eq!(app.count("SELECT count(*) FROM users").await, n);
    assert_eq!(
        app.count("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'")
            .await,
        n
    );
    assert_eq!(
        app.count("SELECT count(*) FROM xendit_customers").await,
        2 * n
    );
    assert_eq!(xendit.customers().len(), 2 * ids.len());
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT'")
            .await,
        n
    );
}

#[tokio::test]
async fn a_worker_killed_between_two_saga_steps_leaves_them_to_the_next_one_which_finishes_once() {
    let (mut settings, database) = test_settings().await;
    let xendit = XenditResponder::default();
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let frozen = Arc::new(Notify::new());
    let mut app = spawn_app_with(
        settings,
        database,
        freeze_before(Step::WelcomeEmail, frozen.clone()),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut body = seed_id_client();
        body["email"] = json!(format!("between{i}@example.co.id"));
        ids.push(app.create_client(&body).await);
    }
    tokio::time::timeout(WAIT, frozen.notified())
        .await
        .expect("the Xendit step ran and the email step is next");
    // The commands may have come in more than one batch: wait for every saga to be there.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app
        .count("SELECT count(*) FROM onboarding_sagas WHERE step = 'welcome_email' AND status = 'waiting'")
        .await
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every saga between the two steps"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs").await,
        0,
        "no email went out"
    );
    app.kill_worker().await;

    app.start_worker(None).await;
    each_completed_once(&mut app, &ids, &xendit).await;
    app.finish().await;
}

#[tokio::test]
async fn a_second_workers_sweeper_finishes_the_sagas_of_one_killed_between_steps() {
    let (mut settings, database) = test_settings().await;
    let xendit = XenditResponder::default();
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let frozen = Arc::new(Notify::new());
    let mut app = spawn_app_with(
        settings.clone(),
        database,
        freeze_before(Step::WelcomeEmail, frozen.clone()),
    )
    .await;
    let mut body = seed_id_client();
    body["email"] = json!("swept@example.co.id");
    let id = app.create_client(&body).await;
    tokio::time::timeout(WAIT, frozen.notified())
        .await
        .expect("between the two steps");
    // The second worker starts after the first took the command, then the first dies.
    let second = onboard::worker::Worker::start(settings, Hooks::default())
        .await
        .unwrap();
    app.kill_worker().await;
    each_completed_once(&mut app, std::slice::from_ref(&id), &xendit).await;
    second.stop().await.unwrap();
    app.finish().await;
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    let (settings, database) = test_settings().await;
    let frozen = Arc::new(Notify::new());
    let hooks = Hooks {
        before_batch_commit: Some(freeze(frozen.clone())),
        ..Default::default()
    };
    let mut app = spawn_app_with(settings, database, hooks).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.create_client(&client_with_email(&format!("mid{i}@example.com")))
                .await,
        );
    }
    tokio::time::timeout(WAIT, frozen.notified())
        .await
        .expect("a batch reached its commit");
    assert_eq!(
        app.count("SELECT count(*) FROM clients").await,
        0,
        "nothing committed"
    );
    app.kill_worker().await;

    app.start_worker(None).await;
    for id in &ids {
        app.wait_for_event("client.onboarding_completed", Some(id))
            .await;
    }
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 5);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 5);
    assert_eq!(
        app.count("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'")
            .await,
        5
    );
    let prefix = app.code_prefix().await;
    let codes: Vec<String> = sqlx::query_scalar("SELECT client_code FROM clients ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let expected: Vec<String> = (1..=5).map(|n| format!("{prefix}{n:04}")).collect();
    assert_eq!(codes, expected, "the killed batch gave its numbers back");
    app.finish().await;
}

/// What the worker asks when the answer to a batch's COMMIT was lost with its connection:
/// PostgreSQL's own record of the transaction, committed, aborted or still open.
#[tokio::test]
async fn the_database_tells_whether_a_transaction_committed_after_its_answer_was_lost() {
    use onboard::store::txid_committed;
    use onboard::store::uow::UnitOfWork;
    let app = spawn_app().await;
    let mut committed = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let xid = committed.txid().await.unwrap();
    committed.commit().await.unwrap();
    assert_eq!(txid_committed(&app.pool, xid).await.unwrap(), Some(true));

    let mut aborted = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let xid = aborted.txid().await.unwrap();
    aborted.rollback().await.unwrap();
    assert_eq!(txid_committed(&app.pool, xid).await.unwrap(), Some(false));

    // One that claimed commands has its id from the claim's own statement: the same.
    let mut claimed = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let fresh = claimed
        .claim(&[onboard::store::inbox::Claim {
            message_id: "txid-from-the-claim",
            command_type: "client.create",
            correlation_id: "txid-from-the-claim",
            body_sha256: &[0; 32],
        }])
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    let xid = claimed.txid().await.unwrap();
    let asked: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(claimed.conn())
        .await
        .unwrap();
    assert_eq!(xid, asked);
    claimed.commit().await.unwrap();
    assert_eq!(txid_committed(&app.pool, xid).await.unwrap(), Some(true));

    let mut open = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let xid = open.txid().await.unwrap();
    assert_eq!(
        txid_committed(&app.pool, xid).await.unwrap(),
        None,
        "still in progress: not known yet"
    );
    open.rollback().await.unwrap();
    app.finish().await;
}

/// Item 3 of issue 20: a command decided on its own runs in a savepoint of its own. One whose
/// handler fails after its first write (here the approval's status is written, then its
/// history row is refused, SQLSTATE 23514) leaves no row behind, and its neighbours commit in
/// the same transaction: none of them runs twice.
#[tokio::test]
async fn a_command_that_fails_after_its_first_write_leaves_nothing_and_its_neighbours_commit_once()
{
    let (mut settings, database) = test_settings().await;
    settings.worker.batch_linger_ms = 500;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let made = arrange::clients(&mut app, "approve", 3).await;
    for m in &made {
        arrange::set_state(&app, m.client_id, "PENDING", "APPROVED").await;
    }
    app.stop_worker().await;
    arrange::refuse_rows(&app, "client_status_history", "NEW.reason = 'poison'").await;
    let mut ids = Vec::new();
    for (m, reason) in made.iter().zip(["fine", "poison", "fine"]) {
        let body = json!({ "client_id": m.client_id, "reason": reason });
        ids.push(
            app.publish(Msg::json("client.approve", &body))
                .await
                .unwrap(),
        );
    }
    let commits: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = commits.clone();
    app.start_worker(Some(Hooks {
        before_batch_commit: Some(Arc::new(move |n| {
            seen.lock().unwrap().push(n);
            Box::pin(async {})
        })),
        ..Default::default()
    }))
    .await;

    let failed = app.wait_for_any(&["command.failed"], &ids[1]).await;
    assert!(
        failed.body["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("SQLSTATE 23514"),
        "{}",
        failed.body
    );
    app.wait_for_event("client.approved", Some(&ids[0])).await;
    app.wait_for_event("client.approved", Some(&ids[2])).await;
    let status = |id: i32| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT client_status FROM clients WHERE client_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Its status was written before the history failed: rolled back with its savepoint.
    assert_eq!(status(made[1].client_id).await, "PENDING");
    assert_eq!(status(made[0].client_id).await, "APPROVED");
    assert_eq!(status(made[2].client_id).await, "APPROVED");
    assert_eq!(
        app.count("SELECT count(*) FROM client_status_history")
            .await,
        2
    );
    // One transaction decided all three; nobody was run again one by one.
    assert_eq!(*commits.lock().unwrap(), vec![3]);
    app.finish().await;
}

/// Item 3 of issue 20: the clients a batch changes are locked in client-id order before any
/// command decides. Two batches changing clients A and B in opposite orders (the first frozen
/// between its two commands, the second started meanwhile) do not deadlock: the second waits
/// for the first's clients up front and goes on when it commits.
#[tokio::test]
async fn two_batches_changing_the_same_clients_in_opposite_orders_never_deadlock() {
    let (mut settings, database) = test_settings().await;
    settings.worker.batch_linger_ms = 300;
    settings.worker.batch_size = 2;
    settings.worker.batches_in_flight = 2;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let a = arrange::client(&mut app, "a@example.com").await.client_id;
    let b = arrange::client(&mut app, "b@example.com").await.client_id;
    assert!(a < b);
    app.stop_worker().await;

    let update = |client_id: i32, alias: &str| {
        Msg::json(
            "client.update",
            &json!({ "client_id": client_id, "client_alias": alias }),
        )
    };
    // The first batch: A, then B; frozen before B until released.
    let second_of_first = uuid::Uuid::new_v4().to_string();
    let frozen = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (f, r, watched) = (frozen.clone(), release.clone(), second_of_first.clone());
    let hooks = Hooks {
        before_command: Some(Arc::new(move |meta: onboard::messages::CommandMeta| {
            let (f, r, watched) = (f.clone(), r.clone(), watched.clone());
            Box::pin(async move {
                if meta.message_id == watched {
                    f.notify_one();
                    r.notified().await;
                }
            })
        })),
        ..Default::default()
    };
    let x1 = app.publish(update(a, "A one")).await.unwrap();
    let mut x2 = update(b, "B one");
    x2.message_id = Some(second_of_first.clone());
    app.publish(x2).await;
    app.start_worker(Some(hooks)).await;
    tokio::time::timeout(WAIT, frozen.notified())
        .await
        .expect("the first batch reached its second command");

    // The second batch: B, then A.
    let y1 = app.publish(update(b, "B two")).await.unwrap();
    let y2 = app.publish(update(a, "A two")).await.unwrap();
    app.wait_for_a_lock_wait("the second batch").await;
    release.notify_one();

    for id in [&x1, &second_of_first, &y1, &y2] {
        app.wait_for_event("client.updated", Some(id)).await;
    }
    assert_eq!(metric(&app, "onboard_batch_deadlocks_total").await, 0.0);
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM clients WHERE client_id = ANY($1) ORDER BY 1")
            .bind([a, b])
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![2, 2]);
    app.finish().await;
}
