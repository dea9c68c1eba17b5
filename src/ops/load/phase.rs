//! A phase of a load: the commands of one type it publishes, the events that settle them,
//! and the state the publisher and the subscriber share while it runs.

use super::commands::client_create_commands;
use super::options::Options;
use super::options::REJECTED;
use super::report::Report;
use super::report::Seen;
use super::report::Sent;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Instant;

/// One command of a phase, ready to publish.
pub(super) struct Planned {
    pub(super) sent: Sent,
    pub(super) routing_key: &'static str,
    pub(super) body: Vec<u8>,
}

/// A batch of commands of one type, and the events that settle each.
pub(super) struct Phase {
    pub(super) command_type: &'static str,
    pub(super) outcome_event: &'static str,
    pub(super) outcome_types: Vec<&'static str>,
    pub(super) commands: Vec<Planned>,
}

impl Phase {
    pub(super) fn client_create(options: &Options) -> Phase {
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
    pub(super) fn after(
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
pub(super) type NextPhase = Box<dyn Fn(&PhaseReport) -> Phase + Send + Sync>;

/// A phase's report, and the `data` of each command's outcome event (what the next phase
/// needs: client ids, admin user ids, instance ids).
pub(super) struct PhaseReport {
    pub(super) report: Report,
    pub(super) data: Vec<Option<serde_json::Value>>,
}

/// Per-command state of the running phase, shared by the publisher and the subscriber.
pub(super) struct Shared {
    pub(super) outcome_types: Vec<&'static str>,
    pub(super) index: HashMap<String, usize>,
    /// When each command was published (latest attempt); `None` until then.
    pub(super) published_at: Vec<Option<Instant>>,
    /// When its outcome was seen.
    pub(super) settled_at: Vec<Option<Instant>>,
    /// The outcome event's (type, message_id) once seen.
    pub(super) outcome: Vec<Option<(String, Option<String>)>>,
    /// The outcome event's body as it came: parsed for its `data` once the phase is over, so
    /// the observer spends as little as it can on the cores it shares with what it measures.
    pub(super) body: Vec<Option<Vec<u8>>>,
    pub(super) histogram: Histogram<u64>,
    pub(super) outcomes: BTreeMap<String, u64>,
    pub(super) settled: usize,
    pub(super) repeated: u64,
    pub(super) conflicting: u64,
    pub(super) last_outcome: Option<Instant>,
    pub(super) events: Vec<Seen>,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            outcome_types: Vec::new(),
            index: HashMap::new(),
            published_at: Vec::new(),
            settled_at: Vec::new(),
            outcome: Vec::new(),
            body: Vec::new(),
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            outcomes: BTreeMap::new(),
            settled: 0,
            repeated: 0,
            conflicting: 0,
            last_outcome: None,
            events: Vec::new(),
        }
    }

    pub(super) fn start(&mut self, phase: &Phase) {
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
        self.body = vec![None; n];
    }
}
