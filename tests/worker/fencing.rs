//! A saga step runs once, however long it waited: fenced leases and claimed sends.
//!
//! The races are made to happen: a step frozen mid-run (a barrier, as crates.io's worker
//! tests freeze a job) until its lease ran out and the worker's own sweeper claimed the saga
//! again, then let go; and a load whose outside calls outlast the lease many times over.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use onboard::worker::Hooks;
use tokio::sync::Notify;

use crate::smtp_sink::{SinkScript, SmtpSink};
use crate::support::*;

/// A seam that freezes the first `frozen.len()` runs that reach it, each until its release:
/// run `i` rings `reached[i]` and waits for `release[i]`; later runs pass.
struct Barrier {
    runs: AtomicUsize,
    reached: Vec<Notify>,
    release: Vec<Notify>,
}

impl Barrier {
    fn new(frozen: usize) -> Arc<Barrier> {
        Arc::new(Barrier {
            runs: AtomicUsize::new(0),
            reached: (0..frozen).map(|_| Notify::new()).collect(),
            release: (0..frozen).map(|_| Notify::new()).collect(),
        })
    }

    fn seam<T: 'static>(self: &Arc<Self>) -> onboard::observe::Seam<T> {
        let barrier = self.clone();
        Arc::new(move |_: T| {
            let barrier = barrier.clone();
            Box::pin(async move {
                let run = barrier.runs.fetch_add(1, Ordering::SeqCst);
                if run < barrier.reached.len() {
                    barrier.reached[run].notify_one();
                    barrier.release[run].notified().await;
                }
            })
        })
    }

    async fn reached(&self, run: usize) {
        tokio::time::timeout(WAIT, self.reached[run].notified())
            .await
            .unwrap_or_else(|_| panic!("run {run} never reached the barrier"));
    }

    fn release(&self, run: usize) {
        self.release[run].notify_one();
    }
}

/// `(lease_epoch, step, send_claim_epoch)` of the only saga.
async fn saga_row(app: &TestApp) -> (i64, String, Option<i64>) {
    sqlx::query_as("SELECT lease_epoch, step, send_claim_epoch FROM onboarding_sagas")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stale_copy_of_the_xendit_step_writes_nothing_once_its_saga_was_claimed_again() {
    let (mut settings, database) = test_settings().await;
    settings.saga.lease_seconds = 2;
    let xendit = XenditResponder::default();
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let barrier = Barrier::new(2);
    let hooks = Hooks {
        after_xendit_answered: Some(barrier.seam()),
        ..Default::default()
    };
    let mut app = spawn_app_with(settings, database, hooks).await;
    let id = app.create_client(&seed_id_client()).await;

    // The first copy has Xendit's answers and stops before recording them, for longer than
    // its lease: the worker's own sweeper claims the saga again and runs the step anew.
    barrier.reached(0).await;
    barrier.reached(1).await;
    assert_eq!(saga_row(&app).await, (2, "xendit".into(), None));

    // The stale copy goes on: every write it makes names epoch 1, so none lands.
    barrier.release(0);
    wait_for_metric(&app, r#"onboard_saga_fenced_total{step="xendit"}"#, 1.0).await;
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE message_type LIKE 'client.xendit%'")
            .await,
        0,
        "the stale copy announced its result"
    );
    assert_eq!(saga_row(&app).await, (2, "xendit".into(), None));

    // The holder records, once; the saga goes on to one email.
    barrier.release(1);
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    app.stop_worker().await;
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 2);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox WHERE message_type = 'client.xendit_customers_created'"
        )
        .await,
        1
    );
    assert_eq!(emails(&app.settings).len(), 1);
    // Both copies asked, with the same idempotency keys: two customers at Xendit, not four.
    assert_eq!(xendit.customers().len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn a_send_claimed_under_one_lease_is_not_made_by_the_next_holder() {
    let (mut settings, database) = test_settings().await;
    settings.saga.lease_seconds = 2;
    let barrier = Barrier::new(1);
    let hooks = Hooks {
        after_send_claim: Some(barrier.seam()),
        ..Default::default()
    };
    let mut app = spawn_app_with(settings, database, hooks).await;
    let id = app.create_client(&seed_sg_client()).await;

    // The first copy claimed the send (with the saga's insert) and stalls before sending,
    // past its lease. The sweeper claims the saga again; that copy finds the send claimed,
    // live, and stands back: it gives its lease back (a new epoch) and sends nothing.
    barrier.reached(0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (epoch, step, claim) = saga_row(&app).await;
        if epoch >= 3 {
            assert_eq!((step.as_str(), claim), ("welcome_email", Some(1)));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the saga was never claimed again (epoch {epoch})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(emails(&app.settings).is_empty(), "the second holder sent");

    // The claim's holder sends and records it, although its lease moved on.
    barrier.release(0);
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    app.stop_worker().await;
    assert_eq!(emails(&app.settings).len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE message_type = 'client.welcome_email_sent'")
            .await,
        1
    );
    app.finish().await;
}

/// The issue's case, tried as a new user would: an SMTP server taking a second per message,
/// Xendit answering after 1.5 s, a 2 s lease, and a few hundred Indonesian onboardings queued.
/// Before fenced leases and claimed sends, over a third of the clients got two emails.
#[tokio::test]
async fn with_slow_smtp_and_slow_xendit_and_a_short_lease_every_client_gets_exactly_one_email() {
    const CLIENTS: usize = 200;
    let (mut settings, database) = test_settings().await;
    settings.saga.lease_seconds = 2;
    let sink = SmtpSink::start(SinkScript {
        per_message: Duration::from_secs(1),
        ..SinkScript::default()
    })
    .await;
    let mut smtp = sink.settings();
    smtp.pool_max_size = 32.try_into().unwrap();
    settings.email.smtp = Some(smtp);
    let xendit = XenditResponder {
        delay: Duration::from_millis(1_500),
        ..Default::default()
    };
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let mut ids = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut body = seed_id_client();
        body["email"] = format!("admin-{i}@slow.example").into();
        ids.push(app.create_client(&body).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while app
        .count("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'")
        .await
        < CLIENTS as i64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "onboardings not done in 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing runs after the worker stopped: a late second send would be counted below.
    app.stop_worker().await;

    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for mail in sink.received() {
        for to in mail.rcpt_to {
            *per_recipient.entry(to).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "clients emailed more than once: {twice:?}"
    );
    assert_eq!(per_recipient.len(), CLIENTS, "every client got its email");
    // Each customer asked for once: nothing failed, so one attempt each.
    let calls = xendit.calls_by_key();
    assert_eq!(calls.len(), CLIENTS * 2);
    let again: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(again.is_empty(), "customers asked for twice: {again:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT'")
            .await,
        CLIENTS as i64
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE message_type = 'client.welcome_email_sent'")
            .await,
        CLIENTS as i64
    );
    app.finish().await;
}
