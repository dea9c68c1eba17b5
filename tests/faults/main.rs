//! Fault injection: a few hundred onboardings per case (a few thousand with
//! `ONBOARD_FAULTS_FULL=1`) published by the load publisher (`onboard::ops::load`) to the real
//! `onboard` binary running as worker subprocesses, while something goes wrong: the worker is
//! SIGKILLed, the broker or the database goes away, Xendit fails or hangs, SMTP refuses.
//!
//! After each case the same checks (`Rig::check`): every command has exactly one outcome; no
//! client, admin user, saga or Xendit customer was created twice; every expected event reached
//! a subscriber (repeats allowed, gaps not: deduplicated by message_id) and so did every event
//! in the outbox; nothing is left in flight (outbox, commands, retry and dead-letter queues).
//! Each case prints one `FAULTS` line: commands, faults injected, lost, duplicated.
//!
//! The broker and the database "restart" as the worker sees it: a proxy in front of each is
//! cut (every connection dropped, new ones refused) and restored, so the servers other test
//! runs share keep running. Cases run one at a time; this binary runs after the others.
//!
//! The suite also holds the faults that need a server of their own or the real binary's
//! signals: `broker_restart` (a private RabbitMQ node per test, restarted and stopped for
//! good), `pg_restart` (a private PostgreSQL cluster restarted under load) and `signals`
//! (SIGTERM with commands in flight).
//!
//! Run: `cargo test --test faults -- --nocapture` (services from `scripts/services.sh up`).

mod broker_restart;
mod pg_restart;
mod rig;
mod signals;
#[path = "../worker/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use onboard::ops::load::{Report, SEEDED_COUNTRIES};
use rig::{Cluster, Expect, FakeXendit, Rig, SmtpSink, commands};

/// One case at a time: they share two cores with the broker and the database. A case takes it
/// to write; the private-broker restarts, which only load their own node, take it to read and
/// so run beside each other but beside nothing else.
static ONE_AT_A_TIME: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const XENDIT_KEY: &str = "xnd_development_faults_key";

/// Points the workers at `fake` with a short timeout and a budget that outlasts the faults.
fn use_xendit(rig: &mut Rig, fake: &FakeXendit) {
    rig.worker_env("ONBOARD__XENDIT__BASE_URL", fake.url.clone());
    rig.worker_env("ONBOARD__XENDIT__SECRET_KEY", XENDIT_KEY);
    // The fake has no rate limit; a development key's 60 a minute would pace the load instead.
    rig.worker_env("ONBOARD__XENDIT__REQUESTS_PER_MINUTE", "1000000");
    rig.worker_env("ONBOARD__XENDIT__TIMEOUT_MS", "500");
    rig.worker_env("ONBOARD__XENDIT__MAX_ATTEMPTS", "2");
    rig.worker_env("ONBOARD__XENDIT__MIN_BACKOFF_MS", "50");
    rig.worker_env("ONBOARD__XENDIT__MAX_BACKOFF_MS", "200");
    rig.worker_env("ONBOARD__SAGA__XENDIT_MAX_ATTEMPTS", "15");
}

