//! Reading without taking: the messages the broker lends until released (see the module
//! documentation of `ops::dlq`).

use super::letter::DeadLetter;
use super::limits::IDLE;
use super::limits::MAX_LIMIT;
use futures::StreamExt;
use lapin::Acker;
use lapin::Channel;
use lapin::Connection;
use lapin::options::BasicCancelOptions;
use lapin::options::BasicConsumeOptions;
use lapin::options::BasicQosOptions;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// A dead letter held unacked by a snapshot.
pub(super) struct Held {
    pub(super) acker: Acker,
    pub(super) letter: DeadLetter,
}

/// Messages lent to us by the broker until [`Snapshot::release`] (or until the connection
/// drops, whichever is first).
pub(super) struct Snapshot {
    pub(super) channel: Channel,
    pub(super) depth: u32,
    pub(super) held: Vec<Held>,
}

impl Snapshot {
    pub(super) async fn take(
        connection: &Connection,
        queue: &str,
        limit: usize,
    ) -> anyhow::Result<Snapshot> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let channel = connection.create_channel().await?;
        let depth = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!("no dead-letter queue {queue} ({e}); is broker.prefix right?")
            })?
            .message_count();
        let want = (depth as usize).min(limit);
        let mut held = Vec::with_capacity(want);
        if want > 0 {
            // The prefetch is the cap: the broker lends us no more than `want` at once.
            channel
                .basic_qos(want as u16, BasicQosOptions::default())
                .await?;
            let mut consumer = channel
                .basic_consume(
                    queue.into(),
                    format!("onboard-dlq-{}", uuid::Uuid::new_v4())
                        .as_str()
                        .into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            while held.len() < want {
                match tokio::time::timeout(IDLE, consumer.next()).await {
                    Ok(Some(Ok(d))) => held.push(Held {
                        letter: DeadLetter::from_parts(
                            d.routing_key.as_str(),
                            d.properties,
                            d.data,
                        ),
                        acker: d.acker,
                    }),
                    Ok(Some(Err(e))) => return Err(e.into()),
                    // Fewer than counted (another client took some): what we have is it.
                    Ok(None) | Err(_) => break,
                }
            }
            // No more deliveries: acking what we move must not pull in new ones.
            channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await?;
        }
        Ok(Snapshot {
            channel,
            depth,
            held,
        })
    }

    /// Gives back everything not acked, in its original place.
    pub(super) async fn release(self) {
        let _ = self
            .channel
            .close(200, "dlq snapshot released".into())
            .await;
    }
}
