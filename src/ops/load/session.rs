//! The broker side of a run: the subscriber bound before anything is published, and the
//! confirm-mode publisher shared by every phase.

use super::options::Options;
use super::options::Scenario;
use super::phase::Phase;
use super::phase::PhaseReport;
use super::phase::Planned;
use super::phase::Shared;
use super::report::Latency;
use super::report::Progress;
use super::report::Report;
use super::report::Seen;
use super::report::rate;
use crate::broker;
use crate::configuration::Settings;
use futures::StreamExt;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use lapin::BasicProperties;
use lapin::Confirmation;
use lapin::PublisherConfirm;
use lapin::options::BasicConsumeOptions;
use lapin::options::BasicPublishOptions;
use lapin::options::ConfirmSelectOptions;
use lapin::types::FieldTable;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::Notify;
use tokio::sync::Semaphore;

/// The broker side of a run: the subscriber (bound before anything is published) and the
/// confirm-mode publishing channel, shared by every phase.
pub(super) struct Session {
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
    pub(super) async fn open(
        settings: &Settings,
        options: &Options,
        scenario: Scenario,
    ) -> anyhow::Result<Session> {
        let subscriber = broker::connect(&settings.broker, "onboard-lab load (events)").await?;
        let sub_channel = subscriber.create_channel().await?;
        let names = broker::declare_on(&subscriber, settings).await?;
        // Only the outcomes, unless every event is wanted (or the phases' are many).
        let keys: Vec<&str> =
            if options.record_events || options.every_event || scenario != Scenario::Create {
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
                while let Some(Ok(mut delivery)) = consumer.next().await {
                    let data = std::mem::take(&mut delivery.data);
                    let p = &delivery.properties;
                    let event_type = delivery.routing_key.as_str();
                    let correlation = p.correlation_id().as_ref().map(|c| c.as_str());
                    let message_id = p.message_id().as_ref().map(|m| m.as_str().to_string());
                    let mut s = shared.lock().expect("load state");
                    let body = || {
                        serde_json::from_slice::<serde_json::Value>(&data)
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
                            s.body[i] = Some(data);
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

    pub(super) async fn publish_one(&self, c: &Planned) -> Result<PublisherConfirm, lapin::Error> {
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
    pub(super) async fn phase(&self, phase: Phase) -> anyhow::Result<PhaseReport> {
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
        // The clock: from the first publish, or (prefilled) from when the worker attaches.
        let clock = if options.prefill {
            self.wait_for_consumer(&bar).await?
        } else {
            started
        };

        // Wait until every published command settled, or none settled for `idle_timeout`.
        let published_by = (started + Duration::from_secs_f64(publish_seconds)).max(clock);
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
            .map(|l| l.saturating_duration_since(clock).as_secs_f64())
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
        let raw = std::mem::take(&mut s.body);
        let data = s
            .outcome
            .iter()
            .zip(raw)
            .map(|(o, body)| match (o, body) {
                (Some((t, _)), Some(body)) if t == phase.outcome_event => {
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()?
                        .get_mut("data")
                        .map(serde_json::Value::take)
                }
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
            prefilled: options.prefill,
            throughput_per_sec: rate(s.settled, elapsed),
            progress: Progress::of(
                s.settled_at
                    .iter()
                    .flatten()
                    .map(|t| t.saturating_duration_since(clock).as_secs_f64())
                    .collect(),
            ),
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

    /// Once the phase's commands are all in (`ready_file` created), waits for a consumer on
    /// the commands queue and returns when it was first seen (looked for every 2 ms: a
    /// passive declare of the queue reports its consumers).
    async fn wait_for_consumer(&self, bar: &ProgressBar) -> anyhow::Result<Instant> {
        if let Some(path) = &self.options.ready_file {
            std::fs::write(path, b"published\n")?;
        }
        bar.set_message("waiting for a worker to attach");
        let channel = self.subscriber.create_channel().await?;
        let deadline = Instant::now() + self.options.idle_timeout;
        loop {
            let queue = channel
                .queue_declare(
                    self.names.commands_queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if queue.consumer_count() > 0 {
                let _ = channel.close(200, "attached".into()).await;
                return Ok(Instant::now());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no worker attached to {} within {:?}",
                self.names.commands_queue,
                self.options.idle_timeout
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(super) async fn close(self) {
        self.listen.abort();
        let _ = self.publisher.close(200, "load done".into()).await;
        let _ = self.subscriber.close(200, "load done".into()).await;
    }
}

pub(super) async fn confirmed(
    confirm: Result<PublisherConfirm, lapin::Error>,
    timeout: Duration,
) -> bool {
    match confirm {
        Ok(c) => matches!(
            tokio::time::timeout(timeout, c).await,
            Ok(Ok(Confirmation::Ack(None)))
        ),
        Err(_) => false,
    }
}

pub(super) fn progress_bar(options: &Options, len: usize, what: &str) -> ProgressBar {
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
