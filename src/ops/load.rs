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

/// The countries the migrations seed with a PSP (ID is Xendit's).
pub const SEEDED_COUNTRIES: [&str; 6] = ["SG", "US", "IN", "AU", "VN", "ID"];

/// Events that end a command, whatever is waited for.
pub const REFUSED: &str = "client.creation_failed";
pub const REJECTED: &str = "command.rejected";

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

/// One command of the run, as published.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// Also its correlation id.
    pub message_id: String,
    pub email: String,
    pub country_code: String,
}

/// One event the subscriber saw.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub event_type: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub body: serde_json::Value,
}

/// Latency from publish to outcome event, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub command_type: &'static str,
    pub outcome_event: &'static str,
    pub commands: usize,
    pub published: usize,
    /// Not confirmed by the broker after every attempt (never counted as awaiting an outcome).
    pub publish_failed: usize,
    /// Seconds from the first publish to the last one.
    pub publish_seconds: f64,
    /// Seconds from the first publish to the last outcome.
    pub elapsed_seconds: f64,
    /// Outcomes per second over `elapsed_seconds`.
    pub throughput_per_sec: f64,
    pub latency: Latency,
    /// Commands settled, per outcome event type.
    pub outcomes: BTreeMap<String, u64>,
    /// Outcome events seen again with the same message_id (allowed: at-least-once).
    pub repeated_outcomes: u64,
    /// Commands with two different outcome events (never allowed).
    pub conflicting_outcomes: u64,
    /// Commands that got no outcome (message ids, at most `missing_cap`), and how many in all.
    pub missing: Vec<String>,
    pub missing_count: usize,
    #[serde(skip)]
    pub sent: Vec<Sent>,
    /// Every event seen, with [`Options::record_events`].
    #[serde(skip)]
    pub events: Vec<Seen>,
    /// Per command, seconds from the phase's first publish to its publish and to its outcome
    /// (for `--plot`).
    #[serde(skip)]
    pub timeline: Vec<(f64, Option<f64>)>,
}

impl Report {
    /// Settled commands.
    pub fn settled(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// The human summary `onboard-lab load` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let publish_rate = rate(self.published, self.publish_seconds);
        out += &format!(
            "run {}: {} {} commands published in {:.2} s ({:.0}/s){}\n",
            self.run_id,
            self.published,
            self.command_type,
            self.publish_seconds,
            publish_rate,
            if self.publish_failed > 0 {
                format!(", {} NOT confirmed by the broker", self.publish_failed)
            } else {
                String::new()
            }
        );
        out += &format!(
            "outcomes: {} of {} in {:.2} s = {:.1} commands/s (waiting for {})\n",
            self.settled(),
            self.published,
            self.elapsed_seconds,
            self.throughput_per_sec,
            self.outcome_event
        );
        for (event, n) in &self.outcomes {
            out += &format!("  {event:<32} {n}\n");
        }
        if self.repeated_outcomes > 0 {
            out += &format!(
                "  (outcome events seen twice, deduplicated by message_id: {})\n",
                self.repeated_outcomes
            );
        }
        if self.conflicting_outcomes > 0 {
            out += &format!(
                "  COMMANDS WITH TWO DIFFERENT OUTCOMES: {}\n",
                self.conflicting_outcomes
            );
        }
        let l = &self.latency;
        out += &format!(
            "latency publish -> outcome (ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}\n",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.mean_ms
        );
        if self.missing_count == 0 {
            out += "no outcome: none\n";
        } else {
            out += &format!("no outcome: {} commands\n", self.missing_count);
            for id in &self.missing {
                out += &format!("  {id}\n");
            }
            if self.missing_count > self.missing.len() {
                out += &format!(
                    "  ... and {} more\n",
                    self.missing_count - self.missing.len()
                );
            }
        }
        out
    }
}

fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The `client.create` bodies of a run: unique emails (run id and index), spread over the
/// countries round-robin, valid for the schema and the handler.
pub fn client_create_commands(options: &Options) -> Vec<(Sent, Vec<u8>)> {
    let countries: Vec<String> = if options.countries.is_empty() {
        SEEDED_COUNTRIES.iter().map(|c| c.to_string()).collect()
    } else {
        options.countries.clone()
    };
    (0..options.count)
        .map(|i| {
            let country = countries[i % countries.len()].to_uppercase();
            let email = format!(
                "load-{}-{i}@{}.load.example",
                options.run_id,
                country.to_lowercase()
            );
            let body = json!({
                "email": email,
                "client_alias": format!("Load {} #{i}", options.run_id),
                "client_type": "CORPORATE",
                "country_code": country,
                "phone": phone(&country, i),
            });
            let sent = Sent {
                message_id: format!("load-{}-{i}", options.run_id),
                email,
                country_code: country,
            };
            (sent, serde_json::to_vec(&body).expect("JSON serialises"))
        })
        .collect()
}

/// A plausible mobile number of the country, unique per index (at most 20 characters).
fn phone(country: &str, i: usize) -> String {
    let prefix = match country {
        "SG" => "+659",
        "US" => "+1415",
        "IN" => "+919",
        "AU" => "+614",
        "VN" => "+849",
        "ID" => "+628",
        _ => "+999",
    };
    format!("{prefix}{:08}", i % 100_000_000)
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

/// The broker side of a run: the subscriber (bound before anything is published) and the
/// confirm-mode publishing channel, shared by every phase.
struct Session {
    options: Options,
    names: crate::broker::Names,
    subscriber: lapin::Connection,
    publisher: lapin::Connection,
    channel: lapin::Channel,
    confirm_timeout: Duration,
    shared: Arc<Mutex<Shared>>,
    bell: Arc<Notify>,
    outstanding: Option<Arc<Semaphore>>,
    progress: Arc<Mutex<ProgressBar>>,
    listen: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn open(
        settings: &Settings,
        options: &Options,
        scenario: Scenario,
    ) -> anyhow::Result<Session> {
        let subscriber = broker::connect(&settings.broker, "onboard-lab load (events)").await?;
        let sub_channel = subscriber.create_channel().await?;
        let names = broker::declare(&sub_channel, settings).await?;
        // Only the outcomes, unless every event is wanted (or the phases' are many).
        let keys: Vec<&str> = if options.record_events || scenario != Scenario::Create {
            vec!["#"]
        } else {
            options.outcome.events().to_vec()
        };
        let queue = broker::topology::private_event_queue(&sub_channel, &names, &keys).await?;
        let mut consumer = sub_channel
            .basic_consume(
                queue.as_str().into(),
                "onboard-load".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;

        let shared = Arc::new(Mutex::new(Shared::new()));
        let outstanding = options
            .max_outstanding
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        let bell = Arc::new(Notify::new());
        let progress = Arc::new(Mutex::new(ProgressBar::hidden()));
        let listen = {
            let shared = shared.clone();
            let outstanding = outstanding.clone();
            let bell = bell.clone();
            let progress = progress.clone();
            let record = options.record_events;
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let p = &delivery.properties;
                    let event_type = delivery.routing_key.as_str();
                    let correlation = p.correlation_id().as_ref().map(|c| c.as_str());
                    let message_id = p.message_id().as_ref().map(|m| m.as_str().to_string());
                    let mut s = shared.lock().expect("load state");
                    let body = || {
                        serde_json::from_slice::<serde_json::Value>(&delivery.data)
                            .unwrap_or(serde_json::Value::Null)
                    };
                    if record {
                        s.events.push(Seen {
                            event_type: event_type.to_string(),
                            message_id: message_id.clone(),
                            correlation_id: correlation.map(str::to_string),
                            body: body(),
                        });
                    }
                    if !s.outcome_types.contains(&event_type) {
                        continue;
                    }
                    let Some(&i) = correlation.and_then(|c| s.index.get(c)) else {
                        continue; // another phase's, run's, or publisher's
                    };
                    match &s.outcome[i] {
                        Some((t, id)) if t == event_type && *id == message_id => s.repeated += 1,
                        Some(_) => s.conflicting += 1,
                        None => {
                            let now = Instant::now();
                            if let Some(at) = s.published_at[i] {
                                let micros = now.duration_since(at).as_micros() as u64;
                                s.histogram.saturating_record(micros.max(1));
                            }
                            s.settled_at[i] = Some(now);
                            s.outcome[i] = Some((event_type.to_string(), message_id));
                            s.data[i] = body().get("data").cloned();
                            *s.outcomes.entry(event_type.to_string()).or_insert(0) += 1;
                            s.settled += 1;
                            s.last_outcome = Some(now);
                            if let Some(sem) = &outstanding {
                                sem.add_permits(1);
                            }
                            progress.lock().expect("progress").inc(1);
                            bell.notify_waiters();
                        }
                    }
                }
            })
        };

        // Publishing: its own connection, so a burst of publishes never delays the events.
        let publisher = broker::connect(&settings.broker, "onboard-lab load (commands)").await?;
        let channel = publisher.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Session {
            options: options.clone(),
            names,
            subscriber,
            publisher,
            channel,
            confirm_timeout: Duration::from_millis(settings.broker.confirm_timeout_ms),
            shared,
            bell,
            outstanding,
            progress,
            listen,
        })
    }

    async fn publish_one(&self, c: &Planned) -> Result<PublisherConfirm, lapin::Error> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(c.sent.message_id.as_str().into())
            .with_correlation_id(c.sent.message_id.as_str().into())
            .with_app_id("onboard-lab load".into());
        self.channel
            .basic_publish(
                self.names.commands_exchange.as_str().into(),
                c.routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &c.body,
                props,
            )
            .await
    }

    /// Publishes a phase's commands and waits for their outcomes.
    async fn phase(&self, phase: Phase) -> anyhow::Result<PhaseReport> {
        let options = &self.options;
        self.shared.lock().expect("load state").start(&phase);
        if let Some(sem) = &self.outstanding {
            // Each phase starts with the whole window.
            let missing = options.max_outstanding.unwrap_or(0).max(1) - sem.available_permits();
            sem.add_permits(missing);
        }
        let bar = progress_bar(options, phase.commands.len(), phase.command_type);
        *self.progress.lock().expect("progress") = bar.clone();

        let unconfirmed = Arc::new(Semaphore::new(options.max_unconfirmed.max(1)));
        let failed = Arc::new(Mutex::new(Vec::<usize>::new()));
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(phase.commands.len());
        for (i, c) in phase.commands.iter().enumerate() {
            if let Some(r) = options.rate.filter(|r| *r > 0.0) {
                let due = started + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(due.into()).await;
            }
            if let Some(sem) = &self.outstanding {
                sem.acquire().await?.forget();
            }
            let permit = unconfirmed.clone().acquire_owned().await?;
            self.shared.lock().expect("load state").published_at[i] = Some(Instant::now());
            let confirm = self.publish_one(c).await;
            let failed = failed.clone();
            let timeout = self.confirm_timeout;
            confirms.push(tokio::spawn(async move {
                if !confirmed(confirm, timeout).await {
                    failed.lock().expect("failures").push(i);
                }
                drop(permit);
            }));
        }
        for c in confirms {
            let _ = c.await;
        }
        let publish_seconds = started.elapsed().as_secs_f64();
        let mut failed = std::mem::take(&mut *failed.lock().expect("failures"));
        // Republish what the broker did not confirm, with the same message_id: the worker's
        // inbox makes a second copy harmless, and a missing one would be a lost command.
        for _ in 0..3 {
            if failed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut still = Vec::new();
            for i in failed {
                let confirm = self.publish_one(&phase.commands[i]).await;
                if !confirmed(confirm, self.confirm_timeout).await {
                    still.push(i);
                }
            }
            failed = still;
        }
        let publish_failed = failed.len();
        let expected = phase.commands.len() - publish_failed;
        bar.set_message(format!("{} published", phase.command_type));

        // Wait until every published command settled, or none settled for `idle_timeout`.
        let published_by = started + Duration::from_secs_f64(publish_seconds);
        loop {
            let notified = self.bell.notified();
            let (settled, last) = {
                let s = self.shared.lock().expect("load state");
                (s.settled, s.last_outcome)
            };
            if settled >= expected {
                break;
            }
            let since = last.map(|l| l.max(published_by)).unwrap_or(published_by);
            let deadline = since + options.idle_timeout;
            if Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
        if !options.linger.is_zero() {
            tokio::time::sleep(options.linger).await;
        }
        bar.finish_and_clear();

        let mut s = self.shared.lock().expect("load state");
        let elapsed = s
            .last_outcome
            .map(|l| l.duration_since(started).as_secs_f64())
            .unwrap_or(0.0);
        let h = &s.histogram;
        let ms = |v: u64| v as f64 / 1000.0;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50_ms: ms(h.value_at_quantile(0.50)),
                p95_ms: ms(h.value_at_quantile(0.95)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
                mean_ms: h.mean() / 1000.0,
            }
        };
        let failed: std::collections::HashSet<usize> = failed.into_iter().collect();
        let missing_all: Vec<String> = (0..phase.commands.len())
            .filter(|i| s.outcome[*i].is_none() && !failed.contains(i))
            .map(|i| phase.commands[i].sent.message_id.clone())
            .collect();
        // Only the successes carry data the next phase can use.
        let raw = std::mem::take(&mut s.data);
        let data = s
            .outcome
            .iter()
            .zip(raw)
            .map(|(o, d)| match o {
                Some((t, _)) if t == phase.outcome_event => d,
                _ => None,
            })
            .collect();
        let report = Report {
            run_id: options.run_id.clone(),
            command_type: phase.command_type,
            outcome_event: phase.outcome_event,
            commands: phase.commands.len(),
            published: expected,
            publish_failed,
            publish_seconds,
            elapsed_seconds: elapsed,
            throughput_per_sec: rate(s.settled, elapsed),
            latency,
            outcomes: s.outcomes.clone(),
            repeated_outcomes: s.repeated,
            conflicting_outcomes: s.conflicting,
            missing_count: missing_all.len(),
            missing: missing_all.into_iter().take(options.missing_cap).collect(),
            sent: phase.commands.into_iter().map(|c| c.sent).collect(),
            events: std::mem::take(&mut s.events),
            timeline: s
                .published_at
                .iter()
                .zip(&s.settled_at)
                .filter_map(|(p, o)| {
                    let since = |t: Instant| t.duration_since(started).as_secs_f64();
                    p.map(|p| (since(p), o.map(since)))
                })
                .collect(),
        };
        Ok(PhaseReport { report, data })
    }

    async fn close(self) {
        self.listen.abort();
        let _ = self.publisher.close(200, "load done".into()).await;
        let _ = self.subscriber.close(200, "load done".into()).await;
    }
}

