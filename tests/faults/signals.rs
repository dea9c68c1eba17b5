//! The real binary under a supervisor's signals: SIGTERM while commands are in flight drains
//! them and exits 0 within the bound; what it did not finish goes to the next worker, and
//! every command is processed once. Runs alone (it holds database locks for seconds).

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use onboard::configuration::Settings;
use secrecy::ExposeSecret;
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use tokio::process::Child;

use crate::support::*;

const COMMANDS: usize = 20;
/// Commands per batch; two batches in flight, and a prefetch of both.
const BATCH_SIZE: usize = 4;

async fn start_worker(settings: &Settings, shutdown_timeout_ms: u64) -> WorkerProcess {
    let mut command = onboard_bin(settings);
    command
        .arg("worker")
        // Two batches of four commands in flight at most: two transactions to block. The
        // long linger makes a batch wait for its fourth command (the test publishes all 20 at
        // once), so a blocked batch always holds four.
        .env("ONBOARD__WORKER__BATCH_SIZE", BATCH_SIZE.to_string())
        .env("ONBOARD__WORKER__BATCH_LINGER_MS", "500")
        .env("ONBOARD__WORKER__BATCHES_IN_FLIGHT", "2")
        .env("ONBOARD__BROKER__PREFETCH", (2 * BATCH_SIZE).to_string())
        .env(
            "ONBOARD__WORKER__SHUTDOWN_TIMEOUT_MS",
            shutdown_timeout_ms.to_string(),
        );
    WorkerProcess::start(command).await
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn publish_commands(settings: &Settings) -> Vec<String> {
    publish_creates(
        settings.broker.url.expose_secret(),
        &settings.broker.prefix,
        COMMANDS,
        "s",
    )
    .await
}

/// Holds the lock every client insert needs (the month's code counter), so batches pile up
/// inside their transactions: commands "in flight" for as long as the test wants.
async fn block_inserts(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE client_code_counters IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn wait_for_waiters(pool: &sqlx::PgPool, n: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} handlers in flight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn queue_depth(settings: &Settings, queue: &str) -> u32 {
    let connection = Connection::connect(
        settings.broker.url.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let depth = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    let _ = connection.close(200, "done".into()).await;
    depth
}

/// A second worker finishes the rest; then every command must be processed exactly once.
async fn finish_with_next_worker(settings: &Settings, pool: &sqlx::PgPool, ids: &[String]) {
    let mut next = start_worker(settings, 10_000).await;
    let deadline = Instant::now() + WAIT;
    loop {
        // Done means each command handled and each onboarding it started completed (the
        // first worker may have left sagas, which this one's sweeper takes).
        let (done, completed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM inbox WHERE command_type = 'client.create'),
                    (SELECT count(*) FROM onboarding_sagas WHERE status = 'completed')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if done as usize == ids.len() && completed as usize == ids.len() {
            break;
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = sqlx::query_scalar("SELECT message_id FROM inbox")
                .fetch_all(pool)
                .await
                .unwrap();
            let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(id)).collect();
            let log = next.log.lock().unwrap().clone();
            panic!(
                "only {done} of {} processed ({completed} sagas completed); missing {missing:?}; the next worker logged: {log:#?}",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&next.child);
    let status = tokio::time::timeout(WAIT, next.child.wait())
        .await
        .expect("the second worker exits")
        .unwrap();
    assert!(status.success());

    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT message_id, outcome FROM inbox WHERE command_type = 'client.create' ORDER BY message_id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(
        outcomes
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        outcomes.iter().all(|(_, o)| o == "succeeded"),
        "{outcomes:?}"
    );
    let clients: i64 = sqlx::query_scalar("SELECT count(*) FROM clients")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(clients as usize, ids.len(), "one client per command");
    let names = onboard::broker::Names::new(&settings.broker.prefix);
    assert_eq!(queue_depth(settings, &names.commands_queue).await, 0);
    assert_eq!(queue_depth(settings, &names.dead_queue).await, 0);
}

#[tokio::test]
async fn sigterm_with_commands_in_flight_drains_them_and_exits_zero_within_the_bound() {
    let _one = crate::ONE_AT_A_TIME.write().await;
    let (settings, database) = test_settings().await;
    let url = settings.database.url.expose_secret().to_string();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let bound = Duration::from_millis(10_000);
    let mut worker = start_worker(&settings, bound.as_millis() as u64).await;

    let mut lock = block_inserts(&url).await;
    let ids = publish_commands(&settings).await;
    // Both batches (eight commands) wait on the lock.
    wait_for_waiters(&pool, 2).await;

    sigterm(&worker.child);
    let asked = Instant::now();
    // The handlers are still blocked when the signal arrives; they finish during the drain.
    tokio::time::sleep(Duration::from_millis(700)).await;
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    let status = tokio::time::timeout(bound + Duration::from_secs(10), worker.child.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(asked.elapsed() < bound, "took {:?}", asked.elapsed());
    let drained: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inbox WHERE command_type = 'client.create'")
            .fetch_one(&pool)
            .await
            .unwrap();
    // Exactly the two batches in flight were finished (commands arrive within milliseconds,
    // so each filled to BATCH_SIZE well inside the linger); the others, never started, were
    // left to the queue, and the next worker handles them below.
    assert_eq!(
        drained,
        2 * BATCH_SIZE as i64,
        "the in-flight commands were finished and no others started; the worker logged: {:#?}",
        worker.log.lock().unwrap()
    );

    // JSON logs: every line about a message carries its ids and type (span fields).
    let log = worker.log.lock().unwrap().clone();
    let handled: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "command handled" && v["span"]["type"] == "client.create")
        .collect();
    assert!(!handled.is_empty(), "{log:?}");
    for line in &handled {
        let span = &line["span"];
        assert!(
            ids.contains(&span["message_id"].as_str().unwrap_or_default().to_string()),
            "{line}"
        );
        assert_eq!(span["correlation_id"], span["message_id"], "{line}");
        assert_eq!(span["type"], "client.create", "{line}");
        assert_eq!(span["trace_id"].as_str().map(str::len), Some(32), "{line}");
    }
    assert!(
        log.iter().any(|l| l.contains("shutdown requested")),
        "{log:?}"
    );

    finish_with_next_worker(&settings, &pool, &ids).await;
    pool.close().await;
    remove_test_objects(&settings, &database).await;
}

#[tokio::test]
async fn handlers_that_outlast_the_bound_are_left_to_the_next_worker_and_processed_once() {
    let _one = crate::ONE_AT_A_TIME.write().await;
    let (settings, database) = test_settings().await;
    let url = settings.database.url.expose_secret().to_string();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let bound = Duration::from_millis(1_500);
    let mut worker = start_worker(&settings, bound.as_millis() as u64).await;

    let mut lock = block_inserts(&url).await;
    let ids = publish_commands(&settings).await;
    // One blocked batch is enough to show the bound: under a loaded CI machine the other
    // may not have reached the lock yet.
    wait_for_waiters(&pool, 1).await;

    sigterm(&worker.child);
    let asked = Instant::now();
    let status = tokio::time::timeout(bound + Duration::from_secs(10), worker.child.wait())
        .await
        .expect("the worker exits once the bound is reached")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        asked.elapsed() < bound + Duration::from_secs(3),
        "took {:?}",
        asked.elapsed()
    );
    let log = worker.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("shutdown bound reached")),
        "{log:?}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();

    finish_with_next_worker(&settings, &pool, &ids).await;
    pool.close().await;
    remove_test_objects(&settings, &database).await;
}
