//! `onboard saga stuck`: the sagas that should have run and did not, for operators.
//!
//! A saga is due when its next attempt's time came or its owner's lease ran out; every
//! worker's sweeper takes due sagas within `saga.sweep_interval_ms`. One still due after
//! `--older-than` means no worker is running, or they cannot reach the database, or a step
//! keeps failing before it can record anything: the worker logs say which.

use std::time::Duration;

use crate::configuration::Settings;
use crate::ops::dlq::parse_age;
use crate::store;

#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// Sagas due for longer than --older-than that no worker took.
    Stuck {
        /// How long past due counts as stuck (e.g. 90s, 10m, 2h); default saga.stuck_after_seconds.
        #[arg(long, value_parser = parse_age)]
        older_than: Option<Duration>,
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Make a client's saga due now (a worker's sweeper takes it within a sweep), unless it is
    /// completed or a worker holds it. Recorded in the operators' audit.
    Retry { client_id: i32 },
}

pub async fn run(settings: &Settings, command: SagaCommand) -> anyhow::Result<bool> {
    match command {
        SagaCommand::Retry { client_id } => {
            let pool = store::pool(&settings.database)?;
            let actor = crate::ops::actions::Actor::cli();
            if crate::ops::actions::retry_saga(&pool, &actor, client_id).await? {
                println!("the saga of client {client_id} is due now");
                Ok(true)
            } else {
                anyhow::bail!(
                    "client {client_id} has no saga to retry (none, completed, or a worker holds it now)"
                )
            }
        }
        SagaCommand::Stuck {
            older_than,
            limit,
            json,
        } => {
            let bound = older_than
                .unwrap_or(Duration::from_secs(settings.saga.stuck_after_seconds))
                .as_secs_f64();
            let pool = store::pool(&settings.database)?;
            let stuck = store::sagas::stuck(&pool, bound, limit).await?;
            if json {
                for s in &stuck {
                    println!("{}", serde_json::to_string(s)?);
                }
            } else if stuck.is_empty() {
                println!("no saga has been due for more than {bound:.0} s");
            } else {
                println!(
                    "{:<36}  {:>9}  {:<13}  {:>8}  {:<20}  last error",
                    "saga_id", "client_id", "step", "attempts", "due since"
                );
                for s in &stuck {
                    println!(
                        "{:<36}  {:>9}  {:<13}  {:>8}  {:<20}  {}",
                        s.saga_id,
                        s.client_id,
                        s.step.as_str(),
                        s.attempts,
                        s.due_at
                            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                        s.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            pool.close().await;
            Ok(stuck.is_empty())
        }
    }
}