async fn confirmed(confirm: Result<PublisherConfirm, lapin::Error>, timeout: Duration) -> bool {
    match confirm {
        Ok(c) => matches!(
            tokio::time::timeout(timeout, c).await,
            Ok(Ok(Confirmation::Ack(None)))
        ),
        Err(_) => false,
    }
}

fn progress_bar(options: &Options, len: usize, what: &str) -> ProgressBar {
    if !options.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar =
        ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr_with_hz(5));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} outcomes ({per_sec}) {msg}",
        )
        .expect("valid template"),
    );
    bar.set_message(format!("publishing {what}"));
    bar
}

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

/// `onboard-lab load` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Commands to publish.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: usize,
    /// Commands per second (default: as fast as the broker confirms).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Which event ends a client.create: client.created or client.onboarding_completed.
    #[arg(long, value_enum, default_value = "completed")]
    pub outcome: OutcomeArg,
    /// Country codes to spread the clients over (SG: no Xendit; ID: Xendit).
    #[arg(long, value_delimiter = ',', default_value = "SG,US,IN,AU,VN,ID")]
    pub countries: Vec<String>,
    /// create: client.create only; lifecycle, instances: then commands on the created clients.
    #[arg(long, value_enum, default_value = "create")]
    pub scenario: Scenario,
    /// Makes message ids and emails unique (default: random).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Publishes awaiting their broker confirm at once.
    #[arg(long, default_value_t = 1000)]
    pub max_unconfirmed: usize,
    /// Commands published and without an outcome at once (a closed loop); default: no bound.
    #[arg(long)]
    pub max_outstanding: Option<usize>,
    /// Give up when no outcome arrived for this many seconds after the last publish.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Commands without an outcome listed by id (the rest are counted).
    #[arg(long, default_value_t = 20)]
    pub show_missing: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Draw throughput over time and the latency distribution to this SVG file (with several
    /// phases, one file per phase: NAME.1.svg, NAME.2.svg, ...).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    Created,
    Completed,
}

