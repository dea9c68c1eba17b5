//! How both binaries (`onboard`, `onboard-lab`) start and stop a command: settings loaded and
//! telemetry set up around it, its buffered spans sent before the process ends, and the
//! signals that end the long-running ones.

use std::future::Future;
use std::path::PathBuf;

use crate::configuration::Settings;
use crate::telemetry;

/// The options every command of both binaries takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Settings file layered over the defaults (environment variables ONBOARD__* override both).
    #[arg(long, global = true, env = "ONBOARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Loads the settings (`--config` over the defaults, `ONBOARD__*` over both), sets up logs
/// and traces, runs `command`, and flushes the spans still buffered.
pub async fn run<F, Fut>(global: &Global, command: F) -> anyhow::Result<()>
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = Settings::load(global.config.as_deref())?;
    let telemetry = telemetry::init(&settings.log, &settings.telemetry)?;
    let result = command(settings).await;
    telemetry.shutdown();
    result
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
