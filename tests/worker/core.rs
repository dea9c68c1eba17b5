//! The core (issue 9): the inbox comes first, only transient failures are retried, a batch's
//! commands do not share each other's fate, and sagas survive a worker killed between steps
//! or mid-batch.

use std::collections::HashSet;
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
    // The batch of eight failed on the poison; run one by one, seven committed.
    assert_eq!(*commits.lock().unwrap(), vec![1; 7]);

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
    let mut completions = HashSet::new();
    for id in ids {
        let done = app
            .wait_for_event("client.onboarding_completed", Some(id))
            .await;
        completions.insert(done.message_id.clone());
    }
    let rest = app.drain_events(Duration::from_millis(700)).await;
    for r in rest
        .iter()
        .filter(|r| r.routing_key == "client.onboarding_completed")
    {
        completions.insert(r.message_id.clone());
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
    use onboard::uow::UnitOfWork;
    let app = spawn_app().await;
    let mut committed = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let xid = committed.txid().await.unwrap();
    committed.commit().await.unwrap();
    assert_eq!(txid_committed(&app.pool, xid).await.unwrap(), Some(true));

    let mut aborted = UnitOfWork::begin(&app.pool, None).await.unwrap();
    let xid = aborted.txid().await.unwrap();
    aborted.rollback().await.unwrap();
    assert_eq!(txid_committed(&app.pool, xid).await.unwrap(), Some(false));

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
