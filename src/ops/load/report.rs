//! What a load run saw: each command sent, each outcome seen, the latencies, the report.

use serde::Serialize;
use std::collections::BTreeMap;

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

#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub first_s: f64,
    pub p10_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
}

impl Progress {
    /// From each outcome's seconds since the clock started, in any order.
    pub fn of(mut seconds: Vec<f64>) -> Self {
        if seconds.is_empty() {
            return Self::default();
        }
        seconds.sort_by(f64::total_cmp);
        let at = |q: f64| seconds[((seconds.len() - 1) as f64 * q).round() as usize];
        Self {
            first_s: seconds[0],
            p10_s: at(0.10),
            p50_s: at(0.50),
            p90_s: at(0.90),
            p99_s: at(0.99),
        }
    }
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
    /// Seconds from the first publish (with `prefilled`: from when a consumer attached to the
    /// full commands queue) to the last outcome.
    pub elapsed_seconds: f64,
    /// Every command was published before the worker attached (`--prefill`): the clock left
    /// publishing out.
    pub prefilled: bool,
    /// Outcomes per second over `elapsed_seconds`.
    pub throughput_per_sec: f64,
    /// Seconds from the clock's start to the first outcome and to the 10th, 50th, 90th and
    /// last hundredth of them: how long the pipeline takes to fill and to drain, beside the
    /// rate between (a run's first and last moments cost more than its middle).
    pub progress: Progress,
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
            "outcomes: {} of {} in {:.2} s = {:.1} commands/s (waiting for {}{})\n",
            self.settled(),
            self.published,
            self.elapsed_seconds,
            self.throughput_per_sec,
            self.outcome_event,
            if self.prefilled {
                "; clock from the worker's attaching to the full queue"
            } else {
                ""
            }
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

pub(super) fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}
