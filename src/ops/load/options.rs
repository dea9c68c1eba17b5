//! What a load is asked to do: the scenario, how many commands, at what rate, and which
//! outcome it waits for.

use serde::Serialize;
use std::time::Duration;

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
    /// Bind `#` (as a subscriber of every event, such as the webhooks feed, does), so that no
    /// event of the run is left to `<p>.events.unrouted`; only outcomes are looked at.
    pub every_event: bool,
    /// Commands without an outcome listed by id in the report; the rest are counted.
    pub missing_cap: usize,
    /// Measure the worker from a full queue, as the ceiling is measured: publish the whole
    /// phase first, then start the clock when a consumer (the worker) attaches to the commands
    /// queue, so the rate leaves out what publishing costs. The worker is started after the
    /// publish (see `ready_file`).
    pub prefill: bool,
    /// Created once every command of the phase is confirmed by the broker (for a script that
    /// starts the worker then).
    pub ready_file: Option<std::path::PathBuf>,
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
            every_event: false,
            prefill: false,
            ready_file: None,
            missing_cap: 20,
            progress: false,
        }
    }
}
