//! The recovery path of the outbox: claims rows nobody published (`FOR UPDATE SKIP LOCKED`,
//! so every worker can run a relay), publishes them with confirms, and marks them published
//! only after the broker confirmed.
//!
//! In normal operation the worker that wrote a row publishes it right after its commit
//! (the dispatcher, dispatch.rs), under the claim it made with the insert; the relay takes only rows
//! with no claim or an expired one: those of a worker that died between commit and publish
//! (its claim ran out, `outbox.dispatch_grace_ms` after the insert), a publish that failed
//! (its claim was given back), rows that wait for an earlier row of their correlation, and
//! rows a tool wrote. It polls every `outbox.poll_interval_ms`, wakes on
//! `LISTEN onboard_outbox`, and is woken by its own worker's dispatcher when rows wait for
//! one that dispatcher publishes ([`Wake`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::ShortString;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::broker::publisher::Outgoing;
use crate::broker::{Delivered, Names, Publisher, headers};
use crate::configuration::{InboxSettings, OutboxSettings};
use crate::messages::{OutgoingKind, OutgoingMessage};
use crate::store::{self, outbox::OutboxRow};

use super::wake::Wake;

pub const CHANNEL: &str = "onboard_outbox";

/// A worker's relay: what it publishes with and how it is woken.
pub struct Relay {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub names: Names,
    pub settings: OutboxSettings,
    /// For pruning the inbox, which the relay does beside the outbox.
    pub inbox: InboxSettings,
    /// Each round is counted here when given.
    pub metrics: Option<crate::metrics::Metrics>,
    /// Shared with the worker's dispatcher.
    pub wake: Wake,
}

