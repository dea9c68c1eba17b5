//! `onboard-lab`: the fakes and the benchmarks, kept out of the binary operators deploy. The
//! quick start, `scripts/bench.sh`, docker-compose and the tests run them from here.

use clap::{Parser, Subcommand};
use onboard::configuration::Settings;
use onboard::ops;
use onboard::process::signalled;

#[derive(Parser)]
#[command(
    name = "onboard-lab",
    version,
    about = "Fakes of the outside world and benchmarks for onboard (not for production)"
)]
struct Cli {
    #[command(flatten)]
    global: onboard::process::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a local fake of Xendit's Customers API (quick start, docker-compose).
    FakeXendit(onboard::xendit::fake::FakeArgs),
    /// Serve a local source system for `client.import` (quick start, tests): seed 004's client
    /// records from a JSON file, behind a bearer token.
    FakeSource(onboard::sources::fake::FakeSourceArgs),
    /// Publish N commands, wait for each one's outcome, print throughput and latency.
    Load(ops::load_cli::LoadArgs),
    /// The bare ceiling for the benchmark: consume a quorum queue, four inserts, ack.
    BenchCeiling(ops::ceiling::CeilingArgs),
    /// A local webhook endpoint (`receive`) and the delivery benchmark (`bench`).
    #[command(subcommand)]
    Webhooks(onboard::webhooks::cli::LabWebhooksCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    onboard::process::run(&cli.global, |settings| run(cli.command, settings)).await
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::FakeXendit(args) => {
            onboard::xendit::fake::run(args, signalled()).await?;
            Ok(())
        }
        Command::FakeSource(args) => onboard::sources::fake::run(args, signalled()).await,
        Command::Load(args) => {
            // Exit status 2 when a command got no outcome, so scripts can tell.
            if !ops::load_cli::cli(&settings, args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::BenchCeiling(args) => ops::ceiling::cli(&settings, args).await,
        Command::Webhooks(command) => {
            onboard::webhooks::cli::run_lab(settings, command, signalled()).await
        }
    }
}
