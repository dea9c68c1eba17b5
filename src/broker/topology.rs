//! Exchanges and queues, declared idempotently at every start (same arguments, no change).
//!
//! ```text
//! <p>.commands (topic) ──#──> <p>.commands (quorum; delivery limit; DLX <p>.dead)
//! <p>.retry.<ms> (fanout) ──> <p>.retry.<ms> (TTL <ms>; DLX <p>.commands, routing key kept)
//! <p>.dead (fanout) ──> <p>.dead (dead letters, for operators)
//! (retry, dead and unrouted queues: classic, or quorum with `broker.replicated_queues`)
//! <p>.events (topic; alternate exchange <p>.events.unrouted) ──> subscribers
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::configuration::Settings;

/// Every name the worker uses, derived from the configured prefix.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
    pub commands_exchange: String,
    pub commands_queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    pub events_exchange: String,
    pub unrouted_events: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
            commands_exchange: format!("{prefix}.commands"),
            commands_queue: format!("{prefix}.commands"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            events_exchange: format!("{prefix}.events"),
            unrouted_events: format!("{prefix}.events.unrouted"),
        }
    }

    /// The exchange and queue of one retry delay.
    pub fn retry(&self, delay_ms: u64) -> String {
        format!("{}.retry.{delay_ms}", self.prefix)
    }

    /// Every queue the worker declares under this prefix (with these retry delays), and the
    /// webhooks feed's: what a test or a benchmark deletes when it is done.
    pub fn all_queues(&self, delays_ms: &[u64]) -> Vec<String> {
        let mut queues = vec![
            self.commands_queue.clone(),
            self.dead_queue.clone(),
            self.unrouted_events.clone(),
            format!("{}.webhooks", self.prefix),
        ];
        queues.extend(delays_ms.iter().map(|d| self.retry(*d)));
        queues
    }

    /// Every exchange the worker declares under this prefix (with these retry delays).
    pub fn all_exchanges(&self, delays_ms: &[u64]) -> Vec<String> {
        let mut exchanges = vec![
            self.commands_exchange.clone(),
            self.dead_exchange.clone(),
            self.events_exchange.clone(),
            self.unrouted_events.clone(),
        ];
        exchanges.extend(delays_ms.iter().map(|d| self.retry(*d)));
        exchanges
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the whole topology. A queue that exists with other arguments makes the broker
/// close the channel with PRECONDITION_FAILED; the error then names the queue.
async fn declare(
    channel: &Channel,
    settings: &Settings,
    kept: &KeptModes,
) -> Result<Names, TopologyError> {
    let names = Names::new(&settings.broker.prefix);
    let at = |what: &str| {
        let what = what.to_string();
        move |source| TopologyError::new(what, source)
    };

    channel
        .exchange_declare(
            names.commands_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await
        .map_err(at(&format!("exchange {}", names.commands_exchange)))?;
    channel
        .exchange_declare(
            names.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await
        .map_err(at(&format!("exchange {}", names.dead_exchange)))?;
    channel
        .exchange_declare(
            names.unrouted_events.as_str().into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await
        .map_err(at(&format!("exchange {}", names.unrouted_events)))?;
    // Events nobody subscribed to yet are kept in <p>.events.unrouted instead of vanishing.
    channel
        .exchange_declare(
            names.events_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable(),
            table(&[("alternate-exchange", long(&names.unrouted_events))]),
        )
        .await
        .map_err(at(&format!("exchange {}", names.events_exchange)))?;

    let queue = |name: &str, args: FieldTable| {
        let name = name.to_string();
        let args_copy = args.clone();
        async move {
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await
                .map_err(|source| {
                    let mut e = TopologyError::new(format!("queue {name}"), source);
                    e.declared = Some((name.clone(), args_copy));
                    e
                })
        }
    };
    let bind = |queue: &str, exchange: &str, key: &str| {
        let (queue, exchange, key) = (queue.to_string(), exchange.to_string(), key.to_string());
        async move {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| {
                    TopologyError::new(format!("binding {exchange} -> {queue}"), source)
                })
        }
    };

    // Quorum: replicated, and it counts deliveries, so a message that kills the worker every
    // time is dead-lettered by the broker after `delivery_limit` tries instead of looping.
    // at-least-once dead-lettering (which needs reject-publish overflow) never drops it.
    queue(
        &names.commands_queue,
        table(&[
            ("x-queue-type", long("quorum")),
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(settings.broker.delivery_limit as i64),
            ),
            ("x-dead-letter-exchange", long(&names.dead_exchange)),
            ("x-dead-letter-strategy", long("at-least-once")),
            ("x-overflow", long("reject-publish")),
        ]),
    )
    .await?;
    bind(&names.commands_queue, &names.commands_exchange, "#").await?;

    // The other queues are classic on one node, or quorum with `broker.replicated_queues`
    // (a cluster: a classic queue is gone while its node is, and a declare of it fails).
    let side = |extra: &[(&str, AMQPValue)]| {
        let kind = if settings.broker.replicated_queues {
            "quorum"
        } else {
            "classic"
        };
        let mut args = vec![("x-queue-type", long(kind))];
        args.extend(extra.iter().cloned());
        table(&args)
    };

    // The two queues that only fill (read by operators, or by nobody until a subscriber
    // binds) are lazy when classic: their messages go to disk as they arrive and leave the
    // broker's memory, instead of being held there too (persistent, they are written to disk
    // either way). Held in memory, the unrouted events of a busy worker made the queue's
    // process a large heap that the broker garbage-collected over and over: a quarter of
    // RabbitMQ's CPU under the saga benchmark (issue 24, docs/benchmark.md). A storage choice,
    // not part of the contract: a queue an earlier version declared without it keeps its own
    // ([`KeptModes`]). Quorum queues have no modes.
    let lazy = |name: &str, extra: &[(&str, AMQPValue)]| {
        let mut args: Vec<(&str, AMQPValue)> = extra.to_vec();
        if !settings.broker.replicated_queues {
            match kept.0.get(name) {
                Some(Some(theirs)) => args.push(("x-queue-mode", long(theirs))),
                Some(None) => {}
                None => args.push(("x-queue-mode", long("lazy"))),
            }
        }
        side(&args)
    };

    // Dead letters: operators browse them by get-and-requeue, so the queue has no delivery
    // limit (a quorum queue without `x-delivery-limit` has none before RabbitMQ 4).
    queue(&names.dead_queue, lazy(&names.dead_queue, &[])).await?;
    bind(&names.dead_queue, &names.dead_exchange, "").await?;

    queue(
        &names.unrouted_events,
        lazy(
            &names.unrouted_events,
            &[("x-max-length", AMQPValue::LongLongInt(100_000))],
        ),
    )
    .await?;
    bind(&names.unrouted_events, &names.unrouted_events, "").await?;

    let mut delays = settings.retry.delays_ms.clone();
    delays.sort_unstable();
    delays.dedup();
    for delay in delays {
        let name = names.retry(delay);
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                durable(),
                FieldTable::default(),
            )
            .await
            .map_err(at(&format!("exchange {name}")))?;
        // No consumer: messages wait out the TTL, then the broker dead-letters them back to
        // the commands exchange with their original routing key.
        // Replicated, the way back is at-least-once too (quorum queues drop an expired message
        // whose dead-lettering fails unless told otherwise; that needs reject-publish).
        let mut args = vec![
            ("x-message-ttl", AMQPValue::LongLongInt(delay as i64)),
            ("x-dead-letter-exchange", long(&names.commands_exchange)),
        ];
        if settings.broker.replicated_queues {
            args.push(("x-dead-letter-strategy", long("at-least-once")));
            args.push(("x-overflow", long("reject-publish")));
        }
        queue(&name, side(&args)).await?;
        bind(&name, &name, "").await?;
    }
    Ok(names)
}

/// Declares a durable quorum queue with no other argument (the benchmark's, the webhooks
/// feed's): idempotent, like every declare here.
pub async fn declare_quorum_queue(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[("x-queue-type", long("quorum"))]),
        )
        .await
        .map(|_| ())
}

