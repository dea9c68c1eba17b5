//! The create-client saga after persist: Xendit customers, the welcome email, completion.

use std::sync::Arc;
use std::time::Duration;

use onboard::worker::{Disposition, Hooks};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::support::*;

const COMPLETED: &str = "client.onboarding_completed";

/// Undoes quoted-printable soft breaks and escapes, enough to read our own `.eml` files.
fn unfold(eml: &str) -> String {
    let joined = eml.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The activation token in a raw `.eml` file.
fn token_in(email: &str) -> String {
    token_in_text(&unfold(email))
}

/// The activation token in already-unfolded text (unfolding twice would decode `=XY` in the
/// token itself).
fn token_in_text(text: &str) -> String {
    let at = text.find("/activate?token=").expect("an activation link") + "/activate?token=".len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn an_indonesian_client_gets_two_xendit_customers_one_email_and_the_seed_response() {
    let (mut settings, database) = test_settings().await;
    let xendit = XenditResponder::default();
    let server = mock_xendit(&mut settings, xendit.clone()).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let replies = app.reply_queue().await;
    let mut msg = Msg::json("client.create", &seed_id_client());
    msg.reply_to = Some(replies.clone());
    let id = app.publish(msg).await.unwrap();

    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    let created = app
        .wait_for_event("client.xendit_customers_created", Some(&id))
        .await;
    app.wait_for_event("client.welcome_email_sent", Some(&id))
        .await;

    // Exactly two calls, with Xendit's auth and headers, and the right bodies.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let expected_auth = format!("Basic {}", base64_of(&format!("{XENDIT_KEY}:")));
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").unwrap().to_str().unwrap(),
            expected_auth
        );
        assert_eq!(
            r.headers.get("api-version").unwrap().to_str().unwrap(),
            "2020-10-31"
        );
        assert!(!r.headers.get("idempotency-key").unwrap().is_empty());
    }
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let business = bodies
        .iter()
        .find(|b| b["type"] == "BUSINESS")
        .expect("a BUSINESS customer");
    let individual = bodies
        .iter()
        .find(|b| b["type"] == "INDIVIDUAL")
        .expect("an INDIVIDUAL customer");
    assert_eq!(
        business["business_detail"]["business_name"],
        json!("Tech Company Ltd")
    );
    assert_eq!(
        business["business_detail"]["business_type"],
        json!("CORPORATION")
    );
    assert_eq!(business["email"], json!("admin@company.com"));
    assert_eq!(business["mobile_number"], json!("+628123456789"));
    assert_eq!(
        individual["individual_detail"]["given_names"],
        json!("Tech Company Ltd")
    );
    assert_ne!(business["reference_id"], individual["reference_id"]);

    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers WHERE customer_type = 'BUSINESS' AND client_id IS NOT NULL").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers WHERE customer_type = 'INDIVIDUAL' AND user_id IS NOT NULL").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT' AND subject = 'Your AOL Core Admin Account'").await, 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM onboarding_sagas WHERE status = 'completed' AND step = 'done'"
        )
        .await,
        1
    );

    // One email with a working activation link; the database keeps only its hash.
    let mails = emails(&app.settings);
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .lines()
            .any(|l| l.starts_with("To:") && l.contains("<admin@company.com>")),
        "{}",
        mails[0]
    );
    let token = token_in(&mails[0]);
    let stored: String = sqlx::query_scalar("SELECT activation_token_sha256 FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, hex::encode(Sha256::digest(token.as_bytes())));

    // The completion carries the seed's response, Xendit part included.
    let body = &done.body["data"];
    assert_eq!(
        body["message"],
        json!(
            "Client & Admin successfully created! Admin must complete KYC before being able to use the account."
        )
    );
    assert_eq!(body["client"]["psp_id"], json!(11));
    assert_eq!(body["admin_user"]["role"], json!("admin"));
    assert_eq!(body["ekyc_status"], json!("PENDING"));
    let x = &body["xendit_integration"];
    assert_eq!(x["psp_provider"], json!("XENDIT"));
    assert_eq!(x["business_customer"]["status"], json!("success"));
    assert_eq!(x["business_customer"]["customer_type"], json!("BUSINESS"));
    assert!(
        x["business_customer"]["customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cust-")
    );
    assert_eq!(x["admin_customer"]["status"], json!("success"));
    assert_eq!(x["admin_customer"]["customer_type"], json!("INDIVIDUAL"));
    assert_eq!(
        created.body["data"]["business_customer"],
        x["business_customer"]
    );

    // And the reply is that body, sent once the saga completed.
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.headers.get("status"), Some(&json!(201)));
    assert_eq!(reply.body["xendit_integration"], *x);
    assert_eq!(reply.body["client"], body["client"]);
    app.finish().await;
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_singaporean_client_makes_no_xendit_call_and_still_completes() {
    let (mut settings, database) = test_settings().await;
    let server = mock_xendit(&mut settings, XenditResponder::default()).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_sg_client()).await;
    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    assert!(
        done.body["data"].get("xendit_integration").is_none(),
        "{}",
        done.body
    );
    assert_eq!(done.body["data"]["client"]["psp_id"], json!(2));
    assert_eq!(done.body["data"]["welcome_email"]["status"], json!("SENT"));
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 0);
    assert_eq!(emails(&app.settings).len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn xendit_answering_503_twice_then_200_gives_one_customer_of_each_type() {
    let (mut settings, database) = test_settings().await;
    settings.saga.xendit_max_attempts = 5;
    settings.retry.max_attempts = 5;
    let xendit = XenditResponder {
        fail_first: 2,
        ..Default::default()
    };
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_id_client()).await;
    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    assert_eq!(
        done.body["data"]["xendit_integration"]["business_customer"]["status"],
        json!("success")
    );
    assert_eq!(
        done.body["data"]["xendit_integration"]["admin_customer"]["status"],
        json!("success")
    );
    assert_eq!(xendit.calls("BUSINESS"), 3);
    assert_eq!(xendit.calls("INDIVIDUAL"), 3);
    assert_eq!(xendit.customers().len(), 2);
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 2);
    // The two failed rounds waited in the saga row (due later), not in the delay queues: the
    // command itself was handled once.
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    assert_eq!(app.settled.for_message(&id), vec![Disposition::Handled]);
    app.finish().await;
}