/// Runs until `stop` is cancelled, then makes one last pass over every row it may take.
pub async fn run(relay: Relay, stop: CancellationToken) {
    let Relay {
        pool,
        publisher,
        names,
        settings,
        inbox,
        metrics,
        wake,
    } = relay;
    let poll = Duration::from_millis(settings.poll_interval_ms);
    let mut listener = listen(&pool).await;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    let mut failures: u32 = 0;
    loop {
        let round = relay_pending(&pool, &publisher, &names, settings.batch_size).await;
        if let Some(m) = &metrics {
            m.relay_round();
        }
        match round {
            Ok(_) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::warn!(error = %e, ?wait, "outbox relay failed; backing off");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            let retention = Duration::from_secs(settings.retention_hours * 3600);
            if let Ok(n) = store::outbox::prune(&pool, retention).await
                && n > 0
            {
                tracing::info!(rows = n, "pruned published outbox rows");
            }
            // The inbox too, in slices, so a large backlog never holds a long lock.
            let retention = Duration::from_secs(inbox.retention_hours * 3600);
            let mut pruned = 0;
            while let Ok(n) = store::inbox::prune(&pool, retention, 10_000).await {
                pruned += n;
                if n < 10_000 || stop.is_cancelled() {
                    break;
                }
            }
            if pruned > 0 {
                tracing::info!(rows = pruned, "pruned inbox rows past their retention");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = woken(&mut listener, poll) => {}
            _ = wake.notified() => {}
        }
    }
    if let Err(e) = relay_pending(&pool, &publisher, &names, settings.batch_size).await {
        tracing::warn!(error = %e, "last outbox pass failed; rows stay pending for the next relay");
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    Some(listener)
}

/// Returns on a notification or after `poll`, whichever comes first.
async fn woken(listener: &mut Option<PgListener>, poll: Duration) {
    match listener {
        Some(l) => match tokio::time::timeout(poll, l.try_recv()).await {
            Ok(Ok(Some(_))) | Err(_) => {}
            // The listening connection dropped; sqlx reconnects on the next call, and the
            // timeout keeps us polling meanwhile.
            Ok(Ok(None)) => {}
            Ok(Err(_)) => {
                *listener = None;
                tokio::time::sleep(poll).await;
            }
        },
        None => {
            tokio::time::sleep(poll).await;
        }
    }
}

/// Publishes batches until a round claims nothing (or a batch fails): a round that published
/// a correlation's earlier row makes its later ones claimable in the next. Returns the number
/// of rows claimed.
pub async fn relay_pending(
    pool: &PgPool,
    publisher: &Publisher,
    names: &Names,
    batch_size: i64,
) -> Result<usize, RelayError> {
    let mut total = 0;
    loop {
        let n = relay_batch(pool, publisher, names, batch_size).await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{failed} of {claimed} messages not confirmed: {first}")]
    Publish {
        failed: usize,
        claimed: usize,
        first: String,
    },
}

/// One claimed batch: publish all, then mark the confirmed ones in the claiming transaction.
async fn relay_batch(
    pool: &PgPool,
    publisher: &Publisher,
    names: &Names,
    limit: i64,
) -> Result<usize, RelayError> {
    let round = store::outbox::claim_round(pool, limit).await?;
    let rows = round.rows.clone();
    if rows.is_empty() {
        round.finish(&[]).await?;
        return Ok(0);
    }
    let sent = publish_rows(publisher, names, &rows).await;
    round.finish(&sent.published).await?;
    if let Some(first) = sent.first_error {
        let _ = store::outbox::mark_failed(pool, &sent.failed, &first).await;
        // Backing off is for a broker that takes nothing. A row that fails on its own
        // (the others went out) is tried again next round without slowing the rest; the rows
        // after it in its correlation wait for it (see `store::outbox::claim`).
        if sent.published.is_empty() {
            return Err(RelayError::Publish {
                failed: sent.failed.len(),
                claimed: rows.len(),
                first,
            });
        }
        tracing::warn!(failed = sent.failed.len(), claimed = rows.len(), error = %first, "some outbox rows not published; tried again next round");
    }
    Ok(rows.len())
}

/// What publishing some rows came to.
pub(super) struct Sent {
    /// Rows the broker has (or that nobody can take any more: a reply whose queue is gone).
    pub published: Vec<i64>,
    /// Rows to try again.
    pub failed: Vec<i64>,
    pub first_error: Option<String>,
}

/// Publishes rows with confirms, all at once, in order.
pub(super) async fn publish_rows(publisher: &Publisher, names: &Names, rows: &[OutboxRow]) -> Sent {
    // An outbox row's payload is its text already (borrowed here, not copied).
    let bodies: Vec<_> = rows.iter().map(|r| r.message.payload.text()).collect();
    let outgoing = rows
        .iter()
        .zip(&bodies)
        .map(|(row, body)| outgoing(&row.message, body.as_bytes(), row.created_at, names))
        .collect();
    // Each message's `publish <type>` span, in the trace of the command that caused it.
    let spans = rows.iter().map(|r| publish_span(&r.message));
    let results = publisher.publish_all_in(outgoing, spans).await;
    let mut sent = Sent {
        published: Vec::with_capacity(rows.len()),
        failed: Vec::new(),
        first_error: None,
    };
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(Delivered::Routed) => sent.published.push(row.id),
            Ok(Delivered::Returned { reply_text }) if row.message.kind == OutgoingKind::Reply => {
                // Nobody waits on that reply queue any more; there is no one else to tell.
                tracing::warn!(reply_to = %row.message.routing_key, %reply_text, "reply queue gone; reply dropped");
                sent.published.push(row.id);
            }
            Ok(Delivered::Returned { reply_text }) => {
                sent.failed.push(row.id);
                sent.first_error
                    .get_or_insert_with(|| format!("unroutable: {reply_text}"));
            }
            Err(e) => {
                sent.failed.push(row.id);
                sent.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    sent
}

/// The `publish <type>` (or `reply <type>`) span of one message, a child of the span its
/// `traceparent` header names. Made only when spans are exported.
pub fn publish_span(m: &OutgoingMessage) -> tracing::Span {
    let verb = match m.kind {
        OutgoingKind::Reply => "reply",
        OutgoingKind::Event | OutgoingKind::Command => "publish",
    };
    let span = crate::export_span!(
        "publish",
        otel.name = %format!("{verb} {}", m.message_type),
        otel.kind = "producer",
        kind = m.kind.as_str(),
        message_id = %m.message_id,
    );
    crate::telemetry::set_parent(&span, m.headers.get("traceparent").and_then(|v| v.as_str()));
    span
}

/// How a message of ours goes on the wire, wherever it comes from (an outbox row, or a
/// query's reply, which needs no outbox): exchange by kind, persistent JSON, our ids.
pub fn outgoing<'a>(
    m: &'a OutgoingMessage,
    body: &'a [u8],
    created_at: DateTime<Utc>,
    names: &'a Names,
) -> Outgoing<'a> {
    let exchange = match m.kind {
        OutgoingKind::Event => names.events_exchange.as_str(),
        OutgoingKind::Reply => "",
        OutgoingKind::Command => names.commands_exchange.as_str(),
    };
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(m.message_id.to_string()))
        .with_type(m.message_type.as_str().into())
        .with_app_id("onboard".into())
        .with_timestamp(created_at.timestamp().max(0) as u64)
        .with_headers(headers::from_json(&m.headers));
    if let Some(c) = &m.correlation_id {
        properties = properties.with_correlation_id(c.as_str().into());
    }
    Outgoing {
        exchange,
        routing_key: &m.routing_key,
        body,
        properties,
    }
}
