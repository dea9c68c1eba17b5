//! The `onboard` binary: a thin command line over the library, holding what runs in
//! production and what operators run against it. The fakes and benchmarks are `onboard-lab`'s
//! (`src/bin/onboard-lab.rs`).

use std::io::Read;

use clap::{Parser, Subcommand};
use onboard::configuration::Settings;
use onboard::process::signalled;
use onboard::worker::{Hooks, Worker};
use onboard::{ops, store};

/// mimalloc, not glibc's malloc: a perf profile of the worker under the benchmark put 28% of its
/// CPU in glibc's allocator (`malloc`, `_int_free`, `malloc_consolidate`), many small
/// short-lived buffers (JSON bodies, event payloads, SQL parameters) freed on threads other than
/// the ones that made them. See docs/benchmark.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc keeps the memory it freed for a second (v3's `purge_delay`, 1,000 ms) before it
/// gives it back to the OS, so under a steady load a second's worth of freed buffers stays
/// resident: the worker's peak RSS with 10,000 commands in flight was 144-151 MB (issue 24's
/// goal: 150). Given back after 100 ms it was 122-136 MB, with no difference in the worker's
/// CPU per onboarding in three alternating saga runs (docs/benchmark.md).
mod allocator {
    use std::ffi::{c_int, c_long};

    /// `mi_option_purge_delay`, the sixteenth of `mimalloc.h`'s `mi_option_t` (v2 and v3).
    pub const PURGE_DELAY: c_int = 15;
    pub const PURGE_DELAY_MS: c_long = 100;

    unsafe extern "C" {
        // In mimalloc's C library, which libmimalloc-sys builds and links for the allocator.
        #[cfg(test)]
        pub safe fn mi_option_get(option: c_int) -> c_long;
        pub safe fn mi_option_set(option: c_int, value: c_long);
    }

    /// Freed memory goes back to the OS after [`PURGE_DELAY_MS`]; mimalloc reads the option
    /// each time it schedules a purge, so this holds from the call on.
    pub fn give_back_sooner() {
        mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_option_set_is_mimallocs_purge_delay() {
            // 1,000 ms is v3's default purge delay and no other option's default, so a
            // mimalloc whose options were renumbered fails here instead of being mistuned.
            assert_eq!(mi_option_get(PURGE_DELAY), 1_000);
            give_back_sooner();
            assert_eq!(mi_option_get(PURGE_DELAY), PURGE_DELAY_MS);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "onboard",
    version,
    about = "Onboards business clients from RabbitMQ commands"
)]
struct Cli {
    #[command(flatten)]
    global: onboard::process::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM or SIGINT, then drain.
    Worker,
    /// Apply the database migrations and exit.
    Migrate {
        /// Stop after this version (e.g. to prepare a database of an older schema).
        #[arg(long)]
        to: Option<i64>,
    },
    /// Publish one command from a file (or - for stdin) and optionally wait for its outcome.
    Publish {
        /// A body, an envelope {"type","message_id","correlation_id","body"}, or raw bytes.
        file: String,
        /// Routing key (command type); default: the envelope's type, else client.create.
        #[arg(long = "type")]
        command_type: Option<String>,
        /// AMQP message_id; a fresh UUID unless given. --message-id "" sends none.
        #[arg(long)]
        message_id: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
        /// Wait up to this many seconds for the events it causes and its reply, and print them.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// The dead-letter queue: list, groups, show, replay, purge, audit.
    #[command(subcommand)]
    Dlq(ops::dlq::cli::DlqCommand),
    /// Webhook endpoints, their deliveries, and `serve` (the process that delivers).
    #[command(subcommand)]
    Webhooks(onboard::webhooks::cli::WebhooksCommand),
    /// Create clients in bulk from a CSV or JSON-lines file; safe to run again on the same
    /// file. Exit status 2 when a row got no outcome.
    Import(ops::import::ImportArgs),
    /// Onboarding sagas: `stuck` lists the ones no worker has taken (exit status 3 if any).
    #[command(subcommand)]
    Saga(ops::saga::SagaCommand),
    /// Traces: `receive` prints the spans an OTLP/HTTP exporter sends it (no collector needed).
    #[command(subcommand)]
    Traces(ops::traces::TracesCommand),
    /// The operators' web console (`console.listen`), and `console users` to manage its users.
    Console(onboard::console::cli::ConsoleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    allocator::give_back_sooner();
    let cli = Cli::parse();
    onboard::process::run(&cli.global, |settings| run(cli.command, settings)).await
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Worker => run_worker(settings).await,
        Command::Console(args) => onboard::console::cli::run(settings, args, signalled()).await,
        Command::Webhooks(command) => {
            onboard::webhooks::cli::run(settings, command, signalled()).await
        }
        Command::Import(args) => {
            if !ops::import::cli(&settings, args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Migrate { to } => {
            let pool = store::pool(&settings.database)?;
            let started = std::time::Instant::now();
            store::migrate_to(&pool, to).await?;
            println!(
                "migrations applied in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Publish {
            file,
            command_type,
            message_id,
            correlation_id,
            wait,
        } => {
            let raw = if file == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                std::fs::read(&file)?
            };
            let req = ops::publish::Request {
                command_type,
                message_id,
                correlation_id,
                wait,
            };
            let published = ops::publish::publish(&settings, &raw, req).await?;
            println!(
                "published {} message_id={} correlation_id={}",
                published.command_type,
                published.message_id.as_deref().unwrap_or("(none)"),
                published.correlation_id
            );
            for (kind, kind_type, status, body) in &published.received {
                let status = status
                    .as_ref()
                    .map(|s| format!(" status={s}"))
                    .unwrap_or_default();
                println!("  <- {kind} {kind_type}{status}");
                println!("{}", indent(&serde_json::to_string_pretty(body)?));
            }
            if wait.is_some() && published.received.is_empty() {
                println!("  (nothing arrived in time: is the worker running?)");
            }
            Ok(())
        }
        Command::Dlq(command) => ops::dlq::cli::run(&settings, command).await,
        Command::Traces(command) => ops::traces::run(command, signalled()).await,
        Command::Saga(command) => {
            if !ops::saga::run(&settings, command).await? {
                std::process::exit(3);
            }
            Ok(())
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_worker(settings: Settings) -> anyhow::Result<()> {
    let worker = Worker::start(settings, Hooks::default()).await?;
    let shutdown = worker.shutdown.clone();
    tokio::spawn(async move {
        signalled().await;
        tracing::info!("shutdown requested; draining");
        shutdown.cancel();
    });
    // Exits non-zero when the broker connection is lost for good, so a supervisor restarts it.
    worker.wait().await
}