#[tokio::test]
async fn xendit_down_for_good_is_recorded_and_reported_and_the_onboarding_completes() {
    let (mut settings, database) = test_settings().await;
    let xendit = XenditResponder {
        always_fail: true,
        ..Default::default()
    };
    let _server = mock_xendit(&mut settings, xendit.clone()).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_id_client()).await;

    let failed = app.wait_for_event("client.xendit_failed", Some(&id)).await;
    assert_eq!(
        failed.body["data"]["business_customer"]["status"],
        json!("failed")
    );
    assert_eq!(failed.body["data"]["attempts"], json!(3));
    assert!(
        failed.body["data"]["business_customer"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    assert_eq!(
        done.body["data"]["xendit_integration"]["admin_customer"]["status"],
        json!("failed")
    );
    assert_eq!(done.body["data"]["welcome_email"]["status"], json!("SENT"));

    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT'")
            .await,
        1
    );
    let recorded: Value =
        sqlx::query_scalar("SELECT data->'xendit_integration' FROM onboarding_sagas")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(recorded["business_customer"]["status"], json!("failed"));
    assert_eq!(
        xendit.calls("BUSINESS"),
        3,
        "one call per attempt of the step"
    );
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_worker_killed_after_xendit_answered_creates_no_second_customer_after_restart() {
    let (mut settings, database) = test_settings().await;
    // Our local fake of Xendit remembers idempotency keys and references, like Xendit.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(Notify::new());
    let stop_fake = stop.clone();
    tokio::spawn(onboard::xendit::fake::serve(
        listener,
        Default::default(),
        async move { stop_fake.notified().await },
    ));
    let mut x = onboard::xendit::XenditSettings::new(
        fake_url.clone(),
        secrecy::SecretString::from(XENDIT_KEY),
    );
    x.max_attempts = 1;
    settings.xendit = Some(x);

    let answered = Arc::new(Notify::new());
    let hooks = Hooks {
        after_xendit_answered: Some(freeze(answered.clone())),
        ..Default::default()
    };
    let mut app = spawn_app_with(settings, database, hooks).await;
    let id = app.create_client(&seed_id_client()).await;
    tokio::time::timeout(WAIT, answered.notified())
        .await
        .expect("Xendit answered");
    assert_eq!(
        app.count("SELECT count(*) FROM xendit_customers").await,
        0,
        "not stored yet"
    );
    app.kill_worker().await;

    app.start_worker(None).await;
    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    assert_eq!(
        done.body["data"]["xendit_integration"]["business_customer"]["status"],
        json!("success")
    );
    let at_xendit: Vec<Value> = reqwest::get(format!("{fake_url}/_fake/customers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        at_xendit.len(),
        2,
        "Xendit holds exactly one customer of each type: {at_xendit:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM xendit_customers").await, 2);
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT xendit_customer_id FROM xendit_customers ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut remote: Vec<String> = at_xendit
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    remote.sort();
    assert_eq!(stored, remote);
    stop.notify_one();
    app.finish().await;
}

#[tokio::test]
async fn smtp_refusing_connections_is_retried_then_logged_failed_reported_and_completed() {
    let (mut settings, database) = test_settings().await;
    // A port where nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut smtp = onboard::email::SmtpSettings::new("127.0.0.1", port);
    smtp.tls = onboard::email::SmtpTls::None;
    settings.email.smtp = Some(smtp);
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_sg_client()).await;

    let failed = app
        .wait_for_event("client.welcome_email_failed", Some(&id))
        .await;
    assert_eq!(failed.body["data"]["attempts"], json!(3));
    let done = app.wait_for_event(COMPLETED, Some(&id)).await;
    assert_eq!(
        done.body["data"]["welcome_email"]["status"],
        json!("FAILED")
    );
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'FAILED'")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT count(*) FROM client_email_logs WHERE status = 'SENT'")
            .await,
        0
    );
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempt FROM client_email_logs ORDER BY attempt")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(
        app.count("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed'")
            .await,
        1
    );
    // Retried from the saga row by the sweeper, not through the delay queues.
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    app.finish().await;
}

