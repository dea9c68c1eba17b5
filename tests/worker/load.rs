//! `onboard-lab load` against a real worker: every command gets its outcome, and the report says so.

use std::time::Duration;

use onboard::ops::load::{self, Options, Outcome};

use crate::support::*;

#[tokio::test]
async fn a_small_load_run_settles_every_command_and_measures_it() {
    let app = spawn_app().await;
    let mut options = Options::new(24);
    options.idle_timeout = WAIT;
    let report = load::run(&app.settings, &options).await.expect("load runs");

    assert_eq!(report.published, 24);
    assert_eq!(report.publish_failed, 0);
    assert_eq!(report.missing_count, 0, "{}", report.render());
    assert_eq!(report.conflicting_outcomes, 0);
    assert_eq!(
        report.outcomes.get("client.onboarding_completed"),
        Some(&24),
        "{}",
        report.render()
    );
    assert!(report.latency.p50_ms > 0.0 && report.latency.max_ms >= report.latency.p99_ms);
    assert!(report.throughput_per_sec > 0.0);
    // Four of each seeded country, one client per command.
    assert_eq!(app.count("SELECT count(*) FROM clients").await, 24);
    assert_eq!(
        app.count("SELECT count(DISTINCT country_code) FROM clients")
            .await,
        6
    );
    app.finish().await;
}

/// Issue 24: `--prefill` measures the worker from a full queue, as the ceiling is measured:
/// every command is queued (and the ready file written) while no worker consumes, and the
/// clock starts only when one attaches, so time spent before that is not in the rate.
#[tokio::test]
async fn a_prefilled_run_queues_everything_first_and_starts_its_clock_when_the_worker_attaches() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let ready = std::env::temp_dir().join(format!("onboard-ready-{}", uuid::Uuid::new_v4()));
    let mut options = Options::new(12);
    options.idle_timeout = WAIT;
    options.prefill = true;
    options.ready_file = Some(ready.clone());
    let settings = app.settings.clone();
    let run = tokio::spawn(async move { load::run(&settings, &options).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready.exists() {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything is queued and nothing is consumed: the worker is stopped.
    let queued = app.queue_counts(&app.names().commands_queue).await;
    assert_eq!(queued, (12, 0), "(ready, consumers)");
    // Time that must not count: the rate is measured from the worker's attaching.
    let idle = Duration::from_millis(1500);
    tokio::time::sleep(idle).await;
    app.start_worker(None).await;
    let report = run.await.unwrap().expect("load runs");
    let _ = std::fs::remove_file(&ready);

    assert!(report.prefilled);
    assert_eq!(report.missing_count, 0, "{}", report.render());
    assert_eq!(
        report.outcomes.get("client.onboarding_completed"),
        Some(&12)
    );
    // Latency is from each publish (it includes the wait), the elapsed time is from the
    // attach (it does not).
    assert!(
        report.latency.max_ms > idle.as_millis() as f64,
        "{}",
        report.render()
    );
    assert!(
        report.elapsed_seconds < report.latency.max_ms / 1000.0 - 1.0,
        "{}",
        report.render()
    );
    app.finish().await;
}

#[tokio::test]
async fn waiting_for_created_counts_refusals_as_outcomes_too() {
    let app = spawn_app().await;
    // A country without a PSP: every command is refused, and that is its outcome.
    let mut options = Options::new(5);
    options.outcome = Outcome::Created;
    options.countries = vec!["FR".into()];
    options.idle_timeout = WAIT;
    let report = load::run(&app.settings, &options).await.expect("load runs");
    assert_eq!(report.outcomes.get("client.creation_failed"), Some(&5));
    assert_eq!(report.missing_count, 0);
    app.finish().await;
}

#[tokio::test]
async fn the_lifecycle_scenario_takes_each_created_client_to_active() {
    let app = spawn_app().await;
    let mut options = Options::new(6);
    options.idle_timeout = WAIT;
    let reports = load::run_scenario(&app.settings, &options, load::Scenario::Lifecycle)
        .await
        .expect("load runs");
    let phases: Vec<_> = reports
        .iter()
        .map(|r| (r.command_type, r.outcomes.get(r.outcome_event).copied()))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("client.create", Some(6)),
            ("client.kyc.update", Some(6)),
            ("client.approve", Some(6)),
            ("client.record_first_transaction", Some(6)),
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM clients WHERE client_status = 'ACTIVE'")
            .await,
        6
    );
    app.finish().await;
}

#[tokio::test]
async fn the_instances_scenario_creates_renames_and_deletes_one_instance_per_admin() {
    let app = spawn_app().await;
    let mut options = Options::new(4);
    options.idle_timeout = WAIT;
    let reports = load::run_scenario(&app.settings, &options, load::Scenario::Instances)
        .await
        .expect("load runs");
    for r in &reports {
        assert_eq!(r.missing_count, 0, "{}", r.render());
        assert_eq!(r.outcomes.get(r.outcome_event), Some(&4), "{}", r.render());
    }
    assert_eq!(reports.last().unwrap().command_type, "instance.delete");
    app.finish().await;
}

/// Issue 13, item 7: `onboard-lab load --plot` (the real binary) writes an SVG that parses, with
/// both charts: throughput over time (two lines) and the latency distribution (bars).
#[tokio::test]
async fn load_plot_writes_an_svg_with_the_throughput_and_the_latency_charts() {
    let app = spawn_app().await;
    let file = std::env::temp_dir().join(format!("onboard-plot-{}.svg", uuid::Uuid::new_v4()));
    let out = lab_bin(&app.settings)
        .args(["load", "-n", "30", "--timeout", "30", "--plot"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    let caption = |start: &str| texts.iter().any(|t| t.starts_with(start));
    assert!(
        caption("Throughput: 30 client.create commands"),
        "{texts:?}"
    );
    assert!(caption("Latency, publish to outcome: p50"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "commands published"), "{texts:?}");
    // The two lines of the first chart and the bars of the second.
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("opacity").is_some())
        .count();
    assert!(lines >= 2, "{lines} lines");
    assert!(bars >= 1, "{bars} bars");
    let _ = std::fs::remove_file(&file);
    app.finish().await;
}
