//! `onboard-lab load`: drives the worker the way upstream services do, at volume, and measures it.
//!
//! It subscribes first (a private queue bound to the events exchange), then publishes N
//! commands, at a target rate or as fast as the broker confirms them (confirms pipelined, a
//! bounded number unconfirmed at once), and waits for each command's outcome event by
//! correlation id. The report has the throughput, the latency from publish to outcome event
//! (HDR histogram), the count of each outcome, and every command that got no outcome.
//!
//! Tests and the fault-injection suite use [`run`] directly: with [`Options::record_events`]
//! the report keeps every event seen, so a checker can prove that nothing was lost.

use serde_json::json;

use crate::configuration::Settings;

mod commands;
mod options;
mod phase;
mod report;
mod session;

pub use commands::client_create_commands;
pub use options::{Options, Outcome, REFUSED, REJECTED, SEEDED_COUNTRIES, Scenario};
use phase::{NextPhase, Phase};
pub use report::{Latency, Report, Seen, Sent};
use session::Session;

/// Runs a load of `client.create` commands: subscribe, publish, wait, report. Needs the
/// broker (the topology is declared when missing, so commands published before any worker
/// starts simply wait in the queue).
pub async fn run(settings: &Settings, options: &Options) -> anyhow::Result<Report> {
    let mut reports = run_scenario(settings, options, Scenario::Create).await?;
    Ok(reports.remove(0))
}

/// Runs a scenario: `Create` is one phase; `Lifecycle` creates the clients, then sends each
/// `client.kyc.update` (APPROVED), `client.approve` and `client.record_first_transaction`;
/// `Instances` creates the clients, then has each admin create, rename and delete an instance.
/// One report per phase; a phase only carries on the commands whose previous step succeeded.
pub async fn run_scenario(
    settings: &Settings,
    options: &Options,
    scenario: Scenario,
) -> anyhow::Result<Vec<Report>> {
    let first = match scenario {
        Scenario::Create => Phase::client_create(options),
        // Later phases need client.created's ids; the rest of the saga runs meanwhile.
        _ => Phase::client_create(&Options {
            outcome: Outcome::Created,
            ..options.clone()
        }),
    };
    let session = Session::open(settings, options, scenario).await?;
    let mut reports = Vec::new();
    let mut previous = session.phase(first).await?;
    let id = |data: &serde_json::Value, path: &[&str]| -> Option<i64> {
        path.iter().try_fold(data, |v, k| v.get(k))?.as_i64()
    };
    let nexts: Vec<NextPhase> = match scenario {
        Scenario::Create => vec![],
        Scenario::Lifecycle => vec![
            Box::new(move |p| {
                Phase::after(
                    p,
                    "client.kyc.update",
                    ("client.kyc_updated", "client.kyc_update_failed"),
                    |_, d| {
                        Some(
                            json!({ "client_id": id(d, &["client_id"]).or_else(|| id(d, &["client", "client_id"]))?, "ekyc_status": "APPROVED" }),
                        )
                    },
                )
            }),
            Box::new(move |p| {
                Phase::after(
                    p,
                    "client.approve",
                    ("client.approved", "client.transition_rejected"),
                    |_, d| {
                        Some(
                            json!({ "client_id": id(d, &["client_id"]).or_else(|| id(d, &["client", "client_id"]))?, "reason": "load test" }),
                        )
                    },
                )
            }),
            Box::new(move |p| {
                Phase::after(
                    p,
                    "client.record_first_transaction",
                    ("client.activated", "client.transition_rejected"),
                    |i, d| {
                        Some(
                            json!({ "client_id": id(d, &["client_id"]).or_else(|| id(d, &["client", "client_id"]))?, "transaction_id": format!("load-tx-{i}") }),
                        )
                    },
                )
            }),
        ],
        Scenario::Instances => vec![
            Box::new(move |p| {
                Phase::after(
                    p,
                    "instance.create",
                    ("instance.created", "instance.command_failed"),
                    |i, d| {
                        Some(
                            json!({ "actor_user_id": id(d, &["admin_user", "user_id"])?, "instance_name": format!("load-{i}") }),
                        )
                    },
                )
            }),
            Box::new(move |p| {
                Phase::after(
                    p,
                    "instance.update_alias",
                    ("instance.alias_updated", "instance.command_failed"),
                    |i, d| {
                        Some(json!({
                            "actor_user_id": id(d, &["actor_user_id"]).or_else(|| id(d, &["instance", "actor_user_id"]))?,
                            "instance_id": id(d, &["instance", "instance_id"])?,
                            "alias": format!("Load instance {i}"),
                        }))
                    },
                )
            }),
            Box::new(move |p| {
                Phase::after(
                    p,
                    "instance.delete",
                    ("instance.deleted", "instance.command_failed"),
                    |_, d| {
                        Some(json!({
                            "actor_user_id": id(d, &["actor_user_id"]).or_else(|| id(d, &["instance", "actor_user_id"]))?,
                            "instance_id": id(d, &["instance", "instance_id"])?,
                        }))
                    },
                )
            }),
        ],
    };
    for next in nexts {
        let phase = next(&previous);
        reports.push(previous.report);
        previous = session.phase(phase).await?;
    }
    reports.push(previous.report);
    session.close().await;
    Ok(reports)
}

#[cfg(test)]
mod tests;
