//! Operating the worker: `/metrics` counts what happened, `/readyz` tells the truth about the
//! database, the broker and the topology, trace context flows from command to events, and a
//! broker topology that does not match is named at start.

use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use onboard::telemetry::parse_traceparent;
use onboard::worker::{Hooks, Worker};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn metrics_report_the_counts_a_test_produced() {
    let mut app = spawn_app().await;
    let first = app.create_client(&client_with_email("m@example.com")).await;
    // Its onboarding runs the welcome-email step in the worker, not through the queue.
    app.wait_for_event("client.onboarding_completed", Some(&first))
        .await;
    let second = app.create_client(&client_with_email("m@example.com")).await;
    app.wait_for_event("client.creation_failed", Some(&second))
        .await;
    let malformed = Msg {
        routing_key: "client.create".into(),
        body: b"not json".to_vec(),
        message_id: Some("metrics-bad".into()),
        ..Default::default()
    };
    app.publish(malformed).await;
    let unknown = Msg::json("client.teleport", &json!({}));
    app.publish(unknown).await;
    app.settled
        .wait_until("four settled", |log| log.len() == 4)
        .await;
    // Everything said so far is published before the scrape, so the outbox gauges have one
    // right answer: nothing pending.
    let deadline = std::time::Instant::now() + WAIT;
    while app.count("SELECT count(*) FROM outbox_pending").await > 0 {
        assert!(std::time::Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, text) = get(&url(&app, "/metrics")).await;
    assert_eq!(status, 200);
    let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        v(r#"onboard_messages_received_total{type="client.create"}"#),
        3.0
    );
    assert_eq!(v(r#"onboard_messages_received_total{type="unknown"}"#), 1.0);
    assert_eq!(
        v(r#"onboard_saga_step_duration_seconds_count{step="welcome_email",outcome="ran"}"#),
        1.0
    );
    assert_eq!(
        v(r#"onboard_external_calls_total{service="smtp",operation="send",outcome="ok"}"#),
        1.0
    );
    assert_eq!(v("onboard_sagas_stuck"), 0.0);
    assert_eq!(
        v(r#"onboard_messages_acked_total{type="client.create"}"#),
        2.0
    );
    assert_eq!(
        v(r#"onboard_messages_dead_lettered_total{type="client.create"}"#),
        1.0
    );
    assert_eq!(
        v(r#"onboard_messages_dead_lettered_total{type="unknown"}"#),
        1.0
    );
    assert_eq!(
        v(r#"onboard_messages_refused_total{type="client.create",code="EMAIL_IN_USE"}"#),
        1.0
    );
    assert_eq!(
        v(r#"onboard_handler_duration_seconds_count{type="client.create",result="succeeded"}"#),
        1.0
    );
    assert_eq!(v("onboard_messages_in_flight"), 0.0);
    assert_eq!(v("onboard_dead_letter_queue_messages"), 2.0);
    assert_eq!(v("onboard_broker_connected"), 1.0);
    assert_eq!(v("onboard_outbox_pending"), 0.0);
    assert_eq!(v("onboard_outbox_oldest_pending_age_seconds"), 0.0);
    app.finish().await;
}

#[tokio::test]
async fn readyz_fails_while_postgres_is_unreachable_and_recovers_when_it_returns() {
    let (app, proxy) = spawn_app_behind_db_proxy(|_| {}).await;

    // Ready once its pool has connections (acquire_timeout_ms is short here, and a loaded
    // machine may take longer than that to open the first ones).
    let deadline = tokio::time::Instant::now() + WAIT;
    let (status, body) = loop {
        let (status, body) = get(&url(&app, "/readyz")).await;
        if status == 200 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&url(&app, "/healthz")).await.0, 200);

    proxy.cut();
    // The proxy drops its links asynchronously: a probe racing the cut may still get through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = get(&url(&app, "/readyz")).await;
        if status == 503 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"database": false, "broker": true, "topology": true})
    );
    assert_eq!(
        get(&url(&app, "/healthz")).await.0,
        200,
        "the process is alive"
    );
    assert_eq!(
        get(&url(&app, "/metrics")).await.0,
        200,
        "metrics answer without the database"
    );

    proxy.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(&url(&app, "/readyz")).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.finish().await;
}

#[tokio::test]
async fn readyz_fails_when_a_queue_the_worker_needs_is_gone() {
    let app = spawn_app().await;
    assert_eq!(get(&url(&app, "/readyz")).await.0, 200);
    app.channel
        .queue_delete(
            app.names().dead_queue.as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let (status, body) = get(&url(&app, "/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["topology"],
        json!(false)
    );
    app.finish().await;
}

#[tokio::test]
async fn the_traceparent_of_a_command_reaches_its_events_as_a_child_span() {
    let mut app = spawn_app().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut msg = Msg::json("client.create", &seed_sg_client());
    msg.traceparent = Some(parent.into());
    let id = app.publish(msg).await.unwrap();
    let created = app.wait_for_event("client.created", Some(&id)).await;
    let tp = created.header_str("traceparent").expect("traceparent");
    let (trace, span, flags) = parse_traceparent(tp).expect("a valid traceparent");
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(span, "00f067aa0ba902b7", "the worker's own span");
    assert_eq!(flags, "01");

    // A command without one starts a trace, so what it causes can still be followed.
    let other = app.create_client(&seed_id_client()).await;
    let created = app.wait_for_event("client.created", Some(&other)).await;
    assert!(parse_traceparent(created.header_str("traceparent").unwrap()).is_some());
    app.finish().await;
}

#[tokio::test]
async fn a_commands_queue_with_another_delivery_limit_is_named_at_start() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let settings = app.settings.clone();
    let names = app.names();
    let commands = names.commands_queue.clone();
    // Someone created the queue by hand, with another delivery limit and no dead-letter exchange.
    app.channel
        .queue_delete(commands.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(5));
    app.channel
        .queue_declare(
            commands.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();

    let err = match Worker::start(settings.clone(), Hooks::default()).await {
        Ok(_) => panic!("a worker started on a mismatching queue"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&format!("queue {commands}")), "{err}");
    // Every difference is named, not only the first one the broker complains about.
    assert!(
        err.contains("x-delivery-limit is 5 on the broker, but this worker declares 20 (broker.delivery_limit)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "x-dead-letter-exchange is not set on the broker, but this worker declares {}",
            names.dead_exchange
        )),
        "{err}"
    );
    assert!(err.contains("x-overflow is not set"), "{err}");
    app.finish().await;
}

/// Issue 12, item 9: the metrics the first test does not reach, after real traffic: a
/// duplicate delivery, delayed retries, and the duration of the SMTP call. (Requeues happen
/// only when a dead letter cannot be written; the unit tests of `metrics` count that one.)
#[tokio::test]
async fn metrics_count_duplicates_retries_and_outside_call_durations() {
    let mut app = spawn_app().await;
    let mut first = Msg::json("client.create", &client_with_email("dup@example.com"));
    first.message_id = Some("metrics-dup".into());
    let again = first.clone();
    app.publish(first).await;
    app.wait_for_event("client.onboarding_completed", Some("metrics-dup"))
        .await;
    app.publish(again).await;
    let missing = Msg::json("client.approve", &json!({"client_id": 999_999}));
    let approve = app.publish(missing).await.unwrap();
    app.wait_for_event("client.transition_rejected", Some(&approve))
        .await;
    app.settled
        .wait_until("the duplicate settled", |log| {
            log.iter().any(|s| {
                s.message_id.as_deref() == Some("metrics-dup")
                    && s.disposition == onboard::worker::Disposition::Duplicate
            })
        })
        .await;
    let budget = app
        .settings
        .lifecycle
        .not_found_retries
        .min(app.settings.retry.max_attempts);

    let (_, text) = get(&url(&app, "/metrics")).await;
    let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        v(r#"onboard_messages_duplicates_total{type="client.create"}"#),
        1.0
    );
    assert_eq!(
        v(r#"onboard_messages_retried_total{type="client.approve"}"#),
        f64::from(budget)
    );
    assert_eq!(
        v(
            r#"onboard_external_call_duration_seconds_count{service="smtp",operation="send",outcome="ok"}"#
        ),
        1.0
    );
    assert!(
        v(
            r#"onboard_external_call_duration_seconds_sum{service="smtp",operation="send",outcome="ok"}"#
        ) > 0.0
    );
    app.finish().await;
}

/// Declares `queue` durable with `args` on a channel of its own: the broker's refusal text.
async fn declare_durable(app: &TestApp, queue: &str, args: FieldTable) -> Result<(), String> {
    let channel = app.connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), options, args)
        .await
        .map_err(|e| e.to_string())?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Issue 24: the two queues that only fill (dead letters, events nobody subscribed to) are
/// lazy, so the broker keeps their messages on disk rather than in its memory as well; and a
/// worker upgraded over such queues declared by an earlier version without that mode starts
/// on them as they are, their messages kept, instead of refusing to start.
#[tokio::test]
async fn the_queues_that_only_fill_are_lazy_and_an_earlier_plain_one_is_kept() {
    let mut app = spawn_app().await;
    let names = app.names();
    let long = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    // Each queue with its arguments but the mode: as an earlier version declared it.
    let plain: Vec<(&String, FieldTable)> = [
        (&names.dead_queue, None),
        (&names.unrouted_events, Some(100_000)),
    ]
    .into_iter()
    .map(|(queue, max_length)| {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long("classic"));
        if let Some(n) = max_length {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(n));
        }
        (queue, args)
    })
    .collect();

    // Declared by this worker: the same queue without the mode is refused, naming it.
    for (queue, args) in &plain {
        let refused = declare_durable(&app, queue, args.clone())
            .await
            .expect_err("a declare without x-queue-mode was accepted");
        assert!(
            refused.contains("inequivalent arg 'x-queue-mode'") && refused.contains("lazy"),
            "{queue}: {refused}"
        );
    }

    // An earlier version's queues: the same, but not lazy, each holding a message.
    app.stop_worker().await;
    for (queue, args) in &plain {
        app.channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        declare_durable(&app, queue, args.clone()).await.unwrap();
        app.channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                Default::default(),
                b"kept",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    app.start_worker(None).await;
    for (queue, args) in &plain {
        // Still the earlier queue (a lazy declare is refused now), with its message.
        let mut lazy = args.clone();
        lazy.insert("x-queue-mode".into(), long("lazy"));
        let refused = declare_durable(&app, queue, lazy)
            .await
            .expect_err("the queue was replaced by a lazy one");
        assert!(refused.contains("x-queue-mode"), "{queue}: {refused}");
        assert_eq!(app.queue_depth(queue).await, 1, "{queue}");
    }
    // And it onboards over them.
    let id = app.create_client(&seed_sg_client()).await;
    app.wait_for_event("client.onboarding_completed", Some(&id))
        .await;
    app.finish().await;
}
