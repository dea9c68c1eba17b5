//! The worker's broker session, kept alive.
//!
//! lapin's automatic recovery reconnects and replays the topology, the channels and the
//! consumer. It usually works; but if one step of the replay fails (a quorum queue not ready
//! yet when the consumer is replayed right after the broker came back), the channels after it
//! stay "reconnecting" for good while the connection looks healthy: nothing is consumed or
//! published until the worker is restarted. So the link watches the session: when the
//! connection or one of the worker's channels has not been open for
//! `broker.stuck_recovery_ms` while the broker accepts TCP connections, it opens a new
//! session (connection, topology, a fresh channel in every publisher's slot), tells the
//! consumer to start over on it, and closes the old connection as soon as lapin lets it. If
//! the broker itself stays away past the reconnect budget, [`Link::keep_alive`] returns the
//! error the worker exits with.
//!
//! With several nodes (`broker.urls`), "the broker accepts connections" means any node does,
//! and a new session goes to the first node that accepts, starting with the current one: when
//! the node under the session stops, the session moves to another within
//! `stuck_recovery_ms`, while lapin would keep knocking on the stopped one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::publisher::{Publisher, confirm_channel};
use crate::configuration::Settings;

/// How often the session's health is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Longest wait for a new session to open (on any node).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a replaced connection is waited for to become closable.
const GRAVEYARD: Duration = Duration::from_secs(600);

pub struct Link {
    settings: Arc<Settings>,
    name: String,
    /// Which of `broker.nodes()` the current session is on.
    node: AtomicUsize,
    connection: RwLock<Arc<Connection>>,
    /// The slots of the publishers opened through the link, refilled on replacement.
    publishers: Mutex<Vec<Arc<RwLock<Channel>>>>,
    /// The consumer's channel, watched with the rest.
    consume: Mutex<Option<Channel>>,
    /// Bumped on every replacement; the consumer starts over when it changes.
    generation: watch::Sender<u64>,
}

impl Link {
    /// A link over a connection the caller opened (with its own retries at start) to node
    /// `node` of `broker.nodes()`.
    pub fn new(
        settings: Arc<Settings>,
        name: &str,
        connection: Connection,
        node: usize,
    ) -> Arc<Link> {
        Arc::new(Link {
            settings,
            name: name.to_string(),
            node: AtomicUsize::new(node),
            connection: RwLock::new(Arc::new(connection)),
            publishers: Mutex::new(Vec::new()),
            consume: Mutex::new(None),
            generation: watch::channel(0).0,
        })
    }

    /// The connection of the current session.
    pub fn connection(&self) -> Arc<Connection> {
        self.connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A publisher whose channel follows the session.
    pub async fn publisher(&self, confirm_timeout: Duration) -> Result<Publisher, lapin::Error> {
        let publisher = Publisher::open(&self.connection(), confirm_timeout).await?;
        self.publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(publisher.slot());
        Ok(publisher)
    }

    /// Records the consumer's channel, so its health counts.
    pub fn consuming_on(&self, channel: &Channel) {
        *self.consume.lock().unwrap_or_else(|e| e.into_inner()) = Some(channel.clone());
    }

    /// Changes whenever the session is replaced.
    pub fn replaced(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether the connection and every channel of the worker are open.
    pub fn healthy(&self) -> bool {
        if !self.connection().status().connected() {
            return false;
        }
        let publishers_open = self
            .publishers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|slot| {
                slot.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .status()
                    .connected()
            });
        let consume_open = self
            .consume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|c| c.status().connected());
        publishers_open && consume_open
    }

