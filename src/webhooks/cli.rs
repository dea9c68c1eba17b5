//! `onboard webhooks ...`: endpoints for operators, their deliveries, and the serving process.
//! No command prints an endpoint's secret.

use std::path::PathBuf;
use std::sync::Arc;

use crate::configuration::Settings;
use crate::ops::actions::{self, Actor};
use crate::store::{self, webhooks as db};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint: every event matching one of the patterns is POSTed to URL.
    Add {
        url: String,
        /// Event types (`client.created`) or patterns with `*` (`client.*`, `*`); repeatable.
        #[arg(long = "events", required = true, num_args = 1..)]
        events: Vec<String>,
        /// The signing secret (`whsec_<base64>`, at least 24 bytes); or set
        /// ONBOARD_WEBHOOK_SECRET, which keeps it out of the shell's history.
        #[arg(long, env = "ONBOARD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Without --secret: make one and write it to this file (mode 0600) for the endpoint's
        /// owner. It is never printed.
        #[arg(long, conflicts_with = "secret")]
        secret_file: Option<PathBuf>,
    },
    /// The endpoints (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    Enable {
        id: i64,
    },
    Disable {
        id: i64,
    },
    Remove {
        id: i64,
    },
    /// Recent deliveries, with every attempt.
    Deliveries {
        /// Only the ones given up.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        endpoint: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again, with a whole new attempt budget.
    Redeliver {
        id: i64,
    },
    /// Deliver events to the endpoints until SIGTERM/SIGINT.
    Serve,
}

/// `onboard-lab webhooks ...`: a local endpoint to try webhooks with, and the delivery
/// benchmark (lab tools, not in the production binary).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabWebhooksCommand {
    /// A local endpoint for trying webhooks: checks each request's Standard Webhooks signature
    /// with the secret and prints one line per webhook (type, id, whether the signature holds).
    Receive {
        #[arg(long, default_value = "127.0.0.1:8097")]
        listen: std::net::SocketAddr,
        /// A file holding the endpoint's secret (as `add --secret-file` writes it).
        #[arg(long)]
        secret_file: PathBuf,
    },
    /// Measures delivery: N synthetic events to a local endpoint that answers at once, beside
    /// one that never answers with --hanging; prints deliveries per second. Uses its own
    /// broker prefix and the configured database, and removes its endpoints after.
    Bench {
        #[arg(short = 'n', long, default_value_t = 5000)]
        events: usize,
        #[arg(long)]
        hanging: bool,
    },
}

/// Runs one of the lab's subcommands.
pub async fn run_lab(
    settings: Settings,
    command: LabWebhooksCommand,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match command {
        LabWebhooksCommand::Receive {
            listen,
            secret_file,
        } => {
            let secret = std::fs::read_to_string(secret_file)?.trim().to_string();
            super::receive::run(listen, &secret, stop).await
        }
        LabWebhooksCommand::Bench { events, hanging } => {
            super::bench::run(settings, events, hanging).await
        }
    }
}

/// Runs one of the subcommands.
pub async fn run(
    settings: Settings,
    command: WebhooksCommand,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let WebhooksCommand::Serve = command {
        let token = tokio_util::sync::CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            stop.await;
            cancel.cancel();
        });
        return super::serve::run(Arc::new(settings), token).await;
    }
    let pool = store::pool(&settings.database)?;
    store::migrate(&pool).await?;
    match command {
        WebhooksCommand::Add {
            url,
            events,
            secret,
            secret_file,
        } => {
            let url = super::check_url(&url).map_err(anyhow::Error::msg)?;
            if !settings.webhooks.allow_private_addresses {
                super::address::check_target(&url)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            let secret = match (secret, &secret_file) {
                (Some(s), _) => {
                    super::check_secret(&s).map_err(anyhow::Error::msg)?;
                    s
                }
                (None, Some(_)) => super::new_secret(),
                (None, None) => anyhow::bail!(
                    "give the endpoint's signing secret (--secret or ONBOARD_WEBHOOK_SECRET), or \
                     --secret-file PATH to have one made and written there"
                ),
            };
            if let Some(path) = &secret_file {
                write_private(path, &secret)?;
            }
            let id = db::add_endpoint(&pool, url.as_str(), &events, &secret).await?;
            println!("endpoint {id}: {url} <- {}", events.join(" "));
            if let Some(path) = secret_file {
                println!("its signing secret is in {}", path.display());
            }
        }
        WebhooksCommand::List { json } => {
            let endpoints = db::endpoints(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&endpoints)?);
            } else {
                for e in endpoints {
                    println!(
                        "{:>4}  {:<8}  {}  <- {}{}",
                        e.endpoint_id,
                        if e.enabled { "enabled" } else { "disabled" },
                        e.url,
                        e.patterns.join(" "),
                        e.disabled_reason
                            .map(|r| format!("  ({r})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        WebhooksCommand::Enable { id } => found(
            actions::set_webhook_enabled(&pool, &Actor::cli(), id, true).await?,
            id,
        )?,
        WebhooksCommand::Disable { id } => found(
            actions::set_webhook_enabled(&pool, &Actor::cli(), id, false).await?,
            id,
        )?,
        WebhooksCommand::Remove { id } => found(db::remove_endpoint(&pool, id).await?, id)?,
        WebhooksCommand::Deliveries {
            failed,
            endpoint,
            limit,
            json,
        } => {
            let deliveries = db::deliveries(&pool, failed, endpoint, limit).await?;
            let ids: Vec<i64> = deliveries.iter().map(|d| d.delivery_id).collect();
            let attempts = db::attempts(&pool, &ids).await?;
            if json {
                let out: Vec<_> = deliveries
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "delivery": d,
                            "attempts": attempts.iter().filter(|a| a.delivery_id == d.delivery_id).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for d in &deliveries {
                    println!(
                        "{:>6}  endpoint {:<4} {:<10} {} {} ({} attempts)",
                        d.delivery_id,
                        d.endpoint_id,
                        d.status,
                        d.event_type,
                        d.event_id,
                        d.attempts
                    );
                    for a in attempts.iter().filter(|a| a.delivery_id == d.delivery_id) {
                        println!(
                            "          #{} {} {} {} ms{}",
                            a.attempt,
                            a.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                            a.status_code.map_or("-".into(), |s| s.to_string()),
                            a.duration_ms,
                            a.error
                                .as_deref()
                                .map(|e| format!("  {e}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        WebhooksCommand::Redeliver { id } => found(
            actions::redeliver_webhook(&pool, &Actor::cli(), id).await?,
            id,
        )?,
        WebhooksCommand::Serve => unreachable!("handled above"),
    }
    pool.close().await;
    Ok(())
}

fn found(done: bool, id: i64) -> anyhow::Result<()> {
    anyhow::ensure!(done, "no such endpoint or delivery: {id}");
    println!("done");
    Ok(())
}

fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")?;
    Ok(())
}
