//! Delivery guarantees: duplicates, crashes between commit and ack, malformed messages, and
//! an unreachable database.

use std::sync::Arc;
use std::time::Duration;

use onboard::worker::{Disposition, Hooks};
use serde_json::json;
use tokio::sync::Notify;

use crate::support::*;

/// Deliveries of `event_type` for `correlation` among `events`: a copy published twice counts
/// twice, even under the same message_id.
fn copies(events: &[Received], event_type: &str, correlation: &str) -> usize {
    events
        .iter()
        .filter(|e| e.routing_key == event_type && e.correlation_id.as_deref() == Some(correlation))
        .count()
}

#[tokio::test]
async fn the_same_message_id_published_twice_creates_one_client_and_one_event() {
    let mut app = spawn_app().await;
    let msg = Msg::json("client.create", &seed_sg_client());
    let id = app.publish(msg.clone()).await.unwrap();
    app.publish(msg).await;
    app.settled
        .wait_until("both copies settled", |log| {
            log.iter()
                .filter(|s| s.message_id.as_deref() == Some(id.as_str()))
                .count()
                == 2
        })
        .await;
    let mut outcomes = app.settled.for_message(&id);
    outcomes.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(outcomes, vec![Disposition::Duplicate, Disposition::Handled]);
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);

    app.wait_for_event("client.created", Some(&id)).await;
    let rest = app.settled_events().await;
    assert_eq!(
        copies(&rest, "client.created", &id),
        0,
        "a second client.created was published"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE message_type = 'client.created'")
            .await,
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn a_worker_killed_after_commit_before_ack_causes_no_duplicate_after_restart() {
    let (settings, database) = test_settings().await;
    let committed = Arc::new(Notify::new());
    let hooks = Hooks {
        // Frozen between commit and ack, until the worker is killed.
        after_commit: Some(freeze(committed.clone())),
        ..Default::default()
    };
    let mut app = spawn_app_with(settings, database, hooks).await;
    let id = app.create_client(&seed_id_client()).await;
    tokio::time::timeout(WAIT, committed.notified())
        .await
        .expect("the command committed");
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    app.kill_worker().await;

    app.start_worker(None).await;
    app.settled
        .wait_until("the redelivered command to be recognised", |log| {
            log.iter().any(|s| {
                s.message_id.as_deref() == Some(id.as_str())
                    && s.disposition == Disposition::Duplicate
            })
        })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
    let first = app.wait_for_event("client.created", Some(&id)).await;
    let mut all = vec![first];
    all.extend(app.settled_events().await);
    assert_eq!(copies(&all, "client.created", &id), 1);
    assert_eq!(app.queue_depth(&app.names().commands_queue).await, 0);
    app.finish().await;
}

async fn assert_dead_lettered(
    app: &mut TestApp,
    msg: Msg,
    reason_contains: &str,
    correlation: &str,
) {
    let dead = app.names().dead_queue;
    app.publish(msg.clone()).await;
    let letter = app.take_from(&dead).await;
    let reason = letter
        .header_str("x-onboard-reason")
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains(reason_contains),
        "reason {reason:?} lacks {reason_contains:?}"
    );
    assert_eq!(letter.header_str("x-onboard-failure"), Some("rejected"));
    assert_eq!(
        letter.header_str("x-onboard-routing-key"),
        Some(msg.routing_key.as_str())
    );
    assert!(letter.header_str("x-onboard-dead-lettered-at").is_some());
    assert_eq!(
        letter.raw, msg.body,
        "the dead letter keeps the original body for replay"
    );
    let event = app
        .wait_for_event("command.rejected", Some(correlation))
        .await;
    assert!(
        event.body["data"]["reason"]
            .as_str()
            .unwrap()
            .contains(reason_contains),
        "{}",
        event.body
    );
    assert_eq!(event.body["data"]["code"], json!("COMMAND_REJECTED"));
    assert_eq!(event.body["data"]["command_type"], json!(msg.routing_key));
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_a_reason_and_announced() {
    let mut app = spawn_app().await;

    let not_json = Msg {
        routing_key: "client.create".into(),
        body: b"{\"email\": oops".to_vec(),
        message_id: Some("not-json-1".into()),
        ..Default::default()
    };
    assert_dead_lettered(&mut app, not_json, "body is not valid JSON", "not-json-1").await;

    let mut no_id = Msg::json("client.create", &seed_sg_client());
    no_id.message_id = None;
    no_id.correlation_id = Some("corr-no-id".into());
    assert_dead_lettered(&mut app, no_id, "missing message_id", "corr-no-id").await;

    let mut bad = seed_sg_client();
    bad["email"] = json!(12345);
    let bad = Msg {
        message_id: Some("schema-1".into()),
        ..Msg::json("client.create", &bad)
    };
    assert_dead_lettered(
        &mut app,
        bad,
        "does not match schemas/client.create.json",
        "schema-1",
    )
    .await;
    let event_details = sqlx::query_scalar::<_, serde_json::Value>(
        "SELECT payload->'data'->'details' FROM outbox WHERE message_type = 'command.rejected' AND correlation_id = 'schema-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        event_details.to_string().contains("/email"),
        "{event_details}"
    );

    let unknown = Msg::json("client.teleport", &json!({}));
    let unknown_id = unknown.message_id.clone().unwrap();
    assert_dead_lettered(&mut app, unknown, "unknown command type", &unknown_id).await;

    // Nothing of it reached the tables, and each was settled once, as dead-lettered. (The
    // last one's event and dead letter can arrive before its ack is recorded: wait for it.)
    app.settled
        .wait_until("the four to be settled", |log| {
            log.iter()
                .filter(|s| s.disposition == Disposition::DeadLettered)
                .count()
                >= 4
        })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 0);
    assert_eq!(app.settled.count(Disposition::DeadLettered), 4);
    assert_eq!(app.settled.count(Disposition::RetryScheduled), 0);
    app.finish().await;
}

