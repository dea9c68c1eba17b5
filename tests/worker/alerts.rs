//! `deploy/prometheus/alerts.yml` (issue 13, item 6): valid for Prometheus, each alert proven by
//! `promtool test rules` cases, and every `onboard_*` metric the rules read is one a real
//! worker exposes on `/metrics`. promtool comes from Debian's `prometheus` package, which
//! `scripts/services.sh tools` installs (scripts/test.sh runs it).

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(DIR)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): `scripts/services.sh tools` installs it (Debian's prometheus)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Names in `text` that start with `onboard_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("onboard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn the_alert_rules_are_valid_each_is_tested_and_they_read_metrics_the_worker_exposes() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let rules = std::fs::read_to_string(format!("{DIR}/alerts.yml")).unwrap();
    let cases = std::fs::read_to_string(format!("{DIR}/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in &alerts {
        assert!(
            cases.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool case"
        );
    }

    let app = spawn_app().await;
    let url = format!(
        "http://{}/metrics",
        app.worker.as_ref().expect("worker running").http_addr
    );
    // Counters appear once counted: a command for a client that does not exist (yet) goes to
    // a delay queue, which counts a retry.
    app.publish(Msg::json(
        "client.approve",
        &serde_json::json!({"client_id": 999_999}),
    ))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let exposed = loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if text.contains("onboard_messages_retried_total") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry counted: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // A counter with no sample yet shows only in its `# TYPE` line, without `_total`.
    let base = |n: &String| n.strip_suffix("_total").unwrap_or(n).to_string();
    let exposed: BTreeSet<String> = metric_names(&exposed).iter().map(base).collect();
    for name in metric_names(&rules) {
        assert!(
            exposed.contains(&base(&name)),
            "alerts.yml reads {name}, which /metrics does not have: {exposed:?}"
        );
    }
}
