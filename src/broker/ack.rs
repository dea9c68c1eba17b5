//! Acknowledging deliveries: the one way every consumer of ours (commands, queries, the
//! webhooks feed) tells the broker it is done with a message, or hands it back.
//!
//! An ack counts only when lapin says it went out: `Ok(true)`. `Ok(false)` is an acker that
//! was already used or was poisoned with its channel, and an error or a wait past
//! [`ACK_TIMEOUT`] (a channel that lapin is recovering can hold an ack for good) are failures
//! too. A failed ack loses nothing: the broker redelivers what its channel left unacked, and
//! the inbox recognises what was already done.
//!
//! A batch's deliveries are acked with one `basic.ack` (`multiple`) where the broker allows
//! it: [`AckWindow`] keeps every delivery tag of a channel that is not settled yet, and a
//! batch covers with one ack only tags that are all its own, up to the first one that is not
//! (a delivery of another batch, a query, an import still reading its source). The rest of
//! the batch is acked one by one, as before. A quorum queue writes each ack frame's settlement
//! to its log: a batch of 256 deliveries acked one by one was 256 log entries, now one.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};

/// Longest wait for an ack or nack to be written: what waits on it (a batch slot) must not
/// wait for good on a channel that is being recovered.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// A delivery of ours: lapin's, with the [`AckWindow`] of the channel it came on when the
/// consumer keeps one. Settle it only through [`ack`], [`ack_all`] and [`requeue`]: they keep
/// the window's count of what is still outstanding.
pub struct Delivery {
    inner: lapin::message::Delivery,
    window: Option<Arc<AckWindow>>,
}

impl Delivery {
    /// A delivery of `window`'s channel, recorded in it as outstanding. Every delivery of a
    /// channel with a window must come through here, in the order the consumer yields them:
    /// a tag the window does not know of could be covered by another batch's ack.
    pub fn tracked(inner: lapin::message::Delivery, window: &Arc<AckWindow>) -> Delivery {
        window.received(inner.delivery_tag);
        Delivery {
            inner,
            window: Some(window.clone()),
        }
    }

    /// A delivery acked on its own, always (no window).
    pub fn untracked(inner: lapin::message::Delivery) -> Delivery {
        Delivery {
            inner,
            window: None,
        }
    }
}

impl Deref for Delivery {
    type Target = lapin::message::Delivery;
    fn deref(&self) -> &lapin::message::Delivery {
        &self.inner
    }
}

/// The delivery tags of one channel (one consumer session) that are not settled yet. A new
/// channel, or one lapin recovered (its tags start again at 1), gets a new window.
#[derive(Default)]
pub struct AckWindow {
    outstanding: Mutex<BTreeSet<u64>>,
    /// Held from deciding what an ack covers to writing it: acks reach the broker in the order
    /// they were decided, so a `multiple` ack never names a tag an earlier one settled.
    sending: tokio::sync::Mutex<()>,
}

impl AckWindow {
    pub fn new() -> Arc<AckWindow> {
        Arc::new(AckWindow::default())
    }

    fn received(&self, tag: u64) {
        self.lock().insert(tag);
    }

    fn settled(&self, tags: &[u64]) {
        let mut outstanding = self.lock();
        for t in tags {
            outstanding.remove(t);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.outstanding.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many tags are outstanding (for tests and the curious).
    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }

    /// Of `tags` (a batch's, all outstanding), the highest that one `multiple` ack may name:
    /// every outstanding tag up to it is one of `tags`. `None` when the lowest outstanding tag
    /// is not the batch's.
    fn cover(&self, tags: &BTreeSet<u64>) -> Option<u64> {
        self.lock()
            .iter()
            .take_while(|t| tags.contains(t))
            .last()
            .copied()
    }
}

/// Acks every delivery of `deliveries` (one batch, after its commit); whether each was acked,
/// in order. Deliveries of one window are acked with one `multiple` ack for the tags no other
/// outstanding delivery is interleaved with, and one by one above that. After one ack fails
/// the rest are not acked: the broker redelivers them and the inbox recognises them.
pub async fn ack_all(deliveries: &[&Delivery]) -> Vec<bool> {
    let window = match deliveries.first().and_then(|d| d.window.as_ref()) {
        Some(w)
            if deliveries
                .iter()
                .all(|d| d.window.as_ref().is_some_and(|x| Arc::ptr_eq(x, w))) =>
        {
            w.clone()
        }
        _ => return ack_each(deliveries).await,
    };
    let _sending = window.sending.lock().await;
    let tags: BTreeSet<u64> = deliveries.iter().map(|d| d.delivery_tag).collect();
    let mut acked = vec![false; deliveries.len()];
    let mut ok = true;
    if let Some(top) = window.cover(&tags).filter(|_| deliveries.len() > 1) {
        let last = deliveries
            .iter()
            .find(|d| d.delivery_tag == top)
            .expect("the cover is one of the batch's tags");
        ok = send(last, BasicAckOptions { multiple: true }).await;
        if ok {
            let covered: Vec<u64> = tags.range(..=top).copied().collect();
            window.settled(&covered);
            for (i, d) in deliveries.iter().enumerate() {
                acked[i] = d.delivery_tag <= top;
            }
        }
    }
    for (i, d) in deliveries.iter().enumerate() {
        if !ok {
            break;
        }
        if acked[i] {
            continue;
        }
        ok = send(d, BasicAckOptions::default()).await;
        if ok {
            window.settled(&[d.delivery_tag]);
        }
        acked[i] = ok;
    }
    acked
}

async fn ack_each(deliveries: &[&Delivery]) -> Vec<bool> {
    let mut acked = Vec::with_capacity(deliveries.len());
    let mut ok = true;
    for d in deliveries {
        ok = ok && ack(d).await;
        acked.push(ok);
    }
    acked
}

impl Delivery {
    /// Settles this delivery alone (`settle`: its one ack or nack, `true` when it went out)
    /// under its window's send lock, and takes its tag out of the window when it went out.
    async fn alone(&self, settle: impl Future<Output = bool>) -> bool {
        let _sending = match &self.window {
            Some(w) => Some(w.sending.lock().await),
            None => None,
        };
        let ok = settle.await;
        if let (true, Some(w)) = (ok, &self.window) {
            w.settled(&[self.delivery_tag]);
        }
        ok
    }
}

/// Acks one delivery on its own; `true` only when the ack went out.
pub async fn ack(delivery: &Delivery) -> bool {
    delivery
        .alone(send(delivery, BasicAckOptions::default()))
        .await
}

async fn send(delivery: &Delivery, options: BasicAckOptions) -> bool {
    match tokio::time::timeout(ACK_TIMEOUT, delivery.inner.ack(options)).await {
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
    delivery.alone(nack(delivery)).await
}

async fn nack(delivery: &Delivery) -> bool {
    let nack = delivery.inner.nack(BasicNackOptions {
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
