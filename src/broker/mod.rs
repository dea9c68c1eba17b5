//! RabbitMQ: connecting (with lapin's automatic recovery), the topology, one publisher with
//! confirms, and turning deliveries into plain [`crate::messages::IncomingMessage`]s.

pub mod headers;
pub mod link;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::configuration::BrokerSettings;

pub use link::Link;
pub use publisher::{Delivered, PublishError, Publisher};
pub use topology::{Names, declare};

/// Connects with automatic recovery: on a lost connection lapin reconnects with backoff and
/// replays exchanges, queues, bindings, consumers, QoS and confirm mode. [`Link`] watches
/// that it did, and replaces the session when it did not.
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
