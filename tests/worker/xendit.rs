//! Xendit as it really answers (issue 21), through the worker against the in-repo fake, which
//! validates as Xendit does: names and phones Xendit would refuse still get their customers,
//! sparse answers and a lost answer are recovered (one customer each, never recorded as
//! failed), a refused key waits loudly, and a rate limit never uses up a saga's attempts.

use onboard::configuration::Settings;
use onboard::worker::Hooks;
use onboard::xendit::fake::{self, FakeSettings, FakeState};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::*;

/// The fake on a port of its own, and settings pointing the worker at it with `key`.
async fn fake_xendit(settings: &mut Settings, state: FakeState, key: &str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake::router(state)).await });
    let mut x = onboard::xendit::XenditSettings::new(url, SecretString::from(key.to_string()));
    x.timeout_ms = 2_000;
    x.min_backoff_ms = 10;
    x.max_backoff_ms = 50;
    x.max_rate_limit_wait_ms = 100;
    settings.xendit = Some(x);
}

/// An Indonesian client whose alias and phone are as upstream writes them.
fn maju() -> Value {
    let mut body = seed_id_client();
    body["client_alias"] = json!("PT. Maju & Co.");
    body["phone"] = json!("+62 812-3456-7890");
    body
}

/// The Xendit step's outcome for `id`, which must be its customers created (not failed).
async fn customers_created(app: &mut TestApp, id: &str) -> Received {
    let outcome = app
        .wait_for_any(
            &["client.xendit_customers_created", "client.xendit_failed"],
            id,
        )
        .await;
    assert_eq!(
        outcome.kind.as_deref(),
        Some("client.xendit_customers_created"),
        "{}",
        outcome.body
    );
    outcome
}

async fn saga_row(app: &TestApp, correlation: &str) -> (String, i32, Option<String>) {
    sqlx::query_as(
        "SELECT step, attempts, last_error FROM onboarding_sagas WHERE correlation_id = $1",
    )
    .bind(correlation)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn names_and_phones_xendit_would_refuse_get_customers_and_sparse_or_lost_answers_are_recovered()
 {
    let (mut settings, database) = test_settings().await;
    let state = FakeState::new(FakeSettings {
        sparse_answers: true,
        lose_next_answers: 1,
        ..FakeSettings::default()
    });
    fake_xendit(&mut settings, state.clone(), XENDIT_KEY).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&maju()).await;
    let created = customers_created(&mut app, &id).await;
    // One customer of each, though the first answer was lost.
    let customers = state.customers();
    assert_eq!(customers.len(), 2, "{customers:?}");
    let individual = customers
        .iter()
        .find(|c| c["type"] == "INDIVIDUAL")
        .unwrap();
    assert_eq!(
        individual["individual_detail"]["given_names"],
        json!("PT Maju Co")
    );
    assert_eq!(individual["mobile_number"], json!("+6281234567890"));
    // The key's mode is in every reference.
    for c in &customers {
        assert!(
            c["reference_id"]
                .as_str()
                .unwrap()
                .contains("-development-"),
            "{c}"
        );
    }
    let data = &created.body["data"];
    for side in ["business_customer", "admin_customer"] {
        assert_eq!(data[side]["status"], json!("success"), "{data}");
        let id = data[side]["customer_id"].as_str().unwrap();
        assert!(customers.iter().any(|c| c["id"] == id), "{id}");
    }
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    app.finish().await;
}

#[tokio::test]
async fn a_refused_key_waits_loudly_and_never_uses_up_the_sagas_attempts() {
    let (mut settings, database) = test_settings().await;
    let budget = settings.saga.xendit_max_attempts;
    let state = FakeState::new(FakeSettings::default());
    // Not a key of Xendit's shape: 401 INVALID_API_KEY on every call.
    fake_xendit(&mut settings, state.clone(), "sk_not_a_xendit_key").await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_id_client()).await;
    app.wait_for_event("client.created", Some(&id)).await;
    // Refused more often than the step's budget allows failures...
    wait_for_metric(
        &app,
        "onboard_xendit_key_refused_total",
        f64::from(budget + 2),
    )
    .await;
    // ... and still waiting at the Xendit step, no attempt spent, nothing given up.
    let (step, attempts, error) = saga_row(&app, &id).await;
    assert_eq!((step.as_str(), attempts), ("xendit", 0));
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .contains("refused our API key"),
        "{error:?}"
    );
    let given_up: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE correlation_id = $1 AND routing_key = 'client.xendit_failed'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(given_up, 0);
    assert!(state.customers().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_budget_still_ends_in_customers() {
    let (mut settings, database) = test_settings().await;
    let budget = settings.saga.xendit_max_attempts;
    // More 429s than the saga's tries times the client's attempts per try.
    let state = FakeState::new(FakeSettings {
        rate_limit_next: budget * 3 * 3,
        rate_limit_reset_secs: 0.01,
        ..FakeSettings::default()
    });
    fake_xendit(&mut settings, state.clone(), XENDIT_KEY).await;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let id = app.create_client(&seed_id_client()).await;
    customers_created(&mut app, &id).await;
    assert_eq!(state.settings().rate_limit_next, 0, "every 429 was met");
    assert_eq!(state.customers().len(), 2);
    app.finish().await;
}