/// `onboard-lab load`: runs and prints. `Ok(false)` when a command got no outcome (or was never
/// confirmed by the broker).
pub async fn cli(settings: &Settings, args: LoadArgs) -> anyhow::Result<bool> {
    let mut options = Options::new(args.count);
    options.rate = args.rate;
    options.outcome = match args.outcome {
        OutcomeArg::Created => Outcome::Created,
        OutcomeArg::Completed => Outcome::Completed,
    };
    options.countries = args.countries;
    if let Some(id) = args.run_id {
        options.run_id = id;
    }
    options.max_unconfirmed = args.max_unconfirmed;
    options.max_outstanding = args.max_outstanding;
    options.idle_timeout = Duration::from_secs(args.timeout);
    options.missing_cap = args.show_missing;
    options.progress = true;
    let reports = run_scenario(settings, &options, args.scenario).await?;
    if let Some(path) = &args.plot {
        for (i, report) in reports.iter().enumerate() {
            let file = if reports.len() == 1 {
                path.clone()
            } else {
                path.with_extension(format!("{}.svg", i + 1))
            };
            super::plot::draw(report, &file)?;
            eprintln!("plot: {}", file.display());
        }
    }
    if args.json {
        match reports.as_slice() {
            [one] => println!("{}", serde_json::to_string_pretty(one)?),
            many => println!("{}", serde_json::to_string_pretty(many)?),
        }
    } else {
        for (i, report) in reports.iter().enumerate() {
            if reports.len() > 1 {
                println!(
                    "== phase {} of {}: {}",
                    i + 1,
                    reports.len(),
                    report.command_type
                );
            }
            print!("{}", report.render());
        }
    }
    Ok(reports
        .iter()
        .all(|r| r.missing_count == 0 && r.publish_failed == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{IncomingMessage, parse};

    #[test]
    fn generated_commands_are_unique_valid_and_spread_over_the_countries() {
        let mut options = Options::new(12);
        options.run_id = "r1".into();
        let commands = client_create_commands(&options);
        let schemas = crate::registry::schemas();
        let mut emails = std::collections::HashSet::new();
        for (sent, body) in &commands {
            let msg = IncomingMessage {
                routing_key: "client.create".into(),
                message_id: Some(sent.message_id.clone()),
                content_type: Some("application/json".into()),
                body: body.clone(),
                ..Default::default()
            };
            let cmd = parse(&msg, &schemas).expect("valid command");
            let create: crate::handlers::client_create::ClientCreate =
                serde_json::from_value(cmd.body).expect("a client.create body");
            let fields = crate::domain::new_client::ContactFields {
                email: create.email.as_deref(),
                client_alias: create.client_alias.as_deref(),
                client_type: create.client_type.as_deref(),
                country_code: create.country_code.as_deref(),
                phone: create.phone.as_deref(),
            };
            crate::domain::NewClient::parse(fields).expect("complete body");
            assert!(emails.insert(sent.email.clone()), "unique emails");
        }
        let per_country = |c: &str| commands.iter().filter(|(s, _)| s.country_code == c).count();
        for c in SEEDED_COUNTRIES {
            assert_eq!(per_country(c), 2, "{c}");
        }
    }

    #[test]
    fn two_runs_never_share_an_email() {
        let a = client_create_commands(&Options::new(3));
        let b = client_create_commands(&Options::new(3));
        assert!(
            a.iter()
                .all(|(x, _)| b.iter().all(|(y, _)| x.email != y.email))
        );
    }

    #[test]
    fn phones_fit_the_column() {
        for c in SEEDED_COUNTRIES {
            assert!(phone(c, 99_999_999).len() <= 20);
        }
    }
}
