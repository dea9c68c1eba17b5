//! Connecting to RabbitMQ: one node of several, each connection with lapin's automatic
//! recovery.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::{BrokerSettings, redact_url};

/// Longest wait for a node's TCP accept when choosing among several.
const NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the AMQP handshake with one of several nodes before trying the next.
const NODE_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects with automatic recovery: on a lost connection lapin reconnects with backoff and
/// replays exchanges, queues, bindings, consumers, QoS and confirm mode. `Link` (link.rs) watches
/// that it did, and replaces the session when it did not. With several nodes
/// (`broker.urls`), connects to the first that accepts (see [`connect_node`]).
pub async fn connect(settings: &BrokerSettings, name: &str) -> Result<Connection, lapin::Error> {
    connect_node(settings, name, 0).await.map(|(c, _)| c)
}

/// Connects to one of the broker's nodes, trying them in turn from `first` (an index into
/// [`BrokerSettings::nodes`]), and says which one it reached. A node that refuses TCP is
/// skipped at once: lapin would otherwise wait out its whole reconnect backoff on it. When no
/// node accepts (or there is only one), the attempt is lapin's, with its backoff, on `first`.
pub async fn connect_node(
    settings: &BrokerSettings,
    name: &str,
    first: usize,
) -> Result<(Connection, usize), lapin::Error> {
    let nodes = settings.nodes();
    let first = first % nodes.len();
    if nodes.len() > 1 {
        for i in (0..nodes.len()).map(|k| (first + k) % nodes.len()) {
            if !accepts(nodes[i]).await {
                continue;
            }
            match tokio::time::timeout(NODE_OPEN_TIMEOUT, open(settings, nodes[i], name)).await {
                Ok(Ok(connection)) => return Ok((connection, i)),
                Ok(Err(e)) => {
                    tracing::warn!(node = %redact_url(nodes[i]), error = %e, "broker node refused the connection; trying the next")
                }
                Err(_) => {
                    tracing::warn!(node = %redact_url(nodes[i]), "broker node accepted TCP but no AMQP session within {NODE_OPEN_TIMEOUT:?}; trying the next")
                }
            }
        }
    }
    open(settings, nodes[first], name).await.map(|c| (c, first))
}

/// The `host:port` a broker URL names, when it parses.
pub fn node_address(url: &SecretString) -> Option<(String, u16)> {
    url.expose_secret()
        .parse::<lapin::uri::AMQPUri>()
        .ok()
        .map(|u| (u.authority.host, u.authority.port))
}

/// Whether the node's port accepts a TCP connection now (a URL that does not parse is left to
/// lapin to refuse).
pub async fn accepts(url: &SecretString) -> bool {
    let Some((host, port)) = node_address(url) else {
        return true;
    };
    matches!(
        tokio::time::timeout(
            NODE_PROBE_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port))
        )
        .await,
        Ok(Ok(_))
    )
}

async fn open(
    settings: &BrokerSettings,
    url: &SecretString,
    name: &str,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover()
        .configure_backoff(|b| {
            b.with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_millis(settings.reconnect_max_delay_ms))
                .with_max_times(settings.reconnect_attempts)
        });
    Connection::connect(url.expose_secret(), props).await
}
