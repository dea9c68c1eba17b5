//! RabbitMQ: connecting (with lapin's automatic recovery), the topology, one publisher with
//! confirms, and turning deliveries into plain [`crate::messages::IncomingMessage`]s.

pub mod headers;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::configuration::BrokerSettings;

pub use publisher::{Delivered, PublishError, Publisher};
pub use topology::{Names, declare};

/// Connects with automatic recovery: on a lost connection lapin reconnects with backoff and
/// replays exchanges, queues, bindings, consumers, QoS and confirm mode. If it gives up, the
/// consumer stream ends with an error and the worker exits non-zero for its supervisor.
pub async fn connect(settings: &BrokerSettings, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover()
        .configure_backoff(|b| {
            b.with_min_delay(std::time::Duration::from_millis(200))
                .with_max_delay(std::time::Duration::from_millis(
                    settings.reconnect_max_delay_ms,
                ))
                .with_max_times(settings.reconnect_attempts)
        });
    Connection::connect(settings.url.expose_secret(), props).await
}

/// Resolves when the connection has been down for longer than the reconnection budget
/// (`reconnect_attempts` × `reconnect_max_delay_ms`). lapin's recovery, when it gives up,
/// neither wakes a waiting consumer nor leaves a final state to see (it stays
/// "reconnecting"), so the worker races its consume loop against this and exits non-zero
/// instead of waiting forever.
pub async fn lost_for_good(connection: &Connection, settings: &BrokerSettings) -> anyhow::Error {
    let budget = std::time::Duration::from_millis(settings.reconnect_max_delay_ms)
        .saturating_mul(settings.reconnect_attempts.max(1) as u32);
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if connection.status().connected() {
            if down_since.take().is_some() {
                tracing::info!("broker connection recovered");
            }
            continue;
        }
        let since = *down_since.get_or_insert_with(|| {
            tracing::warn!(?budget, "broker connection lost; reconnecting");
            std::time::Instant::now()
        });
        if since.elapsed() > budget {
            return anyhow::anyhow!(
                "the broker connection was lost and not recovered within {budget:?} \
                 (broker.reconnect_attempts x broker.reconnect_max_delay_ms); exiting so a \
                 supervisor restarts the worker"
            );
        }
    }
}