#[tokio::test]
async fn a_rejected_command_with_reply_to_gets_a_400_error_reply() {
    let app = spawn_app().await;
    let replies = app.reply_queue().await;
    let mut bad = seed_sg_client();
    bad["phone"] = json!(["not", "a", "string"]);
    let mut msg = Msg::json("client.create", &bad);
    msg.reply_to = Some(replies.clone());
    app.publish(msg).await;
    let reply = app.take_from(&replies).await;
    assert_eq!(reply.kind.as_deref(), Some("command.rejected"));
    assert_eq!(reply.headers.get("status"), Some(&json!(400)));
    assert!(
        reply.body["error"].as_str().unwrap().contains("/phone"),
        "{}",
        reply.body
    );
    app.finish().await;
}

#[tokio::test]
async fn with_the_database_unreachable_a_command_is_retried_then_processed_once_it_returns() {
    let (mut app, proxy) = spawn_app_behind_db_proxy(|s| s.retry.max_attempts = 50).await;

    proxy.cut();
    let id = app.create_client(&seed_sg_client()).await;
    app.settled
        .wait_until("two delayed retries while the database is away", |log| {
            log.iter()
                .filter(|s| {
                    s.message_id.as_deref() == Some(id.as_str())
                        && s.disposition == Disposition::RetryScheduled
                })
                .count()
                >= 2
        })
        .await;
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 0);
    proxy.restore();

    let created = app.wait_for_event("client.created", Some(&id)).await;
    assert_eq!(
        created.body["data"]["client"]["email"],
        json!("admin@sgcompany.com")
    );
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 1);
    assert!(
        !app.settled
            .for_message(&id)
            .contains(&Disposition::DeadLettered)
    );
    assert_eq!(app.queue_depth(&app.names().dead_queue).await, 0);
    app.finish().await;
}

