//! Acknowledging deliveries: the one way every consumer of ours (commands, queries, the
//! webhooks feed) tells the broker it is done with a message, or hands it back.
//!
//! An ack counts only when lapin says it went out: `Ok(true)`. `Ok(false)` is an acker that
//! was already used or was poisoned with its channel, and an error or a wait past
//! [`ACK_TIMEOUT`] (a channel that lapin is recovering can hold an ack for good) are failures
//! too. A failed ack loses nothing: the broker redelivers what its channel left unacked, and
//! the inbox recognises what was already done.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

/// Longest wait for an ack or nack to be written: what waits on it (a batch slot) must not
/// wait for good on a channel that is being recovered.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Acks a delivery; `true` only when the ack went out.
pub async fn ack(delivery: &Delivery) -> bool {
    match tokio::time::timeout(ACK_TIMEOUT, delivery.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::warn!(
                "ack not sent: the delivery's channel is gone (or it was settled already); the \
                 message will be redelivered and deduplicated"
            );
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
            false
        }
        Err(_) => {
            tracing::warn!(
                "ack not written within {ACK_TIMEOUT:?} (the channel is recovering); the message \
                 will be redelivered and deduplicated"
            );
            false
        }
    }
}

/// Gives a delivery back to the broker (quorum queues count it towards the delivery limit);
/// `true` only when the nack went out. When it did not, the broker requeues the delivery
/// once its channel is gone, all the same.
pub async fn requeue(delivery: &Delivery) -> bool {
    let nack = delivery.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    });
    match tokio::time::timeout(ACK_TIMEOUT, nack).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            tracing::warn!("nack not sent: the channel is gone; the broker will redeliver");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "nack failed; the broker will redeliver");
            false
        }
        Err(_) => {
            tracing::warn!("nack not written in time; the broker will redeliver");
            false
        }
    }
}