    /// Watches the session until `stop`: replaces it when lapin's recovery is stuck, and
    /// returns an error once the broker has been away longer than the reconnect budget
    /// (`reconnect_attempts` × `reconnect_max_delay_ms`).
    pub async fn keep_alive(self: Arc<Self>, stop: CancellationToken) -> anyhow::Error {
        let broker = &self.settings.broker;
        let budget = Duration::from_millis(broker.reconnect_max_delay_ms)
            .saturating_mul(broker.reconnect_attempts.max(1) as u32);
        let stuck_after = Duration::from_millis(broker.stuck_recovery_ms);
        let mut unhealthy_since: Option<Instant> = None;
        // Since when the broker has accepted connections while the session stayed unhealthy:
        // lapin's recovery gets `stuck_recovery_ms` from then.
        let mut reachable_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return anyhow::anyhow!("stopped"),
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if self.healthy() {
                reachable_since = None;
                if unhealthy_since.take().is_some() {
                    tracing::info!("broker connection recovered");
                }
                continue;
            }
            let since = *unhealthy_since.get_or_insert_with(|| {
                tracing::warn!(?budget, "broker connection lost; reconnecting");
                Instant::now()
            });
            if since.elapsed() > budget {
                return anyhow::anyhow!(
                    "the broker connection was lost and not recovered within {budget:?} \
                     (broker.reconnect_attempts x broker.reconnect_max_delay_ms); exiting so a \
                     supervisor restarts the worker"
                );
            }
            if !self.broker_accepts().await {
                reachable_since = None;
                continue;
            }
            let reachable = *reachable_since.get_or_insert_with(Instant::now);
            if reachable.elapsed() >= stuck_after {
                match self.replace().await {
                    Ok(moved) => {
                        if !moved {
                            tracing::warn!(
                                down_for = ?since.elapsed(),
                                "broker session replaced: the broker accepted connections but \
                                 lapin's recovery had not reopened the session"
                            );
                        }
                        unhealthy_since = None;
                        reachable_since = None;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not open a new broker session yet"),
                }
            }
        }
    }

    /// Which of `broker.nodes()` the current session is on.
    pub fn node(&self) -> usize {
        self.node.load(Ordering::Relaxed)
    }

    /// Whether a node of the broker (the current one first) accepts a TCP connection now.
    async fn broker_accepts(&self) -> bool {
        let nodes = self.settings.broker.nodes();
        let current = self.node() % nodes.len();
        for i in (0..nodes.len()).map(|k| (current + k) % nodes.len()) {
            if super::connect::accepts(nodes[i]).await {
                return true;
            }
        }
        false
    }

    /// Opens a new session, moves every publisher onto it, tells the consumer, and retires
    /// the old connection. Says whether the session moved to another node.
    async fn replace(&self) -> anyhow::Result<bool> {
        let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
            let (connection, node) =
                super::connect::connect_node(&self.settings.broker, &self.name, self.node())
                    .await?;
            super::topology::declare_on(&connection, &self.settings).await?;
            let slots: Vec<_> = self
                .publishers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut channels = Vec::with_capacity(slots.len());
            for _ in &slots {
                channels.push(confirm_channel(&connection).await?);
            }
            anyhow::Ok((connection, node, slots, channels))
        })
        .await
        .map_err(|_| anyhow::anyhow!("no new session within {OPEN_TIMEOUT:?}"))??;
        let (connection, node, slots, channels) = opened;
        let was = self.node.swap(node, Ordering::Relaxed);
        let moved = was != node;
        if moved {
            let nodes = self.settings.broker.nodes();
            let shown = |i: usize| crate::configuration::redact_url(nodes[i % nodes.len()]);
            tracing::warn!(
                node = %shown(node),
                was = %shown(was),
                "broker session moved to a node that accepts connections (its node is away)"
            );
        }
        for (slot, channel) in slots.iter().zip(channels) {
            *slot.write().unwrap_or_else(|e| e.into_inner()) = channel;
        }
        let old = std::mem::replace(
            &mut *self.connection.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(connection),
        );
        *self.consume.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.generation.send_modify(|g| *g += 1);
        tokio::spawn(retire(old));
        Ok(moved)
    }
}

/// Closes a replaced connection as soon as lapin lets it (it refuses while still
/// reconnecting), so a late recovery of its consumer cannot hold deliveries no one reads.
async fn retire(old: Arc<Connection>) {
    let until = Instant::now() + GRAVEYARD;
    while Instant::now() < until {
        let status = old.status();
        if status.connected() {
            let _ = old.close(320, "replaced by a new session".into()).await;
            return;
        }
        if status.closed() || status.errored() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!("a replaced broker connection never became closable");
}