/// Messages ready in the queues the worker depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depths {
    pub commands: u32,
    pub dead: u32,
}

/// Checks that the commands queue and the dead-letter queue exist now, by passive declares on
/// a throwaway channel (a missing queue closes that channel only). Used by `/readyz` and to
/// sample the dead-letter queue's depth for `/metrics`.
pub async fn check(connection: &lapin::Connection, names: &Names) -> Result<Depths, lapin::Error> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = async {
        let commands = channel
            .queue_declare(
                names.commands_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        let dead = channel
            .queue_declare(
                names.dead_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        Ok(Depths {
            commands: commands.message_count(),
            dead: dead.message_count(),
        })
    }
    .await;
    if channel.status().connected() {
        let _ = channel.close(200, "checked".into()).await;
    }
    result
}

/// Declares the topology on a channel of its own. A queue that exists in another storage
/// mode (`x-queue-mode`) is declared again as it is ([`KeptModes`]). When a queue exists with
/// other arguments, finds every argument that differs, not only the first: the broker names
/// one difference per refusal, so the declare is repeated on a fresh channel with that
/// argument as the broker has it, until it passes (a declare that matches an existing queue
/// changes nothing).
pub async fn declare_on(
    connection: &lapin::Connection,
    settings: &Settings,
) -> Result<Names, TopologyError> {
    let mut kept = KeptModes::default();
    loop {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| TopologyError::new("a channel".into(), e))?;
        let mut e = match declare(&channel, settings, &kept).await {
            Ok(names) => return Ok(names),
            Err(e) => e,
        };
        let (Some(first), Some((queue, args))) = (e.mismatch(), e.declared.take()) else {
            return Err(e);
        };
        // A queue that exists in another storage mode keeps it (one more declare per such
        // queue; the dead-letter and unrouted queues are the only ones we make lazy).
        if first.argument == "x-queue-mode" && !kept.0.contains_key(&queue) {
            tracing::warn!(
                queue = %queue,
                mode = first.theirs.as_deref().unwrap_or("default"),
                "the queue exists in another mode than lazy (declared by an earlier version): \
                 it is kept as it is; docs/operating.md says how to make it lazy"
            );
            kept.0.insert(queue, first.theirs);
            continue;
        }
        e.mismatches = probe(connection, &queue, args, first).await;
        return Err(e);
    }
}

/// Queues found to exist in another `x-queue-mode` than we declare, with the broker's value
/// (`None`: not set): declared as they are. Lazy mode is how a queue stores its messages, not
/// what it holds, and a queue's arguments cannot change in place: an upgraded worker must
/// not refuse to start over it, nor an operator have to empty a dead-letter queue to move on.
#[derive(Debug, Default)]
struct KeptModes(std::collections::HashMap<String, Option<String>>);

/// A server-named queue that only this connection uses and that disappears with it, bound to
/// the events exchange with `keys`: how a tool (publish --wait, load) watches what commands
/// cause. Returns the queue's name (also usable as a `reply_to`).
pub async fn private_event_queue(
    channel: &Channel,
    names: &Names,
    keys: &[&str],
) -> Result<String, lapin::Error> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in keys {
        channel
            .queue_bind(
                queue.name().clone(),
                names.events_exchange.as_str().into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue.name().as_str().to_string())
}

mod mismatch;
use mismatch::probe;
pub use mismatch::{Mismatch, TopologyError};

#[cfg(test)]
mod tests;