/// Waits for the load to end while the workers are watched (`Rig::watch_workers`).
async fn finish_load(
    rig: &mut Rig,
    load: tokio::task::JoinHandle<anyhow::Result<Report>>,
) -> Report {
    let mut load = load;
    loop {
        tokio::select! {
            r = &mut load => return r.expect("load task").expect("load runs"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => rig.watch_workers().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigkilled_mid_run_and_restarted_three_times() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(300, 3000);
    let mut rig = Rig::new("worker_sigkilled_3_times").await;
    let fake = FakeXendit::start().await;
    use_xendit(&mut rig, &fake);
    let mut current = rig.spawn_worker();
    let load = rig.load(rig.load_options(n, &SEEDED_COUNTRIES));
    for k in 1..=3i64 {
        rig.wait_completed(n as i64 * k / 5, Duration::from_secs(180))
            .await;
        rig.kill_worker(current).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        current = rig.spawn_worker();
    }
    let report = finish_load(&mut rig, load).await;
    rig.check(
        &report,
        &Expect {
            xendit: Some(&fake),
            ..Default::default()
        },
    )
    .await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_consume_at_once_and_one_is_killed() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(300, 3000);
    let mut rig = Rig::new("two_workers_one_killed").await;
    let fake = FakeXendit::start().await;
    use_xendit(&mut rig, &fake);
    let first = rig.spawn_worker();
    rig.spawn_worker();
    let load = rig.load(rig.load_options(n, &SEEDED_COUNTRIES));
    rig.wait_completed(n as i64 * 2 / 5, Duration::from_secs(180))
        .await;
    rig.kill_worker(first).await;
    let report = finish_load(&mut rig, load).await;
    rig.check(
        &report,
        &Expect {
            xendit: Some(&fake),
            ..Default::default()
        },
    )
    .await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_goes_away_twice_mid_run() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(300, 3000);
    let mut rig = Rig::new("broker_gone_twice").await;
    rig.spawn_worker();
    let load = rig.load(rig.load_options(n, &["SG", "US", "IN", "AU", "VN"]));
    for k in 1..=2i64 {
        rig.wait_completed(n as i64 * k / 4, Duration::from_secs(180))
            .await;
        rig.amqp.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.amqp.restore();
        rig.faults.push("broker connections cut for 2 s".into());
    }
    let report = finish_load(&mut rig, load).await;
    rig.check(&report, &Expect::default()).await;
    rig.finish().await;
}

/// Past one machine (issue 12, item 10): a three-node cluster, every queue a quorum queue, the
/// worker given the three nodes. Node 1 (under the worker's sessions, and the queues' first
/// leader) stops and comes back, then node 2 (where the worker moved) does the same, during a
/// load: the worker follows the cluster, and every command has exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_stop_one_after_another_mid_run() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(600, 3000) as i64;
    let cluster = Cluster::up().await;
    let mut rig = Rig::on_cluster("cluster_nodes_stop", &cluster).await;
    rig.spawn_worker();
    // Spread over about 45 s, so that both stops fall inside the load.
    let mut options = rig.load_options(n as usize, &["SG", "US", "IN", "AU", "VN"]);
    options.rate = Some(n as f64 / 45.0);
    let load = rig.load(options);
    let moved = "broker session moved";
    for (k, node) in [(1i64, 1u16), (2, 2)] {
        rig.wait_completed(n * (2 * k - 1) / 5, Duration::from_secs(180))
            .await;
        let before = rig.worker_log_lines(0, moved);
        cluster.stop(node).await;
        // Progress while the node is down: the worker has left it.
        rig.wait_completed(n * (2 * k) / 5, Duration::from_secs(180))
            .await;
        let after = rig.worker_log_lines(0, moved);
        assert!(
            after >= before + 2,
            "both broker sessions (consume, publish) should have moved off node {node} \
             ({before} -> {after} moves)"
        );
        cluster.start(node).await;
        rig.faults
            .push(format!("cluster node {node} stopped and started"));
    }
    let report = finish_load(&mut rig, load).await;
    rig.check(&report, &Expect::default()).await;
    rig.finish().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_goes_away_mid_run() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(300, 3000);
    let mut rig = Rig::new("database_gone").await;
    rig.spawn_worker();
    let load = rig.load(rig.load_options(n, &["SG", "US", "IN", "AU", "VN"]));
    for k in 1..=2i64 {
        rig.wait_completed(n as i64 * k / 4, Duration::from_secs(180))
            .await;
        rig.pg.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.pg.restore();
        rig.faults.push("database connections cut for 3 s".into());
    }
    let report = finish_load(&mut rig, load).await;
    rig.check(&report, &Expect::default()).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xendit_answers_500s_then_times_out_for_a_while() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(150, 1500);
    let mut rig = Rig::new("xendit_500s_and_timeouts").await;
    let fake = FakeXendit::start().await;
    use_xendit(&mut rig, &fake);
    rig.spawn_worker();
    fake.mode(serde_json::json!({ "fail_rate": 1.0, "fail_status": 500 }))
        .await;
    let load = rig.load(rig.load_options(n, &["ID"]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.faults.push("Xendit answers 500 for 3 s".into());
    // Slower than the client's 500 ms timeout.
    fake.mode(serde_json::json!({ "fail_rate": 0.0, "latency_ms": 1500 }))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.faults.push("Xendit times out for 3 s".into());
    fake.mode(serde_json::json!({ "latency_ms": 0 })).await;
    let report = finish_load(&mut rig, load).await;
    let figures = rig
        .check(
            &report,
            &Expect {
                xendit: Some(&fake),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(figures.commands, n);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_refuses_connections_for_a_while() {
    let _one = ONE_AT_A_TIME.write().await;
    let n = commands(200, 2000);
    let mut rig = Rig::new("smtp_refusing").await;
    let mut sink = SmtpSink::reserve().await;
    rig.worker_env("ONBOARD__EMAIL__SMTP__HOST", "127.0.0.1");
    rig.worker_env("ONBOARD__EMAIL__SMTP__PORT", sink.port.to_string());
    rig.worker_env("ONBOARD__EMAIL__SMTP__TLS", "none");
    rig.worker_env("ONBOARD__EMAIL__SMTP__TIMEOUT_MS", "2000");
    rig.worker_env("ONBOARD__SAGA__EMAIL_MAX_ATTEMPTS", "15");
    rig.spawn_worker();
    let load = rig.load(rig.load_options(n, &["SG"]));
    tokio::time::sleep(Duration::from_secs(4)).await;
    sink.up().await;
    rig.faults.push("SMTP refuses connections for 4 s".into());
    let report = finish_load(&mut rig, load).await;
    rig.check(
        &report,
        &Expect {
            smtp: Some(&sink),
            ..Default::default()
        },
    )
    .await;
    // Every admin got the email once SMTP was back.
    let received = sink.received();
    let missing: Vec<_> = report
        .sent
        .iter()
        .filter(|s| !received.contains_key(&s.email.to_lowercase()))
        .map(|s| s.email.clone())
        .collect();
    assert!(missing.is_empty(), "no welcome email for {missing:?}");
    rig.finish().await;
}
