//! `onboard-lab load`'s flags, and the command that runs them, prints the reports and draws
//! them ([`crate::ops::plot`]): the front of [`crate::ops::load`], which knows neither.

use std::time::Duration;

use crate::configuration::Settings;
use crate::ops::load::{Options, Outcome, Scenario, run_scenario};
use crate::ops::plot;

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
    /// Subscribe to every event, not only the outcomes (as a deployment whose subscribers,
    /// such as the webhooks feed, take them all): none goes to `<p>.events.unrouted`.
    #[arg(long)]
    pub every_event: bool,
    /// Publish everything first and start the clock only when a worker attaches to the
    /// commands queue: the worker measured from a full queue, as `bench-ceiling` is (its
    /// rate leaves out the cost of publishing). Start the worker once the commands are in
    /// (`--ready-file` says when).
    #[arg(long, conflicts_with_all = ["rate", "max_outstanding"])]
    pub prefill: bool,
    /// With `--prefill`: create this file once every command is confirmed by the broker.
    #[arg(long, requires = "prefill")]
    pub ready_file: Option<std::path::PathBuf>,
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
    options.every_event = args.every_event;
    options.prefill = args.prefill;
    options.ready_file = args.ready_file;
    options.progress = true;
    let reports = run_scenario(settings, &options, args.scenario).await?;
    if let Some(path) = &args.plot {
        for (i, report) in reports.iter().enumerate() {
            let file = if reports.len() == 1 {
                path.clone()
            } else {
                path.with_extension(format!("{}.svg", i + 1))
            };
            plot::draw(report, &file)?;
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