#[tokio::test]
async fn no_secret_reaches_the_outbox_an_event_a_reply_or_a_log() {
    capture_logs();
    for access in [
        onboard::email::AccessMode::ActivationLink,
        onboard::email::AccessMode::TemporaryPassword,
    ] {
        let (mut settings, database) = test_settings().await;
        settings.email.access = access;
        let _server = mock_xendit(&mut settings, XenditResponder::default()).await;
        let mut app = spawn_app_with(settings, database, Hooks::default()).await;
        let replies = app.reply_queue().await;
        let mut msg = Msg::json("client.create", &seed_id_client());
        msg.reply_to = Some(replies.clone());
        let id = app.publish(msg).await.unwrap();
        app.wait_for_event(COMPLETED, Some(&id)).await;
        let reply = app.take_from(&replies).await;
        let events = app.settled_events().await;

        // The secret the admin got, read from the email itself.
        let mail = unfold(&emails(&app.settings)[0]);
        let secret = match access {
            onboard::email::AccessMode::ActivationLink => token_in_text(&mail),
            onboard::email::AccessMode::TemporaryPassword => {
                let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
                mail.split_whitespace()
                    .find(|w| w.len() >= 16 && onboard::email::verify_password(w, &hash))
                    .expect("the temporary password is in the email and matches the stored hash")
                    .to_string()
            }
        };
        assert!(secret.len() >= 16, "{secret}");

        let outbox: Vec<String> =
            sqlx::query_scalar("SELECT payload::text || headers::text FROM outbox")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert!(outbox.len() >= 5, "{outbox:?}");
        let users: String = sqlx::query_scalar("SELECT row_to_json(u)::text FROM users u")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let mut haystacks = outbox;
        haystacks.push(String::from_utf8_lossy(&reply.raw).to_string());
        haystacks.extend(
            events
                .iter()
                .map(|e| String::from_utf8_lossy(&e.raw).to_string()),
        );
        haystacks.push(captured_logs());
        for (i, h) in haystacks.iter().enumerate() {
            assert!(
                !h.contains(&secret),
                "the admin's secret leaked into #{i}: {h}"
            );
            assert!(!h.contains(XENDIT_KEY), "the Xendit key leaked into #{i}");
        }
        assert!(
            !users.contains(&secret),
            "the users row holds the secret itself"
        );
        assert!(
            captured_logs().contains(&id),
            "logs were captured and mention the command"
        );
        app.finish().await;
    }
}

