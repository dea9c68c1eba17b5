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

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use crate::broker;
use crate::configuration::Settings;

mod commands;
mod report;
mod session;

pub use commands::client_create_commands;
use report::*;
pub use report::{Latency, Report, Seen, Sent};
use session::*;

/// The countries the migrations seed with a PSP (ID is Xendit's).
pub const SEEDED_COUNTRIES: [&str; 6] = ["SG", "US", "IN", "AU", "VN", "ID"];

/// Events that end a command, whatever is waited for.
pub const REFUSED: &str = "client.creation_failed";
pub const REJECTED: &str = "command.rejected";

/// What `onboard-lab load` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `client.create` spread over the countries.
    Create,
    /// Creates the clients, then per client: client.kyc.update (APPROVED), client.approve,
    /// client.record_first_transaction; one report per command type.
    Lifecycle,
    /// Creates the clients, then each admin: instance.create, instance.update_alias,
    /// instance.delete; one report per command type.
    Instances,
}

/// Which event counts as a `client.create`'s outcome (refusals and rejections always do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `client.created`: step 1 (persist) committed and announced.
    Created,
    /// `client.onboarding_completed`: the whole saga ran.
    Completed,
}

impl Outcome {
    pub fn event(self) -> &'static str {
        match self {
            Outcome::Created => "client.created",
            Outcome::Completed => "client.onboarding_completed",
        }
    }

    /// Every event type that settles a command.
    pub fn events(self) -> [&'static str; 3] {
        [self.event(), REFUSED, REJECTED]
    }
}

/// How to load the worker.
#[derive(Debug, Clone)]
pub struct Options {
    /// Commands to publish.
    pub count: usize,
    /// Commands per second; `None`: as fast as the broker confirms.
    pub rate: Option<f64>,
    pub outcome: Outcome,
    /// Spread round-robin over these country codes.
    pub countries: Vec<String>,
    /// Makes message ids and emails unique to this run.
    pub run_id: String,
    /// Publishes awaiting their broker confirm at once.
    pub max_unconfirmed: usize,
    /// Commands published and still without an outcome at once (a closed loop); `None`: no bound.
    pub max_outstanding: Option<usize>,
    /// Give up waiting when no outcome arrived for this long (after the last publish).
    pub idle_timeout: Duration,
    /// Keep listening this long after the last outcome (to catch trailing events).
    pub linger: Duration,
    /// Bind `#` and keep every event seen (for checkers), not only outcomes.
    pub record_events: bool,
    /// Commands without an outcome listed by id in the report; the rest are counted.
    pub missing_cap: usize,
    /// Draw a progress bar on stderr (only ever when stderr is a terminal).
    pub progress: bool,
}

impl Options {
    pub fn new(count: usize) -> Options {
        Options {
            count,
            rate: None,
            outcome: Outcome::Completed,
            countries: SEEDED_COUNTRIES.iter().map(|c| c.to_string()).collect(),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..10].to_string(),
            max_unconfirmed: 1000,
            max_outstanding: None,
            idle_timeout: Duration::from_secs(60),
            linger: Duration::ZERO,
            record_events: false,
            missing_cap: 20,
            progress: false,
        }
    }
}

/// One command of a phase, ready to publish.
struct Planned {
    sent: Sent,
    routing_key: &'static str,
    body: Vec<u8>,
}

/// A batch of commands of one type, and the events that settle each.
struct Phase {
    command_type: &'static str,
    outcome_event: &'static str,
    outcome_types: Vec<&'static str>,
    commands: Vec<Planned>,
}

impl Phase {
    fn client_create(options: &Options) -> Phase {
        Phase {
            command_type: "client.create",
            outcome_event: options.outcome.event(),
            outcome_types: options.outcome.events().to_vec(),
            commands: client_create_commands(options)
                .into_iter()
                .map(|(sent, body)| Planned {
                    sent,
                    routing_key: "client.create",
                    body,
                })
                .collect(),
        }
    }

    /// `command_type` for each settled command of `previous` whose outcome data gives a body
    /// (`make`), settled by `success` or `failure` (or `command.rejected`).
    fn after(
        previous: &PhaseReport,
        command_type: &'static str,
        (success, failure): (&'static str, &'static str),
        make: impl Fn(usize, &serde_json::Value) -> Option<serde_json::Value>,
    ) -> Phase {
        let commands = previous
            .report
            .sent
            .iter()
            .zip(&previous.data)
            .enumerate()
            .filter_map(|(i, (sent, data))| {
                let body = make(i, data.as_ref()?)?;
                Some(Planned {
                    sent: Sent {
                        message_id: format!("{}-{command_type}", sent.message_id),
                        email: sent.email.clone(),
                        country_code: sent.country_code.clone(),
                    },
                    routing_key: command_type,
                    body: serde_json::to_vec(&body).expect("JSON serialises"),
                })
            })
            .collect();
        Phase {
            command_type,
            outcome_event: success,
            outcome_types: vec![success, failure, REJECTED],
            commands,
        }
    }
}

/// Builds a phase from the one before it.
type NextPhase = Box<dyn Fn(&PhaseReport) -> Phase + Send + Sync>;

/// A phase's report, and the `data` of each command's outcome event (what the next phase
/// needs: client ids, admin user ids, instance ids).
struct PhaseReport {
    report: Report,
    data: Vec<Option<serde_json::Value>>,
}

/// Per-command state of the running phase, shared by the publisher and the subscriber.
struct Shared {
    outcome_types: Vec<&'static str>,
    index: HashMap<String, usize>,
    /// When each command was published (latest attempt); `None` until then.
    published_at: Vec<Option<Instant>>,
    /// When its outcome was seen.
    settled_at: Vec<Option<Instant>>,
    /// The outcome event's (type, message_id) once seen.
    outcome: Vec<Option<(String, Option<String>)>>,
    data: Vec<Option<serde_json::Value>>,
    histogram: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    settled: usize,
    repeated: u64,
    conflicting: u64,
    last_outcome: Option<Instant>,
    events: Vec<Seen>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            outcome_types: Vec::new(),
            index: HashMap::new(),
            published_at: Vec::new(),
            settled_at: Vec::new(),
            outcome: Vec::new(),
            data: Vec::new(),
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            outcomes: BTreeMap::new(),
            settled: 0,
            repeated: 0,
            conflicting: 0,
            last_outcome: None,
            events: Vec::new(),
        }
    }

    fn start(&mut self, phase: &Phase) {
        let events = std::mem::take(&mut self.events);
        *self = Shared::new();
        self.events = events;
        let n = phase.commands.len();
        self.outcome_types = phase.outcome_types.clone();
        self.index = phase
            .commands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.sent.message_id.clone(), i))
            .collect();
        self.published_at = vec![None; n];
        self.settled_at = vec![None; n];
        self.outcome = vec![None; n];
        self.data = vec![None; n];
    }
}

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