/// Issue 12: a copy the worker republishes keeps nothing that could make it vanish. A
/// transient command with a per-message expiration that is dead-lettered lands there
/// persistent and without the expiration, so it stays until an operator acts.
#[tokio::test]
async fn a_dead_letter_is_persistent_and_never_expires_whatever_the_publisher_set() {
    let app = spawn_app().await;
    let props = lapin::BasicProperties::default()
        .with_message_id("transient-1".into())
        .with_delivery_mode(1)
        .with_expiration("600000".into());
    app.channel
        .basic_publish(
            app.names().commands_exchange.as_str().into(),
            "client.create".into(),
            Default::default(),
            b"not json",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let letter = app.take_from(&app.names().dead_queue).await;
    assert_eq!(letter.message_id.as_deref(), Some("transient-1"));
    assert_eq!(letter.delivery_mode, Some(2), "persistent");
    assert_eq!(letter.expiration, None, "no expiration");
    app.finish().await;
}

/// Issue 12: `reply_to` must be a queue the worker answers on (server-named or direct
/// reply-to by default). A query naming another service's queue is dead-lettered with the
/// reason and `command.rejected`, and nothing reaches that queue.
#[tokio::test]
async fn a_reply_to_naming_another_services_queue_gets_no_answer_and_a_dead_letter() {
    let mut app = spawn_app().await;
    let victim = format!("{}-billing-inbox", app.settings.broker.prefix);
    app.channel
        .queue_declare(
            victim.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let mut msg = Msg::json("client.list", &json!({}));
    msg.reply_to = Some(victim.clone());
    let id = app.publish(msg).await.unwrap();
    let rejected = app.wait_for_event("command.rejected", Some(&id)).await;
    let reason = rejected.body["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("reply_to"), "{reason}");
    let letter = app.take_from(&app.names().dead_queue).await;
    assert_eq!(letter.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        app.queue_depth(&victim).await,
        0,
        "nothing pushed into the named queue"
    );
    app.finish().await;
}

/// Issue 12: `x-onboard-attempt` from outside is not believed. A lifecycle command for a
/// client that does not exist waits through its delayed retries before CLIENT_NOT_FOUND;
/// claiming 99 attempts already made (or more than u32 holds) skips none of them.
#[tokio::test]
async fn an_attempt_count_set_by_the_publisher_is_ignored() {
    let mut app = spawn_app().await;
    let budget = app
        .settings
        .lifecycle
        .not_found_retries
        .min(app.settings.retry.max_attempts) as usize;
    assert!(budget > 0);
    for forged in [99i64, i64::from(u32::MAX) + 1] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut table = lapin::types::FieldTable::default();
        table.insert(
            "x-onboard-attempt".into(),
            lapin::types::AMQPValue::LongLongInt(forged),
        );
        let props = lapin::BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_delivery_mode(2)
            .with_headers(table);
        app.channel
            .basic_publish(
                app.names().commands_exchange.as_str().into(),
                "client.approve".into(),
                Default::default(),
                &serde_json::to_vec(&json!({"client_id": 999_999})).unwrap(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let rejected = app
            .wait_for_event("client.transition_rejected", Some(&id))
            .await;
        assert_eq!(rejected.body["data"]["code"], json!("CLIENT_NOT_FOUND"));
        let retries = app
            .settled
            .for_message(&id)
            .into_iter()
            .filter(|d| *d == Disposition::RetryScheduled)
            .count();
        assert_eq!(retries, budget, "forged attempt {forged}");
    }
    app.finish().await;
}

/// Issue 12: while PostgreSQL is away, a malformed message is not dead-lettered until its
/// rejection is recorded: it waits in the delay queues, and once the database is back it
/// lands in the dead-letter queue exactly once (not once per attempt).
#[tokio::test]
async fn a_malformed_message_is_dead_lettered_once_however_long_the_database_is_away() {
    let (mut app, proxy) = spawn_app_behind_db_proxy(|s| s.retry.max_attempts = 50).await;

    proxy.cut();
    let mut msg = Msg::json("client.create", &json!({}));
    msg.body = b"{ not json".to_vec();
    let id = app.publish(msg).await.unwrap();
    app.settled
        .wait_until("three delayed retries while the database is away", |log| {
            log.iter()
                .filter(|s| {
                    s.message_id.as_deref() == Some(id.as_str())
                        && s.disposition == Disposition::RetryScheduled
                })
                .count()
                >= 3
        })
        .await;
    assert_eq!(
        app.queue_depth(&app.names().dead_queue).await,
        0,
        "nothing dead-lettered before the rejection is recorded"
    );
    proxy.restore();

    app.wait_for_event("command.rejected", Some(&id)).await;
    app.settled
        .wait_until("the dead letter", |log| {
            log.iter().any(|s| {
                s.message_id.as_deref() == Some(id.as_str())
                    && s.disposition == Disposition::DeadLettered
            })
        })
        .await;
    let letter = app.take_from(&app.names().dead_queue).await;
    assert_eq!(letter.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        app.queue_depth(&app.names().dead_queue).await,
        0,
        "one dead letter, not one per attempt"
    );
    app.finish().await;
}

/// Issue 12, item 7: a correlation's events reach subscribers in the order they were decided.
/// While an earlier event of a correlation is held (here: claimed by the worker that wrote it,
/// which is publishing it), its later events wait; other correlations do not.
#[tokio::test]
async fn a_correlations_later_event_waits_for_its_earlier_one() {
    let mut app = spawn_app().await;
    // Rows as a committed transaction leaves them: claimed by their writer for `claim`, or
    // unclaimed (a tool's, or a row written behind an earlier one), the relays' at once.
    let insert = |key: &'static str, correlation: &'static str, claim: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "WITH written AS (
                     INSERT INTO outbox (message_id, kind, routing_key, message_type,
                                         correlation_id, payload)
                     VALUES (gen_random_uuid(), 'event', $1, $1, $2,
                             json_build_object('type', $1::text))
                     RETURNING id, correlation_id)
                 INSERT INTO outbox_pending (id, correlation_id, claimed_by, claimed_until)
                 SELECT id, correlation_id, CASE WHEN $3 <> '' THEN gen_random_uuid() END,
                        now() + NULLIF($3, '')::interval
                 FROM written
                 RETURNING id",
            )
            .bind(key)
            .bind(correlation)
            .bind(claim)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The first is held: its writer's claim has an hour to run.
    let first = insert("test.first", "ord-1", "1 hour").await;
    let second = insert("test.second", "ord-1", "").await;
    // Another correlation's event, after both: once it is out, the relay has passed over
    // the second one at least once.
    insert("test.other", "ord-2", "").await;
    app.wait_for_event("test.other", Some("ord-2")).await;
    let pending: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox_pending WHERE id = $1)")
            .bind(second)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(pending, "the second event waits for the first");

    // The writer gives its claim back (its publish failed): the relay takes both, in order.
    sqlx::query("UPDATE outbox_pending SET claimed_until = NULL, claimed_by = NULL WHERE id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        arrival_order(&mut app, &["test.first", "test.second"], "ord-1").await,
        ["test.first", "test.second"]
    );
    app.finish().await;
}

/// Issue 24: a row written while an earlier row of its correlation was still this worker's
/// to publish waits for it, and goes out as soon as this worker published that one: its
/// dispatcher wakes its relay then, not the relay's next poll (an hour here, so a test that
/// relied on the poll would time out).
#[tokio::test]
async fn a_row_that_waited_for_an_earlier_one_goes_out_as_soon_as_that_one_is_published() {
    use onboard::messages::OutgoingMessage;
    use onboard::outbox::{Dispatcher, Wake, relay};
    let mut app = spawn_app().await;
    // The worker's own relay polls every 200 ms in tests: stopped, only the one below runs.
    app.stop_worker().await;
    let confirm = Duration::from_secs(5);
    let open = || onboard::broker::Publisher::open(&app.connection, confirm);
    let (dispatch_publisher, relay_publisher) = (open().await.unwrap(), open().await.unwrap());
    let wake = Wake::default();
    let dispatcher = Dispatcher::new(
        app.pool.clone(),
        dispatch_publisher,
        app.names(),
        uuid::Uuid::new_v4(),
        Duration::from_secs(60),
        wake.clone(),
    );
    let mut outbox = app.settings.outbox.clone();
    outbox.poll_interval_ms = 3_600_000;
    let stop = tokio_util::sync::CancellationToken::new();
    // The relay's rounds, counted as its worker's metrics count them.
    let metrics = onboard::metrics::Metrics::new([]);
    let rounds = || {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("onboard_outbox_relay_rounds_total "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let rounds_reach = |n: u64| async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while rounds() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay round {n} never ran"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let relay = tokio::spawn(relay::run(
        relay::Relay {
            pool: app.pool.clone(),
            publisher: relay_publisher,
            names: app.names(),
            settings: outbox,
            inbox: app.settings.inbox.clone(),
            metrics: Some(metrics.clone()),
            wake,
        },
        stop.clone(),
    ));
    rounds_reach(1).await; // its first round, at start
    let event = |key: &str| {
        OutgoingMessage::event_with_id(uuid::Uuid::new_v4(), key, "wait-1", None, None, json!({}))
    };
    // Two transactions of one correlation: the first's row is committed, claimed by this
    // worker and not yet published when the second writes its own, which therefore waits.
    let mut first = dispatcher.begin().await.unwrap();
    first.say([event("test.first")]);
    let first = first.commit().await.unwrap();
    let mut second = dispatcher.begin().await.unwrap();
    second.say([event("test.second")]);
    let second = second.commit().await.unwrap();
    assert!(
        !first[0].waits && second[0].waits,
        "the second row waits for the first"
    );
    // Dispatched in the order that made it wait: the second is the relay's, which is woken
    // at once and finds it still waiting; the first is published here, and that wakes the
    // relay again.
    dispatcher.dispatch(second).await;
    rounds_reach(2).await;
    dispatcher.dispatch(first).await;
    assert_eq!(
        arrival_order(&mut app, &["test.first", "test.second"], "wait-1").await,
        ["test.first", "test.second"]
    );
    stop.cancel();
    relay.await.unwrap();
    app.finish().await;
}

/// The routing keys of the events of `types` for `correlation`, in the order they arrive (one
/// of each).
async fn arrival_order(app: &mut TestApp, types: &[&str], correlation: &str) -> Vec<String> {
    let mut order = Vec::new();
    while order.len() < types.len() {
        order.push(app.wait_for_any(types, correlation).await.routing_key);
    }
    order
}

/// Takes one message from a fresh server-named queue, on a channel of its own.
async fn one_delivery(app: &TestApp) -> (lapin::Channel, lapin::message::Delivery) {
    let (channel, _, mut deliveries) = deliveries(app, 1).await;
    (channel, deliveries.remove(0))
}

/// `n` messages ("0".."n-1") published to a fresh server-named queue and consumed in order,
/// on a channel of their own.
async fn deliveries(
    app: &TestApp,
    n: usize,
) -> (lapin::Channel, String, Vec<lapin::message::Delivery>) {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;
    let queue = app.reply_queue().await;
    let channel = app.connection.create_channel().await.unwrap();
    for i in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut taken = Vec::new();
    while taken.len() < n {
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("a delivery")
            .expect("the consumer runs")
            .expect("a delivery, not an error");
        taken.push(d);
    }
    (channel, queue.to_string(), taken)
}

#[tokio::test]
async fn an_ack_counts_only_when_it_reaches_the_broker() {
    let app = spawn_app().await;
    // On an open channel: acked.
    let (_open, delivery) = one_delivery(&app).await;
    let delivery = onboard::broker::Delivery::untracked(delivery);
    assert!(onboard::broker::ack(&delivery).await);
    // Settled already: lapin answers Ok(false), which is no ack.
    assert!(!onboard::broker::ack(&delivery).await);
    // Its channel closed under it: no ack, no nack, however lapin says so.
    let (channel, delivery) = one_delivery(&app).await;
    let delivery = onboard::broker::Delivery::untracked(delivery);
    channel.close(200, "gone".into()).await.unwrap();
    assert!(!onboard::broker::ack(&delivery).await);
    assert!(!onboard::broker::requeue(&delivery).await);
    app.finish().await;
}

/// [`deliveries`], each recorded in `window` as the worker's consumer records them.
async fn tracked_deliveries(
    app: &TestApp,
    n: usize,
    window: &std::sync::Arc<onboard::broker::AckWindow>,
) -> (lapin::Channel, String, Vec<onboard::broker::Delivery>) {
    let (channel, queue, taken) = deliveries(app, n).await;
    let tracked = taken
        .into_iter()
        .map(|d| onboard::broker::Delivery::tracked(d, window))
        .collect();
    (channel, queue, tracked)
}

/// What a queue gives a new consumer once the channel that held its deliveries is closed:
/// the bodies of every message that channel left unacked.
async fn left_unacked(app: &TestApp, channel: lapin::Channel, queue: &str) -> Vec<String> {
    use futures::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions};
    use lapin::types::FieldTable;
    channel.close(200, "done".into()).await.unwrap();
    let again = app.connection.create_channel().await.unwrap();
    let mut consumer = again
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bodies = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        bodies.push(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    bodies.sort();
    bodies
}

/// A batch acks its deliveries with one `multiple` ack only over tags that are all its own:
/// while an earlier delivery (another batch's, frozen before its commit) is outstanding, a
/// later batch's ack covers nothing of it, and the broker still holds it when the channel
/// goes; once the earlier batch settles, one ack covers its run of tags and nothing past it.
#[tokio::test]
async fn a_batch_ack_never_covers_a_delivery_of_another_batch() {
    let app = spawn_app().await;
    let window = onboard::broker::AckWindow::new();
    let (channel, queue, d) = tracked_deliveries(&app, 7, &window).await;
    // Tags 1..=7 are deliveries "0".."6". Batch B ("1", "3", "4") commits while batch A
    // ("0", "2") has not: the lowest outstanding tag is A's, so B is acked one by one.
    let b = [&d[1], &d[3], &d[4]];
    assert_eq!(onboard::broker::ack_all(&b).await, [true, true, true]);
    assert!(b.iter().all(|d| !d.acker.usable()), "acked on their own");
    assert_eq!(window.outstanding(), 4);
    // Batch A commits: one ack with `multiple` on its highest tag ("2", tag 3) settles "0"
    // too, whose own acker was never used, and leaves "5" and "6" (tags 6, 7) outstanding.
    let a = [&d[0], &d[2]];
    assert_eq!(onboard::broker::ack_all(&a).await, [true, true]);
    assert!(
        d[0].acker.usable(),
        "covered by the multiple ack, not acked on its own"
    );
    assert!(!d[2].acker.usable());
    assert_eq!(window.outstanding(), 2);
    // A batch of one is acked on its own.
    let c = [&d[5]];
    assert_eq!(onboard::broker::ack_all(&c).await, [true]);
    assert_eq!(window.outstanding(), 1);
    // The broker agrees: the only message the channel left unacked is "6".
    assert_eq!(left_unacked(&app, channel, &queue).await, ["6"]);

    // Frozen before its commit, a batch's deliveries stay with the broker whatever the later
    // batches acked: closing the channel gives back exactly them.
    let window = onboard::broker::AckWindow::new();
    let (channel, queue, d) = tracked_deliveries(&app, 6, &window).await;
    let later = [&d[2], &d[3], &d[4], &d[5]];
    assert_eq!(onboard::broker::ack_all(&later).await, [true; 4]);
    assert_eq!(left_unacked(&app, channel, &queue).await, ["0", "1"]);
    app.finish().await;
}

/// One publisher per outbox row: a command whose transaction waited on a lock (here, the
/// month's code counter, held by someone else) for three times the writer's claim on its
/// rows is announced once, with the relay polling every 5 ms. The claim is made by the insert
/// that ends the transaction, so it is measured from about the commit; measured from the
/// transaction's start (as rows were once judged by `created_at`), the rows were "old" at
/// commit and the relay published them beside the worker that wrote them.
#[tokio::test]
async fn a_command_whose_commit_waited_on_a_lock_past_the_claim_is_announced_once() {
    let (mut settings, database) = test_settings().await;
    settings.outbox.poll_interval_ms = 5;
    settings.outbox.dispatch_grace_ms = 1_000;
    let mut app = spawn_app_with(settings, database, Hooks::default()).await;
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO client_code_counters AS c (year_month, last_value)
         VALUES (to_char(now() AT TIME ZONE 'UTC', 'YYYYMM'), 0)
         ON CONFLICT (year_month) DO UPDATE SET last_value = c.last_value",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    let id = app.create_client(&seed_sg_client()).await;
    // The batch is in its transaction, waiting for the counter.
    app.wait_for_a_lock_wait("the batch").await;
    // The wait itself is the case under test: three claim lengths.
    tokio::time::sleep(Duration::from_secs(3)).await;
    holder.rollback().await.unwrap();

    let first = app.wait_for_event("client.created", Some(&id)).await;
    // Once the row's claim has run out (or its pending row is gone: it was published and
    // marked) and the relay has gone round several times after that, a second copy would be
    // on the queue already.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app
        .count(
            "SELECT count(*) FROM outbox o
             WHERE o.message_type = 'client.created'
               AND NOT EXISTS (SELECT 1 FROM outbox_pending p
                               WHERE p.id = o.id AND p.claimed_until >= clock_timestamp())",
        )
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the claim never ran out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rounds = metric(&app, "onboard_outbox_relay_rounds_total").await;
    wait_for_metric(&app, "onboard_outbox_relay_rounds_total", rounds + 3.0).await;
    let mut all = vec![first];
    all.extend(app.settled_events().await);
    let copies = all
        .iter()
        .filter(|e| e.routing_key == "client.created" && e.correlation_id.as_deref() == Some(&id))
        .count();
    assert_eq!(copies, 1, "client.created was published {copies} times");
    // One row, marked published (its pending row gone), and no failed attempt on the way.
    let rows: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(p.id) FROM outbox o LEFT JOIN outbox_pending p ON p.id = o.id
         WHERE o.message_type = 'client.created'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, (1, 0), "(client.created rows, still pending)");
    app.finish().await;
}

