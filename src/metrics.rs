//! Prometheus metrics, served on `/metrics` by the health server (http.rs).
//!
//! One [`Metrics`] per worker, cloned into the worker's `Context` so that any module can
//! count what it does. Label values are always ours (command types the contract knows, step
//! and service names from code), never raw input: a hostile routing key becomes `unknown`
//! instead of a new time series.
//!
//! What is counted where:
//! - the pipeline: received, handler latency, in flight, business refusals;
//! - every settled delivery (observed through [`Metrics::observing`], the same seam tests
//!   use): acked, duplicates, retried, dead-lettered, requeued, acks that failed;
//! - sampled when scraped: outbox depth and the age of its oldest unsent row, the dead-letter
//!   queue's depth, whether the broker connection is up, sagas stuck past their bound;
//! - hooks for later work: [`Metrics::observe_saga_step`] and [`Metrics::observe_call`]
//!   (Xendit, SMTP), and [`Metrics::register`] for anything else.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::messages::CommandType;
use crate::observe::{Disposition, HandlerResult, Hooks, Settled};

/// Latency buckets in seconds, 1 ms to 30 s: a handler is a transaction or two, a saga step
/// may wait on Xendit or SMTP.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// How many commands or sagas a batch took, 1 to 512.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    r#type: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    r#type: String,
    /// succeeded | refused | rejected | duplicate | failed
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepOnlyLabels {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    operation: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type F64Gauge = Gauge<f64, AtomicU64>;

struct Inner {
    /// The command types the worker registers: the only `type` label values besides `unknown`.
    known: HashSet<&'static str>,
    registry: Mutex<Registry>,
    received: Family<TypeLabels, Counter>,
    acked: Family<TypeLabels, Counter>,
    duplicates: Family<TypeLabels, Counter>,
    retried: Family<TypeLabels, Counter>,
    dead_lettered: Family<TypeLabels, Counter>,
    requeued: Family<TypeLabels, Counter>,
    ack_failed: Family<TypeLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    handler_seconds: HistogramFamily<HandlerLabels>,
    in_flight: Gauge,
    outbox_pending: Gauge,
    outbox_oldest_seconds: F64Gauge,
    dead_letter_depth: Gauge,
    broker_connected: Gauge,
    sagas_stuck: Gauge,
    webhook_endpoints_disabled: Gauge,
    saga_step_seconds: HistogramFamily<StepLabels>,
    saga_step_sizes: HistogramFamily<StepOnlyLabels>,
    command_batch_sizes: Histogram,
    saga_fenced: Family<StepOnlyLabels, Counter>,
    relay_rounds: Counter,
    batch_deadlocks: Counter,
    xendit_key_refused: Counter,
    calls: Family<CallLabels, Counter>,
    call_seconds: HistogramFamily<CallLabels>,
}

/// The worker's metrics. Cheap to clone (one shared registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics for a worker that accepts the command types `known` (the registry's).
    pub fn new(known: impl IntoIterator<Item = CommandType>) -> Metrics {
        let mut registry = Registry::with_prefix("onboard");
        let inner = Inner {
            known: known.into_iter().map(CommandType::as_str).collect(),
            registry: Mutex::new(Registry::default()),
            received: Family::default(),
            acked: Family::default(),
            duplicates: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            requeued: Family::default(),
            ack_failed: Family::default(),
            refused: Family::default(),
            handler_seconds: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest_seconds: F64Gauge::default(),
            dead_letter_depth: Gauge::default(),
            broker_connected: Gauge::default(),
            sagas_stuck: Gauge::default(),
            webhook_endpoints_disabled: Gauge::default(),
            saga_step_seconds: Family::new_with_constructor(latency_histogram),
            saga_step_sizes: Family::new_with_constructor(size_histogram),
            command_batch_sizes: size_histogram(),
            saga_fenced: Family::default(),
            relay_rounds: Counter::default(),
            batch_deadlocks: Counter::default(),
            xendit_key_refused: Counter::default(),
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency_histogram),
        };
        let r = &mut registry;
        r.register(
            "messages_received",
            "Commands taken from the commands queue, by type",
            inner.received.clone(),
        );
        r.register(
            "messages_acked",
            "Commands acked as done (effects committed or refusal recorded, duplicates included), by type",
            inner.acked.clone(),
        );
        r.register(
            "messages_duplicates",
            "Commands recognised as already processed (inbox) and acked without effect, by type",
            inner.duplicates.clone(),
        );
        r.register(
            "messages_retried",
            "Commands sent to a delay queue for a later retry, by type",
            inner.retried.clone(),
        );
        r.register(
            "messages_dead_lettered",
            "Commands copied to the dead-letter queue (malformed or retries exhausted), by type",
            inner.dead_lettered.clone(),
        );
        r.register(
            "messages_requeued",
            "Deliveries handed back to the broker unacked (could not be copied anywhere), by type",
            inner.requeued.clone(),
        );
        r.register(
            "messages_ack_failed",
            "Deliveries whose end was committed but whose ack did not reach the broker (it redelivers them; the inbox recognises them), by type",
            inner.ack_failed.clone(),
        );
        r.register(
            "messages_refused",
            "Commands ended by a business refusal (a *_failed or *_rejected outcome), by type and code",
            inner.refused.clone(),
        );
        r.register(
            "handler_duration_seconds",
            "Time from delivery to the handler's decision (in-process retries included), by type and result",
            inner.handler_seconds.clone(),
        );
        r.register(
            "messages_in_flight",
            "Deliveries being processed by this worker now",
            inner.in_flight.clone(),
        );
        r.register(
            "outbox_pending",
            "Outbox rows not yet published (all workers; sampled when scraped)",
            inner.outbox_pending.clone(),
        );
        r.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (sampled when scraped; 0 when none)",
            inner.outbox_oldest_seconds.clone(),
        );
        r.register(
            "dead_letter_queue_messages",
            "Messages ready in the dead-letter queue (sampled when scraped)",
            inner.dead_letter_depth.clone(),
        );
        r.register(
            "broker_connected",
            "1 while the broker connection is up (sampled when scraped)",
            inner.broker_connected.clone(),
        );
        r.register(
            "sagas_stuck",
            "Sagas due for longer than saga.stuck_after_seconds that no worker has taken (sampled when scraped)",
            inner.sagas_stuck.clone(),
        );
        r.register(
            "webhook_endpoints_disabled",
            "Webhook endpoints disabled, by an operator or for their failures (sampled when scraped)",
            inner.webhook_endpoints_disabled.clone(),
        );
        r.register(
            "saga_step_duration_seconds",
            "Duration of a saga step, by step and outcome",
            inner.saga_step_seconds.clone(),
        );
        r.register(
            "saga_step_batch_size",
            "Sagas run together in one step batch, by step",
            inner.saga_step_sizes.clone(),
        );
        r.register(
            "command_batch_size",
            "Commands run together in one batch (one transaction): small under a light load, full when a backlog waits",
            inner.command_batch_sizes.clone(),
        );
        r.register(
            "batch_deadlocks",
            "Command batches chosen as a deadlock's victim (retried at once): the clients a batch changes are locked in one order, so each one is a lock taken out of that order elsewhere",
            inner.batch_deadlocks.clone(),
        );
        r.register(
            "xendit_key_refused",
            "Xendit calls answered 401 or 403: the API key is wrong or lacks a permission (a configuration fault; the sagas wait for it, alert OnboardXenditKeyRefused)",
            inner.xendit_key_refused.clone(),
        );
        r.register(
            "outbox_relay_rounds",
            "Rounds of this worker's outbox relay (each takes every row nobody else may be publishing)",
            inner.relay_rounds.clone(),
        );
        r.register(
            "saga_fenced",
            "Sagas a step let go because their lease had moved to a newer epoch (taken by a sweeper after it ran out, or from a worker taken for dead): what that copy would have written was not written, by step",
            inner.saga_fenced.clone(),
        );
        r.register(
            "external_calls",
            "Calls to the outside world (xendit, smtp), by service, operation and outcome",
            inner.calls.clone(),
        );
        r.register(
            "external_call_duration_seconds",
            "Latency of calls to the outside world, by service, operation and outcome",
            inner.call_seconds.clone(),
        );
        *inner.registry.lock().expect("fresh mutex") = registry;
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// Registers a further metric (its name gets the `onboard_` prefix). For modules that need
    /// more than the hooks below.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-written in a way that
        // matters for reading it: take it anyway.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text exposition format (OpenMetrics), for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry())
            .expect("writing to a String cannot fail");
        out
    }

    /// The label for a routing key: a command type the worker knows, or `unknown`.
    fn type_label(&self, routing_key: &str) -> String {
        match self.inner.known.get(routing_key) {
            Some(known) => known.to_string(),
            None => "unknown".to_string(),
        }
    }

    pub fn received(&self, routing_key: &str) {
        self.inner
            .received
            .get_or_create(&TypeLabels {
                r#type: self.type_label(routing_key),
            })
            .inc();
    }

    /// Counts the delivery as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.inner.in_flight.inc();
        InFlight {
            gauge: self.inner.in_flight.clone(),
        }
    }

    /// A handler's decision and how long it took (its batch, for batched commands); `code`
    /// is the refusal's contract code.
    pub fn handled(
        &self,
        routing_key: &str,
        result: HandlerResult,
        code: Option<&str>,
        took: Duration,
    ) {
        let r#type = self.type_label(routing_key);
        self.inner
            .handler_seconds
            .get_or_create(&HandlerLabels {
                r#type: r#type.clone(),
                result: result.as_str().to_string(),
            })
            .observe(took.as_secs_f64());
        if result == HandlerResult::Refused {
            self.inner
                .refused
                .get_or_create(&RefusedLabels {
                    r#type,
                    code: code.unwrap_or("UNKNOWN").to_string(),
                })
                .inc();
        }
    }

    /// Counts how a delivery was settled.
    pub fn settled(&self, routing_key: &str, disposition: Disposition) {
        let labels = TypeLabels {
            r#type: self.type_label(routing_key),
        };
        let family = match disposition {
            Disposition::Handled => &self.inner.acked,
            Disposition::Duplicate => {
                self.inner.acked.get_or_create(&labels).inc();
                &self.inner.duplicates
            }
            Disposition::RetryScheduled => &self.inner.retried,
            Disposition::DeadLettered => &self.inner.dead_lettered,
            Disposition::Requeued => &self.inner.requeued,
            Disposition::Unacked => &self.inner.ack_failed,
        };
        family.get_or_create(&labels).inc();
    }

    /// `hooks` with settlement counting added in front of whatever observer it already had.
    pub fn observing(&self, mut hooks: Hooks) -> Hooks {
        let metrics = self.clone();
        let inner = hooks.on_settled.take();
        hooks.on_settled = Some(Arc::new(move |s: Settled| {
            metrics.settled(&s.routing_key, s.disposition);
            if let Some(f) = &inner {
                f(s);
            }
        }));
        hooks
    }

    /// Hook for the saga: one step ran (`step` e.g. `xendit`, `welcome_email`; `outcome` e.g.
    /// `completed`, `retry`, `failed`).
    pub fn observe_saga_step(&self, step: &str, outcome: &str, took: Duration) {
        self.inner
            .saga_step_seconds
            .get_or_create(&StepLabels {
                step: step.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// How many sagas a `step` batch ran, and how many commands a command batch took.
    pub fn batch_sizes(&self, step: Option<&str>, size: usize) {
        match step {
            Some(step) => self
                .inner
                .saga_step_sizes
                .get_or_create(&StepOnlyLabels { step: step.into() })
                .observe(size as f64),
            None => self.inner.command_batch_sizes.observe(size as f64),
        }
    }

    /// A command batch was a deadlock's victim.
    pub fn batch_deadlock(&self) {
        self.inner.batch_deadlocks.inc();
    }

    /// One round of the outbox relay done.
    pub fn relay_round(&self) {
        self.inner.relay_rounds.inc();
    }

    /// `n` sagas of a `step` batch found held under a newer epoch: that copy stops for them.
    pub fn saga_fenced(&self, step: &str, n: usize) {
        if n > 0 {
            self.inner
                .saga_fenced
                .get_or_create(&StepOnlyLabels {
                    step: step.to_string(),
                })
                .inc_by(n as u64);
        }
    }

    /// Xendit refused our API key (401, 403).
    pub fn xendit_key_refused(&self) {
        self.inner.xendit_key_refused.inc();
    }

    /// Hook for outside calls: `service` `xendit` or `smtp`, `operation` e.g.
    /// `create_customer`, `send`, `outcome` e.g. `ok`, `retryable`, `rejected`, `timeout`.
    pub fn observe_call(&self, service: &str, operation: &str, outcome: &str, took: Duration) {
        let labels = CallLabels {
            service: service.to_string(),
            operation: operation.to_string(),
            outcome: outcome.to_string(),
        };
        self.inner.calls.get_or_create(&labels).inc();
        self.inner
            .call_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Sampled values, set just before a scrape is encoded.
    pub fn set_outbox(&self, pending: i64, oldest_age_seconds: f64) {
        self.inner.outbox_pending.set(pending);
        self.inner.outbox_oldest_seconds.set(oldest_age_seconds);
    }

    pub fn set_dead_letter_depth(&self, messages: u32) {
        self.inner.dead_letter_depth.set(i64::from(messages));
    }

    pub fn set_sagas_stuck(&self, sagas: i64) {
        self.inner.sagas_stuck.set(sagas);
    }

    pub fn set_webhook_endpoints_disabled(&self, endpoints: i64) {
        self.inner.webhook_endpoints_disabled.set(endpoints);
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.inner.broker_connected.set(i64::from(connected));
    }
}

/// Keeps a delivery counted in `onboard_messages_in_flight` while alive.
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_by_type_and_unknown_types_do_not_make_new_series() {
        let m = Metrics::new([CommandType::new("client.create")]);
        m.received("client.create");
        m.received("client.teleport");
        m.received("../../etc/passwd");
        m.settled("client.create", Disposition::Handled);
        m.settled("client.create", Disposition::Duplicate);
        m.settled("client.teleport", Disposition::DeadLettered);
        m.settled("client.create", Disposition::Requeued);
        // An ack that did not go out is not an ack.
        m.settled("client.create", Disposition::Unacked);
        m.handled(
            "client.create",
            HandlerResult::Refused,
            Some("EMAIL_IN_USE"),
            Duration::from_millis(3),
        );
        let text = m.encode();
        assert!(
            text.contains(r#"onboard_messages_received_total{type="client.create"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"onboard_messages_received_total{type="unknown"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"onboard_messages_acked_total{type="client.create"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"onboard_messages_dead_lettered_total{type="unknown"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"onboard_messages_refused_total{type="client.create",code="EMAIL_IN_USE"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"onboard_messages_requeued_total{type="client.create"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"onboard_messages_ack_failed_total{type="client.create"} 1"#),
            "{text}"
        );
        assert!(!text.contains("passwd"), "{text}");
    }

    #[test]
    fn the_in_flight_gauge_follows_its_guards() {
        let m = Metrics::new([CommandType::new("client.create")]);
        let a = m.in_flight();
        let b = m.in_flight();
        assert!(m.encode().contains("onboard_messages_in_flight 2"));
        drop(a);
        drop(b);
        assert!(m.encode().contains("onboard_messages_in_flight 0"));
    }

    #[test]
    fn hooks_for_saga_steps_and_outside_calls_and_extra_metrics_are_exported() {
        let m = Metrics::new([CommandType::new("client.create")]);
        m.observe_saga_step("xendit", "completed", Duration::from_millis(120));
        m.observe_call("smtp", "send", "ok", Duration::from_millis(40));
        m.batch_sizes(None, 100);
        m.batch_sizes(Some("welcome_email"), 3);
        let extra: Counter = Counter::default();
        m.register("widgets", "Widgets made", extra.clone());
        extra.inc();
        let text = m.encode();
        assert!(
            text.contains(
                r#"onboard_saga_step_duration_seconds_count{step="xendit",outcome="completed"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"onboard_external_calls_total{service="smtp",operation="send",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("onboard_widgets_total 1"), "{text}");
        assert!(text.contains(r#"onboard_command_batch_size_bucket{le="128.0"} 1"#));
        assert!(text.contains(r#"onboard_saga_step_batch_size_sum{step="welcome_email"} 3.0"#));
    }
}
