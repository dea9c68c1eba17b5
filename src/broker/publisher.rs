//! The one way this service publishes: on a channel in confirm mode, `mandatory`, waiting for
//! the broker's confirm (bounded), so "published" always means "the broker has it".

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// What the broker did with a confirmed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Routed to at least one queue and confirmed.
    Routed,
    /// Confirmed, but no queue was bound for it (e.g. a `reply_to` queue that is gone).
    Returned { reply_text: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for it ({0}); is the topology declared?")]
    Unroutable(String),
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

/// One message to publish.
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
}

/// A confirm-mode channel. Cheap to clone; lapin multiplexes publishes and their confirms.
/// The channel sits in a slot that `Link` (link.rs) refills when it replaces a stuck session,
/// so every clone publishes on the new channel from then on.
#[derive(Clone)]
pub struct Publisher {
    channel: Arc<RwLock<Channel>>,
    confirm_timeout: Duration,
}

/// A channel in confirm mode on `connection`.
pub(crate) async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

impl Publisher {
    pub async fn open(
        connection: &Connection,
        confirm_timeout: Duration,
    ) -> Result<Publisher, lapin::Error> {
        Ok(Publisher {
            channel: Arc::new(RwLock::new(confirm_channel(connection).await?)),
            confirm_timeout,
        })
    }

    /// The slot of the channel, for the link to refill.
    pub(crate) fn slot(&self) -> Arc<RwLock<Channel>> {
        self.channel.clone()
    }

    /// The channel publishes go to now.
    pub fn channel(&self) -> Channel {
        self.channel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes one message and waits for its confirm. The whole of it is bounded by the
    /// confirm timeout: on a channel lapin is still recovering, `basic.publish` itself can
    /// wait for good, and the caller must get its error and try again (on the channel the
    /// link put in the slot meanwhile).
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<Delivered, PublishError> {
        let channel = self.channel();
        let publish_and_confirm = async {
            let confirm = channel
                .basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    message.body,
                    message.properties,
                )
                .await?;
            confirm.await
        };
        let confirmation = tokio::time::timeout(self.confirm_timeout, publish_and_confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(Delivered::Routed),
            Confirmation::Ack(Some(returned)) => Ok(Delivered::Returned {
                reply_text: returned.reply_text.as_str().to_string(),
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // The channel is always in confirm mode; treat the impossible as a refusal.
            Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }

    /// Publishes all messages first and then waits for all confirms: one round trip's worth
    /// of latency for the batch instead of one per message. Results are in input order.
    pub async fn publish_all(
        &self,
        messages: Vec<Outgoing<'_>>,
    ) -> Vec<Result<Delivered, PublishError>> {
        self.publish_all_in(messages, std::iter::repeat(tracing::Span::none()))
            .await
    }

    /// [`Publisher::publish_all`], each publish (up to its confirm) inside its own span.
    pub async fn publish_all_in(
        &self,
        messages: Vec<Outgoing<'_>>,
        spans: impl IntoIterator<Item = tracing::Span>,
    ) -> Vec<Result<Delivered, PublishError>> {
        use tracing::Instrument;
        futures::future::join_all(
            messages
                .into_iter()
                .zip(spans)
                .map(|(m, span)| self.publish(m).instrument(span)),
        )
        .await
    }
}