/// Issue 24, migration 0029: the outbox's pending set moves to `outbox_pending`. Rows pending
/// under the old schema keep their claim, attempts and error and are published by a relay of
/// this version; a published one is not published again; and a statement of the old version
/// (`published_at`) now fails instead of seeing every new row as pending.
#[tokio::test]
async fn rows_pending_before_the_outbox_pending_migration_are_moved_and_published_once() {
    let (settings, database) = test_settings().await;
    let pool = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(&settings.database.url))
        .await
        .unwrap();
    onboard::store::migrate_to(&pool, Some(28)).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (message_id, kind, routing_key, message_type, correlation_id, payload,
                             published_at, claimed_by, claimed_until, attempts, last_error)
         VALUES (gen_random_uuid(), 'event', 'test.published', 'test.published', 'legacy-1',
                 '{}', now(), NULL, NULL, 1, NULL),
                (gen_random_uuid(), 'event', 'test.pending', 'test.pending', 'legacy-2',
                 '{}', NULL, NULL, NULL, 2, 'broker said no'),
                (gen_random_uuid(), 'event', 'test.held', 'test.held', 'legacy-3',
                 '{}', NULL, gen_random_uuid(), now() + interval '1 hour', 0, NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    onboard::store::migrate(&pool).await.unwrap();
    let pending: Vec<(String, i32, Option<String>, bool)> = sqlx::query_as(
        "SELECT o.message_type, p.attempts, p.last_error, p.claimed_by IS NOT NULL
         FROM outbox_pending p JOIN outbox o ON o.id = p.id ORDER BY o.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        pending,
        [
            (
                "test.pending".to_string(),
                2,
                Some("broker said no".to_string()),
                false
            ),
            ("test.held".to_string(), 0, None, true),
        ]
    );
    pool.close().await;

    // A worker's relay takes the unclaimed pending row, before this test's subscriber is
    // bound: what it publishes goes to `<p>.events.unrouted`, which nothing else reaches here.
    let app = spawn_app_with(settings, database, Hooks::default()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while app
        .count(
            "SELECT count(*) FROM outbox_pending p JOIN outbox o ON o.id = p.id
             WHERE o.message_type = 'test.pending'",
        )
        .await
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three relay rounds later, anything else the relay would publish is on the queue.
    let rounds = metric(&app, "onboard_outbox_relay_rounds_total").await;
    wait_for_metric(&app, "onboard_outbox_relay_rounds_total", rounds + 3.0).await;
    assert_eq!(
        app.count("SELECT count(*) FROM outbox_pending").await,
        1,
        "the held row stays pending"
    );
    let old_statement = sqlx::query("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .execute(&app.pool)
        .await;
    assert!(old_statement.is_err(), "the old schema's column is gone");
    let unrouted = app.queue_depth(&app.names().unrouted_events).await;
    assert_eq!(unrouted, 1, "the pending row, once, and nothing else");
    app.finish().await;
}

/// Issue 24: with the pending set in its own table, pruning goes by age (the BRIN index on
/// `created_at`) and keeps whatever is still pending, however old.
#[tokio::test]
async fn pruning_removes_old_published_outbox_rows_and_keeps_old_pending_ones() {
    let mut app = spawn_app().await;
    // The worker's relay prunes too (at its first round, then hourly): it must not take the
    // rows before the call under test does.
    app.stop_worker().await;
    let insert = |key: &'static str, age: &'static str, pending: bool| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "WITH written AS (
                     INSERT INTO outbox (message_id, kind, routing_key, message_type,
                                         correlation_id, payload, created_at)
                     VALUES (gen_random_uuid(), 'event', $1, $1, $1, '{}',
                             now() - $2::interval)
                     RETURNING id, correlation_id)
                 INSERT INTO outbox_pending (id, correlation_id, claimed_by, claimed_until)
                 SELECT id, correlation_id, gen_random_uuid(), now() + interval '1 hour'
                 FROM written WHERE $3",
            )
            .bind(key)
            .bind(age)
            .bind(pending)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    insert("test.old-published", "10 days", false).await;
    insert("test.old-pending", "10 days", true).await;
    insert("test.new-published", "1 hour", false).await;
    let pruned = onboard::store::outbox::prune(&app.pool, Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT message_type FROM outbox WHERE message_type LIKE 'test.%' ORDER BY message_type",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, ["test.new-published", "test.old-pending"]);
    app.finish().await;
}

/// Issue 24: `outbox_pending` is a queue table, empty after a vacuum and thousands of rows
/// (or dead rows) later. A statement's generic plan, made once while it was empty and kept
/// for the connection's life, looked up a new row's earlier pending rows with a scan of the
/// whole table for every row written. The insert now looks them up once for the whole set: a
/// batch of 200 reads the table at most once however the plan was made.
#[tokio::test]
async fn an_outbox_insert_reads_the_pending_table_at_most_once_whatever_its_plan_was_made_on() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    empty_as_after_a_vacuum(&app).await;
    let event = |n: usize| {
        onboard::messages::OutgoingMessage::event_with_id(
            uuid::Uuid::new_v4(),
            "test.pending",
            &format!("plan-{n}"),
            None,
            None,
            json!({}),
        )
    };
    // One connection, its plan made now (generic at once) while the table is empty.
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    onboard::store::outbox::insert(&mut conn, vec![event(0)], None)
        .await
        .unwrap();
    // Then the queue fills: 5,000 rows pending, one of them of correlation plan-7.
    sqlx::query(
        "INSERT INTO outbox_pending (id, correlation_id)
         SELECT -g, CASE WHEN g = 4321 THEN 'plan-7' ELSE 'other-' || g END
         FROM generate_series(1, 5000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let before = rows_read(&mut conn, "outbox_pending").await;
    let claim = onboard::store::outbox::WriterClaim {
        worker_id: uuid::Uuid::new_v4(),
        seconds: 60.0,
    };
    let written =
        onboard::store::outbox::insert(&mut conn, (1..=200).map(event).collect(), Some(claim))
            .await
            .unwrap();
    assert_eq!(written.len(), 200);
    // Only the row whose correlation has an earlier pending row waits for it.
    let waiting: Vec<&str> = written
        .iter()
        .filter(|r| r.waits)
        .filter_map(|r| r.message.correlation_id.as_deref())
        .collect();
    assert_eq!(waiting, ["plan-7"]);
    let rows_read = rows_read(&mut conn, "outbox_pending").await - before;
    assert!(
        rows_read <= 5_201,
        "200 rows written read {rows_read} rows of outbox_pending (at most the table once)"
    );
    drop(conn);
    app.finish().await;
}

/// Issue 24: the publish mark deletes its rows of `outbox_pending` by id whatever the table
/// was like when the connection first ran it. Prepared once and planned generically after
/// five runs on the vacuumed empty table, it read the whole table (or a whole index) for
/// every batch published once the table filled; it is planned for the table as it is.
#[tokio::test]
async fn the_publish_mark_reads_its_own_rows_whatever_the_pending_table_was_like_before() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    empty_as_after_a_vacuum(&app).await;
    // One connection marks six batches while the table is empty (PostgreSQL's plan cache
    // settles on a generic plan after five), then the table fills.
    let mut conn = app.pool.acquire().await.unwrap();
    for n in 0..6 {
        onboard::store::outbox::mark_published(&mut conn, &[-1 - n, -100 - n])
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox_pending (id, correlation_id)
         SELECT g, 'pending-' || g FROM generate_series(1, 20000) g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let before = rows_read(&mut conn, "outbox_pending").await;
    let ids: Vec<i64> = (1..=10).map(|n| n * 1000).collect();
    onboard::store::outbox::mark_published(&mut conn, &ids)
        .await
        .unwrap();
    let rows_read = rows_read(&mut conn, "outbox_pending").await - before;
    assert!(
        rows_read <= 100,
        "marking 10 rows read {rows_read} rows of outbox_pending"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox_pending").await,
        19_990
    );
    drop(conn);
    app.finish().await;
}

/// Issue 24: the service's connections run without PostgreSQL's JIT compiler, which a
/// bloated queue table's cost estimates called for on a batch's outbox insert (compiling took
/// longer than the statement's work), whatever the server's default.
#[tokio::test]
async fn the_services_database_connections_run_without_jit() {
    let (settings, _database) = test_settings().await;
    let pool = onboard::store::pool(&settings.database).unwrap();
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jit, "off");
    let server: String = sqlx::query_scalar("SELECT boot_val FROM pg_settings WHERE name = 'jit'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        server, "on",
        "the server's own default, which the pool overrides"
    );
    pool.close().await;
}

/// `outbox_pending` as a queue table is after a vacuum: rows came and went, and the vacuum
/// left it empty (its statistics say no pages, no rows). No autovacuum on it afterwards: its
/// ANALYZE would invalidate the plans a test makes next.
async fn empty_as_after_a_vacuum(app: &TestApp) {
    for statement in [
        "ALTER TABLE outbox_pending SET (autovacuum_enabled = false)",
        "INSERT INTO outbox_pending (id, correlation_id)
         SELECT -g, 'gone-' || g FROM generate_series(1, 5000) g",
        "DELETE FROM outbox_pending",
        "VACUUM ANALYZE outbox_pending",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
}