/// Issue 12: the worker that takes a saga over after a crash sends the same activation link
/// the first one stored: the secret is derived from the saga, not drawn again, so the stored
/// hash is never overwritten and an email sent twice still works.
#[tokio::test]
async fn a_saga_taken_over_after_a_crash_sends_the_link_whose_hash_was_stored_first() {
    use onboard::domain::saga::Step;

    let frozen = Arc::new(Notify::new());
    let ring = frozen.clone();
    let hooks = Hooks {
        before_step: Some(Arc::new(move |s| {
            let ring = ring.clone();
            Box::pin(async move {
                if s == Step::WelcomeEmail {
                    ring.notify_one();
                    std::future::pending::<()>().await;
                }
            })
        })),
        ..Default::default()
    };
    let (settings, database) = test_settings().await;
    let mut app = spawn_app_with(settings, database, hooks).await;
    let id = app.create_client(&seed_sg_client()).await;
    tokio::time::timeout(WAIT, frozen.notified())
        .await
        .expect("the email step is next");
    let stored: String = sqlx::query_scalar(
        "SELECT activation_token_sha256 FROM users WHERE email = 'admin@sgcompany.com'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(emails(&app.settings).is_empty(), "no email yet");
    // Crash: the token in the first worker's memory is gone with it.
    app.kill_worker().await;

    app.start_worker(None).await;
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    let sent = emails(&app.settings);
    assert_eq!(sent.len(), 1);
    let token = token_in(&sent[0]);
    assert_eq!(hex::encode(Sha256::digest(token.as_bytes())), stored);
    let after: String = sqlx::query_scalar(
        "SELECT activation_token_sha256 FROM users WHERE email = 'admin@sgcompany.com'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(after, stored, "the stored hash was not replaced");
    app.finish().await;
}

/// Issue 12, item 8: a hung Xendit holds only the Xendit step. With every Indonesian
/// onboarding stuck in its Xendit call (the fake answers after a minute) and one step batch
/// in flight per step, new clients are still created, lifecycle commands still decided, and
/// the Singaporean onboardings (no Xendit step) still get their welcome email and complete.
#[tokio::test]
async fn a_hung_xendit_does_not_hold_back_creates_or_lifecycle_commands() {
    use secrecy::SecretString;
    let (mut settings, database) = test_settings().await;
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/customers"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(60))
                .set_body_json(json!({"id": "never"})),
        )
        .mount(&server)
        .await;
    let mut x = onboard::xendit::XenditSettings::new(server.uri(), SecretString::from(XENDIT_KEY));
    x.max_attempts = 1;
    x.timeout_ms = 120_000;
    settings.xendit = Some(x);
    settings.saga.steps_in_flight = 1;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;

    let mut hung = Vec::new();
    for i in 0..20 {
        let mut body = seed_id_client();
        body["email"] = json!(format!("hung{i}@example.co.id"));
        hung.push(app.create_client(&body).await);
    }
    for id in &hung {
        app.wait_for_event("client.created", Some(id)).await;
    }
    // Every Xendit call is hanging now.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Xendit call started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut later = Vec::new();
    for i in 0..5 {
        later.push(
            app.create_client(&client_with_email(&format!("later{i}@example.com")))
                .await,
        );
    }
    let mut created = Vec::new();
    for id in &later {
        let c = app.wait_for_event("client.created", Some(id)).await;
        created.push(c.body["data"]["client"]["client_id"].as_i64().unwrap() as i32);
    }
    sqlx::query("UPDATE clients SET ekyc_status = 'APPROVED' WHERE client_id = $1")
        .bind(created[0])
        .execute(&app.pool)
        .await
        .unwrap();
    let approve = app
        .publish(Msg::json(
            "client.approve",
            &json!({"client_id": created[0]}),
        ))
        .await
        .unwrap();
    app.wait_for_event("client.approved", Some(&approve)).await;
    for id in &later {
        app.wait_for_event("client.onboarding_completed", Some(id))
            .await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM onboarding_sagas WHERE status = 'completed' AND client_id IN (SELECT client_id FROM clients WHERE country_code = 'ID')")
            .await,
        0,
        "the Indonesian onboardings are still waiting on Xendit"
    );
    app.kill_worker().await;
    app.finish().await;
}

/// Under a steady load `client.create` batches are small, and each step batch costs its
/// statements whatever its size: the sagas of a batch smaller than a full one wait
/// (`saga.step_linger_ms`) for the next batches' and take their first step together, and a
/// gathering that reaches a full batch runs at once. Here a full batch is two commands and the
/// linger ten minutes: the two sagas can only have completed within the test's wait by
/// running as one step batch once the second joined the first.
#[tokio::test]
async fn the_sagas_of_small_create_batches_take_their_first_step_together() {
    use onboard::domain::saga::Step;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let email_steps = Arc::new(AtomicUsize::new(0));
    let counted = email_steps.clone();
    let hooks = Hooks {
        before_step: Some(Arc::new(move |s| {
            if s == Step::WelcomeEmail {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Box::pin(async {})
        })),
        ..Default::default()
    };
    let (mut settings, database) = test_settings().await;
    settings.worker.batch_size = 2;
    settings.saga.step_linger_ms = 600_000;
    let mut app = spawn_app_with(settings, database, hooks).await;
    let first = app.create_client(&seed_sg_client()).await;
    // Its create batch committed alone; the second command is published only now, so it
    // comes in another batch.
    app.wait_for_event("client.created", Some(&first)).await;
    let mut body = seed_sg_client();
    body["email"] = json!("second@sgcompany.com");
    let second = app.create_client(&body).await;
    app.wait_for_event("client.onboarding_completed", Some(&first))
        .await;
    app.wait_for_event("client.onboarding_completed", Some(&second))
        .await;
    assert_eq!(
        email_steps.load(Ordering::SeqCst),
        1,
        "one welcome-email step batch for the sagas of both create batches"
    );
    app.finish().await;
}
